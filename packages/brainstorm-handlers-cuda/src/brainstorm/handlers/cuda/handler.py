"""PyCudaHandler: every op of the handler table on an NVIDIA GPU.

The arithmetic happens in the CUDA C kernels of ``kernels/*.cu`` and, for
matrix products, in cuBLAS. This module only decides how to call them: it
describes every array to a kernel as a pointer plus strides (so strided views
work as inputs and outputs), picks launch sizes and maps row-major products
onto column-major cuBLAS.

The handler talks to the hardware through a small *device* object: allocate
zeroed memory, copy between host and device, launch a kernel by name, run
``sgemm``. :class:`~brainstorm.handlers.cuda._pycuda_device.PyCudaDevice` is
the GPU (pycuda + nvmath-python); the tests also run this very handler on
:class:`~brainstorm.handlers.cuda.emulation.CpuEmulatedDevice`, which runs the
same ``.cu`` kernels compiled by g++ on the CPU.

Supported layouts: any array whose strides are whole float32 elements. Every
kernel gets per-array strides over a few collapsed axes; layouts that do not
collapse far enough (rare: not produced by the network layout) take several
launches, and matrices that cuBLAS cannot read (no unit stride) are copied
first. Nothing is refused for its strides.
"""

from __future__ import annotations

import contextlib
from math import prod

import numpy as np

from brainstorm import randomness
from brainstorm.handlers.base_handler import (
    Handler,
    PreparedMatrix,
    block_pairs,
    check_argmax_range,
)
from brainstorm.handlers.cuda import _kernels
from brainstorm.handlers.cuda._layout import (
    ITEMSIZE,
    OP_N,
    blas_layout,
    blocks,
    broadcast_strides,
    collapse,
    element_strides,
    is_contiguous,
    launch_size,
    reduce_threads,
)

__all__ = ["PyCudaHandler", "CudaUnavailableError"]

_INSTALL_HINT = (
    "PyCudaHandler needs an NVIDIA GPU with its driver, pycuda and nvmath-python. "
    "`pip install brainstorm-handlers-cuda` builds pycuda from source, which needs the "
    "CUDA toolkit (nvcc and cuda.h on the PATH) and the driver library libcuda; "
    "if cuBLAS is not found, also `pip install 'nvmath-python[cu12]'` (or [cu13], "
    "matching the driver)."
)


class CudaUnavailableError(ImportError, RuntimeError):
    """PyCudaHandler cannot run here; the message says what is missing and how to install it.

    It is both an ``ImportError`` (like any missing optional dependency) and a
    ``RuntimeError`` (no driver or device at run time).
    """


