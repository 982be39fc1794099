"""NumpyHandler edge cases found in review."""

import numpy as np
import pytest

from brainstorm.handlers.numpy_handler import NumpyHandler


@pytest.mark.parametrize("bad", [-1.0, 1.5, 3.0, np.nan, np.inf, -np.inf, 1e20])
def test_class_ids_must_be_valid(bad):  # (pytest turns cast warnings into errors)
    h = NumpyHandler(np.float32)
    m = np.arange(6, dtype=np.float32).reshape(2, 3)
    v = np.array([[0.0], [bad]], dtype=np.float32)
    with pytest.raises(IndexError, match="class id .* is out of range"):
        h.index_m_by_v(m, v, np.zeros((2, 1), np.float32))
    with pytest.raises(IndexError, match="class id .* is out of range"):
        h.binarize_v(v, np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e20])
def test_row_ids_that_do_not_cast_cleanly_are_index_errors(bad):
    h = NumpyHandler(np.float64)
    ids = np.array([[1.0], [bad]])
    with pytest.raises(IndexError, match="row id .* is out of range"):
        h.index_rows_mv(np.ones((4, 2)), ids, np.zeros((2, 2)))
    with pytest.raises(IndexError, match="row id .* is out of range"):
        h.scatter_add_rows_mv(np.ones((2, 2)), ids, np.zeros((4, 2)))


def test_max_pooling_of_a_padded_row_wider_than_65535_pixels():
    from brainstorm.testing.handler_conformance import reference_maxpool2d_forward

    h = NumpyHandler(np.float64)
    x = np.random.RandomState(0).randn(1, 1, 65534, 1)  # 65536 wide with the padding
    expected, argmax = reference_maxpool2d_forward(x, (1, 2), 1, (1, 2))
    outputs, found = np.zeros(expected.shape), np.zeros(expected.shape)
    h.maxpool2d_forward_batch(x, (1, 2), outputs, 1, (1, 2), found)
    np.testing.assert_array_equal(outputs, expected)
    np.testing.assert_array_equal(found, argmax)


@pytest.mark.parametrize(
    "width, window, padding",
    [
        (120, (3, 3), 1),  # window offsets up to 2 * 122 + 2 = 246: uint8
        (124, (3, 3), 1),  # 2 * 126 + 2 = 254: the largest uint8 case
        (125, (3, 3), 1),  # 2 * 127 + 2 = 256: uint16
        (254, (1, 2), 1),  # the padded width 256 itself no longer fits uint8
        (300, (2, 3), 0),
    ],
)
def test_max_pooling_around_the_limits_of_its_window_offset_types(width, window, padding):
    from brainstorm.testing.handler_conformance import (
        reference_maxpool2d_backward,
        reference_maxpool2d_forward,
    )

    h = NumpyHandler(np.float64)
    rng = np.random.RandomState(1)
    # few distinct values: ties everywhere, the first maximum must win
    x = rng.randint(0, 3, size=(2, 4, width, 2)).astype(np.float64)
    expected, argmax = reference_maxpool2d_forward(x, window, padding, (1, 1))
    outputs, found = np.zeros(expected.shape), np.zeros(expected.shape)
    h.maxpool2d_forward_batch(x, window, outputs, padding, (1, 1), found)
    np.testing.assert_array_equal(outputs, expected)
    np.testing.assert_array_equal(found, argmax)
    deltas = rng.randn(*expected.shape)
    in_deltas = np.zeros(x.shape)
    h.maxpool2d_backward_batch(x, window, outputs, padding, (1, 1), found, in_deltas, deltas)
    np.testing.assert_allclose(in_deltas, reference_maxpool2d_backward(x, argmax, deltas))


def test_sigmoid_keeps_relative_precision_in_the_negative_tail():
    h = NumpyHandler(np.float32)
    x = np.array([-30, -17, -12, -6.5, -1, 0, 3, 20], dtype=np.float32)
    y = np.empty_like(x)
    h.sigmoid(x, y)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.all(np.abs(y - exact) <= 1e-6 * exact + 1e-12)


