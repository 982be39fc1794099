"""Tests of the layer library: generic checks for every layer plus layer-specific behaviour."""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.testing import check_layer, get_test_configurations
from brainstorm.utils import LayerValidationError, ValidationError

LAYER_NAMES = sorted(
    "FullyConnected Elementwise Dropout BatchNorm Highway Merge Mask NoOp DeltasScaling "
    "Loss SoftmaxCE SigmoidCE SquaredError SquaredDifference BinomialCrossEntropy "
    "L1Decay L2Decay Convolution2D Pooling2D Recurrent Lstm Clockwork ClockworkLstm Gru "
    "Bidirectional Embedding".split()
)
ACTIVATIONS = ("sigmoid", "tanh", "rel", "linear", "el")


# -- helpers ------------------------------------------------------------------------------


def make_handler(seed=1):
    from brainstorm.handlers.debug_handler import DebugHandler
    from brainstorm.handlers.numpy_handler import NumpyHandler

    return DebugHandler(NumpyHandler(np.float64, seed=seed))


def build(layer, in_shapes, seed=1):
    """A network ``Input >> layer`` on DebugHandler(NumpyHandler(float64)).

    ``in_shapes`` maps input names to feature shapes (or full templates).
    Returns ``(net, layer_name)``.
    """
    templates = {}
    for name, shape in in_shapes.items():
        shape = tuple(shape)
        templates[name] = shape if shape[:1] in (("T",), ("B",)) else ("T", "B") + shape
    inp = bs.layers.Input(templates)
    for name in templates:
        inp - name >> name - layer
    net = bs.Network.from_layer(layer, handler=make_handler(seed))
    net.initialize(bs.initializers.Gaussian(0.5), seed=seed)
    return net, layer.layer.name


def set_parameters(net, name, **values):
    for key, value in values.items():
        net.handler.set_from_numpy(net.buffer[name].parameters[key], np.asarray(value, float))


def forward(net, data, training_pass=False):
    net.provide_external_data({k: np.asarray(v, dtype=float) for k, v in data.items()})
    net.forward_pass(training_pass=training_pass)


def backward(net, name, output_deltas, input_deltas=None):
    """Run only the layer's backward pass with given output deltas (and starting input
    deltas); return ``(input_deltas, gradients)`` as numpy dicts."""
    h = net.handler
    net.buffer_manager.clear_backward_buffers()
    buffers = net.buffer[name]
    for key, value in output_deltas.items():
        h.set_from_numpy(buffers.output_deltas[key], np.asarray(value, float))
    for key, value in (input_deltas or {}).items():
        h.set_from_numpy(buffers.input_deltas[key], np.asarray(value, float))
    net.layers[name].backward_pass(buffers)
    deltas = {k: h.get_numpy_copy(v) for k, v in buffers.input_deltas.items()}
    grads = {k: h.get_numpy_copy(v) for k, v in buffers.gradients.items()}
    return deltas, grads


def np_act(name, x):
    return {
        "sigmoid": lambda: 1.0 / (1.0 + np.exp(-x)),
        "tanh": lambda: np.tanh(x),
        "rel": lambda: np.maximum(x, 0.0),
        "linear": lambda: x,
        "el": lambda: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    }[name]()


def np_act_deriv(name, x):
    y = np_act(name, x)
    return {
        "sigmoid": lambda: y * (1 - y),
        "tanh": lambda: 1 - y**2,
        "rel": lambda: (x > 0).astype(float),
        "linear": lambda: np.ones_like(x),
        "el": lambda: np.where(x > 0, 1.0, y + 1.0),
    }[name]()


def _class_targets(num_classes):
    def make(shape, rng):
        return rng.randint(0, num_classes, size=shape).astype(float)

    return make


def _binary(shape, rng):
    return (rng.uniform(size=shape) < 0.5).astype(float)


def _probabilities(shape, rng):
    return rng.uniform(0.1, 0.9, size=shape)


def _binary_mask(shape, rng):
    return (rng.uniform(size=shape) < 0.7).astype(float)


# -- packaging and discovery ----------------------------------------------------------------


def test_every_layer_is_registered_under_its_public_name():
    eps = metadata.distribution("brainstorm-layers").entry_points
    registered = {ep.name: ep for ep in eps if ep.group == "brainstorm.layers"}
    assert sorted(registered) == LAYER_NAMES
    for name, ep in registered.items():
        factory = ep.load()
        assert factory.__name__ == name
        assert ep.value.startswith("brainstorm.layers.")


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layers_resolve_through_the_namespace_and_registry(name):
    from brainstorm import registry

    factory = getattr(bs.layers, name)
    assert callable(factory) and factory.__doc__
    impl = registry.find_layer_impl(name)
    assert impl.__name__ == name + "LayerImpl"
    assert impl.__doc__


# -- generic checks (brainstorm.testing.check_layer) --------------------------------------

