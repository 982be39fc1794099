"""Tests of the Square plug-in layer: discovery, networks, gradients, saving.

Copy these into your own plug-in: the checks of ``brainstorm.testing`` work for
any layer.
"""

import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.testing import check_layer
from brainstorm_example_plugin import square_layer
from brainstorm_example_plugin.square_layer import Square

ARCHITECTURE = {
    "Input": {
        "@type": "Input",
        "@outgoing_connections": {"default": ["Sq.default"]},
        "out_shapes": {"default": ("T", "B", 4)},
    },
    "Sq": {"@type": "Square", "@outgoing_connections": {}},
}


def data(shape=(3, 2, 4), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def network_from_construction():
    inp = bs.layers.Input({"default": ("T", "B", 4)})
    inp >> Square(name="Sq")
    return bs.Network.from_layer(inp)


def run(net, x):
    net.provide_external_data({"default": x})
    net.forward_pass()
    return net.get("Sq.outputs.default")


def test_entry_point_is_registered():
    (entry,) = metadata.entry_points(group="brainstorm.layers", name="Square")
    assert entry.value == "brainstorm_example_plugin.square_layer:Square"
    assert entry.dist.name == "brainstorm-example-plugin"


def test_bs_layers_square_is_the_plugin_factory():
    assert bs.layers.Square is square_layer.Square


def test_found_through_the_entry_point_alone():
    # A fresh interpreter that never imported the plug-in still finds the layer.
    code = (
        "import sys\n"
        "import brainstorm as bs\n"
        "assert 'brainstorm_example_plugin' not in sys.modules\n"
        "factory = bs.layers.Square\n"
        "print(factory.__module__ + ':' + factory.__qualname__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "brainstorm_example_plugin.square_layer:Square"


@pytest.mark.parametrize("build", ["architecture", "construction"])
def test_forward_pass_computes_half_the_square(build):
    if build == "architecture":
        net = bs.Network.from_architecture(ARCHITECTURE)
    else:
        net = network_from_construction()
        assert net.architecture["Sq"]["@type"] == "Square"
    x = data()
    np.testing.assert_allclose(run(net, x), 0.5 * x**2, rtol=1e-6)


def test_backward_pass_adds_to_the_input_deltas():
    net = network_from_construction()
    x, dy = data(), data(seed=1)
    run(net, x)
    buffers = net.buffer.Sq
    buffers.output_deltas.default[:] = dy
    buffers.input_deltas.default[:] = 1.0
    net.layers["Sq"].backward_pass(buffers)
    np.testing.assert_allclose(net.get("Sq.input_deltas.default"), 1.0 + dy * x, rtol=1e-6)


@pytest.mark.parametrize("feature_shape", [(4,), (2, 3)])
def test_generic_layer_checks(feature_shape):
    # Finite-difference gradients (float64), context continuation, description round trip.
    check_layer(Square(), {"default": feature_shape})


def test_hdf5_round_trip_gives_identical_outputs(tmp_path):
    net = bs.Network.from_architecture(ARCHITECTURE)
    x = data()
    expected = run(net, x)
    net.save_as_hdf5(str(tmp_path / "square.hdf5"))
    loaded = bs.Network.from_hdf5(str(tmp_path / "square.hdf5"))
    assert loaded.architecture["Sq"]["@type"] == "Square"
    np.testing.assert_array_equal(run(loaded, x), expected)
