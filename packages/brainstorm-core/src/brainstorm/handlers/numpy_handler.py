"""The CPU handler: every op of :class:`~brainstorm.handlers.base_handler.Handler` in NumPy.

All arithmetic happens in the handler's dtype (float32 unless asked otherwise).
Ops write through ``out=`` or ``out[...] =`` so that they work on the strided
views the network layout hands out. Convolution is one im2col over the whole
batch followed by one matrix product; pooling loops over the kernel offsets
only, each step vectorized over the batch, the output pixels and the channels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from brainstorm import randomness
from brainstorm.handlers.base_handler import Handler

__all__ = ["NumpyHandler"]


class NumpyHandler(Handler):
    """Handler that computes on the CPU with NumPy.

    Args:
        dtype: floating point dtype of the arrays (``np.float32`` by default).
        seed: seed of the random ops. ``None`` (default) derives the random
            state from :data:`brainstorm.randomness.global_rnd`, and derives it
            again after every ``global_rnd.set_seed``, so seeding the global
            state makes the dropout masks of an existing handler reproducible.

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

    def copy_to(self, src, dest):
        np.copyto(dest, src, casting="same_kind")

    def copy_to_if(self, src, dest, cond):
        np.copyto(dest, src, where=cond != 0)

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

    def add_tt(self, a, b, out):
        np.add(a, b, out=out)

    def subtract_tt(self, a, b, out):
        np.subtract(a, b, out=out)

    def mult_tt(self, a, b, out):
        np.multiply(a, b, out=out)

    def mult_add_tt(self, a, b, out):
        out += a * b

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
        out += self._scalar(s) * t

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
        out[...] = v == np.arange(out.shape[1])

    def index_m_by_v(self, m, v, out):
        out[...] = np.take_along_axis(m, v.astype(np.intp), axis=1)

    def index_rows_mv(self, m, v, out):
        out[...] = m[_row_ids(v, m.shape[0], "index_rows_mv")]

    def scatter_add_rows_mv(self, m, v, out):
        np.add.at(out, _row_ids(v, out.shape[0], "scatter_add_rows_mv"), m)

    # ------------------------------------------------------------- reductions

    def sum_t(self, a, axis, out):
        if axis is None:
            out[...] = a.sum()
        else:
            np.sum(a, axis=axis, out=out, keepdims=out.ndim == a.ndim)

    # --------------------------------------------------------- linear algebra

    def dot_mm(self, a, b, out, transa=False, transb=False):
        a = a.T if transa else a
        b = b.T if transb else b
        if _transposed_product_is_faster(a, b):
            out[...] = np.dot(b.T, a.T).T
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
        if _transposed_product_is_faster(a, b):
            out += np.dot(b.T, a.T).T
        else:
            out += np.dot(a, b)

    # ------------------------------------------------------------ activations
    # Each function next to its derivative; derivatives work from the outputs y.

    def sigmoid(self, x, y):
        # sigmoid(x) = (1 + tanh(x / 2)) / 2: no overflow, no temporary, and several
        # times faster than exp-based forms (np.where alone costs more). Absolute error
        # below one ulp of 1; values under ~1e-8 (float32) round to 0.
        np.multiply(x, self._scalar(0.5), out=y)
        np.tanh(y, out=y)
        np.multiply(y, self._scalar(0.5), out=y)
        np.add(y, self._scalar(0.5), out=y)

    def sigmoid_deriv(self, x, y, dy, dx):
        factor = _scratch(dx, y, dy)
        np.multiply(y, y, out=factor)
        np.subtract(y, factor, out=factor)  # y (1 - y)
        np.multiply(dy, factor, out=dx)

    def tanh(self, x, y):
        np.tanh(x, out=y)

    def tanh_deriv(self, x, y, dy, dx):
        factor = _scratch(dx, y, dy)
        np.multiply(y, y, out=factor)
        np.subtract(self._scalar(1), factor, out=factor)
        np.multiply(dy, factor, out=dx)

    def rel(self, x, y):
        np.maximum(x, 0, out=y)

    def rel_deriv(self, x, y, dy, dx):
        np.multiply(dy, y > 0, out=dx)

    def el(self, x, y):
        negative_part = np.expm1(np.minimum(x, 0))
        np.maximum(x, 0, out=y)
        y += negative_part

    def el_deriv(self, x, y, dy, dx):
        factor = _scratch(dx, y, dy)
        np.add(y, self._scalar(1), out=factor)
        np.minimum(factor, self._scalar(1), out=factor)
        np.multiply(dy, factor, out=dx)

    def softmax_m(self, m, out):
        row_max = m.max(axis=1, keepdims=True)
        np.subtract(m, row_max, out=out)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)

    # ----------------------------------------------------------------- images

    def conv2d_forward_batch(self, inputs, weights, bias, outputs, padding, stride):
        n, ho, wo, f = outputs.shape
        padded = self._pad(inputs, padding, 0)
        columns = _windows(padded, weights.shape[1:3], stride, (ho, wo)).reshape(n * ho * wo, -1)
        result = np.dot(columns, weights.reshape(f, -1).T)
        result += bias
        outputs[...] = result.reshape(outputs.shape)

    def conv2d_backward_batch(
        self, inputs, weights, padding, stride, in_deltas, out_deltas, weight_deltas, bias_deltas
    ):
        n, ho, wo, f = out_deltas.shape
        window = weights.shape[1:3]
        padded = self._pad(inputs, padding, 0)
        columns = _windows(padded, window, stride, (ho, wo)).reshape(n * ho * wo, -1)
        deltas = out_deltas.reshape(n * ho * wo, f)
        weight_deltas[...] = np.dot(deltas.T, columns).reshape(weight_deltas.shape)
        bias_deltas[...] = deltas.sum(axis=0)
        column_deltas = np.dot(deltas, weights.reshape(f, -1))
        column_deltas = column_deltas.reshape((n, ho, wo) + weights.shape[1:])
        self._add_windows(
            lambda i, j: column_deltas[:, :, :, i, j], window, padding, stride, in_deltas
        )

    def maxpool2d_forward_batch(self, inputs, window, outputs, padding, stride, argmax):
        windows = _windows(self._pad(inputs, padding, -np.inf), window, stride, outputs.shape[1:3])
        corner = self._corner_index(inputs.shape, padding, stride, outputs.shape)
        width, channels = inputs.shape[2:]
        best = np.full(outputs.shape, -np.inf, dtype=self.dtype)
        best_index = np.full(outputs.shape, -1, dtype=self.dtype)
        for i in range(window[0]):
            for j in range(window[1]):
                candidate = windows[:, :, :, i, j]
                better = candidate > best  # strict: the first maximum in the window wins
                np.copyto(best, candidate, where=better)
                np.copyto(best_index, corner + (i * width + j) * channels, where=better)
        outputs[...] = np.where(best_index >= 0, best, 0)
        argmax[...] = best_index

    def maxpool2d_backward_batch(
        self, inputs, window, outputs, padding, stride, argmax, in_deltas, out_deltas
    ):
        corner = self._corner_index(inputs.shape, padding, stride, out_deltas.shape)
        width, channels = inputs.shape[2:]

        def winner_deltas(i, j):
            return np.where(argmax == corner + (i * width + j) * channels, out_deltas, 0)

        self._add_windows(winner_deltas, window, padding, stride, in_deltas)

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

    def _pad(self, images, padding, value):
        """``images`` with ``padding`` pixels of ``value`` around each image."""
        if padding == 0:
            return images
        n, h, w, c = images.shape
        padded = np.full((n, h + 2 * padding, w + 2 * padding, c), value, dtype=self.dtype)
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

    def _corner_index(self, in_shape, padding, stride, out_shape):
        """``(Ho, Wo, C)``: in-image index of the top-left pixel of every window.

        The index of pixel (y, x), channel c, is ``(y * W + x) * C + c``; the
        pixel at offset (i, j) of a window has index ``corner + (i * W + j) * C``
        (meaningless for padding pixels, which never win a maximum).
        """
        _, _, w, c = in_shape
        _, ho, wo, _ = out_shape
        top = np.arange(ho)[:, None, None] * stride[0] - padding
        left = np.arange(wo)[None, :, None] * stride[1] - padding
        return ((top * w + left) * c + np.arange(c)).astype(self.dtype)

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


