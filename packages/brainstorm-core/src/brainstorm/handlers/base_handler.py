"""The handler op table: every piece of arithmetic a layer may ask for.

Layers own no memory and do no maths themselves: they call the operations of a
:class:`Handler`, which decides where the arrays live (CPU, GPU, ...) and how the
work is done. This module is the documented table of those operations. A
backend subclasses :class:`Handler` and overrides the ops; ops that can be
written in terms of other ops (``ones``, ``dot_add_mm``, the activation
derivatives, ...) have a generic implementation here, which a backend may
override when it can do better.

Conventions:
    * Op names end in the kinds of their arguments: ``s`` scalar, ``v`` vector
      (a 2-D array with one dimension of size 1), ``m`` matrix, ``t`` tensor of
      any shape. ``add_mv`` adds a matrix and a vector.
    * Every op writes its result into a given array (``out``, ``y``, ``dx``...)
      and returns ``None`` unless documented otherwise. ``out`` may be the very
      same array as an input of an elementwise op (in-place), but must not
      partially overlap one.
    * Arrays may be non-contiguous views (the network layout hands out slices
      of the last axis of bigger buffers); every op must accept them, as inputs
      and as outputs.
    * Images are NHWC: ``inputs`` ``(N, H, W, C)``, convolution weights
      ``(F, kh, kw, C)``, outputs ``(N, Ho, Wo, F)`` with
      ``Ho = (H + 2 * padding - kh) // sh + 1``; ``padding`` is a symmetric int,
      ``window`` and ``stride`` are ``(rows, columns)`` tuples.

The conformance suite :mod:`brainstorm.testing.handler_conformance` checks
every op of a handler against a float64 NumPy reference.
"""

from __future__ import annotations

import contextlib

from brainstorm import randomness
from brainstorm.describable import Describable

__all__ = ["Handler", "PreparedMatrix", "block_pairs", "block_widths"]


def _abstract(handler, op):
    return NotImplementedError(f"{type(handler).__name__} does not implement {op}()")


class PreparedMatrix:
    """A matrix made ready by :meth:`Handler.prepare_matrix` for :meth:`Handler.dot_add_blocks`.

    The generic form just keeps the matrix; handlers may subclass it to keep
    a copy in a faster layout.

    Args:
        matrix: the handler array ``(K, N)``, or ``(N, K)`` if ``transpose``.
        transpose: bool, whether the prepared matrix is the transpose of ``matrix``.

    Attributes:
        matrix: as given.
        transpose: as given.
        shape: ``(K, N)``, the shape of the matrix it stands for.
    """

    def __init__(self, matrix, transpose=False):
        if len(matrix.shape) != 2:
            raise ValueError(f"prepare_matrix: needs a matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.transpose = bool(transpose)
        rows, cols = (int(d) for d in matrix.shape)
        self.shape = (cols, rows) if self.transpose else (rows, cols)

    def block(self, rows, cols):
        """The block ``P[rows, cols]`` (two slices) as ``(array, transposed)``."""
        if self.transpose:
            return self.matrix[cols, rows], True
        return self.matrix[rows, cols], False

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, transpose={self.transpose})"


def check_argmax_range(op, image_shape, dtype):
    """ValueError unless every in-image index of ``image_shape`` ``(H, W, C)`` is
    exact in ``dtype``, in which max pooling stores its argmax (as a float).

    Args:
        op (str): the op, for the message.
        image_shape (tuple): ``(H, W, C)`` of one image.
        dtype: the handler's float type.
    """
    import numpy as np

    size = int(np.prod(image_shape))
    limit = 2 ** (np.finfo(dtype).nmant + 1)
    if size > limit:
        h, w, c = image_shape
        raise ValueError(
            f"{op}: an image of {h}x{w}x{c} = {size} values is too large for max pooling "
            f"in {np.dtype(dtype).name}: its argmax indices are stored as "
            f"{np.dtype(dtype).name} and exact only up to {limit} values per image; "
            f"use a float64 handler, or smaller images or fewer channels"
        )


