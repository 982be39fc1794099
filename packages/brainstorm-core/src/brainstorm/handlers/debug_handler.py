"""A handler that checks every call before passing it on to another handler.

``DebugHandler(NumpyHandler(np.float64))`` is what layer tests run on: each op
checks the types, dtypes and shapes of its arguments, that its outputs do not
overlap its inputs in a way the op forbids, delegates to the wrapped handler,
and then checks that no argument holds NaN or infinity. Errors name the op and
the argument, e.g. ``DebugHandler.add_tt: shapes differ: a (3, 4), out (3, 5)``.

Arrays of a DebugHandler are :class:`DebugArray` objects, which allow only the
indexing every handler supports (ints and step-less slices).
"""

from __future__ import annotations

import numbers

import numpy as np

from brainstorm.handlers.base_handler import Handler

__all__ = ["DebugArray", "DebugHandler"]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


class DebugArray:
    """An array of a :class:`DebugHandler`: a thin wrapper around the inner handler's array.

    Args:
        array: the wrapped array of the inner handler (available as ``.array``).
    """

    def __init__(self, array):
        if array is None or isinstance(array, DebugArray):
            raise TypeError(f"DebugArray must wrap a handler array, got {type(array).__name__}")
        self.array = array

    @property
    def shape(self):
        """Tuple of dimensions."""
        return tuple(self.array.shape)

    @property
    def size(self):
        """Number of elements."""
        return int(self.array.size)

    @property
    def ndim(self):
        """Number of dimensions."""
        return len(self.array.shape)

    @property
    def dtype(self):
        """The dtype of the wrapped array."""
        return self.array.dtype

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d DebugArray")
        return self.shape[0]

    def __getitem__(self, item):
        """Index with ints, slices without step and ``...`` (or a tuple of those)."""
        parts = item if isinstance(item, tuple) else (item,)
        for part in parts:
            if part is Ellipsis or _is_int(part):
                continue
            if isinstance(part, slice):
                if part.step not in (None, 1):
                    raise IndexError(f"DebugArray: slices with a step are not allowed: {item!r}")
                if not all(b is None or _is_int(b) for b in (part.start, part.stop)):
                    raise IndexError(f"DebugArray: slice bounds must be ints: {item!r}")
                continue
            raise IndexError(
                f"DebugArray: only ints, step-less slices and ... may index, got {item!r}"
            )
        if Ellipsis not in parts and sum(_is_int(p) for p in parts) == len(self.shape):
            parts += (Ellipsis,)  # an int for every axis: a 0-d view, not a copied scalar
        return DebugArray(self.array[parts])

    def reshape(self, *shape):
        """Reshape (``a.reshape(2, 3)`` or ``a.reshape((2, 3))``); dims must be >= 0."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if not all(_is_int(d) and d >= 0 for d in shape):
            raise ValueError(f"DebugArray.reshape: dimensions must be non-negative ints: {shape}")
        return DebugArray(self.array.reshape(shape))

    def __repr__(self):
        return f"DebugArray(shape={self.shape}, dtype={self.dtype})"


def _same_memory_block(a, b):
    """True if two arrays are the very same view (same start, shape and strides)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return a is b
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _overlap(a, b):
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.shares_memory(a, b)
    return a is b


