"""Tests of the recurrent layers (Recurrent, Lstm, Clockwork, ClockworkLstm, Gru,
Bidirectional) and of Embedding: generic checks, NumPy references, context, masks."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.handlers.debug_handler import DebugHandler
from brainstorm.handlers.numpy_handler import NumpyHandler
from brainstorm.layers.bidirectional_layer import Bidirectional
from brainstorm.layers.clockwork_layer import Clockwork
from brainstorm.layers.clockwork_lstm_layer import ClockworkLstm
from brainstorm.layers.embedding_layer import Embedding
from brainstorm.layers.fully_connected_layer import FullyConnected
from brainstorm.layers.gru_layer import Gru
from brainstorm.layers.lstm_layer import Lstm
from brainstorm.layers.recurrent_layer import Recurrent
from brainstorm.testing import check_layer
from brainstorm.utils import LayerValidationError

RECURRENT = {
    "Recurrent": Recurrent,
    "Lstm": Lstm,
    "Clockwork": Clockwork,
    "ClockworkLstm": ClockworkLstm,
    "Gru": Gru,
}
TIMING = [1.0, 2.0, 3.0]  # for layers of size 3
CHECKS_WITHOUT_CONTEXT = ("deltas", "gradients", "adds_deltas", "garbage", "description")


# -- helpers --------------------------------------------------------------------------------


def make_handler(seed=1):
    return DebugHandler(NumpyHandler(np.float64, seed=seed))


def inits_for(type_name, prefix=""):
    return {prefix + "timing": TIMING} if "Clockwork" in type_name else {}


def build(layer, in_shapes, seed=1, inits=None):
    """``Input >> layer`` on DebugHandler(NumpyHandler(float64)); returns (net, name)."""
    inp = bs.layers.Input({k: ("T", "B") + tuple(v) for k, v in in_shapes.items()})
    for name in in_shapes:
        inp - name >> name - layer
    net = bs.Network.from_layer(layer, handler=make_handler(seed))
    name = layer.layer.name
    spec = {"default": bs.initializers.Gaussian(0.5)}
    if inits:
        spec[name] = dict(inits, default=bs.initializers.Gaussian(0.5))
    net.initialize(spec, seed=seed)
    return net, name


def run(net, name, data, context=None):
    net.provide_external_data({k: np.asarray(v, float) for k, v in data.items()})
    net.forward_pass(training_pass=True, context=context)
    return net.get(f"{name}.outputs.default")[: data["default"].shape[0]]


def params(net, name):
    return {k: net.get(f"{name}.parameters.{k}") for k in net.buffer[name].parameters.keys()}


def lengths_mask(lengths, T):
    return (np.arange(T)[:, None] < np.asarray(lengths)[None, :]).astype(float)[:, :, None]


def random_mask(shape, rng):
    return (rng.uniform(size=shape) < 0.7).astype(float)


def np_act(name, x):
    return {
        "sigmoid": lambda: 1.0 / (1.0 + np.exp(-x)),
        "tanh": lambda: np.tanh(x),
        "rel": lambda: np.maximum(x, 0.0),
        "linear": lambda: x,
        "el": lambda: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    }[name]()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -- NumPy references (loops over time, written from the equations) --------------------------


def reference(type_name, p, x, act="tanh", reverse=False, mask=None, h0=None, c0=None):
    """Outputs of a recurrent layer computed step by step in float64."""
    T, B = x.shape[:2]
    x = x.reshape(T, B, -1)
    S = p["bz"].shape[0] if "bz" in p else p["bias"].shape[0]
    h = np.zeros((B, S)) if h0 is None else h0
    c = np.zeros((B, S)) if c0 is None else c0
    tau = np.zeros((B, 1))  # steps since the last reset, counting the current one
    y = np.zeros((T, B, S))
    for t in range(T - 1, -1, -1) if reverse else range(T):
        if type_name in ("Recurrent", "Clockwork"):
            new_h = np_act(act, x[t] @ p["W"].T + h @ p["R"].T + p["bias"])
            new_c = c
        elif type_name in ("Lstm", "ClockworkLstm"):
            z = np_act(act, x[t] @ p["Wz"].T + h @ p["Rz"].T + p["bz"])
            i = sigmoid(x[t] @ p["Wi"].T + h @ p["Ri"].T + p["pi"] * c + p["bi"])
            f = sigmoid(x[t] @ p["Wf"].T + h @ p["Rf"].T + p["pf"] * c + p["bf"])
            new_c = i * z + f * c
            o = sigmoid(x[t] @ p["Wo"].T + h @ p["Ro"].T + p["po"] * new_c + p["bo"])
            new_h = o * np_act(act, new_c)
        else:  # Gru
            z = sigmoid(x[t] @ p["Wz"].T + h @ p["Rz"].T + p["bz"])
            r = sigmoid(x[t] @ p["Wr"].T + h @ p["Rr"].T + p["br"])
            cand = np_act(act, x[t] @ p["Wh"].T + r * (h @ p["Rh"].T) + p["bh"])
            new_h, new_c = z * h + (1 - z) * cand, c
        if "Clockwork" in type_name:
            tau = tau + 1
            keep = np.fmod(tau - 1, p["timing"]) != 0
            new_h = np.where(keep, h, new_h)
            new_c = np.where(keep, c, new_c)
        if mask is not None:
            new_h, new_c, tau = new_h * mask[t], new_c * mask[t], tau * mask[t]
        h, c = new_h, new_c
        y[t] = h
    return y


# -- generic checks -------------------------------------------------------------------------

CASES = []
for _type in RECURRENT:
    for _T, _B, _act, _rev in [
        (1, 1, "tanh", False),
        (3, 2, "sigmoid", False),
        (2, 3, "rel", True),
        (1, 2, "linear", True),
        (2, 2, "el", False),
    ]:
        CASES.append((_type, _T, _B, _act, _rev, False))
    CASES.append((_type, 3, 2, "tanh", False, True))
    CASES.append((_type, 3, 2, "tanh", True, True))
    # more steps than go into one deferred block of gradients (GRADIENT_BLOCK)
    CASES.append((_type, 12, 1, "tanh", True, True))


@pytest.mark.parametrize(
    "type_name, T, B, activation, reverse, masked",
    CASES,
    ids=[
        f"{c[0]}-T{c[1]}-B{c[2]}-{c[3]}" + ("-reverse" if c[4] else "") + ("-mask" if c[5] else "")
        for c in CASES
    ],
)
def test_check_layer(type_name, T, B, activation, reverse, masked):
    in_shapes = {"default": (2,) if T != 2 else (1, 2)}  # (1, 2) features are flattened
    data = None
    if masked:
        in_shapes["mask"] = (1,)
        data = {"mask": random_mask}
    check_layer(
        RECURRENT[type_name](3, activation=activation, reverse=reverse),
        in_shapes,
        time_steps=T,
        batch_size=B,
        inits=inits_for(type_name),
        data=data,
        seed=7,
        # check_layer chains reverse layers later chunk first (their context_order)
        checks=CHECKS_WITHOUT_CONTEXT + ("context",),
    )


@pytest.mark.parametrize("type_name", ["Recurrent", "Gru", "Clockwork"])
def test_check_bidirectional(type_name):
    check_layer(
        Bidirectional(RECURRENT[type_name](3, activation="sigmoid")),
        {"default": (2,), "mask": (1,)},
        time_steps=3,
        batch_size=2,
        inits=inits_for(type_name, "fwd_") | inits_for(type_name, "rev_"),
        data={"mask": random_mask},
        checks=CHECKS_WITHOUT_CONTEXT + ("context",),  # derivatives from a context
    )


def test_check_layer_chains_reverse_layers_backwards_and_skips_bidirectional():
    net = bs.Network.from_layer(
        bs.layers.Input({"default": ("T", "B", 2)})
        >> Bidirectional(Lstm(3), name="Bi")
        >> Lstm(2, reverse=True, name="Rev")
        >> Lstm(2, name="Fwd")
    )
    assert net.layers["Rev"].context_order == "reverse"
    assert net.layers["Fwd"].context_order == "forward"
    assert net.layers["Bi"].context_order is None


@pytest.mark.parametrize("type_name", RECURRENT)
def test_bidirectional_context_continues_only_the_forward_direction(type_name):
    # chunk 2 after chunk 1 (with context): the forward half continues chunk 1, the
    # reverse half reads chunk 2 backwards from its end and must not see chunk 1
    net = bs.Network.from_layer(
        bs.layers.Input({"default": ("T", "B", 2)})
        >> Bidirectional(RECURRENT[type_name](3), name="Bi")
    )
    net.set_handler(NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(0.5), seed=1)
    rng = np.random.RandomState(0)
    chunk1, chunk2 = rng.randn(4, 2, 2), rng.randn(4, 2, 2)

    def outputs(x, context=None):
        net.provide_external_data({"default": x})
        net.forward_pass(context=context)
        return net.get("Bi.outputs.default")[: len(x)]

    whole = outputs(np.concatenate([chunk1, chunk2]))
    outputs(chunk1)
    continued = outputs(chunk2, net.get_context())
    fresh = outputs(chunk2)
    np.testing.assert_allclose(continued[:, :, :3], whole[4:, :, :3], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(continued[:, :, 3:], fresh[:, :, 3:])
    assert not np.allclose(continued[:, :, :3], fresh[:, :, :3])  # (the context matters)


@pytest.mark.parametrize("T, B", [(1, 1), (3, 2), (4, 5)])
def test_check_embedding(T, B):
    check_layer(
        Embedding(5, 3),
        {"default": (1,)},
        time_steps=T,
        batch_size=B,
        data={"default": lambda shape, rng: rng.randint(0, 5, shape)},
    )


# -- forward values against the NumPy references -------------------------------------------


@pytest.mark.parametrize("type_name", RECURRENT)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("activation", ["tanh", "el"])
def test_outputs_match_the_numpy_reference(type_name, reverse, activation):
    layer = RECURRENT[type_name](3, activation=activation, reverse=reverse)
    net, name = build(layer, {"default": (2,), "mask": (1,)}, inits=inits_for(type_name))
    rng = np.random.RandomState(3)
    x, mask = rng.randn(7, 2, 2), random_mask((7, 2, 1), rng)
    for m in (np.ones_like(mask), mask):
        y = run(net, name, {"default": x, "mask": m})
        expected = reference(type_name, params(net, name), x, activation, reverse, m)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


def test_lstm_parameters_keep_the_reference_names_order_and_shapes():
    net, name = build(Lstm(3), {"default": (2,)})
    shapes = {k: v.shape for k, v in params(net, name).items()}
    assert list(shapes) == "Wz Wi Wf Wo pi pf po Rz Ri Rf Ro bz bi bf bo".split()
    assert shapes["Wz"] == (3, 2) and shapes["pi"] == (1, 3)
    assert shapes["Rz"] == (3, 3) and shapes["bz"] == (3,)


def test_lstm_gate_internals_are_the_reference_buffers():
    net, name = build(Lstm(3), {"default": (2,)})
    x = np.random.RandomState(0).randn(2, 1, 2)
    y = run(net, name, {"default": x})
    p = params(net, name)
    fa = x[0] @ p["Wf"].T + p["bf"]  # the context (h, c) is zero at t = 0
    np.testing.assert_allclose(net.get(f"{name}.internals.Fa")[0], fa)
    np.testing.assert_allclose(net.get(f"{name}.internals.Fb")[0], sigmoid(fa))
    cb = net.get(f"{name}.internals.Cb")
    np.testing.assert_allclose(y, net.get(f"{name}.internals.Ob")[:2] * cb)
    numpy_net = bs.Network.from_architecture(net.architecture)  # plain NumpyHandler
    numpy_net.provide_external_data({"default": x})
    internals = numpy_net.buffer[name].internals
    for gate in ("Za", "Ia", "Fa", "Oa", "Zb", "Ib", "Fb", "Ob", "Cb"):
        assert internals[gate][0].flags.c_contiguous  # one (B, S) block per step


# -- context --------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", RECURRENT)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("masked", [False, True], ids=["", "mask"])
def test_one_pass_equals_two_passes_chained_by_context(type_name, reverse, masked):
    layer = RECURRENT[type_name](3, reverse=reverse)
    net, name = build(layer, {"default": (2,), "mask": (1,)}, inits=inits_for(type_name))
    rng = np.random.RandomState(5)
    T, split = 7, 3
    x = rng.randn(T, 2, 2)
    mask = random_mask((T, 2, 1), rng) if masked else np.ones((T, 2, 1))
    full = run(net, name, {"default": x, "mask": mask})
    # a reverse layer continues a sequence backwards: the later chunk comes first
    first, second = (
        (slice(split, T), slice(0, split)) if reverse else (slice(0, split), slice(split, T))
    )
    part1 = run(net, name, {"default": x[first], "mask": mask[first]})
    context = net.get_context()
    part2 = run(net, name, {"default": x[second], "mask": mask[second]}, context=context)
    np.testing.assert_allclose(part1, full[first], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(part2, full[second], rtol=1e-10, atol=1e-12)
    if type_name in ("Lstm", "ClockworkLstm") and not masked:
        assert (
            np.abs(part2 - run(net, name, {"default": x[second], "mask": mask[second]})).max()
            > 1e-3
        )


def numeric_check_with_context(net, name, data, context):
    """Parameter gradients and input deltas of a pass that starts from ``context``,
    against central finite differences of ``sum(y * weights)``."""
    h, impl = net.handler, net.layers[name]
    net.provide_external_data(data)
    T = data["default"].shape[0]
    weights = np.random.RandomState(11).randn(*net.get(f"{name}.outputs.default").shape)
    weights[T:] = 0  # the context slot is not an output

    def objective():
        net.forward_pass(training_pass=True, context=context)
        return float(np.sum(net.get(f"{name}.outputs.default") * weights))

    objective()
    net.buffer_manager.clear_backward_buffers()
    buffers = net.buffer[name]
    h.set_from_numpy(buffers.output_deltas.default, weights)
    impl.backward_pass(buffers)
    checked = [
        (f"{name}.parameters.{k}", buffers.parameters[k], buffers.gradients[k])
        for k in buffers.parameters.keys()
        if k not in impl.computes_no_gradients_for
    ]
    checked.append(("input", net.buffer.Input.outputs.default, buffers.input_deltas.default))
    eps = 1e-6
    for what, view, analytic in checked:
        analytic = h.get_numpy_copy(analytic)
        original = h.get_numpy_copy(view)
        numeric = np.zeros_like(original)
        for i in range(original.size):
            for sign in (1, -1):
                changed = original.copy()
                changed.flat[i] += sign * eps
                h.set_from_numpy(view, changed)
                numeric.flat[i] += sign * objective() / (2 * eps)
        h.set_from_numpy(view, original)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=what)


@pytest.mark.parametrize("type_name", RECURRENT)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradients_are_right_when_a_context_was_passed(type_name, reverse):
    """The reference Lstm used delta buffers instead of y[-1] and Ca[-1] at t = 0."""
    layer = RECURRENT[type_name](2, reverse=reverse)
    net, name = build(
        layer, {"default": (2,)}, inits={"timing": [1, 2]} if "Clock" in type_name else {}
    )
    rng = np.random.RandomState(2)
    run(net, name, {"default": rng.randn(2, 2, 2)})
    context = net.get_context()
    values = [net.handler.get_numpy_copy(v) for v in context.values()]
    assert all(np.abs(v).max() > 0.01 for v in values)  # a real, nonzero context
    numeric_check_with_context(net, name, {"default": rng.randn(3, 2, 2)}, context)


def test_context_holds_the_state_after_the_last_processed_step():
    net, name = build(Lstm(3, reverse=True), {"default": (2,)})
    x = np.random.RandomState(1).randn(4, 2, 2)
    y = run(net, name, {"default": x})
    context = net.get_context()
    assert set(context) == {f"{name}.internals.Hcarry", f"{name}.internals.Ccarry"}
    np.testing.assert_allclose(
        net.handler.get_numpy_copy(context[f"{name}.internals.Hcarry"])[0], y[0]
    )
    net, name = build(Lstm(3), {"default": (2,)})
    assert set(net.buffer_manager.get_context()) == {
        f"{name}.outputs.default",
        f"{name}.internals.Ca",
    }


# -- masks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", RECURRENT)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_padding_neither_leaks_nor_shows(type_name, reverse):
    lengths, T = [5, 3, 1], 5
    layer = RECURRENT[type_name](3, reverse=reverse)
    net, name = build(layer, {"default": (2,), "mask": (1,)}, inits=inits_for(type_name))
    rng = np.random.RandomState(4)
    x = rng.randn(T, 3, 2)
    mask = lengths_mask(lengths, T)
    y = run(net, name, {"default": x, "mask": mask})
    assert np.all(y[mask[:, :, 0] == 0] == 0)
    for b, n in enumerate(lengths):
        alone = run(net, name, {"default": x[:n, b : b + 1], "mask": np.ones((n, 1, 1))})
        np.testing.assert_allclose(y[:n, b : b + 1], alone, rtol=1e-10, atol=1e-12)


def test_masks_get_no_deltas():
    net, name = build(Lstm(3), {"default": (2,), "mask": (1,)})
    assert "mask" in net.layers[name].computes_no_input_deltas_for
    rng = np.random.RandomState(0)
    run(net, name, {"default": rng.randn(3, 2, 2), "mask": random_mask((3, 2, 1), rng)})
    net.buffer_manager.clear_backward_buffers()
    buffers = net.buffer[name]
    net.handler.set_from_numpy(buffers.output_deltas.default, rng.randn(4, 2, 3))
    net.layers[name].backward_pass(buffers)
    assert np.all(net.get(f"{name}.input_deltas.mask") == 0)


# -- clockwork timing -----------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["Clockwork", "ClockworkLstm"])
def test_clockwork_units_update_only_when_their_period_divides_the_step(type_name):
    net, name = build(RECURRENT[type_name](3), {"default": (2,)}, inits={"timing": [1, 2, 4]})
    y = run(net, name, {"default": np.random.RandomState(0).randn(9, 2, 2)})
    changed = np.abs(np.diff(y, axis=0)).max(axis=1) > 1e-12  # (T - 1, S): step t+1 vs t
    for k, period in enumerate([1, 2, 4]):
        expected = [(t % period) == 0 for t in range(1, 9)]
        assert list(changed[:, k]) == expected, (k, changed[:, k])
    if type_name == "ClockworkLstm":  # the cell state is kept too
        ca = net.get(f"{name}.internals.Ca")[:9]
        np.testing.assert_array_equal(ca[1, :, 2], ca[0, :, 2])
        np.testing.assert_array_equal(ca[3, :, 2], ca[2, :, 2])


def test_clockwork_time_continues_across_passes_and_restarts_after_a_mask():
    net, name = build(Clockwork(3), {"default": (2,), "mask": (1,)}, inits={"timing": [1, 2, 4]})
    x = np.random.RandomState(0).randn(6, 1, 2)
    ones = np.ones((6, 1, 1))
    run(net, name, {"default": x, "mask": ones})
    np.testing.assert_array_equal(net.get(f"{name}.internals.Tau")[:6, 0, 0], [1, 2, 3, 4, 5, 6])
    run(net, name, {"default": x, "mask": ones}, context=net.get_context())
    np.testing.assert_array_equal(net.get(f"{name}.internals.Tau")[:6, 0, 0], [7, 8, 9, 10, 11, 12])
    mask = ones.copy()
    mask[2] = 0
    run(net, name, {"default": x, "mask": mask})
    np.testing.assert_array_equal(net.get(f"{name}.internals.Tau")[:6, 0, 0], [1, 2, 0, 1, 2, 3])


def test_clockwork_timing_gets_no_gradient():
    for factory in (Clockwork, ClockworkLstm):
        net, name = build(factory(3), {"default": (2,)}, inits={"timing": TIMING})
        assert net.layers[name].computes_no_gradients_for == ("timing",)
        run(net, name, {"default": np.ones((3, 1, 2))})
        net.backward_pass()
        assert np.all(net.get(f"{name}.gradients.timing") == 0)


# -- GRU ------------------------------------------------------------------------------------


def test_gru_matches_a_tiny_hand_computed_step():
    net, name = build(Gru(1, activation="tanh"), {"default": (1,)})
    values = dict(Wz=0.5, Wr=-1.0, Wh=2.0, Rz=0.3, Rr=0.7, Rh=-0.4, bz=0.1, br=0.2, bh=-0.3)
    for k, v in values.items():
        net.handler.set_from_numpy(
            net.buffer[name].parameters[k], np.full((1, 1) if k[0] != "b" else (1,), v)
        )
    y = run(net, name, {"default": np.array([[[1.0]], [[-2.0]]])})
    h = 0.0
    for x in (1.0, -2.0):
        z = sigmoid(0.5 * x + 0.3 * h + 0.1)
        r = sigmoid(-1.0 * x + 0.7 * h + 0.2)
        cand = np.tanh(2.0 * x + r * (-0.4 * h) - 0.3)
        h = z * h + (1 - z) * cand
    np.testing.assert_allclose(y[-1, 0, 0], h, rtol=1e-12)


def test_gru_parameter_names_and_order():
    net, name = build(Gru(3), {"default": (2,)})
    assert list(params(net, name)) == "Wz Wr Wh Rz Rr Rh bz br bh".split()


# -- bidirectional ---------------------------------------------------------------------------


def test_two_layer_bidirectional_pattern():
    inp = bs.layers.Input({"default": ("T", "B", 2)})
    fwd, bwd = Lstm(3, name="Fwd"), Lstm(3, reverse=True, name="Bwd")
    out = FullyConnected(4, activation="linear", name="Out")
    inp >> fwd >> out
    inp >> bwd >> out
    out >> bs.layers.Loss()
    net = bs.Network.from_layer(out, handler=make_handler())
    net.initialize(bs.initializers.Gaussian(0.5), seed=1)
    assert net.layers["Out"].in_shapes["default"].feature_shape == (6,)
    x = np.random.RandomState(0).randn(4, 2, 2)
    net.provide_external_data({"default": x})
    net.forward_pass()
    outputs = {}
    for layer, reverse in (("Fwd", False), ("Bwd", True)):
        outputs[layer] = net.get(f"{layer}.outputs.default")[:4]
        expected = reference("Lstm", params(net, layer), x, reverse=reverse)
        np.testing.assert_allclose(outputs[layer], expected, rtol=1e-10, atol=1e-12)
    joined = net.get("Out.inputs.default")[:4]  # both outputs side by side (in layout order)
    assert any(
        np.array_equal(joined, np.concatenate([outputs[a], outputs[b]], axis=2))
        for a, b in (("Fwd", "Bwd"), ("Bwd", "Fwd"))
    )
    net.backward_pass()  # deltas flow into both directions
    assert (
        np.abs(net.get("Fwd.gradients.Wz")).max() > 0
        and np.abs(net.get("Bwd.gradients.Wz")).max() > 0
    )


@pytest.mark.parametrize("type_name", RECURRENT)
def test_bidirectional_layer_equals_a_forward_and_a_reverse_layer(type_name):
    layer = Bidirectional(RECURRENT[type_name](3, activation="rel"))
    inits = inits_for(type_name, "fwd_") | inits_for(type_name, "rev_")
    net, name = build(layer, {"default": (2,), "mask": (1,)}, inits=inits)
    p = params(net, name)
    assert list(p)[:2] == ["fwd_" + list(p)[0][4:], "fwd_" + list(p)[1][4:]]
    assert {k[4:] for k in p if k.startswith("rev_")} == {k[4:] for k in p if k.startswith("fwd_")}
    rng = np.random.RandomState(0)
    x, mask = rng.randn(5, 2, 2), lengths_mask([5, 3], 5)
    y = run(net, name, {"default": x, "mask": mask})
    assert y.shape == (5, 2, 6)
    for offset, prefix, reverse in ((0, "fwd_", False), (3, "rev_", True)):
        own = {k[len(prefix) :]: v for k, v in p.items() if k.startswith(prefix)}
        expected = reference(type_name, own, x, "rel", reverse, mask)
        np.testing.assert_allclose(y[:, :, offset : offset + 3], expected, rtol=1e-10, atol=1e-12)


def test_bidirectional_rejects_what_it_cannot_wrap():
    with pytest.raises(LayerValidationError, match="not a recurrent layer"):
        Bidirectional(FullyConnected(3))
    with pytest.raises(LayerValidationError, match="reverse=False"):
        Bidirectional(Lstm(3, reverse=True))
    connected = Lstm(3)
    bs.layers.Input({"default": ("T", "B", 2)}) >> connected
    with pytest.raises(LayerValidationError, match="must not be connected"):
        Bidirectional(connected)
    with pytest.raises(LayerValidationError, match="recurrent layer"):
        Bidirectional("Lstm")


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", list(RECURRENT.values()), ids=list(RECURRENT))
def test_bad_arguments_are_rejected_naming_the_layer(factory):
    with pytest.raises(LayerValidationError, match="'r1'.*size"):
        factory(0, name="r1")
    with pytest.raises(LayerValidationError, match="size"):
        factory(2.5)
    with pytest.raises(LayerValidationError, match="activation"):
        factory(3, activation="softmax")
    with pytest.raises(LayerValidationError, match="reverse"):
        factory(3, reverse="yes")


def test_recurrent_layers_flatten_their_input_features():
    net, name = build(Lstm(3), {"default": (2, 3)})
    assert net.get(f"{name}.parameters.Wz").shape == (3, 6)
    x = np.random.RandomState(0).randn(2, 1, 2, 3)
    y = run(net, name, {"default": x})
    np.testing.assert_allclose(y, reference("Lstm", params(net, name), x))


def test_architectures_without_reverse_load_as_forward_layers():
    net, name = build(Recurrent(3), {"default": (2,)})
    architecture = net.architecture
    del architecture[name]["reverse"]
    rebuilt = bs.Network.from_architecture(architecture, handler=make_handler())
    assert rebuilt.layers[name].reverse is False


# -- Embedding ------------------------------------------------------------------------------


def test_embedding_forward_and_backward_values():
    net, name = build(Embedding(4, 2), {"default": (1,)})
    W = np.arange(8.0).reshape(4, 2)
    net.handler.set_from_numpy(net.buffer[name].parameters.W, W)
    ids = np.array([[[3], [0]], [[3], [1]]], dtype=float)
    y = run(net, name, {"default": ids})
    np.testing.assert_array_equal(y, W[ids[..., 0].astype(int)])
    deltas = np.arange(8.0).reshape(2, 2, 2) + 1
    net.buffer_manager.clear_backward_buffers()
    buffers = net.buffer[name]
    net.handler.set_from_numpy(buffers.output_deltas.default, deltas)
    net.layers[name].backward_pass(buffers)
    expected = np.zeros((4, 2))
    expected[3] = deltas[0, 0] + deltas[1, 0]  # id 3 twice: accumulated
    expected[0], expected[1] = deltas[0, 1], deltas[1, 1]
    np.testing.assert_array_equal(net.get(f"{name}.gradients.W"), expected)
    assert np.all(net.get(f"{name}.input_deltas.default") == 0)


@pytest.mark.parametrize("bad_id", [4, -1])
def test_embedding_ids_out_of_range_are_clear_errors(bad_id):
    net, name = build(Embedding(4, 2), {"default": (1,)})
    net.provide_external_data({"default": np.array([[[1.0], [bad_id]]])})
    with pytest.raises(ValueError, match=r"index_rows_mv.*outside \[0, 4\)"):
        net.forward_pass()
    net = bs.Network.from_layer(_embedding_net(), handler=NumpyHandler())
    net.provide_external_data({"default": np.array([[[1.0], [bad_id]]])})
    with pytest.raises(IndexError, match=r"index_rows_mv: row id -?\d+ is out of range \[0, 4\)"):
        net.forward_pass()


def _embedding_net():
    layer = Embedding(4, 2)
    bs.layers.Input({"default": ("T", "B", 1)}) >> layer
    return layer


def test_embedding_rejects_bad_arguments():
    with pytest.raises(LayerValidationError, match="vocab_size"):
        Embedding(0, 3)
    with pytest.raises(LayerValidationError, match="size"):
        Embedding(3, -1)


# -- packaging ------------------------------------------------------------------------------


def test_new_layers_are_registered_as_entry_points():
    eps = metadata.distribution("brainstorm-layers").entry_points
    registered = {ep.name: ep.value for ep in eps if ep.group == "brainstorm.layers"}
    for name in [*RECURRENT, "Bidirectional", "Embedding"]:
        assert name in registered, name
        assert registered[name].endswith(":" + name)


def test_lstm_reference_internal_names_are_reachable():
    import brainstorm as bs

    inp = bs.layers.Input({"default": ("T", "B", 2)})
    inp >> bs.layers.Lstm(3, name="Lstm")
    net = bs.Network.from_layer(inp)
    net.initialize(bs.initializers.Gaussian(0.5))
    net.provide_external_data({"default": np.random.RandomState(0).randn(4, 2, 2)})
    net.forward_pass()
    forward = "Za Zb Ia Ib Fa Fb Oa Ob Ca Cb".split()
    backward = "dZa dIa dFa dOa dCa".split()
    assert set(forward + backward) <= set(net.buffer.Lstm.internals.keys())
    for name in forward:
        assert net.get(f"Lstm.internals.{name}").shape[-1] == 3
    assert np.all((net.get("Lstm.internals.Ib") >= 0) & (net.get("Lstm.internals.Ib") <= 1))
    np.testing.assert_allclose(net.get("Lstm.internals.Zb"), np.tanh(net.get("Lstm.internals.Za")))


@pytest.mark.parametrize("type_name", sorted(RECURRENT))
def test_reference_argument_order_size_activation_name(type_name):
    # the reference's Lstm(size, activation='tanh', name=None): reverse comes last
    layer = RECURRENT[type_name](4, "sigmoid", "Enc")
    details = layer.layer
    assert details.basename == "Enc" and details.kwargs["activation"] == "sigmoid"
    assert details.kwargs["reverse"] is False


@pytest.mark.parametrize("type_name", ["Clockwork", "ClockworkLstm"])
def test_modifiers_leave_the_clock_timing_alone(type_name):
    # a default weight decay or clipping must not turn timing [1, 2, 4] into
    # fractions (a unit whose timing is not a whole number never updates again)
    from brainstorm.value_modifiers import ClipValues, L2Decay

    inp = bs.layers.Input({"default": ("T", "B", 2)})
    inp >> RECURRENT[type_name](3, name="Clock")
    net = bs.Network.from_layer(inp, handler=NumpyHandler(np.float64))
    net.initialize(default=bs.initializers.Gaussian(0.5), Clock={"timing": [1, 2, 4]})
    net.set_gradient_modifiers(default=L2Decay(0.1))
    net.set_weight_modifiers(default=ClipValues(-1, 1))
    assert "timing" not in net.gradient_modifiers["Clock"]
    assert "timing" not in net.weight_modifiers["Clock"]
    net.provide_external_data({"default": np.ones((4, 2, 2))})
    net.forward_pass()
    net.backward_pass()
    net.apply_gradient_modifiers()
    net.apply_weight_modifiers()
    assert net.get("Clock.parameters.timing").tolist() == [1, 2, 4]
    assert np.all(net.get("Clock.gradients.timing") == 0)


def test_a_context_of_the_wrong_shape_says_which_mistake_it_likely_is():
    def recurrent_net(size):
        inp = bs.layers.Input({"default": ("T", "B", 2)})
        inp >> Recurrent(size, name="R")
        net = bs.Network.from_layer(inp)
        net.initialize(0.5)
        return net

    net = recurrent_net(3)
    net.provide_external_data({"default": np.ones((2, 4, 2))})
    net.forward_pass()
    context = net.get_context()
    net.provide_external_data({"default": np.ones((2, 5, 2))})
    with pytest.raises(ValueError, match="batch size changed"):
        net.forward_pass(context=context)
    other = recurrent_net(4)
    other.provide_external_data({"default": np.ones((2, 4, 2))})
    with pytest.raises(ValueError, match="another network"):
        other.forward_pass(context=context)


@pytest.mark.parametrize("type_name", ["Lstm", "ClockworkLstm"])
def test_large_lstm_steps_shared_between_threads_match_the_reference(type_name, monkeypatch):
    # large enough for the NumpyHandler to split every step's product between the
    # threads of its session (see Handler.session); the same without the threads
    from brainstorm.handlers import _threads

    size = 128
    inits = {"timing": list(np.arange(size) % 3 + 1.0)} if "Clockwork" in type_name else {}
    layer = RECURRENT[type_name](size)
    net, name = build(layer, {"default": (3,)}, inits=inits)
    rng = np.random.RandomState(8)
    x = rng.randn(3, 32, 3)
    y = run(net, name, {"default": x})
    expected = reference(type_name, params(net, name), x) if not inits else None
    if expected is not None:
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    net.backward_pass()
    gradients = net.handler.get_numpy_copy(net.buffer.gradients)
    monkeypatch.setitem(_threads._team, "team", None)
    monkeypatch.setenv("BRAINSTORM_NUMPY_THREADS", "0")
    np.testing.assert_allclose(run(net, name, {"default": x}), y, rtol=1e-12, atol=1e-13)
    net.backward_pass()
    again = net.handler.get_numpy_copy(net.buffer.gradients)
    np.testing.assert_allclose(again, gradients, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("type_name", RECURRENT)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("T", [1, 2, 7, 23])
def test_gradients_handed_over_in_blocks_of_steps_equal_those_computed_at_the_end(
    type_name, reverse, T, monkeypatch
):
    # recurrent layers defer their weight and recurrent gradients (the Lstm also its
    # input projections) in blocks of steps (see Handler.defer), run by a helper of the
    # NumpyHandler's session: blocks of 2 or 3 steps (and a partial one) against all
    # steps at once, from a context, with a mask and with the input deltas
    from brainstorm.handlers import _threads
    from brainstorm.layers import _recurrent, lstm_layer

    team = _threads.team()
    inits = {"timing": [1.0, 2.0, 3.0, 1.0, 2.0]} if "Clockwork" in type_name else {}
    inp = bs.layers.Input({"default": ("T", "B", 4), "mask": ("T", "B", 1)})
    layer = RECURRENT[type_name](5, reverse=reverse)
    inp >> layer
    inp - "mask" >> "mask" - layer
    net = bs.Network.from_layer(layer, handler=NumpyHandler(np.float64, seed=4))
    name = layer.layer.name
    spec = {"default": bs.initializers.Gaussian(0.5)}
    if inits:
        spec[name] = dict(inits, default=bs.initializers.Gaussian(0.5))
    net.initialize(spec, seed=4)
    rng = np.random.RandomState(6)
    run(net, name, {"default": rng.randn(3, 6, 4), "mask": np.ones((3, 6, 1))})
    context = net.get_context()
    data = {"default": rng.randn(T, 6, 4), "mask": random_mask((T, 6, 1), rng)}
    deltas = rng.randn(T, 6, 5)

    def gradients(block):
        monkeypatch.setattr(_recurrent, "GRADIENT_BLOCK", block)
        monkeypatch.setattr(lstm_layer, "_PROJECTION_BLOCK", block)
        net.provide_external_data(data)
        with net.handler.session():  # (sessions nest: the passes' own are inside)
            if team is not None:  # as after shared work: deferred jobs go to a helper
                team.run([lambda: None] * team.size)
            net.forward_pass(training_pass=True, context=context)
            net.buffer_manager.clear_backward_buffers()
            buffers = net.buffer[name]
            net.handler.set_from_numpy(buffers.output_deltas.default[:T], deltas)
            net.layers[name].backward_pass(buffers)
        return (
            net.handler.get_numpy_copy(net.buffer.gradients),
            net.get("Input.output_deltas.default"),
            net.get(f"{name}.outputs.default"),
        )

    expected = gradients(0)
    assert np.abs(expected[0]).max() > 0.01
    for block in (2, 3):
        for got, wanted in zip(gradients(block), expected):
            np.testing.assert_allclose(got, wanted, rtol=1e-10, atol=1e-12)


def test_deferred_lstm_work_gives_bit_identical_results_on_every_run():
    # which thread computes a deferred job, and whether a per-step product is
    # shared or runs whole while the helper is busy, depends on timing: the
    # results must not
    inp = bs.layers.Input({"default": ("T", "B", 30)})
    layer = Lstm(192)  # (per-step products large enough to be shared)
    inp >> layer
    net = bs.Network.from_layer(layer, handler=NumpyHandler(np.float32, seed=2))
    net.initialize(bs.initializers.Gaussian(0.3), seed=2)
    rng = np.random.RandomState(7)
    net.provide_external_data({"default": rng.randn(25, 16, 30).astype(np.float32)})
    deltas = rng.randn(25, 16, 192).astype(np.float32)
    results = []
    for _ in range(6):
        with net.handler.session():
            net.forward_pass(training_pass=True)
            net.buffer_manager.clear_backward_buffers()
            buffers = net.buffer[layer.layer.name]
            net.handler.set_from_numpy(buffers.output_deltas.default[:25], deltas)
            net.layers[layer.layer.name].backward_pass(buffers)
        results.append((net.get(f"{layer.layer.name}.outputs.default"), net.get("gradients")))
    for outputs, gradients in results[1:]:
        np.testing.assert_array_equal(outputs, results[0][0])
        np.testing.assert_array_equal(gradients, results[0][1])