# (id, factory(activation) -> ConstructionWrapper, in_shapes, check_layer kwargs)
LAYER_CASES = [
    ("FullyConnected", lambda a: bs.layers.FullyConnected(3, activation=a), {"default": (4,)}, {}),
    (
        "FullyConnected_tuple",
        lambda a: bs.layers.FullyConnected((2, 3), activation=a),
        {"default": (2, 2)},
        {},
    ),
    (
        "FullyConnected_none",
        lambda a: bs.layers.FullyConnected(activation=a),
        {"default": (3,)},
        {},
    ),
    ("Elementwise", lambda a: bs.layers.Elementwise(a), {"default": (3,)}, {}),
    ("Elementwise_image", lambda a: bs.layers.Elementwise(a), {"default": (2, 2, 2)}, {}),
    ("Dropout", lambda a: bs.layers.Dropout(0.3), {"default": (4,)}, {}),
    ("BatchNorm", lambda a: bs.layers.BatchNorm(), {"default": (3,)}, {}),
    ("BatchNorm_image", lambda a: bs.layers.BatchNorm(decay=0.5), {"default": (2, 2, 3)}, {}),
    ("Highway", lambda a: bs.layers.Highway(), {"H": (3,), "T": (3,), "x": (3,)}, {}),
    ("Merge", lambda a: bs.layers.Merge(), {"inputs_1": (2,), "inputs_2": (3,)}, {}),
    ("Merge_image", lambda a: bs.layers.Merge(), {"inputs_1": (2, 1), "inputs_2": (2, 2)}, {}),
    (
        "Mask_per_step",
        lambda a: bs.layers.Mask(),
        {"default": (3,), "mask": (1,)},
        {"data": {"mask": _binary_mask}},
    ),
    (
        "Mask_per_position",
        lambda a: bs.layers.Mask(),
        {"default": (2, 3), "mask": (2, 1)},
        {"data": {"mask": _binary_mask}},
    ),
    (
        "Mask_per_feature",
        lambda a: bs.layers.Mask(),
        {"default": (3,), "mask": (3,)},
        {"data": {"mask": _binary_mask}},
    ),
    ("NoOp", lambda a: bs.layers.NoOp(), {"default": (3,)}, {}),
    ("DeltasScaling", lambda a: bs.layers.DeltasScaling(1.0), {"default": (3,)}, {}),
    # Any other factor makes the backward pass deliberately not the forward's derivative.
    (
        "DeltasScaling_reversal",
        lambda a: bs.layers.DeltasScaling(-2.5),
        {"default": (3,)},
        {"checks": ("adds_deltas", "garbage", "description")},
    ),
    # A Loss layer starts backpropagation: its deltas do not depend on output deltas,
    # so the objective-based delta check does not apply (see test_loss_* below).
    (
        "Loss",
        lambda a: bs.layers.Loss(importance=0.7),
        {"default": (3,)},
        {"checks": ("adds_deltas", "garbage", "description")},
    ),
    (
        "Loss_batch_sized",
        lambda a: bs.layers.Loss(),
        {"default": ("B", 3)},
        {"checks": ("adds_deltas", "garbage", "description")},
    ),
    (
        "SoftmaxCE",
        lambda a: bs.layers.SoftmaxCE(),
        {"default": (4,), "targets": (1,)},
        {"data": {"targets": _class_targets(4)}},
    ),
    (
        "SoftmaxCE_pixelwise",
        lambda a: bs.layers.SoftmaxCE(),
        {"default": (2, 3), "targets": (2, 1)},
        {"data": {"targets": _class_targets(3)}},
    ),
    (
        "SigmoidCE",
        lambda a: bs.layers.SigmoidCE(),
        {"default": (3,), "targets": (3,)},
        {"data": {"targets": _binary}},
    ),
    ("SquaredError", lambda a: bs.layers.SquaredError(), {"default": (3,), "targets": (3,)}, {}),
    (
        "SquaredDifference",
        lambda a: bs.layers.SquaredDifference(),
        {"inputs_1": (3,), "inputs_2": (3,)},
        {},
    ),
    (
        "BinomialCrossEntropy",
        lambda a: bs.layers.BinomialCrossEntropy(),
        {"default": (3,), "targets": (3,)},
        {"data": {"default": _probabilities, "targets": _binary}},
    ),
    ("L1Decay", lambda a: bs.layers.L1Decay(), {"default": (3,)}, {}),
    ("L2Decay", lambda a: bs.layers.L2Decay(), {"default": (2, 2)}, {}),
]

CONFIGURATIONS = get_test_configurations()


def _config_id(c):
    return f"T{c['time_steps']}B{c['batch_size']}-{c['activation']}"


def test_configurations_cover_every_activation():
    assert {c["activation"] for c in CONFIGURATIONS} == set(ACTIVATIONS)


def test_every_layer_has_a_generic_check_case():
    covered = {case_id.split("_")[0] for case_id, *_ in LAYER_CASES}
    # convolution, pooling and recurrent layers have their own test files
    elsewhere = set(
        "Convolution2D Pooling2D Recurrent Lstm Clockwork ClockworkLstm Gru Bidirectional "
        "Embedding".split()
    )
    assert covered == set(LAYER_NAMES) - elsewhere


@pytest.mark.parametrize("config", CONFIGURATIONS, ids=_config_id)
@pytest.mark.parametrize(
    "factory, in_shapes, kwargs",
    [case[1:] for case in LAYER_CASES],
    ids=[case[0] for case in LAYER_CASES],
)
def test_check_layer(factory, in_shapes, kwargs, config):
    check_layer(
        factory(config["activation"]),
        in_shapes,
        time_steps=config["time_steps"],
        batch_size=config["batch_size"],
        seed=7,
        **kwargs,
    )