class _Call:
    """The checks of one op call. Every error names the op and the argument.

    Args:
        handler: the DebugHandler.
        op: name of the op.
        arrays: argument name -> value; every value must be a DebugArray of the
            handler's dtype (``None`` allowed for names in ``optional``).
    """

    def __init__(self, handler, op, optional=(), **arrays):
        self.handler = handler
        self.op = op
        self.arrays = {}
        for name, value in arrays.items():
            if value is None and name in optional:
                continue
            if not isinstance(value, DebugArray):
                raise TypeError(
                    f"{self.where}: argument {name!r} must be a DebugArray, "
                    f"got {type(value).__name__}"
                )
            if value.dtype != handler.dtype:
                raise TypeError(
                    f"{self.where}: argument {name!r} has dtype {value.dtype}, "
                    f"the handler uses {handler.dtype}"
                )
            self.arrays[name] = value

    @property
    def where(self):
        return f"DebugHandler.{self.op}"

    def fail(self, message):
        raise ValueError(f"{self.where}: {message}")

    def shape(self, name):
        return self.arrays[name].shape

    # ---------------------------------------------------------------- scalars

    def scalar(self, name, value, finite=True):
        """Check that ``value`` is a real number (and finite unless told otherwise)."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{self.where}: {name!r} must be a number, got {value!r}")
        if finite and not np.isfinite(value):
            self.fail(f"{name!r} must be finite, got {value!r}")

    def integer(self, name, value, minimum):
        if not _is_int(value):
            raise TypeError(f"{self.where}: {name!r} must be an int, got {value!r}")
        if value < minimum:
            self.fail(f"{name!r} must be >= {minimum}, got {value}")

    def pair(self, name, value, minimum=1):
        """Check a ``(rows, columns)`` tuple of two ints."""
        if not (isinstance(value, tuple) and len(value) == 2 and all(map(_is_int, value))):
            raise TypeError(f"{self.where}: {name!r} must be a tuple of two ints, got {value!r}")
        if min(value) < minimum:
            self.fail(f"{name!r} must hold ints >= {minimum}, got {value}")

    def flag(self, name, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{self.where}: {name!r} must be a bool, got {value!r}")

    def axis(self, name, value, ndim, allow_none=False):
        if value is None and allow_none:
            return None
        if not _is_int(value):
            raise TypeError(f"{self.where}: {name!r} must be an int, got {value!r}")
        if not -ndim <= value < ndim:
            self.fail(f"{name!r}={value} is out of range for {ndim} dimensions")
        return value % ndim

    # ----------------------------------------------------------------- shapes

    def same_shape(self, *names):
        shapes = [self.shape(n) for n in names if n in self.arrays]
        if any(s != shapes[0] for s in shapes):
            listed = ", ".join(f"{n} {self.shape(n)}" for n in names if n in self.arrays)
            self.fail(f"shapes differ: {listed}")

    def expect_shape(self, name, expected, why=""):
        if self.shape(name) != tuple(expected):
            self.fail(f"{name} has shape {self.shape(name)}, expected {tuple(expected)}{why}")

    def expect_ndim(self, name, ndim):
        if len(self.shape(name)) != ndim:
            self.fail(f"{name} must have {ndim} dimensions, got shape {self.shape(name)}")

    def vector_for(self, m, v, full_ok=False):
        """``v`` must be ``(1, N)`` or ``(M, 1)`` for the matrix ``m`` (or ``(M, N)``)."""
        self.expect_ndim(m, 2)
        rows, cols = self.shape(m)
        allowed = {(1, cols), (rows, 1)} | ({(rows, cols)} if full_ok else set())
        if self.shape(v) not in allowed:
            kinds = f"(1, {cols}) or ({rows}, 1)" + (f" or ({rows}, {cols})" if full_ok else "")
            self.fail(f"{v} has shape {self.shape(v)}; for {m} {self.shape(m)} it must be {kinds}")

    def integer_values(self, name, upper):
        """The values of array ``name`` must be integers in ``[0, upper)``."""
        values = self.handler.handler.get_numpy_copy(self.arrays[name].array)
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            self.fail(f"{name} must hold integer values")
        if values.size and (values.min() < 0 or values.max() >= upper):
            self.fail(f"{name} holds values outside [0, {upper}): {values.min()}..{values.max()}")

    def images(self, inputs, window, padding, stride):
        """Check the image arguments; return the output size ``(Ho, Wo)``."""
        self.expect_ndim(inputs, 4)
        self.pair("window", window)
        self.pair("stride", stride)
        self.integer("padding", padding, 0)
        _, h, w, _ = self.shape(inputs)
        size = []
        for extent, k, s, axis in ((h, window[0], stride[0], "H"), (w, window[1], stride[1], "W")):
            if extent + 2 * padding < k:
                self.fail(
                    f"window {window} is larger than the padded {axis} {extent + 2 * padding}"
                )
            size.append((extent + 2 * padding - k) // s + 1)
        return tuple(size)

    # --------------------------------------------------------------- aliasing

    def writes(self, *names, inplace=True):
        """The op writes ``names``; they must not overlap the other arguments.

        Args:
            names: the arrays the op writes.
            inplace: whether a written array may be the very same view as an
                input (elementwise ops); partial overlaps are always refused.
        """
        for name in names:
            out = self.arrays[name].array
            for other, value in self.arrays.items():
                if other == name or not _overlap(out, value.array):
                    continue
                if inplace and other not in names and _same_memory_block(out, value.array):
                    continue
                kind = "overlaps" if inplace else "must not share memory with"
                self.fail(f"{name} {kind} {other}")

    # ----------------------------------------------------------------- finite

    def finite(self):
        """After the call: every array argument must be free of NaN and infinity."""
        for name, value in self.arrays.items():
            if not self.handler.handler.is_fully_finite(value.array):
                self.fail(f"argument {name!r} contains NaN or infinity after the call")


class _DebugPrepared:
    """A prepared matrix of the wrapped handler, with the DebugArray it came from."""

    def __init__(self, inner, source):
        self.inner = inner
        self.source = source
        self.shape = tuple(inner.shape)

    def __repr__(self):
        return f"DebugHandler prepared {self.inner!r}"


class DebugHandler(Handler):
    """Wraps another handler and checks every call.

    Args:
        handler: the handler that does the work (e.g. ``NumpyHandler(np.float64)``).

    Raises (from every op):
        TypeError: an argument is not a DebugArray / number / tuple as required,
            or has the wrong dtype.
        ValueError: shapes do not fit, a value is out of range, an output
            overlaps an input, or an argument holds NaN or infinity after the call.

    The data-moving ops (``allocate``, ``ones``, ``zeros``,
    ``create_from_numpy``, ``set_from_numpy``, ``get_numpy_copy``,
    ``is_fully_finite``) do not check for NaN: the first op that computes
    with such an array does.
    """

    def __init__(self, handler):
        self.handler = handler
        self.dtype = handler.dtype
        self.context = "debug"
        self.array_type = DebugArray
        self.EMPTY = DebugArray(handler.EMPTY)
        super().__init__()

    def __init_from_description__(self, description):
        self.__init__(self.handler)

    def __repr__(self):
        return f"DebugHandler({self.handler!r})"

    @property
    def rnd(self):
        """The random state of the wrapped handler."""
        return self.handler.rnd

    @rnd.setter
    def rnd(self, value):
        if "handler" in self.__dict__:  # not yet set while rebuilt from a description
            self.handler.rnd = value

    def _call(self, op, optional=(), **arrays):
        return _Call(self, op, optional, **arrays)

    def _elementwise(self, op, written, optional=(), **arrays):
        """Check and run an op whose array arguments all have one shape.

        Args:
            op: name of the op; the wrapped handler's op gets the arrays in the
                order given.
            written: the argument the op writes (it may be the very same view
                as an input).
            optional: names of arguments that may be None.
            arrays: argument name -> DebugArray (or None if optional).
        """
        call = self._call(op, optional, **arrays)
        call.same_shape(*arrays)
        call.writes(written)
        getattr(self.handler, op)(*(None if a is None else a.array for a in arrays.values()))
        call.finite()

    def _shape(self, op, shape):
        if not isinstance(shape, (tuple, list)) or not all(_is_int(d) and d >= 0 for d in shape):
            raise TypeError(
                f"DebugHandler.{op}: shape must be a tuple of non-negative ints, got {shape!r}"
            )
        return tuple(int(d) for d in shape)

    # ------------------------------------------------------------------ memory

    def allocate(self, shape):
        return DebugArray(self.handler.allocate(self._shape("allocate", shape)))

    def ones(self, shape):
        return DebugArray(self.handler.ones(self._shape("ones", shape)))

    def zeros(self, shape):
        return DebugArray(self.handler.zeros(self._shape("zeros", shape)))

    def create_from_numpy(self, arr):
        if not isinstance(arr, np.ndarray):
            raise TypeError(
                f"DebugHandler.create_from_numpy: arr must be a numpy array, "
                f"got {type(arr).__name__}"
            )
        return DebugArray(self.handler.create_from_numpy(arr))

    def get_numpy_copy(self, mem):
        self._call("get_numpy_copy", mem=mem)
        result = self.handler.get_numpy_copy(mem.array)
        if not isinstance(result, np.ndarray) or result.shape != mem.shape:
            raise TypeError("DebugHandler.get_numpy_copy: the wrapped handler returned no copy")
        return result

    def set_from_numpy(self, mem, arr):
        call = self._call("set_from_numpy", mem=mem)
        if not isinstance(arr, np.ndarray):
            raise TypeError(
                f"DebugHandler.set_from_numpy: arr must be a numpy array, got {type(arr).__name__}"
            )
        if arr.shape != mem.shape:
            call.fail(f"shapes differ: mem {mem.shape}, arr {arr.shape}")
        self.handler.set_from_numpy(mem.array, arr)

    def copy_to(self, src, dest):
        self._elementwise("copy_to", "dest", src=src, dest=dest)

    def copy_to_if(self, src, dest, cond):
        self._elementwise("copy_to_if", "dest", src=src, dest=dest, cond=cond)

    def fill(self, mem, val):
        call = self._call("fill", mem=mem)
        call.scalar("val", val)
        self.handler.fill(mem.array, val)
        call.finite()

    def fill_if(self, mem, val, cond):
        call = self._call("fill_if", mem=mem, cond=cond)
        call.scalar("val", val)
        call.same_shape("mem", "cond")
        call.writes("mem")
        self.handler.fill_if(mem.array, val, cond.array)
        call.finite()

    def is_fully_finite(self, a):
        self._call("is_fully_finite", a=a)
        return bool(self.handler.is_fully_finite(a.array))

    # ------------------------------------------------------ elementwise: tensors

    def _unary(self, op, a, out):
        self._elementwise(op, "out", a=a, out=out)

    def abs_t(self, a, out):
        self._unary("abs_t", a, out)

    def sign_t(self, a, out):
        self._unary("sign_t", a, out)

    def log_t(self, a, out):
        self._unary("log_t", a, out)

    def sqrt_t(self, a, out):
        self._unary("sqrt_t", a, out)

    def clip_t(self, a, a_min, a_max, out):
        call = self._call("clip_t", a=a, out=out)
        call.scalar("a_min", a_min, finite=False)
        call.scalar("a_max", a_max, finite=False)
        if not a_min <= a_max:
            call.fail(f"a_min ({a_min}) must not exceed a_max ({a_max})")
        call.same_shape("a", "out")
        call.writes("out")
        self.handler.clip_t(a.array, a_min, a_max, out.array)
        call.finite()

    def _binary(self, op, a, b, out):
        self._elementwise(op, "out", a=a, b=b, out=out)

    def add_tt(self, a, b, out):
        self._binary("add_tt", a, b, out)

    def subtract_tt(self, a, b, out):
        self._binary("subtract_tt", a, b, out)

    def mult_tt(self, a, b, out):
        self._binary("mult_tt", a, b, out)

    def mult_add_tt(self, a, b, out):
        self._binary("mult_add_tt", a, b, out)

    def divide_tt(self, a, b, out):
        self._binary("divide_tt", a, b, out)

    def modulo_tt(self, a, b, out):
        self._binary("modulo_tt", a, b, out)

    def add_into_if(self, a, out, cond):
        self._elementwise("add_into_if", "out", a=a, out=out, cond=cond)

    # ------------------------------------------------------ elementwise: scalars

    def _scalar_op(self, op, s, t, out):
        call = self._call(op, t=t, out=out)
        call.scalar("s", s)
        call.same_shape("t", "out")
        call.writes("out")
        getattr(self.handler, op)(s, t.array, out.array)
        call.finite()

    def add_st(self, s, t, out):
        self._scalar_op("add_st", s, t, out)

    def mult_st(self, s, t, out):
        self._scalar_op("mult_st", s, t, out)

    def mult_add_st(self, s, t, out):
        self._scalar_op("mult_add_st", s, t, out)

    # ------------------------------------------- matrix with broadcast vector

    def _matrix_vector(self, op, m, v, out, full_ok=False):
        call = self._call(op, m=m, v=v, out=out)
        call.vector_for("m", "v", full_ok)
        call.same_shape("m", "out")
        call.writes("out")
        getattr(self.handler, op)(m.array, v.array, out.array)
        call.finite()

    def add_mv(self, m, v, out):
        self._matrix_vector("add_mv", m, v, out)

    def subtract_mv(self, m, v, out):
        self._matrix_vector("subtract_mv", m, v, out)

    def mult_mv(self, m, v, out):
        self._matrix_vector("mult_mv", m, v, out, full_ok=True)

    def mult_add_mv(self, m, v, out):
        self._matrix_vector("mult_add_mv", m, v, out, full_ok=True)

    def divide_mv(self, m, v, out):
        self._matrix_vector("divide_mv", m, v, out)

    # ------------------------------------------------- reshaping and indexing

    def broadcast_t(self, a, axis, out):
        call = self._call("broadcast_t", a=a, out=out)
        axis = call.axis("axis", axis, a.ndim)
        if a.shape[axis] != 1:
            call.fail(f"a has shape {a.shape}: axis {axis} must have size 1")
        if out.ndim != a.ndim or any(
            o != s for k, (o, s) in enumerate(zip(out.shape, a.shape)) if k != axis
        ):
            call.fail(f"out {out.shape} must equal a {a.shape} except along axis {axis}")
        call.writes("out", inplace=False)
        self.handler.broadcast_t(a.array, axis, out.array)
        call.finite()

    def merge_tt(self, a, b, out):
        call = self._call("merge_tt", a=a, b=b, out=out)
        self._check_split(call, out, a, b)
        call.writes("out", inplace=False)
        self.handler.merge_tt(a.array, b.array, out.array)
        call.finite()

    def split_add_tt(self, x, out_a, out_b):
        call = self._call("split_add_tt", x=x, out_a=out_a, out_b=out_b)
        self._check_split(call, x, out_a, out_b)
        call.writes("out_a", "out_b", inplace=False)
        self.handler.split_add_tt(x.array, out_a.array, out_b.array)
        call.finite()

    @staticmethod
    def _check_split(call, whole, a, b):
        if not (whole.ndim == a.ndim == b.ndim) or whole.ndim == 0:
            call.fail(
                f"arrays must have the same number (>0) of dimensions: {whole.shape}, "
                f"{a.shape}, {b.shape}"
            )
        expected = a.shape[:-1] + (a.shape[-1] + b.shape[-1],)
        if a.shape[:-1] != b.shape[:-1] or whole.shape != expected:
            call.fail(
                f"shapes {a.shape} and {b.shape} do not concatenate to {whole.shape} "
                "along the last axis"
            )

    def binarize_v(self, v, out):
        call = self._call("binarize_v", v=v, out=out)
        call.expect_ndim("out", 2)
        call.expect_shape("v", (out.shape[0], 1), " (a column of class ids)")
        call.integer_values("v", out.shape[1])
        call.writes("out", inplace=False)
        self.handler.binarize_v(v.array, out.array)
        call.finite()

    def index_m_by_v(self, m, v, out):
        call = self._call("index_m_by_v", m=m, v=v, out=out)
        call.expect_ndim("m", 2)
        call.expect_shape("v", (m.shape[0], 1), " (a column of indices)")
        call.expect_shape("out", (m.shape[0], 1))
        call.integer_values("v", m.shape[1])
        call.writes("out", inplace=False)
        self.handler.index_m_by_v(m.array, v.array, out.array)
        call.finite()

    def index_rows_mv(self, m, v, out):
        call = self._call("index_rows_mv", m=m, v=v, out=out)
        call.expect_ndim("m", 2)
        call.expect_ndim("out", 2)
        call.expect_shape("v", (out.shape[0], 1), " (a column of row ids, one per row of out)")
        call.expect_shape("out", (out.shape[0], m.shape[1]), " (rows as long as those of m)")
        call.integer_values("v", m.shape[0])
        call.writes("out", inplace=False)
        self.handler.index_rows_mv(m.array, v.array, out.array)
        call.finite()

    def scatter_add_rows_mv(self, m, v, out):
        call = self._call("scatter_add_rows_mv", m=m, v=v, out=out)
        call.expect_ndim("m", 2)
        call.expect_ndim("out", 2)
        call.expect_shape("v", (m.shape[0], 1), " (a column of row ids, one per row of m)")
        call.expect_shape("out", (out.shape[0], m.shape[1]), " (rows as long as those of m)")
        call.integer_values("v", out.shape[0])
        call.writes("out", inplace=False)
        self.handler.scatter_add_rows_mv(m.array, v.array, out.array)
        call.finite()

    # ------------------------------------------------------------- reductions

    def sum_t(self, a, axis, out):
        call = self._call("sum_t", a=a, out=out)
        axis = call.axis("axis", axis, a.ndim, allow_none=True)
        if axis is None:
            if out.size != 1:
                call.fail(f"out must have one element for axis=None, got shape {out.shape}")
        else:
            kept = a.shape[:axis] + (1,) + a.shape[axis + 1 :]
            dropped = a.shape[:axis] + a.shape[axis + 1 :]
            if out.shape not in (kept, dropped):
                call.fail(
                    f"out has shape {out.shape}; summing a {a.shape} over axis {axis} "
                    f"gives {kept} or {dropped}"
                )
        call.writes("out", inplace=False)
        self.handler.sum_t(a.array, axis, out.array)
        call.finite()

    # --------------------------------------------------------- linear algebra

    def _dot(self, op, a, b, out, transa, transb):
        call = self._call(op, a=a, b=b, out=out)
        call.flag("transa", transa)
        call.flag("transb", transb)
        for name in ("a", "b", "out"):
            call.expect_ndim(name, 2)
        rows, inner = a.shape[::-1] if transa else a.shape
        inner_b, cols = b.shape[::-1] if transb else b.shape
        if inner != inner_b:
            call.fail(
                f"cannot multiply a {a.shape}{'.T' * transa} by b {b.shape}"
                f"{'.T' * transb}: inner dimensions {inner} != {inner_b}"
            )
        call.expect_shape("out", (rows, cols), " (the shape of the product)")
        call.writes("out", inplace=False)
        getattr(self.handler, op)(a.array, b.array, out.array, transa, transb)
        call.finite()

    def dot_mm(self, a, b, out, transa=False, transb=False):
        self._dot("dot_mm", a, b, out, transa, transb)

    def dot_add_mm(self, a, b, out, transa=False, transb=False):
        self._dot("dot_add_mm", a, b, out, transa, transb)

    def prepare_matrix(self, m, transpose=False):
        call = self._call("prepare_matrix", m=m)
        call.flag("transpose", transpose)
        call.expect_ndim("m", 2)
        call.finite()
        return _DebugPrepared(self.handler.prepare_matrix(m.array, transpose), m)

    def dot_add_blocks(self, a_blocks, prepared, out_blocks):
        where = "DebugHandler.dot_add_blocks"
        if not isinstance(prepared, _DebugPrepared):
            raise TypeError(
                f"{where}: prepared must come from this handler's prepare_matrix, "
                f"got {type(prepared).__name__}"
            )
        arrays = {}
        for label, blocks in (("a_blocks", a_blocks), ("out_blocks", out_blocks)):
            if not isinstance(blocks, (list, tuple)) or not blocks:
                raise TypeError(f"{where}: {label} must be a non-empty list of matrices")
            for i, block in enumerate(blocks):
                arrays[f"{label}[{i}]"] = block
        call = self._call("dot_add_blocks", **arrays, prepared_matrix=prepared.source)
        for name in arrays:
            call.expect_ndim(name, 2)
        rows = {a.shape[0] for a in (*a_blocks, *out_blocks)}
        if len(rows) != 1:
            call.fail(
                f"all blocks need the same number of rows, got {[a.shape for a in a_blocks]} "
                f"and {[a.shape for a in out_blocks]}"
            )
        widths = (sum(a.shape[1] for a in a_blocks), sum(a.shape[1] for a in out_blocks))
        if widths != tuple(prepared.shape):
            call.fail(
                f"blocks of total widths {widths} do not fit the prepared matrix of shape "
                f"{tuple(prepared.shape)}"
            )
        call.writes(*(name for name in arrays if name.startswith("out")), inplace=False)
        self.handler.dot_add_blocks(
            [a.array for a in a_blocks], prepared.inner, [a.array for a in out_blocks]
        )
        call.finite()

    def session(self):
        return self.handler.session()

    def defer(self, job, lane=None):
        # where the wrapped handler would run it (the checks of the job's ops then
        # run there too): the results stay those of the wrapped handler
        if not callable(job):
            raise TypeError(f"DebugHandler.defer: job must be callable, got {type(job).__name__}")
        try:
            hash(lane)
        except TypeError:
            raise TypeError(
                f"DebugHandler.defer: lane must be hashable, got {type(lane).__name__}"
            ) from None
        self.handler.defer(job, lane)

    def finish_deferred(self):
        self.handler.finish_deferred()

    # ------------------------------------------------------------ activations

    def _activation(self, op, x, y):
        self._elementwise(op, "y", x=x, y=y)

    def _derivative(self, op, x, y, dy, dx):
        self._elementwise(op, "dx", optional=("x",), x=x, y=y, dy=dy, dx=dx)

    def sigmoid(self, x, y):
        self._activation("sigmoid", x, y)

    def sigmoid_deriv(self, x, y, dy, dx):
        self._derivative("sigmoid_deriv", x, y, dy, dx)

    def tanh(self, x, y):
        self._activation("tanh", x, y)

    def tanh_deriv(self, x, y, dy, dx):
        self._derivative("tanh_deriv", x, y, dy, dx)

    def rel(self, x, y):
        self._activation("rel", x, y)

    def rel_deriv(self, x, y, dy, dx):
        self._derivative("rel_deriv", x, y, dy, dx)

    def el(self, x, y):
        self._activation("el", x, y)

    def el_deriv(self, x, y, dy, dx):
        self._derivative("el_deriv", x, y, dy, dx)

    def softmax_m(self, m, out):
        call = self._call("softmax_m", m=m, out=out)
        call.expect_ndim("m", 2)
        call.same_shape("m", "out")
        call.writes("out")
        self.handler.softmax_m(m.array, out.array)
        call.finite()

    # ----------------------------------------------------------------- images

    def conv2d_forward_batch(self, inputs, weights, bias, outputs, padding, stride):
        call = self._call(
            "conv2d_forward_batch", inputs=inputs, weights=weights, bias=bias, outputs=outputs
        )
        self._check_conv(call, padding, stride)
        call.writes("outputs", inplace=False)
        self.handler.conv2d_forward_batch(
            inputs.array, weights.array, bias.array, outputs.array, padding, stride
        )
        call.finite()

    def conv2d_backward_batch(
        self, inputs, weights, padding, stride, in_deltas, out_deltas, weight_deltas, bias_deltas
    ):
        call = self._call(
            "conv2d_backward_batch",
            optional=("in_deltas",),  # None: the input deltas are not computed
            inputs=inputs,
            weights=weights,
            in_deltas=in_deltas,
            out_deltas=out_deltas,
            weight_deltas=weight_deltas,
            bias_deltas=bias_deltas,
        )
        self._check_conv(call, padding, stride, outputs="out_deltas", bias="bias_deltas")
        written = ("weight_deltas", "bias_deltas")
        if in_deltas is not None:
            call.expect_shape("in_deltas", inputs.shape, " (the shape of inputs)")
            written = ("in_deltas", *written)
        call.expect_shape("weight_deltas", weights.shape, " (the shape of weights)")
        call.writes(*written, inplace=False)
        self.handler.conv2d_backward_batch(
            inputs.array,
            weights.array,
            padding,
            stride,
            None if in_deltas is None else in_deltas.array,
            out_deltas.array,
            weight_deltas.array,
            bias_deltas.array,
        )
        call.finite()

    @staticmethod
    def _check_conv(call, padding, stride, outputs="outputs", bias="bias"):
        call.expect_ndim("inputs", 4)
        call.expect_ndim("weights", 4)
        n, _, _, c = call.shape("inputs")
        f, kh, kw, wc = call.shape("weights")
        if wc != c:
            call.fail(
                f"weights {call.shape('weights')} have {wc} channels, inputs "
                f"{call.shape('inputs')} have {c}"
            )
        ho, wo = call.images("inputs", (kh, kw), padding, stride)
        call.expect_shape(bias, (f,), " (one per filter)")
        call.expect_shape(outputs, (n, ho, wo, f), f" (padding {padding}, stride {stride})")

    def maxpool2d_forward_batch(self, inputs, window, outputs, padding, stride, argmax):
        call = self._call("maxpool2d_forward_batch", inputs=inputs, outputs=outputs, argmax=argmax)
        self._check_pool(call, window, padding, stride, ("outputs", "argmax"))
        call.writes("outputs", "argmax", inplace=False)
        self.handler.maxpool2d_forward_batch(
            inputs.array, window, outputs.array, padding, stride, argmax.array
        )
        call.finite()

    def maxpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, argmax, in_deltas, out_deltas
    ):
        call = self._call(
            "maxpool2d_backward_batch",
            inputs=inputs,
            outputs=outputs,
            argmax=argmax,
            in_deltas=in_deltas,
            out_deltas=out_deltas,
        )
        self._check_pool(call, window, padding, stride, ("outputs", "argmax", "out_deltas"))
        call.expect_shape("in_deltas", inputs.shape, " (the shape of inputs)")
        call.writes("in_deltas", inplace=False)
        self.handler.maxpool2d_backward_batch(
            inputs.array,
            window,
            outputs.array,
            padding,
            stride,
            argmax.array,
            in_deltas.array,
            out_deltas.array,
        )
        call.finite()

    def avgpool2d_forward_batch(self, inputs, window, outputs, padding, stride):
        call = self._call("avgpool2d_forward_batch", inputs=inputs, outputs=outputs)
        self._check_pool(call, window, padding, stride, ("outputs",))
        call.writes("outputs", inplace=False)
        self.handler.avgpool2d_forward_batch(inputs.array, window, outputs.array, padding, stride)
        call.finite()

    def avgpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, in_deltas, out_deltas
    ):
        call = self._call(
            "avgpool2d_backward_batch",
            inputs=inputs,
            outputs=outputs,
            in_deltas=in_deltas,
            out_deltas=out_deltas,
        )
        self._check_pool(call, window, padding, stride, ("outputs", "out_deltas"))
        call.expect_shape("in_deltas", inputs.shape, " (the shape of inputs)")
        call.writes("in_deltas", inplace=False)
        self.handler.avgpool2d_backward_batch(
            inputs.array, window, outputs.array, padding, stride, in_deltas.array, out_deltas.array
        )
        call.finite()

    @staticmethod
    def _check_pool(call, window, padding, stride, output_names):
        ho, wo = call.images("inputs", window, padding, stride)
        n, _, _, c = call.shape("inputs")
        for name in output_names:
            call.expect_shape(name, (n, ho, wo, c), f" (padding {padding}, stride {stride})")

    # ------------------------------------------------------------- randomness

    def fill_gaussian(self, mean, std, out):
        call = self._call("fill_gaussian", out=out)
        call.scalar("mean", mean)
        call.scalar("std", std)
        if std < 0:
            call.fail(f"std must be >= 0, got {std}")
        self.handler.fill_gaussian(mean, std, out.array)
        call.finite()

    def generate_probability_mask(self, mask, probability):
        call = self._call("generate_probability_mask", mask=mask)
        call.scalar("probability", probability)
        if not 0 <= probability <= 1:
            call.fail(f"probability must be in [0, 1], got {probability}")
        self.handler.generate_probability_mask(mask.array, probability)
        call.finite()
