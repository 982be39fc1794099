"""NumpyHandler ops give the same results whatever their chunk sizes and code paths.

The conformance shapes are small: with the default sizes every op runs in one
chunk, and the stride-1 input deltas of convolutions with few channels skip the
flipped-kernel path. Here the limits are lowered so that both are exercised.
"""

import numpy as np
import pytest

from brainstorm.handlers import NumpyHandler
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