class PyCudaHandler(Handler):
    """Handler that computes on an NVIDIA GPU (float32 only).

    Arrays are pycuda ``GPUArray`` objects (of a subclass that also reshapes
    strided views without copying, as NumPy does).

    Args:
        seed: seed of the random ops. ``None`` (default) derives the random
            state from :data:`brainstorm.randomness.global_rnd` the same way
            :class:`~brainstorm.handlers.numpy_handler.NumpyHandler` does
            (again after every ``global_rnd.set_seed``). Every random op
            draws a 64-bit key from that state for the Philox counter-based
            generator of ``kernels/random.cu``.

    Raises:
        CudaUnavailableError: pycuda, nvmath-python, the NVIDIA driver or a GPU
            is missing (the message says which and how to install).

    Example:
        >>> from brainstorm.handlers import PyCudaHandler
        >>> net.set_handler(PyCudaHandler())  # doctest: +SKIP
    """

    __undescribed__ = {"_device", "_ops"}

    #: Bytes of scratch memory the convolutions may use at once; batches whose
    #: im2col matrix is bigger are processed in chunks of images.
    workspace_bytes = 256 * 2**20

    def __init__(self, seed=None):
        from brainstorm.handlers.cuda._pycuda_device import PyCudaDevice

        self._attach(PyCudaDevice(), seed)

    @classmethod
    def _on_device(cls, device, seed=None):
        """A handler computing on another device object (the CPU emulation in the tests)."""
        handler = cls.__new__(cls)
        handler._attach(device, seed)
        return handler

    def _attach(self, device, seed):
        self._device = device
        self._ops = _kernels.op_codes()
        self.dtype = np.dtype(np.float32)
        self.context = device
        self.array_type = device.array_type
        self.EMPTY = device.allocate((0,))
        self.rnd = None if seed is None else randomness.RandomState(seed)
        super().__init__()

    def __describe__(self):
        return {"@type": type(self).__name__}

    def __init_from_description__(self, description):
        self.__init__()

    def __repr__(self):
        return f"{type(self).__name__}({self._device.name})"

    # ---------------------------------------------------------------- helpers

    def _launch(self, name, n, args):
        """Launch a grid-stride kernel over ``n`` elements."""
        self._device.launch(name, *launch_size(n), args)

    def _launch_reduction(self, name, n_outputs, n_reduced, args):
        """Launch a kernel with one block per output (looping beyond 4096 outputs)."""
        grid = (min(n_outputs, 4096), 1)
        self._device.launch(name, grid, (reduce_threads(n_reduced), 1, 1), args)

    def _map(self, op, out, a=None, b=None, c=None, s=0.0, t=0.0):
        """``out = op(a, b, c, s, t)`` elementwise (``ew_map``); inputs broadcast to ``out``."""
        shape = tuple(out.shape)
        if prod(shape) == 0:
            return
        operands = [out if x is None else x for x in (a, b, c)] + [out]
        strides = [broadcast_strides(x, shape, name) for x, name in zip(operands, "abc")]
        strides.append(element_strides(out))
        dims, strides = collapse(shape, strides)
        code = self._ops[op]
        for offsets, sub_dims, sub_strides in blocks(dims, strides, 3):
            args = [code, float(s), float(t), *sub_dims]
            for array, offset, array_strides in zip(operands, offsets, sub_strides):
                args += [array.ptr + ITEMSIZE * offset, *array_strides]
            self._launch("ew_map", prod(sub_dims), args)

    def _contiguous_copy(self, array):
        copy = self._device.allocate(tuple(array.shape))
        self._map("COPY", copy, a=array)
        return copy

    def _contiguous(self, array):
        if is_contiguous(tuple(array.shape), element_strides(array)):
            return array
        return self._contiguous_copy(array)

    def _matrix(self, array, rows, cols):
        """A ``rows x cols`` view of ``array`` (read only), or a contiguous copy if none exists."""
        try:
            return array.reshape((rows, cols))
        except ValueError:
            return self._contiguous_copy(array).reshape((rows, cols))

    def _writable_matrix(self, array, rows, cols):
        """``(matrix, copy_back)``: a ``rows x cols`` view of ``array`` to write into,
        or a new array whose contents ``copy_back()`` moves into ``array``."""
        try:
            return array.reshape((rows, cols)), lambda: None
        except ValueError:
            scratch = self._contiguous_copy(array)
            return scratch.reshape((rows, cols)), lambda: self._map("COPY", array, a=scratch)

    def _random_key(self):
        k0, k1 = self.rnd.randint(0, 2**32, size=2, dtype=np.uint64)
        return int(k0), int(k1)

    # ------------------------------------------------------------------ memory

    def allocate(self, shape):
        return self._device.allocate(_shape_tuple(shape))

    def ones(self, shape):
        mem = self.allocate(shape)
        self.fill(mem, 1.0)
        return mem

    def zeros(self, shape):
        return self.allocate(shape)  # the device zeroes new memory

    def create_from_numpy(self, arr):
        arr = np.asarray(arr)
        mem = self.allocate(arr.shape)
        self.set_from_numpy(mem, arr)
        return mem

    def get_numpy_copy(self, mem):
        host = np.empty(tuple(mem.shape), dtype=self.dtype)
        if host.size:
            source = self._contiguous(mem)  # kept alive until the copy is done
            self._device.download(host, source.ptr)
        return host

    def set_from_numpy(self, mem, arr):
        shape = tuple(mem.shape)
        values = np.ascontiguousarray(np.broadcast_to(np.asarray(arr, dtype=self.dtype), shape))
        if not values.size:
            return
        if is_contiguous(shape, element_strides(mem)):
            self._device.upload(mem.ptr, values)
        else:
            staging = self._device.allocate(shape)
            self._device.upload(staging.ptr, values)
            self._map("COPY", mem, a=staging)

    def copy_to(self, src, dest):
        self._map("COPY", dest, a=src)

    def copy_to_if(self, src, dest, cond):
        self._map("COPY_IF", dest, a=src, b=cond, c=dest)

    def fill(self, mem, val):
        self._map("FILL", mem, s=val)

    def fill_if(self, mem, val, cond):
        self._map("FILL_IF", mem, a=cond, c=mem, s=val)

    def is_fully_finite(self, a):
        if prod(a.shape) == 0:
            return True
        flag = self._device.allocate((1,))
        dims, strides = collapse(tuple(a.shape), [element_strides(a)])
        for (offset,), sub_dims, (sub_strides,) in blocks(dims, strides, 3):
            args = [*sub_dims, a.ptr + ITEMSIZE * offset, *sub_strides, flag.ptr]
            self._launch("ew_nonfinite", prod(sub_dims), args)
        return bool(self.get_numpy_copy(flag)[0] == 0)

    # ------------------------------------------------------ elementwise: tensors

    def abs_t(self, a, out):
        self._map("ABS", out, a=a)

    def sign_t(self, a, out):
        self._map("SIGN", out, a=a)

    def log_t(self, a, out):
        self._map("LOG", out, a=a)

    def sqrt_t(self, a, out):
        self._map("SQRT", out, a=a)

    def clip_t(self, a, a_min, a_max, out):
        self._map("CLIP", out, a=a, s=a_min, t=a_max)

    def add_tt(self, a, b, out):
        self._map("ADD", out, a=a, b=b)

    def subtract_tt(self, a, b, out):
        self._map("SUBTRACT", out, a=a, b=b)

    def mult_tt(self, a, b, out):
        self._map("MULT", out, a=a, b=b)

    def mult_add_tt(self, a, b, out):
        self._map("MULT_ADD", out, a=a, b=b, c=out)

    def divide_tt(self, a, b, out):
        self._map("DIVIDE", out, a=a, b=b)

    def modulo_tt(self, a, b, out):
        self._map("MODULO", out, a=a, b=b)

    def add_into_if(self, a, out, cond):
        self._map("ADD_IF", out, a=a, b=cond, c=out)

    # ------------------------------------------------------ elementwise: scalars

    def add_st(self, s, t, out):
        self._map("ADD_SCALAR", out, a=t, s=s)

    def mult_st(self, s, t, out):
        self._map("MULT_SCALAR", out, a=t, s=s)

    def mult_add_st(self, s, t, out):
        self._map("MULT_ADD_SCALAR", out, a=t, c=out, s=s)

    # ------------------------------------------- matrix with broadcast vector
    # The vector broadcasts through stride 0, so these are elementwise ops.

    def add_mv(self, m, v, out):
        self._map("ADD", out, a=m, b=v)

    def subtract_mv(self, m, v, out):
        self._map("SUBTRACT", out, a=m, b=v)

    def mult_mv(self, m, v, out):
        self._map("MULT", out, a=m, b=v)

    def mult_add_mv(self, m, v, out):
        self._map("MULT_ADD", out, a=m, b=v, c=out)

    def divide_mv(self, m, v, out):
        self._map("DIVIDE", out, a=m, b=v)

    # ------------------------------------------------- reshaping and indexing

    def broadcast_t(self, a, axis, out):
        if a.shape[axis] != 1:
            raise ValueError(f"broadcast_t: axis {axis} of shape {tuple(a.shape)} is not 1")
        self._map("COPY", out, a=a)

    def merge_tt(self, a, b, out):
        self._along_last_axis("merge_last", [a, b, out], a, b, out)

    def split_add_tt(self, x, out_a, out_b):
        self._along_last_axis("split_add_last", [x, out_a, out_b], out_a, out_b, x)

    def _along_last_axis(self, kernel, operands, a, b, whole):
        """Launch merge_last (a, b -> whole) or split_add_last (whole -> a, b)."""
        lead, na, nb = tuple(whole.shape[:-1]), a.shape[-1], b.shape[-1]
        if tuple(a.shape[:-1]) != lead or tuple(b.shape[:-1]) != lead or whole.shape[-1] != na + nb:
            raise ValueError(
                f"{kernel}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not concatenate "
                f"to {tuple(whole.shape)}"
            )
        if prod(whole.shape) == 0:
            return
        full_strides = [element_strides(x) for x in operands]
        dims, strides = collapse(lead, [s[:-1] for s in full_strides])
        for offsets, sub_dims, sub_strides in blocks(dims, strides, 2):
            args = [*sub_dims, na, nb]
            for x, offset, lead_strides, full in zip(operands, offsets, sub_strides, full_strides):
                args += [x.ptr + ITEMSIZE * offset, *lead_strides, full[-1]]
            self._launch(kernel, prod(sub_dims) * (na + nb), args)

    def binarize_v(self, v, out):
        rows, k = out.shape
        _check_shape("binarize_v", "v", v, (rows, 1))
        if rows * k:
            args = [rows, k, v.ptr, element_strides(v)[0], out.ptr, *element_strides(out)]
            self._launch("binarize", rows * k, args)

    def index_m_by_v(self, m, v, out):
        rows, k = m.shape
        _check_shape("index_m_by_v", "v", v, (rows, 1))
        _check_shape("index_m_by_v", "out", out, (rows, 1))
        if rows:
            args = [rows, k, m.ptr, *element_strides(m), v.ptr, element_strides(v)[0]]
            self._launch("index_m_by_v", rows, args + [out.ptr, element_strides(out)[0]])

    def index_rows_mv(self, m, v, out):
        """Gather rows: ``out[i, :] = m[int(v[i, 0]), :]`` (NaN rows for ids out of range).

        Args:
            m: matrix ``(R, K)``.
            v: vector ``(N, 1)`` of row ids in ``[0, R)``.
            out: matrix ``(N, K)`` (written).
        """
        rows, cols = out.shape
        _check_shape("index_rows_mv", "v", v, (rows, 1))
        _check_shape("index_rows_mv", "m", m, (m.shape[0], cols))
        if rows * cols:
            args = [rows, cols, m.shape[0], m.ptr, *element_strides(m), v.ptr]
            args += [element_strides(v)[0], out.ptr, *element_strides(out)]
            self._launch("index_rows", rows * cols, args)

    def scatter_add_rows_mv(self, m, v, out):
        """Scatter-add rows: ``out[int(v[i, 0]), :] += m[i, :]``; equal ids accumulate.

        Args:
            m: matrix ``(N, K)``.
            v: vector ``(N, 1)`` of row ids in ``[0, R)`` (others are skipped).
            out: matrix ``(R, K)`` (read and written).
        """
        rows, cols = m.shape
        _check_shape("scatter_add_rows_mv", "v", v, (rows, 1))
        _check_shape("scatter_add_rows_mv", "out", out, (out.shape[0], cols))
        if rows * cols:
            args = [rows, cols, out.shape[0], m.ptr, *element_strides(m), v.ptr]
            args += [element_strides(v)[0], out.ptr, *element_strides(out)]
            self._launch("scatter_add_rows", rows * cols, args)

    # ------------------------------------------------------------- reductions

    def sum_t(self, a, axis, out):
        shape = tuple(a.shape)
        if axis is None:
            if prod(out.shape) != 1:
                raise ValueError(f"sum_t: out of shape {tuple(out.shape)} for axis=None")
            dims, (strides,) = collapse(shape, [element_strides(a)])
            if len(dims) > 2:
                a = self._contiguous_copy(a)
                dims, strides = [prod(shape)], [1]
            dims, strides = [1] * (2 - len(dims)) + dims, [0] * (2 - len(strides)) + strides
            self._sum(1, 1, dims[0], dims[1], a.ptr, 0, 0, strides[0], strides[1], out.ptr, 0, 0)
            return
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis < len(shape):
            raise ValueError(f"sum_t: axis {axis} out of range for shape {shape}")
        reduced = shape[:axis] + shape[axis + 1 :]
        a_strides, o_strides = element_strides(a), element_strides(out)
        if tuple(out.shape) == shape[:axis] + (1,) + shape[axis + 1 :]:
            o_strides = o_strides[:axis] + o_strides[axis + 1 :]
        elif tuple(out.shape) != reduced:
            raise ValueError(f"sum_t: out of shape {tuple(out.shape)} for {shape}, axis {axis}")
        pre, pre_strides = collapse(shape[:axis], [a_strides[:axis], o_strides[:axis]])
        post, post_strides = collapse(shape[axis + 1 :], [a_strides[axis + 1 :], o_strides[axis:]])
        if len(pre) > 1 or len(post) > 1:  # not produced by the layout: go contiguous
            scratch = self._device.allocate(tuple(out.shape))
            self.sum_t(self._contiguous_copy(a), axis, scratch)
            self.copy_to(scratch, out)
            return
        self._sum(
            pre[0],
            post[0],
            shape[axis],
            1,
            a.ptr,
            pre_strides[0][0],
            post_strides[0][0],
            a_strides[axis],
            0,
            out.ptr,
            pre_strides[1][0],
            post_strides[1][0],
        )

    def _sum(self, n_out0, n_out1, n_red0, n_red1, *args):
        if n_out0 * n_out1:
            args = [n_out0, n_out1, n_red0, n_red1, *args]
            self._launch_reduction("sum_reduce", n_out0 * n_out1, n_red0 * n_red1, args)

    # --------------------------------------------------------- linear algebra

    def dot_mm(self, a, b, out, transa=False, transb=False):
        self._gemm(a, b, out, transa, transb, beta=0.0)

    def dot_add_mm(self, a, b, out, transa=False, transb=False):
        self._gemm(a, b, out, transa, transb, beta=1.0)

    def prepare_matrix(self, m, transpose=False):
        """The matrix itself: cuBLAS reads any of its blocks in place (see
        :meth:`dot_add_blocks`), so there is nothing to copy."""
        return PreparedMatrix(m, transpose)

    def dot_add_blocks(self, a_blocks, prepared, out_blocks):
        """One cuBLAS ``gemm`` with beta 1 per pair of blocks, reading and writing
        the (strided) blocks in place."""
        for a, block, transposed, out in block_pairs(a_blocks, prepared, out_blocks):
            self._gemm(a, block, out, False, transposed, beta=1.0)

    def session(self):
        """Nothing to get ready: GPU work is queued on the stream as it comes."""
        return contextlib.nullcontext(self)

    def defer(self, job, lane=None):
        """Queue the job's GPU work at once: the stream runs it while the host goes on
        with the Python of what follows, so nothing is gained by holding it back."""
        try:
            hash(lane)
        except TypeError:
            raise TypeError(
                f"PyCudaHandler.defer: lane must be hashable, got {type(lane).__name__}"
            ) from None
        job()

    def finish_deferred(self):
        """Nothing to wait for: deferred jobs were queued on the stream in order."""

    def _gemm(self, a, b, out, transa, transb, beta):
        """``out = op(a) @ op(b) + beta * out`` with one cuBLAS ``sgemm``.

        cuBLAS is column-major; a row-major matrix is the column-major storage
        of its transpose. So for the usual row-major ``out`` this computes
        ``out^T = op(b)^T @ op(a)^T``, reading each operand as stored (op N) or
        transposed (op T), whichever its strides allow; operands with no unit
        stride are copied first.
        """
        if len(a.shape) != 2 or len(b.shape) != 2 or len(out.shape) != 2:
            raise ValueError("dot_mm: a, b and out must be matrices")
        m, k = a.shape[::-1] if transa else tuple(a.shape)
        k_b, n = b.shape[::-1] if transb else tuple(b.shape)
        if k != k_b or tuple(out.shape) != (m, n):
            raise ValueError(
                f"dot_mm: cannot multiply {(m, k)} by {(k_b, n)} into {tuple(out.shape)} "
                f"(transa={transa}, transb={transb})"
            )
        if m == 0 or n == 0:
            return
        if k == 0:
            if beta == 0.0:
                self.fill(out, 0.0)
            return
        target, copy_back = out, None
        if (
            _n_layout(element_strides(out), m, n) is None
            and _n_layout(element_strides(out)[::-1], n, m) is None
        ):
            target = self._contiguous_copy(out) if beta else self._device.allocate((m, n))
            copy_back = target
        out_strides = element_strides(target)
        ldc = _n_layout(out_strides[::-1], n, m)
        if ldc is not None:  # out^T (n x m) is column-major: out^T = op(b)^T @ op(a)^T
            first, first_t, first_shape = b, not transb, (n, k)
            second, second_t, second_shape = a, not transa, (k, m)
            rows, cols = n, m
        else:  # out (m x n) is column-major: out = op(a) @ op(b)
            ldc = _n_layout(out_strides, m, n)
            first, first_t, first_shape = a, transa, (m, k)
            second, second_t, second_shape = b, transb, (k, n)
            rows, cols = m, n
        first, (op1, ld1) = self._blas_operand(first, first_t, *first_shape)
        second, (op2, ld2) = self._blas_operand(second, second_t, *second_shape)
        self._device.sgemm(
            op1, op2, rows, cols, k, 1.0, first.ptr, ld1, second.ptr, ld2, beta, target.ptr, ldc
        )
        if copy_back is not None:
            self._map("COPY", out, a=copy_back)

    def _blas_operand(self, array, transposed, rows, cols):
        """``(array, (op, ld))`` presenting ``array`` (or its transpose) as a rows x cols matrix."""
        for _ in range(2):
            strides = element_strides(array)
            layout = blas_layout(strides[::-1] if transposed else strides, rows, cols)
            if layout is not None:
                return array, layout
            array = self._contiguous_copy(array)
        raise AssertionError("a contiguous matrix always has a cuBLAS layout")

    # ------------------------------------------------------------ activations

    def sigmoid(self, x, y):
        self._map("SIGMOID", y, a=x)

    def sigmoid_deriv(self, x, y, dy, dx):
        self._map("SIGMOID_DERIV", dx, a=y, b=dy)

    def tanh(self, x, y):
        self._map("TANH", y, a=x)

    def tanh_deriv(self, x, y, dy, dx):
        self._map("TANH_DERIV", dx, a=y, b=dy)

    def rel(self, x, y):
        self._map("REL", y, a=x)

    def rel_deriv(self, x, y, dy, dx):
        self._map("REL_DERIV", dx, a=y, b=dy)

    def el(self, x, y):
        self._map("EL", y, a=x)

    def el_deriv(self, x, y, dy, dx):
        self._map("EL_DERIV", dx, a=y, b=dy)

    def softmax_m(self, m, out):
        rows, cols = m.shape
        _check_shape("softmax_m", "out", out, (rows, cols))
        if rows * cols:
            args = [rows, cols, m.ptr, *element_strides(m), out.ptr, *element_strides(out)]
            self._launch_reduction("softmax_rows", rows, cols, args)

    # ----------------------------------------------------------------- images

    def conv2d_forward_batch(self, inputs, weights, bias, outputs, padding, stride):
        n, h, w, c, f, kh, kw, ho, wo, sh, sw = _conv_geometry(
            inputs, weights, outputs, padding, stride
        )
        _check_shape("conv2d_forward_batch", "bias", bias, (f,))
        columns = kh * kw * c
        filters = self._matrix(weights, f, columns)
        for start, count in self._image_chunks(n, ho * wo * columns):
            patches = self._im2col(inputs, start, count, kh, kw, padding, sh, sw, ho, wo)
            result, copy_back = self._writable_matrix(
                outputs[start : start + count], count * ho * wo, f
            )
            self._map("COPY", result, a=bias.reshape((1, f)))  # then add the product
            self._gemm(patches, filters, result, False, True, beta=1.0)
            copy_back()

    def conv2d_backward_batch(
        self, inputs, weights, padding, stride, in_deltas, out_deltas, weight_deltas, bias_deltas
    ):
        n, h, w, c, f, kh, kw, ho, wo, sh, sw = _conv_geometry(
            inputs, weights, out_deltas, padding, stride
        )
        if in_deltas is not None:  # None: the input deltas are not computed
            _check_shape("conv2d_backward_batch", "in_deltas", in_deltas, tuple(inputs.shape))
        _check_shape("conv2d_backward_batch", "weight_deltas", weight_deltas, (f, kh, kw, c))
        _check_shape("conv2d_backward_batch", "bias_deltas", bias_deltas, (f,))
        columns = kh * kw * c
        filters = self._matrix(weights, f, columns)
        grad, copy_back = self._writable_matrix(weight_deltas, f, columns)
        self.fill(grad, 0.0)
        for start, count in self._image_chunks(n, 2 * ho * wo * columns):
            patches = self._im2col(inputs, start, count, kh, kw, padding, sh, sw, ho, wo)
            deltas = self._matrix(out_deltas[start : start + count], count * ho * wo, f)
            self._gemm(deltas, patches, grad, True, False, beta=1.0)
            if in_deltas is None:
                continue
            d0, d1, d2, d3 = element_strides(in_deltas)
            patch_deltas = self._device.allocate((count * ho * wo, columns))
            self._gemm(deltas, filters, patch_deltas, False, False, beta=0.0)
            geometry = [count, h, w, c, kh, kw, int(padding), sh, sw, ho, wo]
            target = in_deltas.ptr + ITEMSIZE * start * d0
            self._launch(
                "col2im_nhwc_add",
                count * h * w * c,
                [*geometry, patch_deltas.ptr, target, d0, d1, d2, d3],
            )
        copy_back()
        self.sum_t(self._matrix(out_deltas, n * ho * wo, f), 0, bias_deltas)

    def _image_chunks(self, n, floats_per_image):
        """``(start, count)`` chunks of the batch whose scratch fits ``workspace_bytes``."""
        per_chunk = max(1, self.workspace_bytes // max(1, ITEMSIZE * floats_per_image))
        return [(start, min(per_chunk, n - start)) for start in range(0, n, per_chunk)]

    def _im2col(self, inputs, start, count, kh, kw, padding, sh, sw, ho, wo):
        _, h, w, c = inputs.shape
        s0, s1, s2, s3 = element_strides(inputs)
        patches = self._device.allocate((count * ho * wo, kh * kw * c))
        if prod(patches.shape):
            geometry = [count, h, w, c, kh, kw, int(padding), sh, sw, ho, wo]
            source = inputs.ptr + ITEMSIZE * start * s0
            args = [*geometry, source, s0, s1, s2, s3, patches.ptr]
            self._launch("im2col_nhwc", prod(patches.shape), args)
        return patches

    def maxpool2d_forward_batch(self, inputs, window, outputs, padding, stride, argmax):
        geometry = _pool_geometry(inputs, window, outputs, padding, stride)
        _check_shape("maxpool2d_forward_batch", "argmax", argmax, tuple(outputs.shape))
        check_argmax_range("maxpool2d_forward_batch", tuple(inputs.shape[1:]), self.dtype)
        args = [*geometry, inputs.ptr, *element_strides(inputs), outputs.ptr]
        args += [*element_strides(outputs), argmax.ptr, *element_strides(argmax)]
        self._launch("maxpool_fwd", prod(outputs.shape), args)

    def maxpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, argmax, in_deltas, out_deltas
    ):
        geometry = _pool_geometry(inputs, window, out_deltas, padding, stride)
        _check_shape("maxpool2d_backward_batch", "argmax", argmax, tuple(out_deltas.shape))
        check_argmax_range("maxpool2d_backward_batch", tuple(inputs.shape[1:]), self.dtype)
        _check_shape("maxpool2d_backward_batch", "in_deltas", in_deltas, tuple(inputs.shape))
        args = [*geometry, argmax.ptr, *element_strides(argmax), out_deltas.ptr]
        args += [*element_strides(out_deltas), in_deltas.ptr, *element_strides(in_deltas)]
        self._launch("maxpool_bwd", prod(in_deltas.shape), args)

    def avgpool2d_forward_batch(self, inputs, window, outputs, padding, stride):
        geometry = _pool_geometry(inputs, window, outputs, padding, stride)
        args = [*geometry, inputs.ptr, *element_strides(inputs)]
        args += [outputs.ptr, *element_strides(outputs)]
        self._launch("avgpool_fwd", prod(outputs.shape), args)

    def avgpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, in_deltas, out_deltas
    ):
        geometry = _pool_geometry(inputs, window, out_deltas, padding, stride)
        _check_shape("avgpool2d_backward_batch", "in_deltas", in_deltas, tuple(inputs.shape))
        args = [*geometry, out_deltas.ptr, *element_strides(out_deltas)]
        args += [in_deltas.ptr, *element_strides(in_deltas)]
        self._launch("avgpool_bwd", prod(in_deltas.shape), args)

    # ------------------------------------------------------------- randomness

    def fill_gaussian(self, mean, std, out):
        self._random("random_normal", [float(mean), float(std)], out)

    def generate_probability_mask(self, mask, probability):
        self._random("random_mask", [float(probability)], mask)

    def _random(self, kernel, parameters, out):
        """Fill ``out``; element k (C order) gets Philox counter k under a fresh key."""
        k0, k1 = self._random_key()  # drawn even for empty arrays: the stream stays aligned
        if prod(out.shape) == 0:
            return
        dims, (strides,) = collapse(tuple(out.shape), [element_strides(out)])
        if len(dims) > 3:  # the counter must be the C-order index: fill a contiguous copy
            scratch = self._device.allocate(tuple(out.shape))
            self._random_fill(kernel, parameters, k0, k1, scratch)
            self.copy_to(scratch, out)
            return
        self._random_fill(kernel, parameters, k0, k1, out)

    def _random_fill(self, kernel, parameters, k0, k1, out):
        dims, strides = collapse(tuple(out.shape), [element_strides(out)])
        (_, sub_dims, (sub_strides,)) = next(blocks(dims, strides, 3))
        args = [*parameters, k0, k1, *sub_dims, out.ptr, *sub_strides]
        self._launch(kernel, prod(sub_dims), args)