def test_mult_add_st_with_partly_overlapping_arrays():
    h = NumpyHandler(np.float64)
    o = np.random.RandomState(0).randn(200_000)
    expected = o[1:] + 2 * o[:-1]
    h.mult_add_st(2.0, o[:-1], o[1:])
    assert np.allclose(o[1:], expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["sigmoid", "tanh", "rel", "el", "abs_t", "sign_t"])
def test_elementwise_ops_on_column_views(op, dtype):
    """Column slices are strided vectors for NumPy's inner loops (NumPy 2.4's float32
    np.negative reads those wrongly, which once broke sigmoid here)."""
    rng = np.random.RandomState(4)
    h = NumpyHandler(dtype)
    x_parent = rng.randn(7, 4).astype(dtype) * 3
    y_parent = rng.randn(7, 4).astype(dtype)
    x, y = x_parent[:, 2:3], y_parent[:, 2:3]
    getattr(h, op)(x, y)
    expected = np.empty((7, 1), dtype=dtype)
    getattr(h, op)(np.ascontiguousarray(x), expected)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    for vector_x, vector_y in (
        (x_parent[:, 1], y_parent[:, 1]),
        (x_parent[::2, 0], y_parent[::2, 3]),
    ):
        getattr(h, op)(vector_x, vector_y)
        want = np.empty(vector_x.shape, dtype=dtype)
        getattr(h, op)(np.ascontiguousarray(vector_x), want)
        np.testing.assert_allclose(vector_y, want, rtol=1e-6)


def test_max_pooling_refuses_images_whose_argmax_a_float32_cannot_count():
    from brainstorm.handlers.base_handler import check_argmax_range

    check_argmax_range("op", (4096, 4096, 1), np.float32)  # 2**24 values: exact
    check_argmax_range("op", (4096, 4096, 2), np.float64)
    with pytest.raises(
        ValueError, match=r"op: an image of 4096x4096x2 = 33554432 values .* 16777216"
    ):
        check_argmax_range("op", (4096, 4096, 2), np.float32)
    h = NumpyHandler(np.float32)
    images = np.broadcast_to(np.float32(1), (1, 4, 2**18, 32))  # 2**25 values, no memory
    outputs, argmax = (
        np.empty((1, 2, 2**17, 32), np.float32),
        np.empty((1, 2, 2**17, 32), np.float32),
    )
    with pytest.raises(ValueError, match="maxpool2d_forward_batch: an image of 4x262144x32"):
        h.maxpool2d_forward_batch(images, (2, 2), outputs, 0, (2, 2), argmax)
    with pytest.raises(ValueError, match="maxpool2d_backward_batch: an image of 4x262144x32"):
        h.maxpool2d_backward_batch(images, (2, 2), outputs, 0, (2, 2), argmax, None, outputs)


def test_empty_batches_and_classes():
    h = NumpyHandler(np.float32)
    empty = np.zeros((0, 4, 4, 2), np.float32)
    pooled = np.zeros((0, 2, 2, 2), np.float32)
    h.maxpool2d_backward_batch(empty, (2, 2), pooled, 0, (2, 2), pooled, empty, pooled)
    out = np.ones((3, 0), np.float32)
    h.softmax_m(np.zeros((3, 0), np.float32), out)
    assert out.shape == (3, 0)


@pytest.mark.parametrize("clip", [True, False], ids=["clip", "maximum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rel_of_large_arrays_either_way_is_the_maximum_with_zero(clip, dtype, monkeypatch):
    import brainstorm.handlers.numpy_handler as numpy_handler

    monkeypatch.setattr(numpy_handler, "_CLIP_IS_FAST", clip)
    rng = np.random.RandomState(4)
    x = rng.randn(300, 300).astype(dtype)
    x.flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1e-30]
    y = np.full_like(x, 7.0)
    h = NumpyHandler(dtype)
    h.rel(x, y)
    np.testing.assert_array_equal(y, np.maximum(x, 0))  # (NaN where x is NaN)
    h.rel(x, x)  # in place
    np.testing.assert_array_equal(x, y)
