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
