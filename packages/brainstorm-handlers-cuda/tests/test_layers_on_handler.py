"""Networks on PyCudaHandler against NumpyHandler: on the CPU emulation always, on a GPU if any.

The network of ``cuda_test_layers`` (custom layers, strided buffers) needs core
only. The layers of brainstorm-layers run when that distribution is installed
(``nox -s gpu`` and ``nox -s dev`` install it; ``tests(handlers_cuda)`` does not).
"""

import numpy as np
import pytest
from cuda_test_layers import LIBRARY_LAYERS, build_network, run_library_layer

import brainstorm as bs
from brainstorm.handlers.numpy_handler import NumpyHandler


def _layers_available(name):
    try:
        getattr(bs.layers, name)
    except AttributeError:
        return False
    return True


def _compare(want, got):
    for (path, expected), (_, actual) in zip(want, got):
        np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-5, err_msg=path)


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def handler(request):
    return request.getfixturevalue("emulated" if request.param == "emulated" else "gpu_handler")


@pytest.mark.parametrize(
    "name, kwargs, in_shape, kind",
    LIBRARY_LAYERS,
    ids=[f"{name}{i}" for i, (name, *_) in enumerate(LIBRARY_LAYERS)],
)
def test_library_layer_matches_numpy(handler, name, kwargs, in_shape, kind):
    if not _layers_available(name):
        pytest.skip(f"brainstorm-layers with {name} is not installed")
    want = run_library_layer(NumpyHandler(np.float32), name, kwargs, in_shape, kind)
    _compare(want, run_library_layer(handler, name, kwargs, in_shape, kind))


def test_strided_network_matches_numpy(handler):
    results = []
    for h in (NumpyHandler(np.float32), handler):
        net = build_network(h)
        rng = np.random.RandomState(3)
        net.initialize(bs.initializers.Gaussian(0.5), seed=1)
        net.provide_external_data({"a": rng.randn(3, 2, 3), "b": rng.randn(3, 2, 4)})
        net.forward_pass(training_pass=True)
        net.backward_pass()
        paths = ["Affine1.outputs.default", "Affine2.outputs.default", "Loss.outputs.loss"]
        paths += ["Input.output_deltas.a", "Input.output_deltas.b", "gradients"]
        results.append([(p, net.get(p)) for p in paths])
    _compare(*results)


def test_set_handler_moves_a_network(handler):
    net = build_network(NumpyHandler(np.float32))
    net.initialize(bs.initializers.Gaussian(0.5), seed=1)
    before = net.get("parameters")
    net.set_handler(handler)
    assert np.array_equal(net.get("parameters"), before)
