"""``net.compute_data_deltas = False``: layers fed by the Input skip the data's deltas.

The skipped deltas stay zero, every gradient is unchanged, and with the flag
back on the deltas are computed exactly as before.
"""

from __future__ import annotations

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.handlers.debug_handler import DebugHandler
from brainstorm.handlers.numpy_handler import NumpyHandler
from brainstorm.initializers import Gaussian

T, B, CLASSES = 3, 2, 4

LAYERS = {
    "FullyConnected": ((5,), lambda: bs.layers.FullyConnected(6, name="L")),
    "Convolution2D": (
        (5, 4, 2),
        lambda: bs.layers.Convolution2D(3, kernel_size=(3, 2), padding=1, stride=(2, 1), name="L"),
    ),
    "Recurrent": ((5,), lambda: bs.layers.Recurrent(6, name="L")),
    "Lstm": ((5,), lambda: bs.layers.Lstm(6, name="L")),
    "Lstm reverse": ((5,), lambda: bs.layers.Lstm(6, reverse=True, name="L")),
    "ClockworkLstm": ((5,), lambda: bs.layers.ClockworkLstm(6, name="L")),
    "Gru": ((5,), lambda: bs.layers.Gru(6, name="L")),
}


def _net(features, make_layer, handler):
    inp = bs.layers.Input({"default": ("T", "B", *features), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    inp >> make_layer() >> bs.layers.FullyConnected(CLASSES, "linear", name="Proj") >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss(name="Loss")
    net = bs.Network.from_layer(out, handler=handler)
    net.initialize({"default": Gaussian(0.3)}, seed=7)
    rng = np.random.RandomState(1)
    net.provide_external_data(
        {
            "default": rng.randn(T, B, *features),
            "targets": rng.randint(0, CLASSES, (T, B, 1)).astype(float),
        }
    )
    return net


def _step(net):
    net.forward_pass(training_pass=True)
    net.backward_pass()
    handler = net.handler
    data_deltas = handler.get_numpy_copy(net.buffer.Input.output_deltas.default)
    gradients = handler.get_numpy_copy(net.buffer.gradients)
    return data_deltas, gradients


@pytest.mark.parametrize("handler", ["numpy", "debug"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_skipped_data_deltas_stay_zero_and_gradients_are_unchanged(kind, handler):
    features, make_layer = LAYERS[kind]
    h = NumpyHandler(np.float64)
    net = _net(features, make_layer, DebugHandler(h) if handler == "debug" else h)
    deltas, gradients = _step(net)
    assert np.abs(deltas).max() > 0  # computed while the flag is on (the default)

    net.compute_data_deltas = False
    assert net.layers["L"].inputs_without_deltas == {"default"}
    skipped, same_gradients = _step(net)
    assert not skipped.any()
    np.testing.assert_allclose(same_gradients, gradients, rtol=1e-12, atol=1e-14)

    net.compute_data_deltas = True
    again, again_gradients = _step(net)
    np.testing.assert_allclose(again, deltas, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(again_gradients, gradients, rtol=1e-12, atol=1e-14)