@pytest.mark.parametrize(
    "factory, in_shapes, inputs",
    [
        (bs.layers.Mask, {"default": (3,), "mask": (1,)}, ["mask"]),
        (bs.layers.SoftmaxCE, {"default": (4,), "targets": (1,)}, ["targets"]),
        (bs.layers.SigmoidCE, {"default": (3,), "targets": (3,)}, ["targets"]),
        (bs.layers.SquaredError, {"default": (3,), "targets": (3,)}, ["targets"]),
        (bs.layers.BinomialCrossEntropy, {"default": (3,), "targets": (3,)}, ["targets"]),
    ],
    ids=["Mask", "SoftmaxCE", "SigmoidCE", "SquaredError", "BinomialCrossEntropy"],
)
def test_no_deltas_are_computed_for_targets_and_masks(factory, in_shapes, inputs):
    layer = factory()
    net, name = build(layer, in_shapes)
    impl = net.layers[name]
    assert set(inputs) <= set(impl.computes_no_input_deltas_for)
    rng = np.random.RandomState(0)
    data = {k: rng.uniform(0.1, 0.9, (2, 3) + v) for k, v in in_shapes.items()}
    if factory is bs.layers.SoftmaxCE:
        data["targets"] = rng.randint(0, 4, (2, 3, 1))
    forward(net, data, training_pass=True)
    out_deltas = {
        o: rng.randn(*net.get(f"{name}.outputs.{o}").shape)
        for o in impl.out_shapes
        if o not in impl.takes_no_output_deltas_from
    }
    start = {k: rng.randn(2, 3, *in_shapes[k]) for k in inputs}
    deltas, _ = backward(net, name, out_deltas, start)
    for k in inputs:
        np.testing.assert_array_equal(deltas[k], start[k])


