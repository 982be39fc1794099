"""The CPU handler: every op of :class:`~brainstorm.handlers.base_handler.Handler` in NumPy.

All arithmetic happens in the handler's dtype (float32 unless asked otherwise).
Ops write through ``out=`` or ``out[...] =`` so that they work on the strided
views the network layout hands out. Convolution is im2col + one matrix product
per chunk of images (a few MB of columns, so they stay in the cache; no loop over
single images or pixels); pooling loops over the kernel offsets only, each step
vectorized over a chunk of images, the output pixels and the channels.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref

import numpy as np
from numpy.lib.stride_tricks import as_strided

from brainstorm import randomness
from brainstorm.handlers import _blas, _packed, _threads
from brainstorm.handlers.base_handler import Handler, check_argmax_range
from brainstorm.utils import reshape_view

__all__ = ["NumpyHandler"]


def _shared_elementwise(method):
    """Split an elementwise op over large arrays between the threads of an open session.

    The arrays are cut along their first axis (scalars and ``None``, e.g. an
    unused ``x``, are passed on as they are, and so are arrays that broadcast
    along the first axis, with a length of 1 there); only when every array has
    the output's shape or broadcasts to it that way or along later axes, and
    any two are either the very same view or do not overlap at all.
    """

    @functools.wraps(method)
    def op(self, *arrays, **named):
        if named:  # (arguments by name: computed here, in one piece)
            return method(self, *arrays, **named)
        # (the size first: this runs for every small op of a recurrent step)
        out = arrays[-1] if isinstance(arrays[-1], np.ndarray) else arrays[0]
        if not isinstance(out, np.ndarray) or out.size < _SHARED_ELEMENTS:
            return method(self, *arrays)
        team = _active_team()
        if team is None or not _splittable(arrays):
            return method(self, *arrays)
        pieces = _shares(out.shape[0], team.size)
        team.run(
            [
                functools.partial(
                    method,
                    self,
                    *(
                        a[i:j] if isinstance(a, np.ndarray) and a.shape[0] > 1 else a
                        for a in arrays
                    ),
                )
                for i, j in pieces
            ]
        )

    return op


class NumpyHandler(Handler):
    """Handler that computes on the CPU with NumPy.

    Args:
        dtype: floating point dtype of the arrays (``np.float32`` by default).
        seed: seed of the random ops. ``None`` (default) derives the random
            state from :data:`brainstorm.randomness.global_rnd`, and derives it
            again after every ``global_rnd.set_seed``, so seeding the global
            state makes the dropout masks of an existing handler reproducible.

    A handler keeps scratch buffers between calls (padded images, small
    transposed products): use one handler per thread.

    Example:
        >>> h = NumpyHandler(np.float64)
        >>> a = h.create_from_numpy(np.array([[1.0, -2.0]]))
        >>> h.abs_t(a, a)
        >>> h.get_numpy_copy(a)
        array([[1., 2.]])
    """

    def __init__(self, dtype=np.float32, seed=None):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"NumpyHandler needs a floating point dtype, got {self.dtype}")
        self.context = "numpy"
        self.array_type = np.ndarray
        self.EMPTY = np.zeros(0, dtype=self.dtype)
        self.rnd = None if seed is None else randomness.RandomState(seed)
        super().__init__()

    def __describe__(self):
        return {"@type": type(self).__name__, "dtype": self.dtype.name}

    def __init_from_description__(self, description):
        self.__init__(dtype=description.get("dtype", "float32"))

    def __repr__(self):
        return f"{type(self).__name__}({self.dtype.name})"

    def _scalar(self, value):
        return self.dtype.type(value)

    def session(self):
        """Keep this process's compute threads ready while the block runs.

        Inside a session NumPy's BLAS runs on one thread and the handler
        splits large products (and the per-step products of recurrent layers)
        between its own threads, which wait for work by spinning rather than
        sleeping; outside, the BLAS threads are restored. See
        :mod:`brainstorm.handlers._threads` and :doc:`/performance`
        (``BRAINSTORM_NUMPY_THREADS`` sets the number of threads, 0 leaves
        them to the BLAS library).
        """
        team = _threads.team()
        if team is None or team.size == 1 or not _blas.threads_adjustable():
            return super().session()
        saved = []

        def one_blas_thread():
            saved.append(_blas.set_threads(1))

        def restore_blas_threads():
            before = saved.pop() if saved else None
            if before is not None:
                _blas.set_threads(before)

        return team.session(on_open=one_blas_thread, on_close=restore_blas_threads)

    # ------------------------------------------------------------------ memory

    def allocate(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def ones(self, shape):
        return np.ones(shape, dtype=self.dtype)

    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def create_from_numpy(self, arr):
        return np.array(arr, dtype=self.dtype, order="C")

    def get_numpy_copy(self, mem):
        return np.array(mem, order="C")

    def set_from_numpy(self, mem, arr):
        mem[...] = arr

    @_shared_elementwise  # e.g. the output deltas of a whole sequence
    def copy_to(self, src, dest):
        np.copyto(dest, src, casting="same_kind")

    def copy_to_if(self, src, dest, cond):
        np.copyto(dest, src, where=cond != 0)

    @_shared_elementwise  # e.g. clearing the whole backward buffer
    def fill(self, mem, val):
        mem.fill(val)

    def fill_if(self, mem, val, cond):
        np.copyto(mem, self._scalar(val), where=cond != 0)

    def is_fully_finite(self, a):
        return bool(np.isfinite(a).all())

    # ------------------------------------------------------ elementwise: tensors

    def abs_t(self, a, out):
        np.abs(a, out=out)

    def sign_t(self, a, out):
        np.sign(a, out=out)

    def log_t(self, a, out):
        np.log(a, out=out)

    def sqrt_t(self, a, out):
        np.sqrt(a, out=out)

    def clip_t(self, a, a_min, a_max, out):
        np.clip(a, self._scalar(a_min), self._scalar(a_max), out=out)

    @_shared_elementwise
    def add_tt(self, a, b, out):
        np.add(a, b, out=out)

    @_shared_elementwise
    def subtract_tt(self, a, b, out):
        np.subtract(a, b, out=out)

    @_shared_elementwise
    def mult_tt(self, a, b, out):
        np.multiply(a, b, out=out)

    @_shared_elementwise
    def mult_add_tt(self, a, b, out):
        out += a * b

    @_shared_elementwise
    def divide_tt(self, a, b, out):
        np.divide(a, b, out=out)

    def modulo_tt(self, a, b, out):
        np.fmod(a, b, out=out)

    def add_into_if(self, a, out, cond):
        np.add(out, a, out=out, where=cond != 0)

    # ------------------------------------------------------ elementwise: scalars

    def add_st(self, s, t, out):
        np.add(t, self._scalar(s), out=out)

    def mult_st(self, s, t, out):
        np.multiply(t, self._scalar(s), out=out)

    def mult_add_st(self, s, t, out):
        s = self._scalar(s)
        if out.size > _CHUNK and t.dtype == self.dtype and _shared_axpy(s, t, out):
            return  # one pass (the SGD update of the whole parameter buffer)
        overlapping = t is not out and np.may_share_memory(t, out)
        if out.size <= _CHUNK or t.shape != out.shape or overlapping:
            out += s * t  # (s * t is computed whole first: right even when t overlaps out)
            return
        # chunked through a small scratch: a temporary as large as the whole
        # parameter buffer would come from fresh pages on every SGD update
        flat_t, flat_out = t.reshape(-1), out.reshape(-1)
        if not (np.may_share_memory(flat_out, out) and np.may_share_memory(flat_t, t)):
            out += s * t  # not views: reshaping would copy
            return
        scratch = np.empty(_CHUNK, dtype=np.result_type(s, t))
        for start in range(0, out.size, _CHUNK):
            stop = min(start + _CHUNK, out.size)
            part = scratch[: stop - start]
            np.multiply(flat_t[start:stop], s, out=part)
            np.add(flat_out[start:stop], part, out=flat_out[start:stop])

    # ------------------------------------------- matrix with broadcast vector

    def add_mv(self, m, v, out):
        np.add(m, v, out=out)

    def subtract_mv(self, m, v, out):
        np.subtract(m, v, out=out)

    def mult_mv(self, m, v, out):
        np.multiply(m, v, out=out)

    def mult_add_mv(self, m, v, out):
        out += m * v

    def divide_mv(self, m, v, out):
        np.divide(m, v, out=out)

    # ------------------------------------------------- reshaping and indexing

    @_shared_elementwise  # e.g. the biases of all time steps' pre-activations
    def broadcast_t(self, a, axis, out):
        out[...] = a

    def merge_tt(self, a, b, out):
        n = a.shape[-1]
        out[..., :n] = a
        out[..., n:] = b

    def split_add_tt(self, x, out_a, out_b):
        n = out_a.shape[-1]
        out_a += x[..., :n]
        out_b += x[..., n:]

    def binarize_v(self, v, out):
        ids = _row_ids(v, out.shape[1], "binarize_v", what="class id")
        # zeros, then one 1 per row (comparing with an arange costs 10x: it
        # compares in float64 and writes a bool temporary of the whole shape)
        out.fill(0)
        out[np.arange(out.shape[0]), ids] = 1

    def index_m_by_v(self, m, v, out):
        ids = _row_ids(v, m.shape[1], "index_m_by_v", what="class id")
        out[...] = np.take_along_axis(m, ids[:, None], axis=1)

    def index_rows_mv(self, m, v, out):
        out[...] = m[_row_ids(v, m.shape[0], "index_rows_mv")]

    def scatter_add_rows_mv(self, m, v, out):
        np.add.at(out, _row_ids(v, out.shape[0], "scatter_add_rows_mv"), m)

    # ------------------------------------------------------------- reductions

    def sum_t(self, a, axis, out):
        if axis is None:
            out[...] = a.sum()
        elif (
            axis == 0
            and a.ndim == 2
            and a.shape[0] >= _GEMV_MIN_ROWS
            and a.flags.c_contiguous
            and a.dtype == self.dtype
            and out.dtype == self.dtype
            and out.size == a.shape[1]
        ):
            # column sums of a tall matrix: a matrix-vector product with ones is
            # several times faster than np.sum(axis=0)
            ones = self._ones_vector(a.shape[0])
            flat_out = out.reshape(-1)
            team = _active_team() if a.size >= _SHARED_ELEMENTS else None
            if team is not None:
                # partial sums of row blocks, one per thread
                shares = _shares(a.shape[0], team.size, 8)
                partial = np.empty((len(shares), a.shape[1]), dtype=self.dtype)
                team.run(
                    [
                        functools.partial(np.dot, ones[i:j], a[i:j], out=partial[k])
                        for k, (i, j) in enumerate(shares)
                    ]
                )
                out[...] = partial.sum(axis=0).reshape(out.shape)
                return
            if (
                flat_out.flags.c_contiguous
                and np.may_share_memory(flat_out, out)
                and not np.may_share_memory(flat_out, a)
            ):
                np.dot(ones, a, out=flat_out)
            else:
                out[...] = np.dot(ones, a).reshape(out.shape)
        else:
            np.sum(a, axis=axis, out=out, keepdims=out.ndim == a.ndim)

    def _kept(self, kind, key, make):
        """An array kept by the handler between calls: ``make()`` the first time a
        ``(kind, key)`` is asked for (fresh multi-MB arrays on every call would cost
        their pages each time). At most :data:`_KEPT_PER_KIND` arrays of a kind."""
        # (one store per thread: deferred jobs run on another thread at the same time;
        # a thread's store goes with the thread)
        kept = self.__dict__.setdefault("_kept_arrays", weakref.WeakKeyDictionary())
        cache = kept.setdefault(threading.current_thread(), {}).setdefault(kind, {})
        array = cache.get(key)
        if array is None:
            if len(cache) >= _KEPT_PER_KIND:
                cache.clear()
            array = cache[key] = make()
        return array

    def _ones_vector(self, n):
        """A kept read-only vector of ``n`` ones in the handler's dtype."""

        def make():
            ones = np.ones(n, dtype=self.dtype)
            ones.flags.writeable = False
            return ones

        return self._kept("ones", n, make)

    # --------------------------------------------------------- linear algebra

    def dot_mm(self, a, b, out, transa=False, transb=False):
        a = a.T if transa else a
        b = b.T if transb else b
        if _shared_product(a, b, out, beta=0.0):
            pass  # split between the threads of a session
        elif _transposed_product_is_faster(a, b):
            out[...] = self._transposed_product(a, b).T
        elif not out.flags.c_contiguous and _blas.gemm(a, b, out):
            pass  # straight into the strided output, no temporary
        elif (
            out.flags.c_contiguous
            and out.dtype == np.result_type(a, b)
            and not (np.may_share_memory(out, a) or np.may_share_memory(out, b))
        ):
            np.dot(a, b, out=out)
        else:  # np.dot writes only into C-contiguous arrays of the exact result type
            out[...] = np.dot(a, b)

    def dot_add_mm(self, a, b, out, transa=False, transb=False):
        a = a.T if transa else a
        b = b.T if transb else b
        if _shared_product(a, b, out, beta=1.0):
            pass  # split between the threads of a session
        elif _transposed_product_is_faster(a, b):
            out += self._transposed_product(a, b).T
        elif not _blas.gemm(a, b, out, beta=1.0):  # accumulates without a temporary
            out += np.dot(a, b)

    def defer(self, job, lane=None):
        # in a session: queued for a helper thread (see brainstorm.handlers._threads)
        team = _threads.team()
        if team is None:
            job()
        else:
            team.defer(job, lane)

    def finish_deferred(self):
        team = _threads.team()
        if team is not None:
            team.finish_deferred()

    def prepare_matrix(self, m, transpose=False):
        # packed for the BLAS kernel on first use (see brainstorm.handlers._packed)
        return _packed.PackedMatrix(m, transpose)

    def dot_add_blocks(self, a_blocks, prepared, out_blocks):
        if isinstance(prepared, _packed.PackedMatrix) and _packed.add_products(
            list(a_blocks), prepared, list(out_blocks)
        ):
            return
        super().dot_add_blocks(a_blocks, prepared, out_blocks)

    def _transposed_product(self, a, b):
        """``b.T @ a.T`` in a scratch array reused across calls (valid until the next
        call): fresh temporaries of this size would come from new pages each time."""
        dtype = np.result_type(a, b)
        shape = (b.shape[1], a.shape[0])
        scratch = self._kept("product", (shape, dtype), lambda: np.empty(shape, dtype=dtype))
        np.dot(b.T, a.T, out=scratch)
        return scratch

    # ------------------------------------------------------------ activations
    # Each function next to its derivative; derivatives work from the outputs y.

    @_shared_elementwise
    def sigmoid(self, x, y):
        # 1 / (1 + exp(-x)) in four passes without temporaries; keeps the relative
        # precision in the negative tail. Below about -88 (float32) exp(-x)
        # overflows to inf and the result is 0, the right limit. (Not np.negative:
        # NumPy 2.4 negates strided float32 vectors wrongly.)
        minus_one = self._scalar(-1)
        if not np.may_share_memory(x, y) or x is y:
            np.multiply(x, minus_one, out=y)
            with np.errstate(over="ignore"):
                np.exp(y, out=y)
            np.add(y, self._scalar(1), out=y)
            np.reciprocal(y, out=y)
            return
        with np.errstate(over="ignore"):  # y partly overlaps x: one temporary
            e = np.exp(np.multiply(x, minus_one))
        e += 1
        np.reciprocal(e, out=y)

    @_shared_elementwise
    def sigmoid_deriv(self, x, y, dy, dx):
        factor = _scratch(dx, y, dy)
        np.multiply(y, y, out=factor)
        np.subtract(y, factor, out=factor)  # y (1 - y)
        np.multiply(dy, factor, out=dx)

    @_shared_elementwise
    def tanh(self, x, y):
        np.tanh(x, out=y)

    @_shared_elementwise
    def tanh_deriv(self, x, y, dy, dx):
        factor = _scratch(dx, y, dy)
        np.multiply(y, y, out=factor)
        np.subtract(self._scalar(1), factor, out=factor)
        np.multiply(dy, factor, out=dx)

    @_shared_elementwise
    def rel(self, x, y):
        if _CLIP_IS_FAST and y.size >= _CLIP_MIN_SIZE and y.dtype.kind == "f":  # (NaN: NaN)
            np.clip(x, self._scalar(0), self._scalar(np.inf), out=y)
        else:
            np.maximum(x, 0, out=y)

    @_shared_elementwise
    def rel_deriv(self, x, y, dy, dx):
        np.multiply(dy, y > 0, out=dx)

    @_shared_elementwise
    def el(self, x, y):
        negative_part = np.expm1(np.minimum(x, 0))
        np.maximum(x, 0, out=y)
        y += negative_part

    @_shared_elementwise
    def el_deriv(self, x, y, dy, dx):
        factor = _scratch(dx, y, dy)
        np.add(y, self._scalar(1), out=factor)
        np.minimum(factor, self._scalar(1), out=factor)
        np.multiply(dy, factor, out=dx)

    def softmax_m(self, m, out):
        if m.shape[1] == 0:  # (no classes: nothing to normalize; max() would fail)
            return
        row_max = m.max(axis=1, keepdims=True)
        np.subtract(m, row_max, out=out)
        np.exp(out, out=out)
        if out.dtype == self.dtype and out.flags.c_contiguous:
            # row sums as a matrix-vector product with ones (5x faster than
            # sum(axis=1)); NumPy checks the floating-point status after a BLAS
            # product, and a flag left by other C code in this thread once turned
            # into a spurious "invalid value" warning here (the terms are in [0, 1])
            with np.errstate(invalid="ignore"):
                sums = np.dot(out, self._ones_vector(out.shape[1]))[:, None]
        else:
            sums = out.sum(axis=1, keepdims=True)
        out /= sums

    # ----------------------------------------------------------------- images

    def conv2d_forward_batch(self, inputs, weights, bias, outputs, padding, stride):
        self._convolve(inputs, weights, bias, outputs, padding, stride)

    def _convolve(self, inputs, weights, bias, outputs, padding, stride, accumulate=False):
        """The convolution into ``outputs`` (plus ``bias`` unless it is None); with
        ``accumulate``, added to what ``outputs`` holds."""
        n, ho, wo, f = outputs.shape
        kh, kw = weights.shape[1:3]
        if self._convolve_directly(inputs, weights, bias, outputs, padding, stride, accumulate):
            return
        group = _pixel_group(stride, kw, wo, f)
        padded = self._pad(inputs, padding, 0, role="conv forward")
        # group > 1: every GEMM row computes `group` neighbouring output pixels of an
        # image row from one wider window, with a block-banded (K', group * F)
        # filter matrix: fatter products and less im2col copying (see _pixel_group)
        filters = _grouped_filters(weights, group)
        if bias is not None and group > 1:
            bias = np.tile(bias, group)
        flat = outputs.reshape(n * ho * wo * f // (group * f), group * f)
        direct = flat.flags.c_contiguous and np.may_share_memory(flat, outputs)
        if not direct:
            flat = np.empty(flat.shape, dtype=self.dtype)  # copied back below
        beta = 1.0 if accumulate and direct else 0.0
        # im2col and GEMM in chunks of images whose columns stay in the cache (the
        # chunks shared between the threads of a session, each with its own columns)
        rows = ho * (wo // group)  # GEMM rows per image
        chunks = _image_chunks(n, rows * filters.shape[0])
        buffers = _Buffers(chunks, rows, filters.shape[0], self.dtype)
        window = (kh, kw + group - 1)

        def convolve_chunk(start, stop, worker):
            columns = _im2col(
                padded[start:stop], window, stride, (ho, wo // group), buffers[worker], group
            )
            part = flat[start * rows : stop * rows]
            if _product(columns, filters, part, beta):
                pass
            elif beta:
                part += np.dot(columns, filters)
            else:
                np.dot(columns, filters, out=part)
            if bias is not None:
                part += bias  # while the chunk is in the cache

        _for_chunks(chunks, convolve_chunk)
        if not direct:
            if accumulate:
                outputs += flat.reshape(outputs.shape)
            else:
                outputs[...] = flat.reshape(outputs.shape)

    def _convolve_directly(self, inputs, weights, bias, outputs, padding, stride, accumulate):
        """The convolution without an im2col matrix, if it suits (else False).

        OpenBLAS's routine that packs the right operand of a product reads each
        column from its address plus a multiple of a stride: given the padded
        image and a stride of C floats, column ``x`` is the row of the window of
        output pixel ``x`` (``kw * C`` floats), for all pixels of an image at once
        if the output is computed over the padded width (the extra columns are
        thrown away). That packed image serves all ``kh`` rows of the kernel: row
        ``i`` is the same packing ``i`` image rows further on, which starts on a
        panel boundary when the padded width is a multiple of the panel width.
        Each row is then one kernel call with the filters (packed once) adding
        into the image's outputs. Worth it (stride 1 only) when the window rows are
        long enough for the kernel and few columns are thrown away; see
        :data:`_DIRECT_MIN_REDUCTION` and :data:`_DIRECT_MAX_WASTE`.
        """
        f, kh, kw, c = weights.shape
        n, h, w, _ = inputs.shape
        kernels = _packed.kernels_for(self.dtype)
        if kernels is None or kernels.right_width is None or stride != (1, 1) or n == 0:
            return False
        item = self.dtype.itemsize
        panel = kernels.right_width
        hp, wo = h + 2 * padding, outputs.shape[2]
        wp = -(-(w + 2 * padding) // panel) * panel  # padded width: whole panels
        ho, reduction = outputs.shape[1], kw * c
        if (
            (ho, wo) != (hp - kh + 1, w + 2 * padding - kw + 1)
            or reduction < _DIRECT_MIN_REDUCTION
            or reduction > _packed.MAX_REDUCTION
            or f < _DIRECT_MIN_FILTERS
            or wp > _DIRECT_MAX_WASTE * wo
            or hp * wp * reduction > _DIRECT_MAX_PACKED
            or (panel * reduction * item) % 64  # (panels of later kernel rows stay aligned)
            or not all(a.dtype == self.dtype for a in (inputs, weights, outputs))
        ):
            return False
        # padded to the width of whole panels; the pixels after the last image are
        # read too (for thrown-away outputs)
        padded = self._pad(inputs, padding, 0, "conv direct", width=wp, tail=(kw + panel) * c)
        filters = []  # kernel row i: the (F, kw * C) filters, packed
        for i in range(kh):
            rows = np.ascontiguousarray(weights[:, i].reshape(f, reduction))
            packed = _packed.aligned_empty(f * reduction, self.dtype)
            kernels.pack_row_major(reduction, f, rows.ctypes.data, reduction, packed.ctypes.data)
            filters.append(packed)
        one = kernels.scalar(1.0)
        filter_addresses = [rows.ctypes.data for rows in filters]
        base = padded.ctypes.data
        per_image = hp * wp  # pixels (and packed columns) per padded image
        chunks = _image_chunks(n, per_image * reduction, _DIRECT_CHUNK)
        largest = max(stop - start for start, stop in chunks)
        scratch = {}

        def images(start, stop, worker):  # (a chunk's images are packed in one call)
            if worker not in scratch:
                scratch[worker] = (
                    _packed.aligned_empty(largest * per_image * reduction, self.dtype),
                    np.empty((largest, ho, wp, f), dtype=self.dtype),
                )
            columns, result = scratch[worker]
            count = stop - start
            result = result[:count]
            if bias is None:
                result.fill(0)
            else:
                result[...] = bias
            packed = columns.ctypes.data
            kernels.pack_right(
                reduction, count * per_image, base + start * per_image * c * item, c, packed
            )
            # (addresses as ints: this loop runs between kernel calls that release the
            # GIL, and the other thread's loop wants it too)
            out, out_step = result.ctypes.data, ho * wp * f * item
            kernel, pixels = kernels.kernel, ho * wp
            for image in range(count):
                for i, rows in enumerate(filter_addresses):
                    first = packed + (image * per_image + i * wp) * reduction * item
                    kernel(f, pixels, reduction, one, rows, first, out + image * out_step, f)
            if accumulate:
                outputs[start:stop] += result[:, :, :wo]
            else:
                outputs[start:stop] = result[:, :, :wo]

        _for_chunks(chunks, images)
        return True

    def _weight_gradient_directly(self, inputs, out_deltas, weights, padding, weight_deltas):
        """The weight gradient of a stride-1 convolution without im2col columns, if
        it suits (else False; nothing written).

        Row ``i`` of the kernel gets ``sum_P dY[P - i*Wp] (x) X[P]``, where ``X[P]`` is
        the window row (``kw * C`` values) starting at pixel ``P`` of the padded
        images and ``dY`` the output deltas laid out on the padded grid (zeros
        elsewhere; ``P`` counts pixels of the padded images). OpenBLAS's routine
        that packs a left operand by columns reads the window rows straight from
        the images (a stride of C values), once per chunk of pixels for all rows
        of the kernel; the rows' ``(K, F)`` slices of the deltas are packed side by
        side, and one kernel call adds all rows' parts into the gradient. Worth it
        where few pixels of the padded grid are padding (see
        :data:`_DIRECT_GRADIENT_MAX_WASTE`).
        """
        f, kh, kw, c = weights.shape
        n, h, w, _ = inputs.shape
        kernels = _packed.kernels_for(self.dtype)
        if kernels is None or kernels.right_width is None or n == 0:
            return False
        ho, wo = out_deltas.shape[1:3]
        hp, wp = h + 2 * padding, w + 2 * padding
        window = kw * c
        if (
            (ho, wo) != (hp - kh + 1, wp - kw + 1)
            or window < _DIRECT_MIN_REDUCTION
            or window > _packed.MAX_REDUCTION
            or f < _DIRECT_MIN_FILTERS
            # (the rows' packed deltas side by side, each in whole, aligned panels)
            or f % kernels.right_width
            or (f * self.dtype.itemsize) % 64
            or hp * wp > _DIRECT_GRADIENT_MAX_WASTE * ho * wo
            or not all(a.dtype == self.dtype for a in (inputs, out_deltas, weight_deltas))
        ):
            return False
        item = self.dtype.itemsize
        per_image = hp * wp
        margin = (kh - 1) * wp  # (row i reads the deltas i rows before the pixels)
        padded = self._pad(inputs, padding, 0, "conv gradient direct", tail=window)
        length = margin + n * per_image
        grid = self._kept(  # (only the output pixels are written: the rest stays 0)
            "gradient deltas",
            (f, n, hp, wp, ho, wo, kh),
            lambda: np.zeros((f, length), self.dtype),
        )
        chunks = _image_chunks(n, per_image * window, _DIRECT_CHUNK)
        # (kernel row i's part in rows i * F ... of a (kh * F, kw * C) sum)
        parts = _GradientParts(chunks, (kh * f, window), self.dtype)
        # reductions of at most MAX_REDUCTION pixels per kernel call, over whole images
        steps = -(-per_image // _packed.MAX_REDUCTION)
        bounds = [per_image * s // steps for s in range(steps + 1)]
        largest = max(b - a for a, b in zip(bounds, bounds[1:]))
        panel_rows = -(-window // kernels.width) * kernels.width
        one = kernels.scalar(1.0)
        base, grid_base = padded.ctypes.data, grid.ctypes.data
        scratch = {}

        def images(start, stop, worker):
            if worker not in scratch:
                scratch[worker] = (
                    _packed.aligned_empty(panel_rows * largest, self.dtype),
                    _packed.aligned_empty(kh * f * largest, self.dtype),
                )
            packed_x, packed_d = scratch[worker]
            px, pd = packed_x.ctypes.data, packed_d.ctypes.data
            # this chunk's deltas onto the grid (the rest of its images stays 0)
            view = grid[:, margin + start * per_image : margin + stop * per_image]
            view = view.reshape(f, stop - start, hp, wp)[:, :, :ho, :wo]
            np.copyto(view, out_deltas[start:stop].transpose(3, 0, 1, 2))
            out_base = parts.of(start, worker).ctypes.data
            kernel, pack_x, pack_d = kernels.kernel, kernels.pack_column_major, kernels.pack_right
            for image in range(start, stop):
                for lo, hi in zip(bounds, bounds[1:]):
                    pixel, k = image * per_image + lo, hi - lo
                    pack_x(k, window, base + pixel * c * item, c, px)
                    # the kh rows' deltas side by side: one product for all rows
                    for i in range(kh):
                        deltas = grid_base + (margin + pixel - i * wp) * item
                        pack_d(k, f, deltas, length, pd + i * f * k * item)
                    kernel(window, kh * f, k, one, px, pd, out_base, window)

        _for_chunks(chunks, images, in_turn=parts.in_turn)
        weight_deltas[...] = parts.total().reshape(kh, f, kw, c).transpose(1, 0, 2, 3)
        return True

    def conv2d_backward_batch(
        self, inputs, weights, padding, stride, in_deltas, out_deltas, weight_deltas, bias_deltas
    ):
        n, ho, wo, f = out_deltas.shape
        _, kh, kw, c = weights.shape
        (sh, sw), p = stride, padding
        _, h, w, _ = inputs.shape
        all_deltas = out_deltas.reshape(n * ho * wo, f)
        flip = stride == (1, 1) and kh == kw and p < kh and c >= _FLIPPED_MIN_CHANNELS
        if in_deltas is not None and flip:
            # stride 1: the input deltas are the convolution of the output deltas,
            # padded by kh - 1 - p, with the flipped kernel (filters and channels
            # swapped): one chunked im2col GEMM, no scattered adds
            flipped = np.ascontiguousarray(weights[:, ::-1, ::-1, :].transpose(3, 1, 2, 0))
            self._convolve(out_deltas, flipped, None, in_deltas, kh - 1 - p, (1, 1), True)
            in_deltas = None  # done
        if (
            in_deltas is None
            and stride == (1, 1)
            and self._weight_gradient_directly(inputs, out_deltas, weights, p, weight_deltas)
        ):
            self.sum_t(all_deltas, axis=0, out=bias_deltas)  # column sums, as a GEMV
            return
        padded = self._pad(inputs, p, 0, role="conv backward")
        # the weight gradient from grouped columns (as in the forward pass) unless the
        # input deltas still need the plain column deltas
        group = _pixel_group(stride, kw, wo, f) if in_deltas is None else 1
        rows = ho * (wo // group)
        k = kh * (kw + group - 1) * c
        grouped_deltas = all_deltas.reshape(n * rows, group * f)
        filters = weights.reshape(f, -1)
        # chunks of images whose columns (and column deltas) stay in the cache, shared
        # between the threads of a session, each adding into its part of the gradient
        chunks = _image_chunks(n, rows * k)
        # short windows: the columns get one more, of ones, and the last row of the
        # product is then the bias gradient (no pass of its own over the deltas)
        ones = int(k <= _BIAS_COLUMN_MAX)
        if not ones:
            self.sum_t(all_deltas, axis=0, out=bias_deltas)  # column sums, as a GEMV
        buffers = _Buffers(chunks, rows, k + ones, self.dtype, ones_from=k)
        parts = _GradientParts(chunks, (k + ones, group * f), self.dtype)
        window = (kh, kw + group - 1)

        def chunk_gradient(start, stop, worker):
            count = stop - start
            buffer = buffers[worker]
            _im2col(padded[start:stop], window, stride, (ho, wo // group), buffer[:, :k], group)
            columns = buffer[: count * rows]
            deltas = grouped_deltas[start * rows : stop * rows]
            gradient = parts.of(start, worker)
            # (K, F) with the long reduction innermost in both operands: faster than
            # deltas.T @ columns, and it holds up better when the machine is busy
            if not _product(columns.T, deltas, gradient, beta=1.0):
                gradient += np.dot(columns.T, deltas)
            if in_deltas is None:
                return
            # column deltas offset-major, (kh, kw, C, n, Ho, Wo): every kernel offset
            # adds a block with long contiguous rows into a (C, n, Hp, Wp) accumulator
            column_deltas = np.empty((filters.shape[1], deltas.shape[0]), dtype=self.dtype)
            if not _product(filters.T, deltas.T, column_deltas):
                np.dot(filters.T, deltas.T, out=column_deltas)
            column_deltas = column_deltas.reshape(kh, kw, c, count, ho, wo)
            acc = np.zeros((c, count, h + 2 * p, w + 2 * p), dtype=self.dtype)
            for i in range(kh):
                for j in range(kw):
                    acc[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw] += column_deltas[i, j]
            in_deltas[start:stop] += acc[:, :, p : p + h, p : p + w].transpose(1, 2, 3, 0)

        _for_chunks(chunks, chunk_gradient, in_turn=parts.in_turn)
        gradient = parts.total()
        weight_deltas[...] = _fold_grouped_gradient(gradient[:k], (kh, kw, c), group, f)
        if ones:
            np.sum(gradient[k].reshape(group, f), axis=0, out=bias_deltas)

    def maxpool2d_forward_batch(self, inputs, window, outputs, padding, stride, argmax):
        # separable: the maximum over the kw pixels of every window row, then over the
        # kh row maxima of each window, in chunks of images that keep the row maxima in
        # the cache. The winner is tracked as k = i * Wp + j (offset (i, j) in the padded
        # image), which grows with (i, j) in row-major order: the first maximum wins,
        # and "k = max(k, better * k_new)" replaces a (much slower) masked copy.
        (kh, kw), (sh, sw) = window, stride
        n, ho, wo, c = outputs.shape
        _, h, w, _ = inputs.shape
        check_argmax_range("maxpool2d_forward_batch", (h, w, c), self.dtype)
        padded = self._pad(inputs, padding, -np.inf, role="max pooling")
        hp, wp = padded.shape[1:3]
        # (the padded width itself must fit too: k // wp gives a winner's row)
        largest_k = max((kh - 1) * wp + kw - 1, wp)
        kind = np.uint8 if largest_k < 1 << 8 else np.uint16 if largest_k < 1 << 16 else np.int64
        # the index arithmetic runs in the handler's float type where that is exact
        exact = (hp * wp + 1) * c < 2 ** (np.finfo(self.dtype).nmant + 1)
        index_type = self.dtype if exact else np.dtype(np.int64)
        corner = _pool_corner_index((h, w, c), padding, stride, (ho, wo), index_type.name)
        chunks = _image_chunks(n, hp * wo * c, 2 * _CHUNK)
        largest = max((stop - start for start, stop in chunks), default=0)
        last_x, last_y = sw * (wo - 1) + 1, sh * (ho - 1) + 1
        scratch = {}

        def pool_chunk(start, stop, worker):  # (the chunks of a session run in parallel)
            if worker not in scratch:
                scratch[worker] = _PoolScratch(
                    largest, (hp, ho, wo, c), self.dtype, kind, index_type, padding, exact
                )
            buffers = scratch[worker]
            m = stop - start
            images = padded[start:stop]
            r_best, r_k = buffers.row_best[:m], buffers.row_k[:m]
            r_step, r_better = buffers.row_step[:m], buffers.row_better[:m]
            np.copyto(r_best, images[:, :, 0:last_x:sw])
            r_k.fill(0)
            for j in range(1, kw):
                candidate = images[:, :, j : j + last_x : sw]
                np.greater(candidate, r_best, out=r_better)  # strict: the first wins
                np.maximum(r_best, candidate, out=r_best)
                # (the mask read as uint8: multiplying a bool array casts, 3x slower)
                np.multiply(r_better.view(np.uint8), kind(j), out=r_step)
                np.maximum(r_k, r_step, out=r_k)
            best, part_k = outputs[start:stop], buffers.best_k[:m]
            part_step, part_better = buffers.step[:m], buffers.better[:m]
            np.copyto(best, r_best[:, 0:last_y:sh])
            np.copyto(part_k, r_k[:, 0:last_y:sh])
            for i in range(1, kh):
                candidate = r_best[:, i : i + last_y : sh]
                np.greater(candidate, best, out=part_better)
                np.maximum(best, candidate, out=best)
                np.add(r_k[:, i : i + last_y : sh], kind(i * wp), out=part_step)
                np.multiply(part_step, part_better.view(np.uint8), out=part_step)
                np.maximum(part_k, part_step, out=part_k)
            # in-image index: corner + (i * W + j) * C = corner + (k - i * 2p) * C
            part_argmax = argmax[start:stop] if exact else buffers.index[:m]
            np.multiply(part_k, index_type.type(c), out=part_argmax)
            part_argmax += corner
            if padding:
                part_rows = buffers.rows[:m]
                np.floor_divide(part_k, kind(wp), out=part_step)
                np.multiply(part_step, index_type.type(2 * padding * c), out=part_rows)
                part_argmax -= part_rows
                # a maximum of -inf: the window holds only padding (output 0,
                # argmax -1) or only real pixels of -inf, which tie with the
                # padding (output -inf, argmax its first real pixel)
                np.equal(best, -np.inf, out=part_better)
                if part_better.any():
                    best[part_better], part_argmax[part_better] = _infinite_windows(
                        part_better, (h, w, c), window, padding, stride
                    )
            if not exact:
                np.copyto(argmax[start:stop], part_argmax, casting="unsafe")

        _for_chunks(chunks, pool_chunk)

    def maxpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, argmax, in_deltas, out_deltas
    ):
        n, h, w, c = inputs.shape
        size = h * w * c
        check_argmax_range("maxpool2d_backward_batch", (h, w, c), self.dtype)
        if n == 0 or out_deltas.size == 0:
            return

        def chunk_deltas(start, stop, worker):  # images of a chunk touch only their own
            count = stop - start
            index = argmax[start:stop].astype(np.intp)
            index += (np.arange(count, dtype=np.intp) * size)[:, None, None, None]
            valid = argmax[start:stop] >= 0  # windows of padding only (-1) add nothing
            deltas, target = out_deltas[start:stop], in_deltas[start:stop]
            flat = target.reshape(-1)
            if np.may_share_memory(flat, target):  # a view: add into it directly
                if valid.all():
                    np.add.at(flat, index.ravel(), deltas.ravel())
                else:
                    np.add.at(flat, index[valid], deltas[valid])
            else:
                sums = np.bincount(index[valid], weights=deltas[valid], minlength=count * size)
                target += sums.reshape(target.shape).astype(self.dtype)

        _for_chunks(_image_chunks(n, out_deltas[0].size, _CHUNK), chunk_deltas)

    def avgpool2d_forward_batch(self, inputs, window, outputs, padding, stride):
        windows = _windows(self._pad(inputs, padding, 0), window, stride, outputs.shape[1:3])
        counts = self._pixels_per_window(inputs.shape, window, padding, stride, outputs.shape)
        np.divide(windows.sum(axis=(3, 4)), counts, out=outputs)

    def avgpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, in_deltas, out_deltas
    ):
        counts = self._pixels_per_window(inputs.shape, window, padding, stride, out_deltas.shape)
        shares = out_deltas / counts
        self._add_windows(lambda i, j: shares, window, padding, stride, in_deltas)

    # ------------------------------------------------------------- randomness

    def fill_gaussian(self, mean, std, out):
        out[...] = self.rnd.normal(mean, std, out.shape)

    def generate_probability_mask(self, mask, probability):
        mask[...] = self.rnd.uniform(size=mask.shape) < probability

    # ---------------------------------------------------------------- helpers

    def _pad(self, images, padding, value, role=None, width=None, tail=0):
        """``images`` with ``padding`` pixels of ``value`` around each image.

        With a ``role``, the padded array is a buffer kept for that role, image
        shape and padding: its border is written once and only the inside is
        copied on later calls (a fresh multi-MB array per call costs its pages
        every time). The result is then valid until the next call with the same
        role, shapes and padding. (The image shape is part of the key: another
        image with the same padded shape would find stale pixels where its border
        should be.) ``width`` widens the padded images with more columns of
        ``value`` on the right; ``tail`` values of ``value`` follow the last image
        in memory (for routines that read a little past it).
        """
        n, h, w, c = images.shape
        if padding == 0 and width is None and not tail:
            return images
        shape = (n, h + 2 * padding, width or w + 2 * padding, c)

        def make():
            memory = np.full(int(np.prod(shape)) + tail, value, dtype=self.dtype)
            return memory[: memory.size - tail].reshape(shape)

        if role is None:
            padded = make()
        else:
            key = (role, images.shape, padding, value, shape, tail)
            padded = self._kept("padded", key, make)
        padded[:, padding : padding + h, padding : padding + w] = images
        return padded

    def _add_windows(self, contribution, window, padding, stride, images):
        """Add ``contribution(i, j)`` ``(N, Ho, Wo, C)`` at kernel offset (i, j) into images.

        The inverse of reading the windows: every output position adds its
        contribution to the pixel at offset (i, j) of its window; contributions
        that fall onto the padding are dropped.
        """
        n, h, w, c = images.shape
        (kh, kw), (sh, sw) = window, stride
        padded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=self.dtype)
        for i in range(kh):
            for j in range(kw):
                part = contribution(i, j)
                ho, wo = part.shape[1:3]
                padded[:, i : i + sh * ho : sh, j : j + sw * wo : sw] += part
        images += padded[:, padding : padding + h, padding : padding + w]

    def _pixels_per_window(self, in_shape, window, padding, stride, out_shape):
        """``(Ho, Wo, 1)``: how many non-padding pixels each window holds (at least 1)."""
        _, h, w, _ = in_shape
        _, ho, wo, _ = out_shape
        (kh, kw), (sh, sw) = window, stride

        def inside(size, k, s, n_out):
            start = np.arange(n_out) * s - padding
            return np.clip(np.minimum(start + k, size) - np.maximum(start, 0), 0, None)

        counts = inside(h, kh, sh, ho)[:, None] * inside(w, kw, sw, wo)[None, :]
        return np.maximum(counts, 1)[:, :, None].astype(self.dtype)


#: Arrays of one kind a handler keeps between calls (see ``NumpyHandler._kept``).
_KEPT_PER_KIND = 16

#: Elements per chunk of the chunked elementwise ops (256 KB of float32: stays in cache).
_CHUNK = 1 << 16


#: NumPy 2's ``clip`` runs about twice as fast as ``maximum`` with a scalar (measured
#: with NumPy 2.4: 0.6 against 1.4 ms for 1.6 million float32 values); NumPy 1.24's
#: clip is slower than its maximum.
_CLIP_IS_FAST = np.lib.NumpyVersion(np.__version__) >= "2.0.0"

#: ... from this many values on (in session: 0.72 of the time for 3.3 million values,
#: 0.80 for 120 000; 1.10 for 25 600, where clip's overhead per call shows).
_CLIP_MIN_SIZE = 1 << 16

#: ``sum_t`` over axis 0 of C-contiguous matrices with at least this many rows is a GEMV.
_GEMV_MIN_ROWS = 64


#: Floats of im2col columns per chunk of images (4 MB of float32: stays in the cache).
_COLUMNS_PER_CHUNK = 1 << 20


#: Input deltas of stride-1 convolutions with at least this many input channels are
#: computed as a convolution with the flipped kernel (with fewer, its GEMM is too thin).
_FLIPPED_MIN_CHANNELS = 8


def _image_chunks(n, floats_per_image, floats_per_chunk=None):
    """``(start, stop)`` chunks of ``n`` images of at most about ``floats_per_chunk``
    floats (default ``_COLUMNS_PER_CHUNK``).

    In an open session the number of chunks is a multiple of the team's size
    and the chunks are as even as can be, so that no thread gets more work
    than another (3 chunks on 2 threads would take as long as 4).
    """
    per_chunk = floats_per_chunk or _COLUMNS_PER_CHUNK
    per_chunk = max(1, per_chunk // max(1, floats_per_image))
    count = -(-n // per_chunk)
    team = _active_team()
    if team is not None and count > 0:
        count = min(n, -(-count // team.size) * team.size)
    bounds = [n * i // count for i in range(count + 1)] if count else [0]
    return [(start, stop) for start, stop in zip(bounds, bounds[1:]) if stop > start]


def _scratch(out, *inputs):
    """``out`` itself if it overlaps none of ``inputs``, else a new array like it.

    Lets an op build an intermediate result in its output instead of in a
    temporary: temporaries above ~128 KB come from fresh pages each time, which
    costs more than the arithmetic.
    """
    if any(np.may_share_memory(out, a) for a in inputs):
        return np.empty_like(out)
    return out


def _infinite_windows(where, image_shape, window, padding, stride):
    """Outputs and argmax of the max-pooling windows at ``where`` (a boolean
    ``(N, Ho, Wo, C)`` mask) whose maximum is -inf: ``(0, -1)`` for windows with
    no pixel of the image, ``(-inf, first image pixel)`` for the others."""
    h, w, c = image_shape
    _, y, x, channel = np.nonzero(where)
    top, left = y * stride[0] - padding, x * stride[1] - padding
    empty = (top + window[0] <= 0) | (top >= h) | (left + window[1] <= 0) | (left >= w)
    first = (np.maximum(top, 0) * w + np.maximum(left, 0)) * c + channel
    return np.where(empty, 0.0, -np.inf), np.where(empty, -1, first)


#: Products of at least this many floating point operations are split between the
#: threads of a session (smaller ones cost less than handing out the work).
_SHARED_FLOPS = 2e7

#: Products whose reduction is this many times longer than both other sides are
#: split along the reduction (see ``_shared_product``).
_REDUCTION_SPLIT = 4

#: Axpy updates of at least this many elements are split between the threads of a session.
_SHARED_AXPY = 1 << 18


def _shares(total, parts, align=1):
    """``parts`` ``(start, stop)`` ranges covering ``range(total)``, starts multiples of ``align``."""
    bounds = [min(total, (total * i // parts) // align * align) for i in range(parts)] + [total]
    return [(start, stop) for start, stop in zip(bounds, bounds[1:]) if stop > start]


#: Elementwise ops on at least this many elements are split between the threads of a
#: session.
_SHARED_ELEMENTS = 1 << 17


def _splittable(arguments):
    if any(not isinstance(a, np.ndarray) and a is not None and np.ndim(a) != 0 for a in arguments):
        return False  # (something array-like that is not an array)
    present = [a for a in arguments if isinstance(a, np.ndarray)]
    out = present[-1]
    if out.size < _SHARED_ELEMENTS or out.ndim == 0 or out.shape[0] < 2:
        return False
    for a in present:
        if a.shape != out.shape and not (
            a.ndim == out.ndim
            and a.shape[0] in (1, out.shape[0])
            and np.broadcast_shapes(a.shape, out.shape) == out.shape
        ):
            return False
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            same = a.strides == b.strides and a.ctypes.data == b.ctypes.data
            if not same and np.may_share_memory(a, b):
                return False
    return True


def _active_team():
    team = _threads.team()
    return team if team is not None and team.active else None


def _shared_product(a, b, out, beta):
    """``out = a @ b + beta * out`` split between the threads of an open session,
    each computing a block of rows (or columns, or a share of a long reduction)
    with a one-thread BLAS call.
    False (nothing written) when no session is open, the product is small or the
    arrays do not suit the BLAS (the caller then computes it alone)."""
    m, k = a.shape
    n = b.shape[1]
    if 2.0 * m * k * n < _SHARED_FLOPS:  # (first: cheaper than finding the team)
        return False
    team = _active_team()
    if team is None or not _blas.gemm_accepts(a, b, out):
        return False
    if k >= _REDUCTION_SPLIT * max(m, n):
        # a long reduction (weight gradients over a whole batch): split along K,
        # so that no thread packs an operand twice; the partial products meet in
        # the end (m * n additions against m * n * k multiply-adds)
        shares = _shares(k, team.size, 64)
        partial = [np.empty(out.shape, dtype=out.dtype) for _ in shares[1:]]
        targets = [(out, beta)] + [(p, 0.0) for p in partial]
        team.run(
            [
                functools.partial(_gemm_piece, a[:, i:j], b[i:j], target, target_beta)
                for (i, j), (target, target_beta) in zip(shares, targets)
            ]
        )
        for p in partial:
            out += p
        return True
    if m >= n:
        pieces = [(a[i:j], b, out[i:j]) for i, j in _shares(m, team.size, 8)]
    else:
        pieces = [(a, b[:, i:j], out[:, i:j]) for i, j in _shares(n, team.size, 16)]
    team.run([functools.partial(_gemm_piece, *piece, beta) for piece in pieces])
    return True


def _product(a, b, out, beta=0.0):
    """``out = a @ b + beta * out`` with BLAS, split between the threads of an open
    session when large; False (nothing written) when the BLAS cannot take the arrays."""
    return _shared_product(a, b, out, beta) or _blas.gemm(a, b, out, beta=beta)


def _gemm_piece(a, b, out, beta):
    if not _blas.gemm(a, b, out, beta=beta):  # its whole passed the same checks
        raise RuntimeError(f"BLAS refused a piece {a.shape} @ {b.shape} of a product")


def _axpy_piece(s, x, y):
    if not _blas.axpy(s, x, y):
        raise RuntimeError(f"BLAS refused a piece of {y.size} elements of an axpy")


def _shared_axpy(s, t, out):
    """``out += s * t`` with BLAS axpy, split between the threads of an open session
    when large; False when the BLAS cannot take the arrays."""
    team = _active_team()
    if team is None or out.size < _SHARED_AXPY or not _blas.axpy_accepts(t, out):
        return _blas.axpy(s, t, out)
    flat_t, flat_out = t.reshape(-1), out.reshape(-1)
    team.run(
        [
            functools.partial(_axpy_piece, s, flat_t[i:j], flat_out[i:j])
            for i, j in _shares(out.size, team.size, 16)
        ]
    )
    return True


def _transposed_product_is_faster(a, b):
    """Whether to compute ``a @ b`` as ``(b.T @ a.T).T``.

    OpenBLAS multiplies a few rows by a large transposed matrix (``b``
    F-contiguous, e.g. ``W.T`` for a C-contiguous weight matrix ``W``) about a
    third faster that way round, and much faster with several threads; this is
    the per-step product of the recurrent layers (``(B, S) @ R.T``).
    """
    return a.shape[0] <= 256 and b.flags.f_contiguous and not b.flags.c_contiguous


def _row_ids(v, rows, op, what="row id"):
    """The ids in the column ``v`` as ints; IndexError unless all are whole numbers
    in ``[0, rows)``.

    (NumPy would wrap negative ids around and truncate fractions silently.)
    """
    column = v[:, 0]
    # checked before the cast: NaN, infinities and huge values do not cast cleanly
    wrong = ~((column >= 0) & (column < rows) & (column == np.floor(column)))
    if np.any(wrong):
        bad = column[wrong][0]
        bad = int(bad) if np.isfinite(bad) and float(bad).is_integer() else float(bad)
        raise IndexError(
            f"NumpyHandler.{op}: {what} {bad} is out of range [0, {rows}) or not a whole number"
        )
    return column.astype(np.intp)


def _windows(padded, window, stride, out_hw):
    """A read-only view ``(N, Ho, Wo, kh, kw, C)`` of the sliding windows of NHWC images."""
    n, _, _, c = padded.shape
    s_n, s_h, s_w, s_c = padded.strides
    (kh, kw), (sh, sw), (ho, wo) = window, stride, out_hw
    return as_strided(
        padded,
        shape=(n, ho, wo, kh, kw, c),
        strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c),
        writeable=False,
    )


@functools.lru_cache(maxsize=64)
def _pool_corner_index(in_hwc, padding, stride, out_hw, dtype):
    """``(Ho, Wo, C)`` read-only in-image index ``(y * W + x) * C + c`` of the top-left
    pixel of every pooling window (meaningless where it is padding)."""
    h, w, c = in_hwc
    (sh, sw), (ho, wo) = stride, out_hw
    top = np.arange(ho)[:, None, None] * sh - padding
    left = np.arange(wo)[None, :, None] * sw - padding
    corner = ((top * w + left) * c + np.arange(c)).astype(dtype)
    corner.flags.writeable = False
    return corner


#: Most bytes of per-chunk parts of a convolution's weight gradient (see
#: ``_GradientParts``); beyond, each thread sums a fixed share of the chunks.
_PARTS_MAX_BYTES = 32 << 20

#: Weight gradients of convolutions with windows (im2col columns) of at most this many
#: values get their bias gradient from a column of ones in the same product: a
#: separate pass over the deltas costs more there (the CIFAR network's first layer,
#: 120 values: 0.94 of the time of its backward pass; its third, 800 values: 1.03).
_BIAS_COLUMN_MAX = 256

#: Weight gradients without im2col columns (``NumpyHandler._weight_gradient_directly``)
#: where the padded grid has at most this many times the output pixels.
_DIRECT_GRADIENT_MAX_WASTE = 1.6

#: Direct convolutions (see ``NumpyHandler._convolve_directly``) need window rows of
#: at least this many values (kw * C): the kernel is slow on short reductions.
_DIRECT_MIN_REDUCTION = 96

#: ... and at least this many filters (the kernel's other side).
_DIRECT_MIN_FILTERS = 16

#: ... and compute at most this many times the output columns (the padded width,
#: rounded up to whole panels, against the output width).
_DIRECT_MAX_WASTE = 1.4

#: ... and an image's packed windows of at most this many values (per thread).
_DIRECT_MAX_PACKED = 1 << 22

#: Packed windows per chunk of images of a direct convolution (512 KB of float32).
_DIRECT_CHUNK = 1 << 17


#: Largest number of neighbouring output pixels one GEMM row of a convolution computes.
_MAX_PIXEL_GROUP = 4

#: Grouping pixels is worth its extra FLOPs only while the filters are this few (F).
_GROUP_MAX_FILTERS = 32


def _pixel_group(stride, kw, wo, f):
    """How many neighbouring output pixels of a row one GEMM row computes (1: plain im2col).

    With ``g`` pixels per row the GEMM is ``(N*Ho*Wo/g, kh*(kw+g-1)*C) @ (.., g*F)``:
    ``(kw+g-1)/kw`` times the FLOPs (the filter matrix is block-banded), but ``g``
    times wider, which OpenBLAS runs much faster when F is small (32 filters
    reach ~60% of the GEMM peak, 96-128 ~80%), and the im2col matrix shrinks by
    ``(kw+g-1)/(g*kw)``. Only for stride 1, ``g`` dividing ``Wo``, and at most
    :data:`_GROUP_MAX_FILTERS` filters.
    """
    if stride != (1, 1) or f > _GROUP_MAX_FILTERS or kw < 2:
        return 1
    for group in range(_MAX_PIXEL_GROUP, 1, -1):
        if wo % group == 0 and group <= kw:
            return group
    return 1


def _grouped_filters(weights, group):
    """The ``(kh * (kw + g - 1) * C, g * F)`` filter matrix of a pixel group of ``g``.

    Column block ``q`` (output pixel ``q`` of the group) holds the kernel shifted
    by ``q`` pixels to the right, zeros elsewhere; ``g = 1`` is ``W.reshape(F, -1).T``.
    """
    f, kh, kw, c = weights.shape
    if group == 1:
        return weights.reshape(f, -1).T
    banded = np.zeros((kh, kw + group - 1, c, group, f), dtype=weights.dtype)
    kernel = weights.transpose(1, 2, 3, 0)  # (kh, kw, C, F)
    for q in range(group):
        banded[:, q : q + kw, :, q, :] = kernel
    return banded.reshape(kh * (kw + group - 1) * c, group * f)


def _fold_grouped_gradient(gradient, kernel_shape, group, f):
    """The ``(F, kh, kw, C)`` weight gradient from the gradient of the banded filters."""
    kh, kw, c = kernel_shape
    banded = gradient.reshape(kh, kw + group - 1, c, group, f)
    total = banded[:, 0:kw, :, 0, :].copy()
    for q in range(1, group):
        total += banded[:, q : q + kw, :, q, :]
    return total.transpose(3, 0, 1, 2)


class _PoolScratch:
    """The scratch arrays of max pooling for chunks of up to ``count`` images."""

    def __init__(self, count, sizes, dtype, kind, index_type, padding, exact):
        hp, ho, wo, c = sizes
        rows, out = (count, hp, wo, c), (count, ho, wo, c)
        self.row_best = np.empty(rows, dtype=dtype)
        self.row_k = np.empty(rows, dtype=kind)
        self.row_step = np.empty(rows, dtype=kind)
        self.row_better = np.empty(rows, dtype=bool)
        self.best_k = np.empty(out, dtype=kind)
        self.step = np.empty(out, dtype=kind)
        self.better = np.empty(out, dtype=bool)
        self.rows = np.empty(out, dtype=index_type) if padding else None
        self.index = None if exact else np.empty(out, dtype=index_type)


class _GradientParts:
    """The parts of a weight gradient that chunks of images add up, and their sum.

    One part per chunk, summed in chunk order at the end: the same sums whichever
    thread took which chunk (see :func:`_for_chunks`). Where those parts would
    take more than :data:`_PARTS_MAX_BYTES`, one part per thread instead, each
    thread adding up a fixed share of the chunks (``in_turn``).
    """

    def __init__(self, chunks, shape, dtype):
        team = _active_team()
        self.in_turn = len(chunks) * int(np.prod(shape)) * dtype.itemsize > _PARTS_MAX_BYTES
        slots = (team.size if team is not None else 1) if self.in_turn else len(chunks)
        self.parts = np.zeros((max(1, slots), *shape), dtype=dtype)
        self._chunk_of = {start: index for index, (start, _) in enumerate(chunks)}

    def of(self, start, worker):
        """The part that the chunk starting at image ``start`` adds into."""
        return self.parts[worker if self.in_turn else self._chunk_of[start]]

    def total(self):
        """The sum of the parts (in the first part)."""
        total = self.parts[0]
        for other in self.parts[1:]:
            total += other
        return total


class _Buffers:
    """im2col buffers for the largest of ``chunks`` (``(rows, k)``), one per worker
    thread (``buffers[worker]``, made on first use) and reused for all its chunks:
    a fresh multi-MB array per chunk would come from fresh pages every time. The
    columns from ``ones_from`` on are ones (the rest is left to the caller)."""

    def __init__(self, chunks, pixels, k, dtype, ones_from=None):
        largest = max((stop - start for start, stop in chunks), default=0)
        self._shape, self._dtype = (largest * pixels, k), dtype
        self._ones_from = k if ones_from is None else ones_from
        self._buffers = {}

    def __getitem__(self, worker):
        buffer = self._buffers.get(worker)
        if buffer is None:
            buffer = self._buffers[worker] = np.empty(self._shape, dtype=self._dtype)
            buffer[:, self._ones_from :] = 1
        return buffer


def _for_chunks(chunks, work, in_turn=False):
    """``work(start, stop, worker)`` for every ``(start, stop)`` of ``chunks``.

    In an open session the threads of the team (``worker`` is the thread's
    number, 0 the caller) take the chunks, each the next one not yet taken as
    soon as it is done with its last: a thread that the machine holds up (a
    virtual machine's CPU taken away for a while, other work) then does fewer
    chunks instead of keeping the others waiting. Chunks must write disjoint
    outputs, and what a chunk computes must not depend on the worker (only its
    scratch space may) unless ``in_turn``: the chunks are then dealt out in
    turn (worker ``i`` gets chunks ``i``, ``i + workers``, ...). Without a
    session all run here as worker 0.
    """
    team = _active_team()
    workers = min(team.size, len(chunks)) if team is not None else 1
    if workers <= 1:
        for start, stop in chunks:
            work(start, stop, 0)
        return
    taken = itertools.count()  # (next() of a count is atomic under the GIL)

    def job(worker):
        if in_turn:
            for start, stop in chunks[worker::workers]:
                work(start, stop, worker)
            return
        for index in iter(taken.__next__, None):
            if index >= len(chunks):
                return
            work(*chunks[index], worker)

    team.run([functools.partial(job, worker) for worker in range(workers)])


def _im2col(padded, window, stride, out_hw, buffer, group=1):
    """The im2col matrix ``(N * Ho * Wo, kh * kw * C)`` of NHWC images, in ``buffer``.

    With ``group > 1`` (stride 1), ``out_hw`` counts pixel groups along the width
    and ``window`` is the wider window of a group: windows start every ``group``
    pixels.
    """
    if group > 1:
        stride = (stride[0], stride[1] * group)
    windows = _windows(padded, window, stride, out_hw)
    columns = buffer[: windows.shape[0] * out_hw[0] * out_hw[1]]
    np.copyto(reshape_view(columns, windows.shape), windows)  # (rows may be strided)
    return columns
