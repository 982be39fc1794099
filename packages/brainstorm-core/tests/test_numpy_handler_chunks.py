"""NumpyHandler ops give the same results whatever their chunk sizes and code paths.

The conformance shapes are small: with the default sizes every op runs in one
chunk, and the stride-1 input deltas of convolutions with few channels skip the
flipped-kernel path. Here the limits are lowered so that both are exercised.
"""

import contextlib

import numpy as np
import pytest

from brainstorm.handlers import NumpyHandler, _packed
from brainstorm.handlers import numpy_handler as module
from brainstorm.testing.handler_conformance import CONFORMANCE_CASES, check_op

CHUNKED_OPS = (
    "conv2d_forward_batch",
    "conv2d_backward_batch",
    "maxpool2d_forward_batch",
    "maxpool2d_backward_batch",
    "mult_add_st",
)


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(module, "_COLUMNS_PER_CHUNK", 1)  # one image per chunk
    monkeypatch.setattr(module, "_CHUNK", 3)  # elementwise chunks of 3 elements
    monkeypatch.setattr(module, "_FLIPPED_MIN_CHANNELS", 1)  # flipped-kernel input deltas


@pytest.mark.parametrize("case", [c.name for c in CONFORMANCE_CASES if c.op in CHUNKED_OPS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_ops_conform_with_tiny_chunks(tiny_chunks, case, dtype):
    check_op(NumpyHandler(dtype), case)


def test_mult_add_st_chunks_a_large_flat_buffer(tiny_chunks):
    h = NumpyHandler(np.float32)
    rng = np.random.RandomState(0)
    t = rng.randn(10).astype(np.float32)
    out = rng.randn(10).astype(np.float32)
    expected = out + np.float32(-0.5) * t
    h.mult_add_st(-0.5, t, out)
    np.testing.assert_array_equal(out, expected)
    strided = rng.randn(20).astype(np.float32)[::2]  # not a view after reshaping: no chunks
    expected = strided + np.float32(2) * t
    h.mult_add_st(2.0, t, strided)
    np.testing.assert_array_equal(strided, expected)


# shapes (N, H, W, C), (F, kh, kw), padding: with stride 1 these take pixel groups of
# 2, 3 or 4 output pixels per GEMM row (Wo divisible by them), or none
GROUP_SHAPES = [
    ((2, 6, 8, 3), (4, 3, 3), 1),  # Wo = 8: groups of 4
    ((3, 5, 9, 2), (5, 3, 3), 1),  # Wo = 9: groups of 3
    ((2, 4, 7, 4), (3, 2, 2), 0),  # Wo = 6: groups of 2 (kw = 2 caps the group)
    ((1, 7, 10, 3), (6, 5, 5), 2),  # Wo = 10: groups of 2
    ((2, 5, 7, 3), (4, 3, 3), 1),  # Wo = 7: no group
    ((2, 8, 8, 9), (40, 3, 3), 1),  # more than _GROUP_MAX_FILTERS filters: no group
]


@pytest.mark.parametrize("shapes", GROUP_SHAPES, ids=lambda s: "x".join(map(str, s[0])))
@pytest.mark.parametrize("tiny", [False, True], ids=["", "tiny-chunks"])
@pytest.mark.parametrize("ones", [True, False], ids=["bias-column", "bias-sums"])
def test_convolutions_with_pixel_groups_match_the_naive_reference(shapes, tiny, ones, monkeypatch):
    from brainstorm.testing.handler_conformance import (
        reference_conv2d_backward,
        reference_conv2d_forward,
    )

    # the bias gradient from a column of ones in the weight gradient's product, or not
    monkeypatch.setattr(module, "_BIAS_COLUMN_MAX", 10**6 if ones else 0)
    if tiny:
        monkeypatch.setattr(module, "_COLUMNS_PER_CHUNK", 1)
    (n, h, w, c), (f, kh, kw), pad = shapes
    rng = np.random.RandomState(h * w + f)
    x, weights = rng.randn(n, h, w, c), rng.randn(f, kh, kw, c)
    bias = rng.randn(f)
    handler = NumpyHandler(np.float64)
    expected = reference_conv2d_forward(x, weights, bias, pad, (1, 1))
    out = np.zeros(expected.shape)
    handler.conv2d_forward_batch(x, weights, bias, out, pad, (1, 1))
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    deltas = rng.randn(*expected.shape)
    want_in, want_w, want_b = reference_conv2d_backward(x, weights, pad, (1, 1), deltas)
    for with_inputs in (True, False):
        in_deltas = np.ones(x.shape) if with_inputs else None
        dw, db = np.full(weights.shape, 7.0), np.full(f, 7.0)
        handler.conv2d_backward_batch(x, weights, pad, (1, 1), in_deltas, deltas, dw, db)
        np.testing.assert_allclose(dw, want_w, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(db, want_b, rtol=1e-10, atol=1e-10)
        if with_inputs:
            np.testing.assert_allclose(in_deltas, 1.0 + want_in, rtol=1e-10, atol=1e-10)


def test_pixel_groups_are_chosen_only_where_they_apply():
    assert module._pixel_group((1, 1), 5, 32, 32) == 4
    assert module._pixel_group((1, 1), 5, 15, 32) == 3
    assert module._pixel_group((1, 1), 5, 7, 32) == 1  # 7 is prime
    assert module._pixel_group((1, 1), 5, 16, 64) == 1  # many filters: fat enough
    assert module._pixel_group((2, 2), 5, 16, 32) == 1  # strided
    assert module._pixel_group((1, 1), 1, 16, 32) == 1  # 1x1 kernels


# shapes (N, H, W, C), (F, kh, kw), padding for the direct convolution (window rows of
# kw * C values, a multiple of 4; see NumpyHandler._convolve_directly)
DIRECT_SHAPES = [
    ((3, 15, 15, 32), (32, 5, 5), 2),  # the CIFAR network's second convolution
    ((2, 5, 7, 4), (3, 3, 3), 1),  # 3 filters: the kernel's partial panels
    ((1, 6, 5, 8), (17, 2, 3), 0),
    ((4, 3, 9, 2), (20, 1, 2), 2),
    ((2, 1, 1, 12), (5, 1, 1), 0),  # one pixel
    ((5, 8, 8, 4), (33, 4, 4), 1),  # several images per chunk
]


needs_kernels = pytest.mark.skipif(
    not _packed.available(), reason="OpenBLAS's packing routines and kernels are not usable here"
)


def _spy_on(monkeypatch, method):
    """The list of what every call of ``NumpyHandler.<method>`` returns, from now on."""
    results = []
    original = getattr(module.NumpyHandler, method)

    def spy(self, *args):
        results.append(original(self, *args))
        return results[-1]

    monkeypatch.setattr(module.NumpyHandler, method, spy)
    return results


@needs_kernels
@pytest.mark.parametrize("shapes", DIRECT_SHAPES, ids=lambda s: "x".join(map(str, s[0])))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("session", [False, True], ids=["", "session"])
def test_direct_convolutions_match_the_naive_reference(shapes, dtype, session, monkeypatch):
    from brainstorm.testing.handler_conformance import (
        reference_conv2d_backward,
        reference_conv2d_forward,
    )

    # every convolution here goes the direct way (the defaults take it only where it
    # pays), the input deltas too (flipped kernel), chunks of one or two images
    monkeypatch.setattr(module, "_DIRECT_MIN_REDUCTION", 1)
    monkeypatch.setattr(module, "_DIRECT_MIN_FILTERS", 1)
    monkeypatch.setattr(module, "_DIRECT_MAX_WASTE", 1e9)
    monkeypatch.setattr(module, "_DIRECT_CHUNK", 2 * 16 * 16 * 64)
    monkeypatch.setattr(module, "_FLIPPED_MIN_CHANNELS", 1)
    direct = _spy_on(monkeypatch, "_convolve_directly")
    (n, h, w, c), (f, kh, kw), pad = shapes
    rng = np.random.RandomState(h * w + f)
    x = rng.randn(n, h, w, c).astype(dtype)
    weights, bias = rng.randn(f, kh, kw, c).astype(dtype), rng.randn(f).astype(dtype)
    tolerance = 2e-4 if dtype == np.float32 else 1e-10
    handler = NumpyHandler(dtype)
    expected = reference_conv2d_forward(x, weights, bias, pad, (1, 1))
    out = np.full(expected.shape, 5.0, dtype=dtype)
    deltas = rng.randn(*expected.shape).astype(dtype)
    want_in, want_w, want_b = reference_conv2d_backward(x, weights, pad, (1, 1), deltas)
    in_deltas = np.ones(x.shape, dtype=dtype)
    dw, db = np.zeros(weights.shape, dtype=dtype), np.zeros(f, dtype=dtype)
    with handler.session() if session else contextlib.nullcontext():
        handler.conv2d_forward_batch(x, weights, bias, out, pad, (1, 1))
        handler.conv2d_backward_batch(x, weights, pad, (1, 1), in_deltas, deltas, dw, db)
    # forward; the input deltas too where they are a convolution with the flipped
    # kernel (square kernels, padding below their size) whose rows (kw * F values)
    # keep the panels aligned
    flipped = kh == kw and pad < kh
    panel = _packed.kernels_for(dtype).right_width  # (4 float32, 2 float64 on AVX-512)
    aligned = (panel * kw * f * np.dtype(dtype).itemsize) % 64 == 0
    assert direct == [True] + ([aligned] if flipped else [])
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(in_deltas, 1.0 + want_in, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(dw, want_w, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(db, want_b, rtol=tolerance, atol=tolerance)


@needs_kernels
def test_the_direct_convolution_is_taken_where_it_pays():
    h = NumpyHandler(np.float32)

    def direct(image, kernel, padding, filters=32):
        (n, hh, ww, c), (kh, kw) = image, kernel
        shape = (n, hh + 2 * padding - kh + 1, ww + 2 * padding - kw + 1, filters)
        x, w = np.zeros(image, np.float32), np.zeros((filters, kh, kw, c), np.float32)
        out = np.zeros(shape, np.float32)
        return h._convolve_directly(x, w, None, out, padding, (1, 1), False)

    assert direct((2, 15, 15, 32), (5, 5), 2)  # padded width 19 -> 20 for 15 outputs
    assert not direct((2, 32, 32, 3), (5, 5), 2)  # window rows of 15 values: too short
    assert not direct((2, 7, 7, 32), (5, 5), 2)  # 12 columns for 7 outputs: too wasteful
    assert not direct((2, 15, 15, 32), (5, 5), 2, filters=8)  # too few filters


@needs_kernels
def test_direct_convolutions_of_images_whose_padded_widths_round_alike():
    # widths 30 and 29 (padding 1) round up to the same panel-aligned width: the
    # second must not see the first one's pixels in its padding
    from brainstorm.testing.handler_conformance import reference_conv2d_forward

    h = NumpyHandler(np.float64)
    rng = np.random.RandomState(3)
    weights = rng.randn(32, 3, 3, 32)
    for width in (30, 29, 30):
        x = rng.randn(2, 6, width, 32)
        expected = reference_conv2d_forward(x, weights, np.zeros(32), 1, (1, 1))
        out = np.zeros(expected.shape)
        assert h._convolve_directly(x, weights, None, out, 1, (1, 1), False)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@needs_kernels
def test_direct_convolutions_refuse_long_window_rows_and_wrong_output_shapes():
    h = NumpyHandler(np.float32)
    limit = _packed.MAX_REDUCTION  # (kernels may rely on K <= their block size)
    x = np.zeros((1, 8, 8, limit // 4 + 4), np.float32)
    w = np.zeros((32, 3, 4, x.shape[3]), np.float32)
    assert not h._convolve_directly(
        x, w, None, np.zeros((1, 6, 5, 32), np.float32), 0, (1, 1), False
    )
    x, w = np.zeros((1, 8, 8, 32), np.float32), np.zeros((32, 3, 3, 32), np.float32)
    assert h._convolve_directly(x, w, None, np.zeros((1, 6, 6, 32), np.float32), 0, (1, 1), False)
    assert not h._convolve_directly(
        x, w, None, np.zeros((1, 7, 6, 32), np.float32), 0, (1, 1), False
    )


def test_chunks_go_to_whichever_thread_is_free_and_the_results_do_not_depend_on_it(
    monkeypatch,
):
    # which thread takes which chunk depends on timing: the weight gradient sums its
    # chunks' parts in order, so any assignment gives the same bits
    rng = np.random.RandomState(5)
    x, weights = rng.randn(12, 9, 9, 5).astype(np.float32), rng.randn(6, 3, 3, 5).astype(np.float32)
    deltas = rng.randn(12, 9, 9, 6).astype(np.float32)
    h = NumpyHandler(np.float32)
    monkeypatch.setattr(module, "_COLUMNS_PER_CHUNK", 1)  # one image per chunk

    def gradients():
        dw, db = np.zeros(weights.shape, np.float32), np.zeros(6, np.float32)
        h.conv2d_backward_batch(x, weights, 1, (1, 1), None, deltas, dw, db)
        return dw, db

    expected = gradients()
    taken = []
    original = module._for_chunks

    def backwards(chunks, work, in_turn=False):  # the chunks in reverse, changing workers
        assert not in_turn
        for index in reversed(range(len(chunks))):
            taken.append(index)
            work(*chunks[index], index % 3)

    monkeypatch.setattr(module, "_for_chunks", backwards)
    for got, want in zip(gradients(), expected):
        np.testing.assert_array_equal(got, want)
    assert taken[0] == 11
    monkeypatch.setattr(module, "_for_chunks", original)
    with h.session():  # shared between the threads
        for got, want in zip(gradients(), expected):
            np.testing.assert_array_equal(got, want)


def test_weight_gradients_of_many_large_chunks_are_summed_per_thread_in_turn(monkeypatch):
    # (one part per chunk would take too much memory: each thread sums a fixed share)
    from brainstorm.testing.handler_conformance import reference_conv2d_backward

    monkeypatch.setattr(module, "_COLUMNS_PER_CHUNK", 1)
    monkeypatch.setattr(module, "_PARTS_MAX_BYTES", 0)
    rng = np.random.RandomState(6)
    x, weights = rng.randn(7, 6, 6, 3), rng.randn(4, 3, 3, 3)
    deltas = rng.randn(7, 6, 6, 4)
    _, want_w, want_b = reference_conv2d_backward(x, weights, 1, (1, 1), deltas)
    h = NumpyHandler(np.float64)
    results = []
    for _ in range(3):
        dw, db = np.zeros(weights.shape), np.zeros(4)
        with h.session():
            h.conv2d_backward_batch(x, weights, 1, (1, 1), None, deltas, dw, db)
        np.testing.assert_allclose(dw, want_w, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(db, want_b, rtol=1e-10, atol=1e-10)
        results.append((dw, db))
    for dw, db in results[1:]:
        np.testing.assert_array_equal(dw, results[0][0])
        np.testing.assert_array_equal(db, results[0][1])


# (N, H, W, C), (F, kh, kw), padding: weight gradients without im2col columns
GRADIENT_SHAPES = [
    ((2, 6, 7, 5), (16, 3, 3), 1),
    ((3, 5, 5, 9), (32, 5, 5), 2),
    ((1, 9, 4, 3), (16, 2, 4), 0),
    ((4, 3, 8, 6), (48, 1, 3), 1),
    ((2, 12, 12, 40), (16, 5, 5), 2),  # window rows of 200 values, 144 pixels per image
]


@needs_kernels
@pytest.mark.parametrize("shapes", GRADIENT_SHAPES, ids=lambda s: "x".join(map(str, s[0])))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("session", [False, True], ids=["", "session"])
@pytest.mark.parametrize("chunk", [1, 1 << 17], ids=["one-image-chunks", ""])
def test_direct_weight_gradients_match_the_naive_reference(
    shapes, dtype, session, chunk, monkeypatch
):
    from brainstorm.testing.handler_conformance import reference_conv2d_backward

    monkeypatch.setattr(module, "_DIRECT_MIN_REDUCTION", 1)
    monkeypatch.setattr(module, "_DIRECT_MIN_FILTERS", 1)
    monkeypatch.setattr(module, "_DIRECT_GRADIENT_MAX_WASTE", 1e9)
    monkeypatch.setattr(module, "_DIRECT_CHUNK", chunk)
    taken = _spy_on(monkeypatch, "_weight_gradient_directly")
    (n, h, w, c), (f, kh, kw), pad = shapes
    rng = np.random.RandomState(n * h * w + f)
    x, weights = rng.randn(n, h, w, c).astype(dtype), rng.randn(f, kh, kw, c).astype(dtype)
    ho, wo = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
    deltas = rng.randn(n, ho, wo, f).astype(dtype)
    _, want_w, want_b = reference_conv2d_backward(x, weights, pad, (1, 1), deltas)
    handler = NumpyHandler(dtype)
    tolerance = 2e-4 if dtype == np.float32 else 1e-10
    for _ in range(2):  # (the kept grid of deltas is reused: its padding stays 0)
        dw, db = np.full(weights.shape, 3.0, dtype), np.full(f, 3.0, dtype)
        with handler.session() if session else contextlib.nullcontext():
            handler.conv2d_backward_batch(x, weights, pad, (1, 1), None, deltas, dw, db)
        np.testing.assert_allclose(dw, want_w, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(db, want_b, rtol=tolerance, atol=tolerance)
        deltas = deltas[::-1].copy()  # other deltas the second time
        _, want_w, want_b = reference_conv2d_backward(x, weights, pad, (1, 1), deltas)
    assert taken == [True, True]


@needs_kernels
def test_the_direct_weight_gradient_is_taken_where_it_pays():
    h = NumpyHandler(np.float32)

    def direct(image, filters, kernel, padding):
        n, hh, ww, c = image
        x = np.zeros(image, np.float32)
        weights = np.zeros((filters, kernel, kernel, c), np.float32)
        deltas = np.zeros(
            (n, hh + 2 * padding - kernel + 1, ww + 2 * padding - kernel + 1, filters), np.float32
        )
        return h._weight_gradient_directly(x, deltas, weights, padding, np.zeros_like(weights))

    assert direct((2, 16, 16, 32), 32, 5, 2)  # the CIFAR network's second convolution
    assert not direct((2, 8, 8, 32), 64, 5, 2)  # its third: 2.25 times the pixels
    assert not direct((2, 32, 32, 3), 32, 5, 2)  # its first: window rows of 15 values
    assert not direct((2, 16, 16, 32), 24, 5, 2)  # 24 filters: panels not aligned