# -- FullyConnected -----------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fully_connected_forward_matches_numpy(activation):
    rng = np.random.RandomState(1)
    net, name = build(
        bs.layers.FullyConnected(3, activation=activation, name="fc"), {"default": (4,)}
    )
    W, b, x = rng.randn(3, 4), rng.randn(3), rng.randn(2, 5, 4)
    set_parameters(net, name, W=W, bias=b)
    forward(net, {"default": x})
    expected = np_act(activation, x @ W.T + b)
    np.testing.assert_allclose(net.get("fc.outputs.default"), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fully_connected_backward_matches_numpy(activation):
    rng = np.random.RandomState(2)
    net, name = build(bs.layers.FullyConnected(3, activation=activation), {"default": (4,)})
    W, b, x, dy = rng.randn(3, 4), rng.randn(3), rng.randn(2, 5, 4), rng.randn(2, 5, 3)
    set_parameters(net, name, W=W, bias=b)
    forward(net, {"default": x}, training_pass=True)
    deltas, grads = backward(net, name, {"default": dy})
    dH = dy * np_act_deriv(activation, x @ W.T + b)
    np.testing.assert_allclose(deltas["default"], dH @ W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["W"], dH.reshape(-1, 3).T @ x.reshape(-1, 4), rtol=1e-10)
    np.testing.assert_allclose(grads["bias"], dH.reshape(-1, 3).sum(0), rtol=1e-10)


def test_fully_connected_size_shapes():
    net, name = build(bs.layers.FullyConnected((2, 3)), {"default": (2, 2)})
    assert net.layers[name].get_shape("outputs.default") == ("T", "B", 2, 3)
    assert net.layers[name].get_shape("parameters.W") == (6, 4)
    forward(net, {"default": np.ones((2, 1, 2, 2))})
    assert net.get(f"{name}.outputs.default").shape == (2, 1, 2, 3)

    net, name = build(bs.layers.FullyConnected(), {"default": (2, 3)})
    assert net.layers[name].get_shape("outputs.default") == ("T", "B", 2, 3)
    assert net.layers[name].get_shape("parameters.W") == (6, 6)


def test_fully_connected_size_list_survives_a_json_round_trip():
    layer = bs.layers.FullyConnected([2, 3], activation="linear", name="fc")
    inp = bs.layers.Input({"default": ("T", "B", 4)})
    inp >> layer
    architecture = json.loads(json.dumps(bs.generate_architecture(layer)))
    assert architecture["fc"]["size"] == [2, 3]
    net = bs.Network.from_architecture(architecture, handler=make_handler())
    assert net.layers["fc"].get_shape("outputs.default") == ("T", "B", 2, 3)
    assert net.layers["fc"].size == (2, 3)


@pytest.mark.parametrize("size", [0, -1, "3", 2.5, (2, 0), (), True])
def test_fully_connected_rejects_bad_sizes(size):
    with pytest.raises(LayerValidationError, match="size"):
        bs.layers.FullyConnected(size)


# -- activation validation ----------------------------------------------------------------


@pytest.mark.parametrize("factory", ["FullyConnected", "Elementwise"])
@pytest.mark.parametrize("activation", ["relu", "softplus", None, 3])
def test_unknown_activations_are_rejected_naming_the_layer(factory, activation):
    with pytest.raises(LayerValidationError, match=r"'Hid'.*activation") as info:
        getattr(bs.layers, factory)(activation=activation, name="Hid")
    assert factory in str(info.value)
    with pytest.raises(LayerValidationError, match=factory):
        getattr(bs.layers, factory)(activation=activation)


@pytest.mark.parametrize("factory", ["FullyConnected", "Elementwise"])
def test_unknown_activation_in_an_architecture_is_rejected(factory):
    layer = getattr(bs.layers, factory)(activation="tanh", name="Hid")
    bs.layers.Input({"default": ("T", "B", 3)}) >> layer
    architecture = bs.generate_architecture(layer)
    architecture["Hid"]["activation"] = "softplus"
    with pytest.raises(LayerValidationError, match=r"'Hid'.*softplus"):
        bs.Network.from_architecture(architecture, handler=make_handler())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_all_activations_are_accepted(activation):
    assert isinstance(bs.layers.FullyConnected(2, activation=activation), ConstructionWrapper)
    assert isinstance(bs.layers.Elementwise(activation), ConstructionWrapper)


# -- Elementwise, NoOp, DeltasScaling, Highway, Merge ---------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_elementwise_forward_and_backward(activation):
    rng = np.random.RandomState(3)
    net, name = build(bs.layers.Elementwise(activation), {"default": (2, 3)})
    x, dy, start = rng.randn(3, 2, 2, 3), rng.randn(3, 2, 2, 3), rng.randn(3, 2, 2, 3)
    forward(net, {"default": x})
    np.testing.assert_allclose(net.get(f"{name}.outputs.default"), np_act(activation, x), 1e-12)
    deltas, _ = backward(net, name, {"default": dy}, {"default": start})
    expected = start + dy * np_act_deriv(activation, x)
    np.testing.assert_allclose(deltas["default"], expected, rtol=1e-10, atol=1e-12)


def test_noop_and_deltas_scaling():
    rng = np.random.RandomState(4)
    x, dy, start = rng.randn(2, 3, 4), rng.randn(2, 3, 4), rng.randn(2, 3, 4)
    for layer, factor in ((bs.layers.NoOp(), 1.0), (bs.layers.DeltasScaling(-0.5), -0.5)):
        net, name = build(layer, {"default": (4,)})
        forward(net, {"default": x})
        np.testing.assert_array_equal(net.get(f"{name}.outputs.default"), x)
        deltas, _ = backward(net, name, {"default": dy}, {"default": start})
        np.testing.assert_allclose(deltas["default"], start + factor * dy, rtol=1e-12)


@pytest.mark.parametrize("factor", [None, "2", True, float("nan")])
def test_deltas_scaling_rejects_bad_factors(factor):
    with pytest.raises(LayerValidationError, match="factor"):
        bs.layers.DeltasScaling(factor)


def test_deltas_scaling_requires_a_factor():
    with pytest.raises(TypeError):
        bs.layers.DeltasScaling()
    layer = ConstructionWrapper.create("DeltasScaling", name="ds")
    bs.layers.Input({"default": ("T", "B", 3)}) >> layer
    with pytest.raises(LayerValidationError, match="factor"):
        bs.Network.from_layer(layer, handler=make_handler())


def test_highway_forward_and_backward():
    rng = np.random.RandomState(5)
    shape = (2, 3, 4)
    H, T, x = rng.randn(*shape), rng.uniform(size=shape), rng.randn(*shape)
    net, name = build(bs.layers.Highway(), {"H": (4,), "T": (4,), "x": (4,)})
    forward(net, {"H": H, "T": T, "x": x})
    np.testing.assert_allclose(net.get(f"{name}.outputs.default"), T * (H - x) + x, 1e-12)
    dy = rng.randn(*shape)
    deltas, _ = backward(net, name, {"default": dy})
    np.testing.assert_allclose(deltas["H"], dy * T, rtol=1e-12)
    np.testing.assert_allclose(deltas["T"], dy * (H - x), rtol=1e-12)
    np.testing.assert_allclose(deltas["x"], dy * (1 - T), rtol=1e-10, atol=1e-12)


def test_highway_rejects_different_shapes():
    with pytest.raises(LayerValidationError, match="same shape"):
        build(bs.layers.Highway(), {"H": (4,), "T": (4,), "x": (3,)})


def test_merge_concatenates_and_splits():
    rng = np.random.RandomState(6)
    a, b = rng.randn(2, 3, 2, 1), rng.randn(2, 3, 2, 2)
    net, name = build(bs.layers.Merge(), {"inputs_1": (2, 1), "inputs_2": (2, 2)})
    assert net.layers[name].get_shape("outputs.default") == ("T", "B", 2, 3)
    forward(net, {"inputs_1": a, "inputs_2": b})
    np.testing.assert_array_equal(
        net.get(f"{name}.outputs.default"), np.concatenate([a, b], axis=-1)
    )
    dy = rng.randn(2, 3, 2, 3)
    deltas, _ = backward(net, name, {"default": dy})
    np.testing.assert_array_equal(deltas["inputs_1"], dy[..., :1])
    np.testing.assert_array_equal(deltas["inputs_2"], dy[..., 1:])


def test_merge_rejects_mismatching_shapes():
    with pytest.raises(LayerValidationError, match="last dimension"):
        build(bs.layers.Merge(), {"inputs_1": (2, 1), "inputs_2": (3, 2)})


# -- Dropout ----------------------------------------------------------------------------------


def test_dropout_training_pass_scales_survivors_and_keeps_the_expectation():
    p = 0.25
    net, name = build(bs.layers.Dropout(p), {"default": (50,)})
    x = np.full((4, 50, 50), 3.0)
    forward(net, {"default": x}, training_pass=True)
    y = net.get(f"{name}.outputs.default")
    assert set(np.unique(y)) == {0.0, 3.0 / (1 - p)}
    assert abs(np.mean(y == 0) - p) < 0.02
    assert abs(y.mean() - 3.0) < 0.05  # E[y] = x


def test_dropout_backward_scales_like_the_forward_pass():
    # The reference added dy * mask without 1/(1-p): gradients too small by that factor.
    p = 0.5
    rng = np.random.RandomState(7)
    net, name = build(bs.layers.Dropout(p), {"default": (6,)})
    x, dy, start = rng.uniform(1, 2, (3, 4, 6)), rng.randn(3, 4, 6), rng.randn(3, 4, 6)
    forward(net, {"default": x}, training_pass=True)
    mask = net.get(f"{name}.outputs.default") != 0
    assert mask.any() and not mask.all()
    deltas, _ = backward(net, name, {"default": dy}, {"default": start})
    np.testing.assert_allclose(deltas["default"], start + dy * mask / (1 - p), rtol=1e-12)


def test_dropout_is_the_identity_outside_training():
    rng = np.random.RandomState(8)
    net, name = build(bs.layers.Dropout(0.9), {"default": (5,)})
    x, dy = rng.randn(2, 3, 5), rng.randn(2, 3, 5)
    forward(net, {"default": x}, training_pass=False)
    np.testing.assert_array_equal(net.get(f"{name}.outputs.default"), x)
    deltas, _ = backward(net, name, {"default": dy})
    np.testing.assert_array_equal(deltas["default"], dy)


def test_dropout_with_zero_probability_is_the_identity_in_training():
    x = np.random.RandomState(9).randn(2, 3, 5)
    net, name = build(bs.layers.Dropout(0.0), {"default": (5,)})
    forward(net, {"default": x}, training_pass=True)
    np.testing.assert_array_equal(net.get(f"{name}.outputs.default"), x)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "0.5", None])
