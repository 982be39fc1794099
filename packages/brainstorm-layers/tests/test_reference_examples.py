"""The documented examples of the reference, run as written."""

import numpy as np
import pytest

from brainstorm import Network, layers
from brainstorm.initializers import Gaussian
from brainstorm.value_modifiers import ClipValues, ConstrainL2Norm, MaskValues

REFERENCE_ARCHITECTURE = {
    "Input": {
        "@type": "Input",
        "@outgoing_connections": {"default": ["hidden_layer"], "targets": ["output_layer.targets"]},
        "out_shapes": {"default": ("T", "B", 784), "targets": ("T", "B", 1)},
    },
    "hidden_layer": {
        "@type": "FullyConnected",
        "@outgoing_connections": {"default": ["output_projection"]},
        "activation": "rel",
        "size": 100,
    },
    "output_projection": {
        "@type": "FullyConnected",
        "@outgoing_connections": {"default": ["output_layer"]},
        "activation": "linear",
        "size": (10,),
    },
    "output_layer": {"@type": "SoftmaxCE", "@outgoing_connections": {"loss": ["loss_layer"]}},
    "loss_layer": {"@outgoing_connections": {}, "@type": "Loss", "importance": 1.0},
}


def test_data_format_example():
    inp = layers.Input({"my_inputs": ("T", "B", 50), "my_targets": ("T", "B", 1)})
    hid = layers.FullyConnected(100, name="Hidden")
    out = layers.SoftmaxCE(name="Output")
    loss = layers.Loss()
    inp - "my_inputs" >> hid >> out
    inp - "my_targets" >> "targets" - out - "loss" >> loss
    network = Network.from_layer(loss)
    network.initialize(Gaussian(0.1))
    rng = np.random.RandomState(1)
    network.provide_external_data(
        {"my_inputs": rng.randn(7, 4, 50), "my_targets": rng.randint(0, 100, (7, 4, 1))}
    )
    network.forward_pass()
    predictions = network.get("Output.outputs.predictions")
    assert predictions.shape == (7, 4, 100)
    assert np.allclose(predictions.sum(axis=-1), 1, atol=1e-5)
    assert np.allclose(network.get("Output.outputs.probabilities"), predictions)
    assert network.get_loss_values()["total_loss"] > 0


def test_internals_architecture_example():
    net = Network.from_architecture(REFERENCE_ARCHITECTURE)
    assert list(net.layers) == [
        "Input",
        "hidden_layer",
        "output_projection",
        "output_layer",
        "loss_layer",
    ]
    assert net.get("hidden_layer.parameters.W").shape == (100, 784)
    assert net.get("output_projection.parameters.bias").shape == (10,)
    assert net.loss_layers == ["loss_layer"]


def test_paths_initialize_modifiers_and_files(tmp_path):
    net = Network.from_architecture(REFERENCE_ARCHITECTURE)
    net.initialize(
        {"hidden*": {"W": Gaussian(0.01), "bias": 0}, "default": 0.1, "fallback": 0.0},
        seed=1234,
    )
    assert np.all(net.get("hidden_layer.parameters.bias") == 0)
    assert np.all(net.get("output_projection.parameters.W") == np.float32(0.1))
    assert abs(net.get("hidden_layer.parameters.W").std() - 0.01) < 0.001
    net.initialize(default=0, output_projection={"bias": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]})
    assert np.all(net.get("output_projection.parameters.bias") == np.arange(1, 11))

    mask = np.ones((10, 100))
    mask[0] = 0
    net.initialize(Gaussian(), seed=1)
    net.set_weight_modifiers(
        default=ClipValues(-1, 1),
        output_projection={"W": [ConstrainL2Norm(0.5), MaskValues(mask)]},
    )
    net.apply_weight_modifiers()
    W = net.get("output_projection.parameters.W")
    assert np.all(W[0] == 0)
    assert np.all(np.linalg.norm(W, axis=1) <= 0.5 + 1e-5)
    assert np.all(np.abs(net.get("parameters")) <= 1)

    x = np.random.RandomState(0).rand(1, 5, 784)
    t = np.random.RandomState(0).randint(0, 10, (1, 5, 1))
    net.provide_external_data({"default": x, "targets": t})
    net.forward_pass(training_pass=True)
    net.backward_pass()
    for path in (
        "parameters",
        "gradients",
        "hidden_layer.parameters.W",
        "hidden_layer.gradients.W",
        "hidden_layer.inputs.default",
        "hidden_layer.outputs.default",
        "output_layer.input_deltas.default",
        "hidden_layer.output_deltas.default",
    ):
        assert isinstance(net.get(path), np.ndarray), path
    assert np.allclose(net.get_inputs("default"), x)

    net.save_as_hdf5(tmp_path / "net.hdf5")
    loaded = Network.from_hdf5(tmp_path / "net.hdf5")
    loaded.provide_external_data({"default": x, "targets": t})
    loaded.forward_pass()
    net.forward_pass()
    assert np.allclose(
        loaded.get("output_layer.outputs.predictions"), net.get("output_layer.outputs.predictions")
    )
    assert loaded.weight_modifiers["output_projection"]["W"][0].limit == 0.5


def test_unknown_layer_names_its_provider(monkeypatch):
    arch = dict(REFERENCE_ARCHITECTURE)
    arch["hidden_layer"] = dict(arch["hidden_layer"], **{"@type": "FullyConected"})
    with pytest.raises(
        KeyError, match="Unknown layer 'FullyConected'. Installed: .*FullyConnected"
    ):
        Network.from_architecture(arch)


def test_star_import_of_layers_gives_the_layers_of_this_library():
    names = {}
    exec("from brainstorm.layers import *", names)  # (reference scripts did this)
    assert {"FullyConnected", "Lstm", "Convolution2D", "SoftmaxCE", "Loss", "Input"} <= set(names)
