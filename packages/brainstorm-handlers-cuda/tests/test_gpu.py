"""The real PyCudaHandler on a GPU (3c of issue 6): skipped with the reason elsewhere.

``nox -s gpu`` sets ``BRAINSTORM_REQUIRE_GPU=1``, which turns the skips into
failures. Networks on the GPU are compared in ``test_layers_on_handler.py``.
"""

import numpy as np
import pytest

from brainstorm.testing.handler_conformance import CONFORMANCE_CASES, check_op

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("case", [case.name for case in CONFORMANCE_CASES])
def test_conformance_on_gpu(gpu_handler, case):
    check_op(gpu_handler, case)


def test_index_rows_and_scatter_add_rows_on_gpu(gpu_handler):
    h, rng = gpu_handler, np.random.RandomState(0)
    table = rng.standard_normal((7, 5)).astype(np.float32)
    ids = rng.randint(0, 7, (40, 1)).astype(np.float32)
    out = h.allocate((40, 5))
    h.index_rows_mv(h.create_from_numpy(table), h.create_from_numpy(ids), out)
    np.testing.assert_allclose(h.get_numpy_copy(out), table[ids[:, 0].astype(int)])
    grads = h.allocate((7, 5))
    h.scatter_add_rows_mv(out, h.create_from_numpy(ids), grads)
    want = np.zeros_like(table)
    np.add.at(want, ids[:, 0].astype(int), table[ids[:, 0].astype(int)])
    np.testing.assert_allclose(h.get_numpy_copy(grads), want, rtol=1e-5, atol=1e-5)


def test_strided_reshape_is_a_view_on_gpu(gpu_handler):
    h = gpu_handler
    parent = h.create_from_numpy(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    view = parent[:, :, 1:4].reshape((12, 3))
    h.fill(view, -1.0)
    result = h.get_numpy_copy(parent)
    assert np.all(result[:, :, 1:4] == -1) and result[0, 0, 0] == 0 and result[2, 3, 4] == 59
