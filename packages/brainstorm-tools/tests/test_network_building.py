"""get_in_out_layers: every task type, masks, projections, names."""

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.tools import get_in_out_layers


def build(*args, hidden=None, **kwargs):
    inp, projection = get_in_out_layers(*args, **kwargs)
    current = inp
    for layer in hidden or []:
        current = current >> layer
    current >> projection
    return bs.Network.from_layer(projection)


def connections(net):
    """Set of (source layer, output, target layer, input) of the architecture."""
    found = set()
    for name, description in net.architecture.items():
        for output, targets in description["@outgoing_connections"].items():
            for target in targets:
                layer, _, input_name = target.partition(".")
                found.add((name, output, layer, input_name or "default"))
    return found


def test_documented_example():
    inp, out = bs.tools.get_in_out_layers("classification", 784, 10)
    net = bs.Network.from_layer(inp >> bs.layers.FullyConnected(1000) >> out)
    assert list(net.layers) == [
        "Input",
        "FullyConnected",
        "Output_projection",
        "Output",
        "Loss",
    ]


def test_classification():
    net = build("classification", (28, 28, 1), 10)
    assert net.layers["Input"].out_shapes["default"].shape == ("T", "B", 28, 28, 1)
    assert net.layers["Input"].out_shapes["targets"].shape == ("T", "B", 1)
    assert net.layers["Output_projection"].type_name == "FullyConnected"
    assert net.architecture["Output_projection"]["size"] == 10
    assert net.architecture["Output_projection"]["activation"] == "linear"
    assert net.layers["Output"].type_name == "SoftmaxCE"
    assert net.layers["Loss"].type_name == "Loss"
    assert connections(net) == {
        ("Input", "default", "Output_projection", "default"),
        ("Input", "targets", "Output", "targets"),
        ("Output_projection", "default", "Output", "default"),
        ("Output", "loss", "Loss", "default"),
    }


def test_multi_label():
    net = build("multi-label", 6, 4)
    assert net.layers["Output"].type_name == "SigmoidCE"
    assert net.layers["Input"].out_shapes["targets"].shape == ("T", "B", 4)


def test_regression():
    net = build("regression", 6, (3,))
    assert net.layers["Output"].type_name == "SquaredError"
    assert net.layers["Input"].out_shapes["targets"].shape == ("T", "B", 3)
    rng = np.random.RandomState(0)
    net.initialize(bs.initializers.Gaussian(0.1))
    x, t = rng.randn(2, 5, 6), rng.randn(2, 5, 3)
    net.provide_external_data({"default": x, "targets": t})
    net.forward_pass()
    w = net.get("Output_projection.parameters.W")
    b = net.get("Output_projection.parameters.bias")
    y = x @ w.T + b
    # SquaredError: 0.5 (y - t)^2 per element; Loss sums over time and features, / batch
    expected = 0.5 * ((y - t) ** 2).sum() / 5
    assert net.get_loss_values()["total_loss"] == pytest.approx(expected, rel=1e-5)


def test_unknown_task_type():
    with pytest.raises(ValueError, match="Unknown task type 'ranking'.*'classification'"):
        get_in_out_layers("ranking", 4, 2)


def test_names():
    net = build("classification", 4, 3, outlayer_name="Out")
    assert set(net.layers) == {"Input", "Out_projection", "Out", "Loss"}
    net = build("classification", 4, 3, projection_name="FC", outlayer_name="Out")
    assert set(net.layers) == {"Input", "FC", "Out", "Loss"}
    net = build("classification", 4, 3, projection_name="FC")
    assert set(net.layers) == {"Input", "FC", "Output", "Loss"}


def test_data_names():
    net = build(
        "classification",
        4,
        3,
        data_name="x",
        targets_name="labels",
        hidden=[bs.layers.FullyConnected(5)],
    )
    assert set(net.layers["Input"].out_shapes) == {"x", "labels"}
    assert ("Input", "x", "FullyConnected", "default") in connections(net)
    assert ("Input", "labels", "Output", "targets") in connections(net)
    with pytest.raises(ValueError, match="must differ"):
        get_in_out_layers("classification", 4, 3, data_name="x", targets_name="x")
    with pytest.raises(ValueError, match="must differ"):
        get_in_out_layers("classification", 4, 3, mask_name="targets")


def test_mask():
    net = build("classification", 4, 3, mask_name="mask")
    assert net.layers["Input"].out_shapes["mask"].shape == ("T", "B", 1)
    assert net.layers["Mask"].type_name == "Mask"
    assert connections(net) >= {
        ("Output", "loss", "Mask", "default"),
        ("Input", "mask", "Mask", "mask"),
        ("Mask", "default", "Loss", "default"),
    }
    assert ("Output", "loss", "Loss", "default") not in connections(net)
    # the loss only counts the unmasked time steps
    net.initialize(bs.initializers.Gaussian(0.5))
    rng = np.random.RandomState(1)
    x, t = rng.randn(3, 2, 4), rng.randint(0, 3, (3, 2, 1))
    mask = np.array([1.0, 1.0, 0.0]).reshape(3, 1, 1) * np.ones((3, 2, 1))
    net.provide_external_data({"default": x, "targets": t, "mask": mask})
    net.forward_pass()
    p = net.get("Output.outputs.predictions")
    per_step = -np.log(np.take_along_axis(p, t, axis=2))
    expected = (per_step * mask).sum() / 2
    assert net.get_loss_values()["total_loss"] == pytest.approx(expected, rel=1e-5)


def test_projection_choice():
    # 3-D outputs: a 1x1 convolution for pixel-wise classification
    net = build("classification", (5, 5, 2), (5, 5, 4))
    assert net.layers["Output_projection"].type_name == "Convolution2D"
    assert net.architecture["Output_projection"]["kernel_size"] == [1, 1]
    assert net.architecture["Output_projection"]["num_filters"] == 4
    assert net.architecture["Output_projection"]["activation"] == "linear"
    assert net.layers["Input"].out_shapes["targets"].shape == ("T", "B", 5, 5, 1)
    # use_conv=False forces a fully connected projection with a multi-dim output
    net = build("multi-label", 4, (2, 3), use_conv=False)
    assert net.layers["Output_projection"].type_name == "FullyConnected"
    assert net.layers["Output_projection"].out_shapes["default"].feature_shape == (2, 3)
    # use_conv=True forces the convolution
    net = build("multi-label", (5, 5, 2), (5, 5, 1), use_conv=True)
    assert net.layers["Output_projection"].type_name == "Convolution2D"
    with pytest.raises(ValueError, match="use_conv"):
        get_in_out_layers("multi-label", 4, (2, 3))


@pytest.mark.parametrize("shape", [0, -1, (), (3, 0), 2.5, "10", True])
def test_bad_shapes(shape):
    with pytest.raises((ValueError, TypeError), match="in_shape"):
        get_in_out_layers("classification", shape, 3)
    with pytest.raises((ValueError, TypeError), match="out_shape"):
        get_in_out_layers("classification", 3, shape)


def test_lists_are_accepted_as_shapes():
    net = build("classification", [4, 4, 1], [3])
    assert net.layers["Input"].out_shapes["default"].shape == ("T", "B", 4, 4, 1)