def _shape_tuple(shape):
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(n) for n in shape)


def _check_shape(op, name, array, expected):
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} has shape {tuple(array.shape)}, expected {expected}")


def _n_layout(strides, rows, cols):
    """The leading dimension if cuBLAS can use the matrix as stored (op N), else None."""
    layout = blas_layout(strides, rows, cols)
    return layout[1] if layout is not None and layout[0] == OP_N else None


def _out_size(size, k, padding, stride):
    return (size + 2 * padding - k) // stride + 1


def _conv_geometry(inputs, weights, outputs, padding, stride):
    padding = int(padding)
    n, h, w, c = inputs.shape
    f, kh, kw, c_w = weights.shape
    sh, sw = (int(s) for s in stride)
    ho, wo = _out_size(h, kh, padding, sh), _out_size(w, kw, padding, sw)
    if c_w != c or tuple(outputs.shape) != (n, ho, wo, f):
        raise ValueError(
            f"convolution: inputs {tuple(inputs.shape)}, weights {tuple(weights.shape)}, "
            f"padding {padding}, stride {tuple(stride)} give outputs {(n, ho, wo, f)}, "
            f"got {tuple(outputs.shape)}"
        )
    return n, h, w, c, f, kh, kw, ho, wo, sh, sw


def _pool_geometry(inputs, window, outputs, padding, stride):
    """The kernels' geometry arguments ``n, h, w, c, kh, kw, pad, sh, sw, ho, wo``."""
    n, h, w, c = inputs.shape
    kh, kw = (int(k) for k in window)
    sh, sw = (int(s) for s in stride)
    ho, wo = _out_size(h, kh, padding, sh), _out_size(w, kw, padding, sw)
    if tuple(outputs.shape) != (n, ho, wo, c):
        raise ValueError(
            f"pooling: inputs {tuple(inputs.shape)}, window {(kh, kw)}, padding {padding}, "
            f"stride {(sh, sw)} give outputs {(n, ho, wo, c)}, got {tuple(outputs.shape)}"
        )
    return [n, h, w, c, kh, kw, int(padding), sh, sw, ho, wo]