def _scratch(out, *inputs):
    """``out`` itself if it overlaps none of ``inputs``, else a new array like it.

    Lets an op build an intermediate result in its output instead of in a
    temporary: temporaries above ~128 KB come from fresh pages each time, which
    costs more than the arithmetic.
    """
    if any(np.may_share_memory(out, a) for a in inputs):
        return np.empty_like(out)
    return out


def _transposed_product_is_faster(a, b):
    """Whether to compute ``a @ b`` as ``(b.T @ a.T).T``.

    OpenBLAS multiplies a few rows by a large transposed matrix (``b``
    F-contiguous, e.g. ``W.T`` for a C-contiguous weight matrix ``W``) about a
    third faster that way round, and much faster with several threads; this is
    the per-step product of the recurrent layers (``(B, S) @ R.T``).
    """
    return a.shape[0] <= 256 and b.flags.f_contiguous and not b.flags.c_contiguous


def _row_ids(v, rows, op):
    """The ids in the column ``v`` as ints; IndexError unless all are in ``[0, rows)``.

    (NumPy would wrap negative ids around silently.)
    """
    ids = v[:, 0].astype(np.intp)
    if ids.size and (ids.min() < 0 or ids.max() >= rows):
        bad = ids[(ids < 0) | (ids >= rows)][0]
        raise IndexError(f"NumpyHandler.{op}: row id {bad} is out of range [0, {rows})")
    return ids


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