def block_widths(a_blocks, prepared, out_blocks):
    """``(widths of a_blocks, widths of out_blocks)`` of a ``dot_add_blocks`` call.

    Raises:
        ValueError: the blocks have different numbers of rows, or their widths
            do not fit the prepared matrix.
    """
    rows = {int(m.shape[0]) for m in (*a_blocks, *out_blocks)}
    if len(rows) > 1:
        raise ValueError(
            "dot_add_blocks: the blocks have different numbers of rows: "
            f"{[tuple(m.shape) for m in a_blocks]} and {[tuple(m.shape) for m in out_blocks]}"
        )
    k_sizes = [int(a.shape[1]) for a in a_blocks]
    n_sizes = [int(out.shape[1]) for out in out_blocks]
    if (sum(k_sizes), sum(n_sizes)) != tuple(prepared.shape):
        raise ValueError(
            f"dot_add_blocks: blocks of widths {k_sizes} and {n_sizes} do not fit a "
            f"prepared matrix of shape {tuple(prepared.shape)}"
        )
    return k_sizes, n_sizes


def block_pairs(a_blocks, prepared, out_blocks):
    """The products that make up ``dot_add_blocks(a_blocks, prepared, out_blocks)``.

    Yields ``(a_i, block, transposed, out_j)`` for every pair: ``out_j +=
    a_i @ P_ij``, with ``P_ij = block.T`` if ``transposed`` else ``block``
    (a view of the prepared :class:`PreparedMatrix`).

    Raises:
        ValueError: see :func:`block_widths`.
    """
    k_sizes, n_sizes = block_widths(a_blocks, prepared, out_blocks)
    n0 = 0
    for out, n_size in zip(out_blocks, n_sizes):
        k0 = 0
        for a, k_size in zip(a_blocks, k_sizes):
            block, transposed = prepared.block(slice(k0, k0 + k_size), slice(n0, n0 + n_size))
            yield a, block, transposed, out
            k0 += k_size
        n0 += n_size