def test_dropout_rejects_bad_probabilities(p):
    with pytest.raises(LayerValidationError, match="drop_prob"):
        bs.layers.Dropout(p)


def test_dropout_masks_follow_the_handler_seed():
    outputs = []
    for _ in range(2):
        net, name = build(bs.layers.Dropout(0.5), {"default": (20,)}, seed=3)
        forward(net, {"default": np.ones((2, 3, 20))}, training_pass=True)
        outputs.append(net.get(f"{name}.outputs.default"))
    np.testing.assert_array_equal(outputs[0], outputs[1])


# -- BatchNorm ------------------------------------------------------------------------------


def _bn_net(feature_shape=(3,), **kwargs):
    return build(bs.layers.BatchNorm(name="bn", **kwargs), {"default": feature_shape})


def test_batch_norm_has_gamma_and_beta_as_only_parameters_and_running_stats_as_states():
    net, name = _bn_net((2, 2, 4))
    assert net.buffer.bn.parameters.keys() == ["gamma", "beta"]
    assert net.get("parameters").size == 8  # only gamma and beta are trainable
    assert net.buffer.bn.states.keys() == ["mean", "var"]
    np.testing.assert_array_equal(net.get("bn.states.mean"), np.zeros(4))
    np.testing.assert_array_equal(net.get("bn.states.var"), np.ones(4))


def test_batch_norm_training_pass_uses_batch_statistics_and_updates_running_stats():
    rng = np.random.RandomState(10)
    decay, eps = 0.8, 1e-5
    net, name = _bn_net((3,), decay=decay, epsilon=eps)
    gamma, beta = rng.uniform(0.5, 2, 3), rng.randn(3)
    set_parameters(net, name, gamma=gamma, beta=beta)
    x = rng.randn(4, 5, 3) * [1.0, 2.0, 3.0] + [0.5, -1.0, 4.0]
    forward(net, {"default": x}, training_pass=True)
    flat = x.reshape(-1, 3)
    mean, var = flat.mean(0), flat.var(0)  # variance with 1/m
    expected = gamma * (x - mean) / np.sqrt(var + eps) + beta
    np.testing.assert_allclose(net.get("bn.outputs.default"), expected, rtol=1e-10)
    np.testing.assert_allclose(net.get("bn.states.mean"), (1 - decay) * mean, rtol=1e-12)
    np.testing.assert_allclose(net.get("bn.states.var"), decay + (1 - decay) * var, rtol=1e-12)

    x2 = rng.randn(2, 5, 3)
    forward(net, {"default": x2}, training_pass=True)
    flat2 = x2.reshape(-1, 3)
    np.testing.assert_allclose(
        net.get("bn.states.mean"),
        decay * (1 - decay) * mean + (1 - decay) * flat2.mean(0),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        net.get("bn.states.var"),
        decay * (decay + (1 - decay) * var) + (1 - decay) * flat2.var(0),
        rtol=1e-12,
    )


