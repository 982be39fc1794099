"""The direct BLAS calls of the NumPy handler (brainstorm.handlers._blas)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from brainstorm.handlers import _blas

pytestmark = pytest.mark.skipif(
    not _blas.available(), reason="NumPy's own BLAS was not found (plain NumPy is used)"
)


def _layouts(rng, rows, cols, dtype):
    """The same matrix as C-ordered, F-ordered, a row slice, a column slice, a transpose."""
    value = rng.randn(rows, cols).astype(dtype)
    wide = np.zeros((rows, cols + 5), dtype=dtype)
    wide[:, 2 : 2 + cols] = value
    tall = np.zeros((rows + 3, cols), dtype=dtype, order="F")
    tall[1 : 1 + rows] = value
    return {
        "C": np.ascontiguousarray(value),
        "F": np.asfortranarray(value),
        "column-slice": wide[:, 2 : 2 + cols],
        "row-slice-F": tall[1 : 1 + rows],
        "transposed": np.ascontiguousarray(value.T).T,
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 3, 4), (1, 7, 6), (6, 1, 5), (4, 6, 1), (1, 1, 1)])
def test_gemm_matches_numpy_for_every_layout(dtype, shape):
    rng = np.random.RandomState(0)
    m, k, n = shape
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for a_name, a in _layouts(rng, m, k, dtype).items():
        for b_name, b in _layouts(rng, k, n, dtype).items():
            for out_name, out in _layouts(rng, m, n, dtype).items():
                before = out.copy()
                expected = 0.5 * (a.astype(np.float64) @ b) + 2.0 * before
                assert _blas.gemm(a, b, out, alpha=0.5, beta=2.0), (a_name, b_name, out_name)
                np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_gemm_leaves_the_margins_of_a_strided_output_untouched():
    rng = np.random.RandomState(1)
    parent = rng.randn(4, 9).astype(np.float32)
    before = parent.copy()
    out = parent[:, 3:6]
    assert _blas.gemm(rng.randn(4, 2).astype(np.float32), rng.randn(2, 3).astype(np.float32), out)
    np.testing.assert_array_equal(parent[:, :3], before[:, :3])
    np.testing.assert_array_equal(parent[:, 6:], before[:, 6:])


@pytest.mark.parametrize(
    "case",
    ["overlap", "dtype", "float16", "no-unit-stride", "read-only", "empty", "not-an-array"],
)
def test_gemm_declines_what_it_cannot_take_and_leaves_the_output_alone(case):
    rng = np.random.RandomState(2)
    a = rng.randn(4, 3).astype(np.float32)
    b = rng.randn(3, 4).astype(np.float32)
    out = np.zeros((4, 4), dtype=np.float32)
    if case == "overlap":
        a = out[:, :3]
    elif case == "dtype":
        b = b.astype(np.float64)
    elif case == "float16":
        a, b, out = a.astype(np.float16), b.astype(np.float16), out.astype(np.float16)
    elif case == "no-unit-stride":
        a = rng.randn(8, 6).astype(np.float32)[::2, ::2]
    elif case == "read-only":
        out.flags.writeable = False
    elif case == "empty":
        a, b, out = a[:, :0], b[:0], out
    elif case == "not-an-array":
        a = a.tolist()
    before = np.array(out, copy=True)
    assert not _blas.gemm(a, b, out)
    np.testing.assert_array_equal(out, before)


def test_gemm_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        _blas.gemm(
            np.ones((2, 3), np.float32), np.ones((4, 2), np.float32), np.ones((2, 2), np.float32)
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_matches_numpy_and_declines_overlap_and_strides(dtype):
    rng = np.random.RandomState(3)
    x, y = rng.randn(1000).astype(dtype), rng.randn(1000).astype(dtype)
    expected = y + dtype(-0.25) * x
    assert _blas.axpy(-0.25, x, y)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert not _blas.axpy(1.0, y[:500], y[:500])
    assert not _blas.axpy(1.0, x[::2], y[:500])
    assert not _blas.axpy(1.0, x.astype(np.float16), y)


def test_switching_the_blas_calls_off_with_the_environment():
    code = (
        "from brainstorm.handlers import _blas; import numpy as np;"
        "print(_blas.available(), _blas.gemm(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2))))"
    )
    env = dict(os.environ, BRAINSTORM_NUMPY_BLAS="0")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