class Handler(Describable):
    """Base class of all handlers: the documented table of operations.

    Attributes:
        dtype: the NumPy dtype of the handler's arrays.
        context: what the arrays live in (``'numpy'`` for the CPU handler).
        EMPTY: an empty array of this handler (a placeholder for "no array").
        rnd: the :class:`~brainstorm.randomness.RandomState` used by the random
            ops; ``None`` (when set) derives it from ``global_rnd``, again after
            each reseeding.
        array_type: the class of the handler's arrays.
        act_func: activation name -> ``f(x, y)`` writing ``y = f(x)``.
        act_func_deriv: activation name -> ``f(x, y, dy, dx)`` writing
            ``dx = dy * f'(x)`` (computed from the outputs ``y``).

    Subclasses set the attributes above in their ``__init__`` and then call
    ``super().__init__()``, which builds the activation tables.
    """

    __undescribed__ = {
        "dtype",
        "context",
        "EMPTY",
        "rnd",
        "array_type",
        "act_func",
        "act_func_deriv",
        "_rnd",
        "_rnd_generation",
    }

    #: The activation functions: name -> (function op, derivative op).
    #: Every derivative is written from the outputs ``y``:
    #:
    #: ========  ==============================  ===================
    #: name      y = f(x)                        f'(x)
    #: ========  ==============================  ===================
    #: sigmoid   1 / (1 + exp(-x))               y * (1 - y)
    #: tanh      tanh(x)                         1 - y**2
    #: rel       max(x, 0)                       1 if y > 0 else 0
    #: el        x if x > 0 else exp(x) - 1      min(y + 1, 1)
    #: linear    x                               1
    #: ========  ==============================  ===================
    ACTIVATIONS = {
        "sigmoid": ("sigmoid", "sigmoid_deriv"),
        "tanh": ("tanh", "tanh_deriv"),
        "rel": ("rel", "rel_deriv"),
        "el": ("el", "el_deriv"),
        "linear": ("_linear", "_linear_deriv"),
    }

    def __init__(self):
        self.act_func = {name: getattr(self, f) for name, (f, _) in self.ACTIVATIONS.items()}
        self.act_func_deriv = {name: getattr(self, d) for name, (_, d) in self.ACTIVATIONS.items()}

    @property
    def rnd(self):
        """The random state of the random ops.

        Assign a :class:`~brainstorm.randomness.RandomState` to fix it, or
        ``None`` to derive it from ``global_rnd`` (again after each reseeding).
        """
        # _rnd_generation: None for a fixed state, else the global_rnd
        # generation the state was derived at (-1: not derived yet)
        if self._rnd_generation is not None:
            current = randomness.global_rnd.generation
            if self._rnd_generation != current:
                self._rnd = randomness.global_rnd.create_random_state()
                self._rnd_generation = current
        return self._rnd

    @rnd.setter
    def rnd(self, value):
        self._rnd = value
        self._rnd_generation = None if value is not None else -1

    # ------------------------------------------------------------------ memory

    def allocate(self, shape):
        """Allocate a new array (filled with zeros by the built-in handlers).

        Args:
            shape: tuple of non-negative ints.

        Returns:
            A new array of this handler with the given shape and ``dtype``.
        """
        raise _abstract(self, "allocate")

    def ones(self, shape):
        """Allocate a new array filled with ones.

        Args:
            shape: tuple of non-negative ints.

        Returns:
            A new array of ones.
        """
        mem = self.allocate(shape)
        self.fill(mem, 1.0)
        return mem

    def zeros(self, shape):
        """Allocate a new array filled with zeros.

        Args:
            shape: tuple of non-negative ints.

        Returns:
            A new array of zeros.
        """
        mem = self.allocate(shape)
        self.fill(mem, 0.0)
        return mem

    def create_from_numpy(self, arr):
        """Create a new handler array holding a copy of a NumPy array.

        Args:
            arr: a ``numpy.ndarray`` (any dtype; converted to ``dtype``).

        Returns:
            A new array of this handler with the same shape and values.
        """
        mem = self.allocate(arr.shape)
        self.set_from_numpy(mem, arr)
        return mem

    def get_numpy_copy(self, mem):
        """Copy a handler array into a new NumPy array.

        Args:
            mem: array of this handler.

        Returns:
            A ``numpy.ndarray`` with the same shape and values (dtype ``dtype``),
            not sharing memory with ``mem``.
        """
        raise _abstract(self, "get_numpy_copy")

    def set_from_numpy(self, mem, arr):
        """Overwrite the contents of a handler array with a NumPy array.

        Args:
            mem: array of this handler (written).
            arr: ``numpy.ndarray`` of the same shape (converted to ``dtype``).
        """
        raise _abstract(self, "set_from_numpy")

    def copy_to(self, src, dest):
        """Copy the values of one array into another: ``dest = src``.

        Args:
            src: array to read.
            dest: array of the same shape (written).
        """
        raise _abstract(self, "copy_to")

    def copy_to_if(self, src, dest, cond):
        """Copy where a condition holds: ``dest[i] = src[i]`` where ``cond[i] != 0``.

        Args:
            src: array to read.
            dest: array of the same shape (written where ``cond`` is non-zero).
            cond: array of the same shape.
        """
        raise _abstract(self, "copy_to_if")

    def fill(self, mem, val):
        """Set every element of an array to a scalar.

        Args:
            mem: array (written).
            val: scalar.
        """
        raise _abstract(self, "fill")

    def fill_if(self, mem, val, cond):
        """Set elements to a scalar where a condition holds.

        Args:
            mem: array (written where ``cond`` is non-zero).
            val: scalar.
            cond: array of the same shape.
        """
        raise _abstract(self, "fill_if")

    def is_fully_finite(self, a):
        """Check that an array holds neither NaN nor infinity.

        Args:
            a: array.

        Returns:
            bool: ``True`` if every element is finite.
        """
        raise _abstract(self, "is_fully_finite")

    # ------------------------------------------------------ elementwise: tensors

    def abs_t(self, a, out):
        """Absolute value: ``out = |a|``.

        Args:
            a: array.
            out: array of the same shape (written).
        """
        raise _abstract(self, "abs_t")

    def sign_t(self, a, out):
        """Sign: ``out = -1, 0 or 1`` for negative, zero and positive elements.

        Args:
            a: array.
            out: array of the same shape (written).
        """
        raise _abstract(self, "sign_t")

    def log_t(self, a, out):
        """Natural logarithm: ``out = log(a)``.

        Args:
            a: array.
            out: array of the same shape (written).
        """
        raise _abstract(self, "log_t")

    def sqrt_t(self, a, out):
        """Square root: ``out = sqrt(a)``.

        Args:
            a: array.
            out: array of the same shape (written).
        """
        raise _abstract(self, "sqrt_t")

    def clip_t(self, a, a_min, a_max, out):
        """Clip the values into an interval: ``out = min(max(a, a_min), a_max)``.

        Args:
            a: array.
            a_min: scalar lower bound.
            a_max: scalar upper bound, ``a_max >= a_min``.
            out: array of the same shape (written).
        """
        raise _abstract(self, "clip_t")

    def add_tt(self, a, b, out):
        """Elementwise sum: ``out = a + b``.

        Args:
            a: array.
            b: array of the same shape.
            out: array of the same shape (written).
        """
        raise _abstract(self, "add_tt")

    def subtract_tt(self, a, b, out):
        """Elementwise difference: ``out = a - b``.

        Args:
            a: array.
            b: array of the same shape.
            out: array of the same shape (written).
        """
        raise _abstract(self, "subtract_tt")

    def mult_tt(self, a, b, out):
        """Elementwise product: ``out = a * b``.

        Args:
            a: array.
            b: array of the same shape.
            out: array of the same shape (written).
        """
        raise _abstract(self, "mult_tt")

    def mult_add_tt(self, a, b, out):
        """Add an elementwise product: ``out += a * b``.

        Args:
            a: array.
            b: array of the same shape.
            out: array of the same shape (read and written).
        """
        product = self.allocate(out.shape)
        self.mult_tt(a, b, product)
        self.add_tt(product, out, out)

    def divide_tt(self, a, b, out):
        """Elementwise quotient: ``out = a / b``.

        Args:
            a: array.
            b: array of the same shape.
            out: array of the same shape (written).
        """
        raise _abstract(self, "divide_tt")

    def modulo_tt(self, a, b, out):
        """Elementwise remainder with the sign of ``a`` (C ``fmod``): ``out = fmod(a, b)``.

        Args:
            a: array.
            b: array of the same shape.
            out: array of the same shape (written).
        """
        raise _abstract(self, "modulo_tt")

    def add_into_if(self, a, out, cond):
        """Add where a condition holds: ``out[i] += a[i]`` where ``cond[i] != 0``.

        Args:
            a: array.
            out: array of the same shape (read and written).
            cond: array of the same shape.
        """
        raise _abstract(self, "add_into_if")

    # ------------------------------------------------------ elementwise: scalars

    def add_st(self, s, t, out):
        """Add a scalar: ``out = t + s``.

        Args:
            s: scalar.
            t: array.
            out: array of the same shape (written).
        """
        raise _abstract(self, "add_st")

    def mult_st(self, s, t, out):
        """Multiply by a scalar: ``out = s * t``.

        Args:
            s: scalar.
            t: array.
            out: array of the same shape (written).
        """
        raise _abstract(self, "mult_st")

    def mult_add_st(self, s, t, out):
        """Add a scaled array: ``out += s * t``.

        Args:
            s: scalar.
            t: array.
            out: array of the same shape (read and written).
        """
        product = self.allocate(out.shape)
        self.mult_st(s, t, product)
        self.add_tt(product, out, out)

    # ------------------------------------------- matrix with broadcast vector

    def add_mv(self, m, v, out):
        """Add a vector to every row or column of a matrix: ``out = m + v``.

        Args:
            m: matrix ``(M, N)``.
            v: vector ``(1, N)`` (added to every row) or ``(M, 1)`` (every column).
            out: matrix ``(M, N)`` (written).
        """
        raise _abstract(self, "add_mv")

    def subtract_mv(self, m, v, out):
        """Subtract a vector from every row or column of a matrix: ``out = m - v``.

        Args:
            m: matrix ``(M, N)``.
            v: vector ``(1, N)`` or ``(M, 1)``.
            out: matrix ``(M, N)`` (written).
        """
        raise _abstract(self, "subtract_mv")

    def mult_mv(self, m, v, out):
        """Multiply every row or column of a matrix by a vector: ``out = m * v``.

        Args:
            m: matrix ``(M, N)``.
            v: vector ``(1, N)`` or ``(M, 1)``, or a matrix ``(M, N)``.
            out: matrix ``(M, N)`` (written).
        """
        raise _abstract(self, "mult_mv")

    def mult_add_mv(self, m, v, out):
        """Add a matrix multiplied by a broadcast vector: ``out += m * v``.

        Args:
            m: matrix ``(M, N)``.
            v: vector ``(1, N)`` or ``(M, 1)``, or a matrix ``(M, N)``.
            out: matrix ``(M, N)`` (read and written).
        """
        product = self.allocate(out.shape)
        self.mult_mv(m, v, product)
        self.add_tt(product, out, out)

    def divide_mv(self, m, v, out):
        """Divide every row or column of a matrix by a vector: ``out = m / v``.

        Args:
            m: matrix ``(M, N)``.
            v: vector ``(1, N)`` or ``(M, 1)``.
            out: matrix ``(M, N)`` (written).
        """
        raise _abstract(self, "divide_mv")

    # ------------------------------------------------- reshaping and indexing

    def broadcast_t(self, a, axis, out):
        """Repeat an array along one of its size-1 axes.

        Args:
            a: array with ``a.shape[axis] == 1``.
            axis: int, the axis to repeat along.
            out: array with ``a``'s shape except along ``axis`` (written).
        """
        raise _abstract(self, "broadcast_t")

    def merge_tt(self, a, b, out):
        """Concatenate two arrays along their last axis.

        Args:
            a: array ``(..., Na)``.
            b: array ``(..., Nb)`` with the same leading dimensions.
            out: array ``(..., Na + Nb)`` (written).
        """
        raise _abstract(self, "merge_tt")

    def split_add_tt(self, x, out_a, out_b):
        """Split an array along its last axis and add the parts into two arrays.

        The inverse (for deltas) of :meth:`merge_tt`:
        ``out_a += x[..., :Na]`` and ``out_b += x[..., Na:]``.

        Args:
            x: array ``(..., Na + Nb)``.
            out_a: array ``(..., Na)`` (read and written).
            out_b: array ``(..., Nb)`` (read and written).
        """
        raise _abstract(self, "split_add_tt")

    def binarize_v(self, v, out):
        """One-hot encode a column of class ids.

        Args:
            v: vector ``(N, 1)`` of integer class ids in ``[0, K)``.
            out: matrix ``(N, K)`` (written): ``out[i, j] = 1 if j == v[i, 0] else 0``.
        """
        raise _abstract(self, "binarize_v")

    def index_m_by_v(self, m, v, out):
        """Pick one element of every row of a matrix: ``out[i, 0] = m[i, v[i, 0]]``.

        Args:
            m: matrix ``(N, K)``.
            v: vector ``(N, 1)`` of integer column indices in ``[0, K)``.
            out: vector ``(N, 1)`` (written).
        """
        raise _abstract(self, "index_m_by_v")

    def index_rows_mv(self, m, v, out):
        """Gather rows of a matrix: ``out[i, :] = m[v[i, 0], :]``.

        The forward pass of an embedding lookup. Row ids may repeat.

        Args:
            m: matrix ``(K, N)`` (the table).
            v: vector ``(M, 1)`` of integer row ids in ``[0, K)``, stored as floats.
            out: matrix ``(M, N)`` (written); must not overlap ``m`` or ``v``.
        """
        raise _abstract(self, "index_rows_mv")

    def scatter_add_rows_mv(self, m, v, out):
        """Add rows of a matrix into the rows named by a vector: ``out[v[i, 0], :] += m[i, :]``.

        The backward pass of :meth:`index_rows_mv`. Rows with the same id
        accumulate (every ``i`` contributes, as ``numpy.add.at`` does); rows of
        ``out`` named by no id stay unchanged.

        Args:
            m: matrix ``(M, N)`` (the rows to add).
            v: vector ``(M, 1)`` of integer row ids in ``[0, K)``, stored as floats.
            out: matrix ``(K, N)`` (read and written); must not overlap ``m`` or ``v``.
        """
        raise _abstract(self, "scatter_add_rows_mv")

    # ------------------------------------------------------------- reductions

    def sum_t(self, a, axis, out):
        """Sum over one axis or over all elements.

        Args:
            a: array of any number of dimensions.
            axis: int (negative counts from the end), or ``None`` for all elements.
            out: array (written) with the reduced shape: ``a``'s shape with
                ``axis`` removed or set to 1; for ``axis=None`` any shape of size 1.
        """
        raise _abstract(self, "sum_t")

    # --------------------------------------------------------- linear algebra

    def dot_mm(self, a, b, out, transa=False, transb=False):
        """Matrix product: ``out = op(a) @ op(b)`` with ``op`` transposing on request.

        Args:
            a: matrix ``(M, K)``, or ``(K, M)`` if ``transa``.
            b: matrix ``(K, N)``, or ``(N, K)`` if ``transb``.
            out: matrix ``(M, N)`` (written); must not overlap ``a`` or ``b``.
            transa: bool, use the transpose of ``a``.
            transb: bool, use the transpose of ``b``.
        """
        raise _abstract(self, "dot_mm")

    def dot_add_mm(self, a, b, out, transa=False, transb=False):
        """Add a matrix product: ``out += op(a) @ op(b)``.

        Args:
            a: matrix ``(M, K)``, or ``(K, M)`` if ``transa``.
            b: matrix ``(K, N)``, or ``(N, K)`` if ``transb``.
            out: matrix ``(M, N)`` (read and written); must not overlap ``a`` or ``b``.
            transa: bool, use the transpose of ``a``.
            transb: bool, use the transpose of ``b``.
        """
        product = self.allocate(out.shape)
        self.dot_mm(a, b, product, transa, transb)
        self.add_tt(product, out, out)

    def session(self):
        """A context manager around a stretch of work, such as one pass of a network.

        :meth:`~brainstorm.structure.network.Network.forward_pass`,
        :meth:`~brainstorm.structure.network.Network.backward_pass` and the
        trainer's parameter updates run inside one; sessions nest. A handler
        may get resources ready for the ops that follow: the NumpyHandler
        keeps its own threads spinning for work and splits large matrix
        products between them (see :doc:`/performance`). The generic
        implementation does nothing.

        Example:
            >>> from brainstorm.handlers import NumpyHandler
            >>> h = NumpyHandler()
            >>> with h.session():
            ...     pass  # handler ops here
        """
        return contextlib.nullcontext(self)

    def defer(self, job, lane=None):
        """Run ``job()``, a function of handler operations, now or alongside what follows.

        A layer hands over work whose results it needs only later (the
        recurrent layers: the weight gradients of the time steps done so far,
        while the recurrence goes on), then calls :meth:`finish_deferred`
        before it reads them. The NumpyHandler runs such jobs on a thread of
        its session that would otherwise wait (see :doc:`/performance`); the
        generic implementation runs the job at once.

        Jobs of one ``lane`` (any hashable; None: a lane of its own) run in
        the order they were deferred and one at a time; jobs of different
        lanes may run at the same time. Until :meth:`finish_deferred`, a job
        may write only what nothing else reads or writes (save later jobs of
        its lane), and it must not draw random numbers; a job that defers a
        job runs that one at once. An exception raised by a job that ran at
        once comes from :meth:`defer` itself, otherwise from
        :meth:`finish_deferred` (or at the end of the session, unless the
        session ends by an exception of its own).

        Args:
            job: a callable without arguments.
            lane: the job's lane.
        """
        job()

    def finish_deferred(self):
        """Return once every job passed to :meth:`defer` has run.

        Raises:
            Exception: the first exception raised by a deferred job.
        """

    def prepare_matrix(self, m, transpose=False):
        """Make a matrix ready to be the right operand of many :meth:`dot_add_blocks`.

        A handler may copy the matrix into the order its products read fastest
        (NumpyHandler packs it for its BLAS's kernel once instead of in every
        product), so the result stands for the values ``m`` holds now: prepare
        it again after ``m`` changed. The recurrent layers prepare their
        recurrent weights once per pass and use them in every time step.

        Args:
            m: matrix ``(K, N)``, or ``(N, K)`` if ``transpose``.
            transpose: bool, prepare the transpose of ``m``.

        Returns:
            PreparedMatrix: an object for this handler's :meth:`dot_add_blocks`
            (the generic implementation keeps ``m`` itself).
        """
        return PreparedMatrix(m, transpose)

    def dot_add_blocks(self, a_blocks, prepared, out_blocks):
        """Add products with a prepared matrix, blockwise: ``out_j += sum_i a_i @ P_ij``.

        Think of ``A = [a_0 | a_1 | ...]`` and ``OUT = [out_0 | out_1 | ...]``
        as matrices made of column blocks that live in separate arrays; this
        computes ``OUT += A @ P``, with ``P_ij`` the block of ``P`` whose rows
        belong to ``a_i`` and whose columns belong to ``out_j``. An LSTM step,
        for example, adds ``y_prev @ R^T`` to the four gate pre-activations
        ``[Za | Ia | Fa | Oa]``, and in the backward pass adds
        ``[dZa | dIa | dFa | dOa] @ R`` to the output deltas.

        Args:
            a_blocks: list of matrices ``(B, K_i)`` with ``sum K_i = K``.
            prepared: a :class:`PreparedMatrix` ``(K, N)`` from this handler's
                :meth:`prepare_matrix`.
            out_blocks: list of matrices ``(B, N_j)`` with ``sum N_j = N``
                (read and written); they must not overlap each other, the
                ``a_blocks`` or the prepared matrix.
        """
        for a, block, transposed, out in block_pairs(a_blocks, prepared, out_blocks):
            self.dot_add_mm(a, block, out, transb=transposed)

    # ------------------------------------------------------------ activations

    def sigmoid(self, x, y):
        """Logistic sigmoid ``y = 1 / (1 + exp(-x))``, computed without overflow.

        Args:
            x: array.
            y: array of the same shape (written).
        """
        raise _abstract(self, "sigmoid")

    def sigmoid_deriv(self, x, y, dy, dx):
        """Backpropagate through the sigmoid: ``dx = dy * y * (1 - y)``.

        Args:
            x: inputs of the sigmoid (unused: the derivative follows from ``y``).
            y: outputs of the sigmoid.
            dy: deltas of the outputs.
            dx: array of the same shape (written with the deltas of the inputs).
        """
        factor = self.allocate(y.shape)
        self.mult_st(-1.0, y, factor)
        self.add_st(1.0, factor, factor)
        self.mult_tt(y, factor, factor)
        self.mult_tt(dy, factor, dx)

    def tanh(self, x, y):
        """Hyperbolic tangent ``y = tanh(x)``.

        Args:
            x: array.
            y: array of the same shape (written).
        """
        raise _abstract(self, "tanh")

    def tanh_deriv(self, x, y, dy, dx):
        """Backpropagate through tanh: ``dx = dy * (1 - y**2)``.

        Args:
            x: inputs of tanh (unused: the derivative follows from ``y``).
            y: outputs of tanh.
            dy: deltas of the outputs.
            dx: array of the same shape (written with the deltas of the inputs).
        """
        factor = self.allocate(y.shape)
        self.mult_tt(y, y, factor)
        self.mult_st(-1.0, factor, factor)
        self.add_st(1.0, factor, factor)
        self.mult_tt(dy, factor, dx)

    def rel(self, x, y):
        """Rectified linear ``y = max(x, 0)``.

        Args:
            x: array.
            y: array of the same shape (written).
        """
        raise _abstract(self, "rel")

    def rel_deriv(self, x, y, dy, dx):
        """Backpropagate through the rectifier: ``dx = dy * (y > 0)``.

        Args:
            x: inputs of the rectifier (unused: the derivative follows from ``y``).
            y: outputs of the rectifier.
            dy: deltas of the outputs.
            dx: array of the same shape (written with the deltas of the inputs).
        """
        factor = self.allocate(y.shape)
        self.sign_t(y, factor)  # y >= 0, so its sign is the indicator y > 0
        self.mult_tt(dy, factor, dx)

    def el(self, x, y):
        """Exponential linear unit (alpha 1): ``y = x if x > 0 else exp(x) - 1``.

        Args:
            x: array.
            y: array of the same shape (written).
        """
        raise _abstract(self, "el")

    def el_deriv(self, x, y, dy, dx):
        """Backpropagate through the ELU: ``dx = dy * (y + 1 if x < 0 else 1)``.

        Since ``y + 1 = exp(x) < 1`` exactly where ``x < 0``, the factor is
        ``min(y + 1, 1)``.

        Args:
            x: inputs of the ELU (unused: the derivative follows from ``y``).
            y: outputs of the ELU.
            dy: deltas of the outputs.
            dx: array of the same shape (written with the deltas of the inputs).
        """
        factor = self.allocate(y.shape)
        self.add_st(1.0, y, factor)
        self.clip_t(factor, 0.0, 1.0, factor)
        self.mult_tt(dy, factor, dx)

    def _linear(self, x, y):
        self.copy_to(x, y)

    def _linear_deriv(self, x, y, dy, dx):
        self.copy_to(dy, dx)

    def softmax_m(self, m, out):
        """Softmax of every row of a matrix (computed from ``m - max(m)`` per row).

        Args:
            m: matrix ``(N, K)``.
            out: matrix ``(N, K)`` (written); every row sums to one.
        """
        raise _abstract(self, "softmax_m")

    # ----------------------------------------------------------------- images

    def conv2d_forward_batch(self, inputs, weights, bias, outputs, padding, stride):
        """2-D convolution (cross-correlation) of a batch of NHWC images.

        ``outputs[n, y, x, f] = bias[f] + sum over (i, j, c) of
        weights[f, i, j, c] * padded[n, y * sh + i, x * sw + j, c]``, where
        ``padded`` is ``inputs`` with ``padding`` zeros around each image.

        Args:
            inputs: images ``(N, H, W, C)``.
            weights: filters ``(F, kh, kw, C)``.
            bias: ``(F,)``.
            outputs: ``(N, Ho, Wo, F)`` (written).
            padding: int, zeros added on every side of each image.
            stride: ``(sh, sw)`` tuple of ints.
        """
        raise _abstract(self, "conv2d_forward_batch")

    def conv2d_backward_batch(
        self, inputs, weights, padding, stride, in_deltas, out_deltas, weight_deltas, bias_deltas
    ):
        """Backpropagate through :meth:`conv2d_forward_batch`.

        Args:
            inputs: images ``(N, H, W, C)`` of the forward pass.
            weights: filters ``(F, kh, kw, C)``.
            padding: int, as in the forward pass.
            stride: ``(sh, sw)``, as in the forward pass.
            in_deltas: ``(N, H, W, C)``; the deltas of the inputs are ADDED to it.
                ``None``: the deltas of the inputs are not computed (a layer whose
                input deltas nobody reads, see ``Layer.inputs_without_deltas``).
            out_deltas: ``(N, Ho, Wo, F)``, the deltas of the outputs.
            weight_deltas: ``(F, kh, kw, C)``, OVERWRITTEN with the gradient of the weights.
            bias_deltas: ``(F,)``, OVERWRITTEN with the gradient of the bias.
        """
        raise _abstract(self, "conv2d_backward_batch")

    def maxpool2d_forward_batch(self, inputs, window, outputs, padding, stride, argmax):
        """Max pooling of a batch of NHWC images, channel by channel.

        Padding pixels never win; a window made only of padding outputs 0 (and
        stores the index -1).

        Args:
            inputs: images ``(N, H, W, C)``.
            window: ``(kh, kw)`` tuple of ints.
            outputs: ``(N, Ho, Wo, C)`` (written).
            padding: int, pixels added on every side of each image.
            stride: ``(sh, sw)`` tuple of ints.
            argmax: ``(N, Ho, Wo, C)`` (written): for every output, the position
                of the maximum in its image as ``(y * W + x) * C + c``, stored as
                a float.

        Raises:
            ValueError: if an image has more values than the float type counts
                exactly (2**24 for float32; see :func:`check_argmax_range`).
        """
        raise _abstract(self, "maxpool2d_forward_batch")

    def maxpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, argmax, in_deltas, out_deltas
    ):
        """Backpropagate through :meth:`maxpool2d_forward_batch`.

        Every output delta is added to the input pixel that won its window.

        Args:
            inputs: images ``(N, H, W, C)`` of the forward pass.
            window: ``(kh, kw)``, as in the forward pass.
            outputs: ``(N, Ho, Wo, C)``, outputs of the forward pass.
            padding: int, as in the forward pass.
            stride: ``(sh, sw)``, as in the forward pass.
            argmax: ``(N, Ho, Wo, C)``, written by the forward pass.
            in_deltas: ``(N, H, W, C)``; the deltas of the inputs are ADDED to it.
            out_deltas: ``(N, Ho, Wo, C)``, the deltas of the outputs.
        """
        raise _abstract(self, "maxpool2d_backward_batch")

    def avgpool2d_forward_batch(self, inputs, window, outputs, padding, stride):
        """Average pooling of a batch of NHWC images, channel by channel.

        Each output is the mean of the window's pixels that are not padding (a
        window made only of padding outputs 0).

        Args:
            inputs: images ``(N, H, W, C)``.
            window: ``(kh, kw)`` tuple of ints.
            outputs: ``(N, Ho, Wo, C)`` (written).
            padding: int, pixels added on every side of each image.
            stride: ``(sh, sw)`` tuple of ints.
        """
        raise _abstract(self, "avgpool2d_forward_batch")

    def avgpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, in_deltas, out_deltas
    ):
        """Backpropagate through :meth:`avgpool2d_forward_batch`.

        Args:
            inputs: images ``(N, H, W, C)`` of the forward pass.
            window: ``(kh, kw)``, as in the forward pass.
            outputs: ``(N, Ho, Wo, C)``, outputs of the forward pass.
            padding: int, as in the forward pass.
            stride: ``(sh, sw)``, as in the forward pass.
            in_deltas: ``(N, H, W, C)``; the deltas of the inputs are ADDED to it.
            out_deltas: ``(N, Ho, Wo, C)``, the deltas of the outputs.
        """
        raise _abstract(self, "avgpool2d_backward_batch")

    # ------------------------------------------------------------- randomness

    def fill_gaussian(self, mean, std, out):
        """Fill an array with normally distributed numbers drawn from ``rnd``.

        Args:
            mean: scalar mean.
            std: scalar standard deviation, ``std >= 0``.
            out: array (written).
        """
        raise _abstract(self, "fill_gaussian")

    def generate_probability_mask(self, mask, probability):
        """Fill an array with ones (with the given probability) and zeros.

        ``mask = 1 if u < probability else 0`` for ``u`` uniform in ``[0, 1)``
        drawn from ``rnd``.

        Args:
            mask: array (written).
            probability: scalar in ``[0, 1]``.
        """
        raise _abstract(self, "generate_probability_mask")