def test_batch_norm_inference_uses_running_statistics_and_leaves_them_alone():
    rng = np.random.RandomState(11)
    net, name = _bn_net((2, 2, 3), epsilon=1e-3)
    gamma, beta = rng.uniform(0.5, 2, 3), rng.randn(3)
    mean, var = rng.randn(3), rng.uniform(0.5, 2, 3)
    set_parameters(net, name, gamma=gamma, beta=beta)
    net.handler.set_from_numpy(net.buffer.bn.states.mean, mean)
    net.handler.set_from_numpy(net.buffer.bn.states.var, var)
    x = rng.randn(2, 3, 2, 2, 3)
    forward(net, {"default": x}, training_pass=False)
    expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(net.get("bn.outputs.default"), expected, rtol=1e-10)
    np.testing.assert_array_equal(net.get("bn.states.mean"), mean)
    np.testing.assert_array_equal(net.get("bn.states.var"), var)

    # backward after an inference pass: a fixed affine map per feature
    dy = rng.randn(*x.shape)
    deltas, grads = backward(net, name, {"default": dy})
    np.testing.assert_allclose(deltas["default"], dy * gamma / np.sqrt(var + 1e-3), rtol=1e-10)
    x_hat = (x - mean) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(grads["gamma"], (dy * x_hat).reshape(-1, 3).sum(0), rtol=1e-10)
    np.testing.assert_allclose(grads["beta"], dy.reshape(-1, 3).sum(0), rtol=1e-10)


def test_batch_norm_normalises_images_over_all_axes_but_the_last():
    rng = np.random.RandomState(12)
    net, _ = _bn_net((3, 2, 2))
    set_parameters(net, "bn", gamma=np.ones(2), beta=np.zeros(2))
    x = rng.randn(2, 4, 3, 2, 2) * 5 + 3
    forward(net, {"default": x}, training_pass=True)
    y = net.get("bn.outputs.default").reshape(-1, 2)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(0), 1, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs", [{"decay": 1.5}, {"decay": -0.1}, {"epsilon": -1.0}, {"decay": "x"}]
)
def test_batch_norm_rejects_bad_arguments(kwargs):
    with pytest.raises(LayerValidationError, match=next(iter(kwargs))):
        bs.layers.BatchNorm(**kwargs)


def test_batch_norm_keeps_the_reference_argument_order():
    layer = bs.layers.BatchNorm("bn1")
    assert layer.layer.name == "bn1"


# -- Mask -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_features, mask_features",
    [((3,), (1,)), ((2, 3), (1,)), ((2, 3), (2, 1)), ((2, 3), (2, 3)), ((3,), (3,))],
    ids=["per-step", "per-step-image", "per-position", "per-feature-image", "per-feature"],
)
def test_mask_multiplies_with_a_broadcast_mask(in_features, mask_features):
    rng = np.random.RandomState(13)
    net, name = build(bs.layers.Mask(), {"default": in_features, "mask": mask_features})
    x = rng.randn(2, 3, *in_features)
    mask = (rng.uniform(size=(2, 3, *mask_features)) < 0.5).astype(float)
    forward(net, {"default": x, "mask": mask})
    m = mask if mask_features != (1,) else mask.reshape((2, 3) + (1,) * len(in_features))
    np.testing.assert_array_equal(net.get(f"{name}.outputs.default"), x * m)
    dy, start = rng.randn(*x.shape), rng.randn(*x.shape)
    deltas, _ = backward(net, name, {"default": dy}, {"default": start})
    np.testing.assert_allclose(deltas["default"], start + dy * m, rtol=1e-12)


def test_mask_per_feature_masks_single_features():
    net, name = build(bs.layers.Mask(), {"default": (3,), "mask": (3,)})
    x = np.ones((1, 2, 3))
    mask = np.array([[[1, 0, 1], [0, 1, 0]]], dtype=float)
    forward(net, {"default": x, "mask": mask})
    np.testing.assert_array_equal(net.get(f"{name}.outputs.default"), mask)


@pytest.mark.parametrize("mask_features", [(2,), (3, 1), (2, 2)])
def test_mask_rejects_shapes_that_do_not_broadcast(mask_features):
    with pytest.raises(LayerValidationError, match="mask"):
        build(bs.layers.Mask(), {"default": (2, 3), "mask": mask_features})


# -- Loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "features, batch_divisor",
    [((3,), 4), (("B", 3), 4), ((3, 2), 4)],
    ids=["time-sized", "batch-sized", "image"],
)
def test_loss_value_and_deltas(features, batch_divisor):
    rng = np.random.RandomState(14)
    net, name = build(bs.layers.Loss(importance=0.5, name="L"), {"default": features})
    shape = (4,) + features[1:] if features[0] == "B" else (3, 4) + features
    x, start = rng.randn(*shape), rng.randn(*shape)
    forward(net, {"default": x})
    assert net.get("L.outputs.loss").shape == (1,)
    np.testing.assert_allclose(net.get("L.outputs.loss"), [0.5 * x.sum() / batch_divisor])
    assert net.get_loss_values() == pytest.approx({"total_loss": 0.5 * x.sum() / batch_divisor})
    deltas, _ = backward(net, name, {}, {"default": start})
    np.testing.assert_allclose(deltas["default"], start + 0.5 / batch_divisor, rtol=1e-12)


def test_loss_named_total_loss_is_rejected():
    with pytest.raises(LayerValidationError, match="total_loss"):
        bs.layers.Loss(name="total_loss")
    layer = bs.layers.Loss(name="L")
    bs.layers.Input({"default": ("T", "B", 3)}) >> layer
    architecture = bs.generate_architecture(layer)
    architecture["total_loss"] = architecture.pop("L")
    architecture["Input"]["@outgoing_connections"] = {"default": ["total_loss"]}
    with pytest.raises(ValidationError, match="total_loss"):
        bs.Network.from_architecture(architecture, handler=make_handler())


def test_loss_rejects_non_numeric_importance():
    with pytest.raises(LayerValidationError, match="importance"):
        bs.layers.Loss(importance="high")


# -- SoftmaxCE ------------------------------------------------------------------------------


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("out_type, classes", [("SoftmaxCE", 1), ("SigmoidCE", 3)])
def test_the_old_output_name_probabilities_works_in_paths_and_wiring(out_type, classes):
    inp = bs.layers.Input({"default": ("T", "B", 3), "targets": ("T", "B", classes)})
    out = getattr(bs.layers, out_type)(name="Output")
    inp - "default" >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    out - "probabilities" >> bs.layers.NoOp(name="Copy")  # (the old name, wired)
    net = bs.Network.from_layer(inp, handler=bs.handlers.NumpyHandler(np.float64))
    net.provide_external_data({"default": np.ones((2, 2, 3)), "targets": np.ones((2, 2, classes))})
    net.forward_pass()
    predictions = net.get("Output.outputs.predictions")
    np.testing.assert_array_equal(net.get("Output.outputs.probabilities"), predictions)
    np.testing.assert_array_equal(net.get("Copy.outputs.default"), predictions)


@pytest.mark.parametrize(
    "make",
    [
        lambda: bs.layers.FullyConnected(np.prod((2, 3))),
        lambda: bs.layers.FullyConnected((np.int64(2), np.int32(3))),
        lambda: bs.layers.Lstm(np.array([4, 5])[0]),
        lambda: bs.layers.Gru(np.int32(4)),
        lambda: bs.layers.Recurrent(np.int16(4)),
        lambda: bs.layers.Embedding(np.int64(10), np.int64(4)),
    ],
)
def test_numpy_integers_are_sizes_too(make):
    net = bs.Network.from_layer(bs.layers.Input({"default": ("T", "B", 1)}) >> make())
    json.dumps(net.architecture)  # (plain ints: the architecture is JSON)


def test_softmax_ce_forward_backward_and_probabilities_alias():
    rng = np.random.RandomState(15)
    out = bs.layers.SoftmaxCE(name="Output")
    net, name = build(out, {"default": (4,), "targets": (1,)})
    x = rng.randn(2, 3, 4)
    t = rng.randint(0, 4, (2, 3, 1))
    forward(net, {"default": x, "targets": t})
    p = _softmax(x)
    np.testing.assert_allclose(net.get("Output.outputs.predictions"), p, rtol=1e-12)
    np.testing.assert_array_equal(
        net.get("Output.outputs.probabilities"), net.get("Output.outputs.predictions")
    )
    assert net.layers[name].output_aliases == {"probabilities": "predictions"}
    expected_loss = -np.log(np.take_along_axis(p, t, axis=-1))
    np.testing.assert_allclose(net.get("Output.outputs.loss"), expected_loss, rtol=1e-12)

    dloss = rng.randn(2, 3, 1)
    deltas, _ = backward(net, name, {"loss": dloss})
    onehot = np.eye(4)[t[..., 0]]
    np.testing.assert_allclose(deltas["default"], (p - onehot) * dloss, rtol=1e-10, atol=1e-12)


def test_softmax_ce_clips_the_loss():
    net, name = build(bs.layers.SoftmaxCE(), {"default": (2,), "targets": (1,)})
    forward(net, {"default": np.array([[[0.0, 40.0]]]), "targets": np.array([[[0.0]]])})
    np.testing.assert_allclose(net.get(f"{name}.outputs.loss"), -np.log(1e-6))


@pytest.mark.parametrize("targets", [(2,), (4,), (3, 1)])
def test_softmax_ce_rejects_targets_that_are_not_class_indices(targets):
    with pytest.raises(LayerValidationError, match="targets"):
        build(bs.layers.SoftmaxCE(), {"default": (4,), "targets": targets})


def test_softmax_ce_is_the_default_output_of_a_network():
    net, _ = build(bs.layers.SoftmaxCE(name="Output"), {"default": (4,), "targets": (1,)})
    assert net.output_name == "Output.outputs.predictions"


# -- SigmoidCE, SquaredError, SquaredDifference, BinomialCrossEntropy ----------------------


def test_sigmoid_ce_values_and_deltas():
    rng = np.random.RandomState(16)
    net, name = build(bs.layers.SigmoidCE(), {"default": (3,), "targets": (3,)})
    x, t = rng.randn(2, 3, 3), (rng.uniform(size=(2, 3, 3)) < 0.5).astype(float)
    forward(net, {"default": x, "targets": t})
    y = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(net.get(f"{name}.outputs.predictions"), y, rtol=1e-12)
    loss = -(t * np.log(y) + (1 - t) * np.log(1 - y))
    np.testing.assert_allclose(net.get(f"{name}.outputs.loss"), loss, rtol=1e-10)
    dloss = rng.randn(*x.shape)
    deltas, _ = backward(net, name, {"loss": dloss})
    np.testing.assert_allclose(deltas["default"], (y - t) * dloss, rtol=1e-10)


def test_squared_error_values_and_deltas():
    rng = np.random.RandomState(17)
    net, name = build(bs.layers.SquaredError(), {"default": (3,), "targets": (3,)})
    x, t = rng.randn(2, 3, 3), rng.randn(2, 3, 3)
    forward(net, {"default": x, "targets": t})
    np.testing.assert_array_equal(net.get(f"{name}.outputs.predictions"), x)
    np.testing.assert_allclose(net.get(f"{name}.outputs.loss"), 0.5 * (x - t) ** 2, rtol=1e-12)
    dloss = rng.randn(*x.shape)
    deltas, _ = backward(net, name, {"loss": dloss})
    np.testing.assert_allclose(deltas["default"], (x - t) * dloss, rtol=1e-12)


def test_squared_difference_leaves_its_output_deltas_untouched():
    # The reference multiplied its own output deltas by 2 in place.
    rng = np.random.RandomState(18)
    net, name = build(bs.layers.SquaredDifference(), {"inputs_1": (3,), "inputs_2": (3,)})
    a, b = rng.randn(2, 3, 3), rng.randn(2, 3, 3)
    forward(net, {"inputs_1": a, "inputs_2": b})
    np.testing.assert_allclose(net.get(f"{name}.outputs.default"), (a - b) ** 2, rtol=1e-12)
    dy = rng.randn(2, 3, 3)
    deltas, _ = backward(net, name, {"default": dy})
    np.testing.assert_array_equal(net.get(f"{name}.output_deltas.default"), dy)
    np.testing.assert_allclose(deltas["inputs_1"], 2 * (a - b) * dy, rtol=1e-12)
    np.testing.assert_allclose(deltas["inputs_2"], -2 * (a - b) * dy, rtol=1e-12)


@pytest.mark.parametrize(
    "factory, inputs",
    [
        (bs.layers.SquaredDifference, ("inputs_1", "inputs_2")),
        (bs.layers.SquaredError, ("default", "targets")),
        (bs.layers.SigmoidCE, ("default", "targets")),
        (bs.layers.BinomialCrossEntropy, ("default", "targets")),
    ],
)
def test_pairwise_layers_reject_different_shapes(factory, inputs):
    with pytest.raises(LayerValidationError, match="same shape"):
        build(factory(), {inputs[0]: (3,), inputs[1]: (2,)})


def test_binomial_cross_entropy_values_and_deltas():
    rng = np.random.RandomState(19)
    net, name = build(bs.layers.BinomialCrossEntropy(), {"default": (2, 2), "targets": (2, 2)})
    y = rng.uniform(0.05, 0.95, (2, 3, 2, 2))
    t = (rng.uniform(size=y.shape) < 0.5).astype(float)
    forward(net, {"default": y, "targets": t})
    cee = -(t * np.log(y) + (1 - t) * np.log(1 - y))
    np.testing.assert_allclose(
        net.get(f"{name}.outputs.default"), cee.reshape(2, 3, -1).sum(-1, keepdims=True), 1e-10
    )
    dout = rng.randn(2, 3, 1)
    deltas, _ = backward(net, name, {"default": dout})
    expected = (y - t) / (y * (1 - y)) * dout[..., None]
    np.testing.assert_allclose(deltas["default"], expected, rtol=1e-10)


def test_binomial_cross_entropy_is_finite_at_the_extremes():
    net, name = build(bs.layers.BinomialCrossEntropy(), {"default": (2,), "targets": (2,)})
    forward(net, {"default": np.array([[[0.0, 1.0]]]), "targets": np.array([[[1.0, 0.0]]])})
    np.testing.assert_allclose(net.get(f"{name}.outputs.default"), [[[-2 * np.log(1e-6)]]])


# -- L1Decay, L2Decay -----------------------------------------------------------------------


def test_l1_and_l2_decay_values_and_deltas():
    rng = np.random.RandomState(20)
    x, dloss = rng.randn(3, 2, 2, 2), rng.randn(3, 2, 1)
    net, name = build(bs.layers.L1Decay(), {"default": (2, 2)})
    forward(net, {"default": x})
    np.testing.assert_allclose(
        net.get(f"{name}.outputs.loss"), np.abs(x).reshape(3, 2, -1).sum(-1, keepdims=True)
    )
    deltas, _ = backward(net, name, {"loss": dloss})
    np.testing.assert_allclose(deltas["default"], np.sign(x) * dloss[..., None], rtol=1e-12)

    net, name = build(bs.layers.L2Decay(), {"default": (2, 2)})
    forward(net, {"default": x})
    np.testing.assert_allclose(
        net.get(f"{name}.outputs.loss"), 0.5 * (x**2).reshape(3, 2, -1).sum(-1, keepdims=True)
    )
    deltas, _ = backward(net, name, {"loss": dloss})
    np.testing.assert_allclose(deltas["default"], x * dloss[..., None], rtol=1e-12)


# -- a small network ---------------------------------------------------------------------------


def test_a_classifier_built_from_these_layers_trains_a_step():
    rng = np.random.RandomState(21)
    inp = bs.layers.Input({"default": ("T", "B", 4), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    (
        inp
        >> bs.layers.FullyConnected(6, activation="tanh")
        >> bs.layers.BatchNorm()
        >> bs.layers.FullyConnected(3, activation="linear")
        >> out
    )
    inp - "targets" >> "targets" - out
    out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out, handler=make_handler())
    net.initialize(bs.initializers.Gaussian(0.3), seed=2)
    data = {"default": rng.randn(2, 5, 4), "targets": rng.randint(0, 3, (2, 5, 1))}
    losses = []
    for _ in range(10):
        forward(net, data, training_pass=True)
        losses.append(net.get_loss_values()["total_loss"])
        net.backward_pass()
        params = net.get("parameters") - 0.1 * net.get("gradients")
        net.handler.set_from_numpy(net.buffer.parameters, params)
    assert losses[-1] < losses[0]
