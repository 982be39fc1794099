"""Steppers against updates computed by hand (and NumPy references)."""

import numpy as np
import pytest
from training_test_helpers import QuadraticNet, float64_net, make_data, make_net

import brainstorm as bs
from brainstorm.describable import create_from_description, get_description
from brainstorm.handlers import DebugHandler, NumpyHandler
from brainstorm.training import (
    AdaDeltaStepper,
    AdamStepper,
    ForwardStepper,
    MomentumStepper,
    NesterovStepper,
    RMSPropStepper,
    SgdStepper,
)

THETA0 = np.array([0.5, -1.0, 2.0])


def quadratic(handler=None):
    return QuadraticNet(handler or NumpyHandler(np.float64), THETA0)


def run_steps(stepper, net, n):
    stepper.start(net)
    for _ in range(n):
        stepper.run()
    return net.params()


def test_sgd_two_steps_by_hand():
    net = quadratic()
    lr = 0.05
    th1 = THETA0 - lr * net.gradient(THETA0)
    th2 = th1 - lr * net.gradient(th1)
    assert np.allclose(run_steps(SgdStepper(lr), net, 2), th2, rtol=1e-13, atol=0)


@pytest.mark.parametrize("scale", [True, False])
def test_momentum_two_steps_by_hand(scale):
    net = quadratic()
    lr, mu = 0.05, 0.9
    lr_eff = lr * (1 - mu) if scale else lr
    v1 = -lr_eff * net.gradient(THETA0)
    th1 = THETA0 + v1
    v2 = mu * v1 - lr_eff * net.gradient(th1)
    th2 = th1 + v2
    stepper = MomentumStepper(lr, momentum=mu, scale_learning_rate=scale)
    assert np.allclose(run_steps(stepper, net, 2), th2, rtol=1e-13, atol=0)
    assert np.allclose(stepper.get_state()["velocity"], v2, rtol=1e-13, atol=0)


def test_nesterov_two_steps_by_hand_and_gradient_at_lookahead():
    net = quadratic()
    lr, mu = 0.05, 0.9
    lr_eff = lr * (1 - mu)
    # step 1: v = 0, so the look-ahead point is θ0 itself
    g1 = net.gradient(THETA0)
    v1 = -lr_eff * g1
    th1 = THETA0 - lr_eff * g1
    # step 2: look ahead by μ v1, take the gradient there
    lookahead = th1 + mu * v1
    g2 = net.gradient(lookahead)
    v2 = mu * v1 - lr_eff * g2
    th2 = lookahead - lr_eff * g2
    assert np.allclose(run_steps(NesterovStepper(lr, momentum=mu), net, 2), th2, rtol=1e-13)
    assert np.allclose(net.forward_points[1], lookahead, rtol=1e-13)
    assert np.allclose(th2, th1 + v2, rtol=1e-13)


def test_adam_two_steps_by_hand():
    net = quadratic()
    lr, b1, b2, eps = 0.001, 0.9, 0.999, 1e-8
    g1 = net.gradient(THETA0)
    m1 = (1 - b1) * g1
    v1 = (1 - b2) * g1**2
    m_hat, v_hat = m1 / (1 - b1), v1 / (1 - b2)  # = g1, g1**2
    th1 = THETA0 - lr * m_hat / (np.sqrt(v_hat) + eps)
    assert np.allclose(th1, THETA0 - lr * np.sign(g1), rtol=1e-7)  # first Adam step: lr·sign(g)
    g2 = net.gradient(th1)
    m2 = b1 * m1 + (1 - b1) * g2
    v2 = b2 * v1 + (1 - b2) * g2**2
    th2 = th1 - lr * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
    stepper = AdamStepper()
    assert (stepper.learning_rate, stepper.beta1, stepper.beta2, stepper.epsilon) == (
        lr,
        b1,
        b2,
        eps,
    )
    assert np.allclose(run_steps(stepper, net, 2), th2, rtol=1e-12, atol=0)
    state = stepper.get_state()
    assert int(state["step"]) == 2
    assert np.allclose(state["m"], m2) and np.allclose(state["v"], v2)


def rmsprop_reference(net, theta, n, lr, rho, eps):
    r = np.zeros_like(theta)
    for _ in range(n):
        g = net.gradient(theta)
        r = rho * r + (1 - rho) * g * g
        theta = theta - lr * g / (np.sqrt(r) + eps)
    return theta


def adadelta_reference(net, theta, n, lr, rho, eps):
    eg = np.zeros_like(theta)
    ed = np.zeros_like(theta)
    for _ in range(n):
        g = net.gradient(theta)
        eg = rho * eg + (1 - rho) * g * g
        delta = -np.sqrt(ed + eps) / np.sqrt(eg + eps) * g
        ed = rho * ed + (1 - rho) * delta * delta
        theta = theta + lr * delta
    return theta


def test_rmsprop_matches_numpy_reference():
    net = quadratic()
    stepper = RMSPropStepper(learning_rate=0.01, decay=0.9, epsilon=1e-8)
    expected = rmsprop_reference(net, THETA0, 5, 0.01, 0.9, 1e-8)
    assert np.allclose(run_steps(stepper, net, 5), expected, rtol=1e-12, atol=0)


def test_adadelta_matches_numpy_reference():
    net = quadratic()
    stepper = AdaDeltaStepper(learning_rate=1.0, decay=0.95, epsilon=1e-6)
    expected = adadelta_reference(net, THETA0, 5, 1.0, 0.95, 1e-6)
    assert np.allclose(run_steps(stepper, net, 5), expected, rtol=1e-12, atol=0)


ALL_STEPPERS = [
    lambda: SgdStepper(0.1),
    lambda: MomentumStepper(0.1, momentum=0.5),
    lambda: NesterovStepper(0.1, momentum=0.5),
    lambda: AdamStepper(0.01),
    lambda: RMSPropStepper(0.01),
    lambda: AdaDeltaStepper(),
]


@pytest.mark.parametrize("make_stepper", ALL_STEPPERS)
def test_steppers_use_only_handler_ops_and_decrease_the_loss(make_stepper):
    """On a DebugHandler (which checks every op) the result equals plain NumPy's."""
    x, t = make_data(20)
    results = []
    for handler in (NumpyHandler(np.float64), DebugHandler(NumpyHandler(np.float64))):
        net = make_net(handler=handler)
        net.provide_external_data({"default": x, "targets": t})
        net.forward_pass()
        before = net.get_loss_values()["total_loss"]
        stepper = make_stepper()
        stepper.start(net)
        for _ in range(30):
            stepper.run()
        net.forward_pass()
        assert net.get_loss_values()["total_loss"] < before
        results.append(net.get("parameters"))
    assert np.allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make_stepper", ALL_STEPPERS)
def test_stepper_state_round_trip_continues_identically(make_stepper):
    x, t = make_data(20)
    net_a, net_b = float64_net(), float64_net()
    for net in (net_a, net_b):
        net.provide_external_data({"default": x, "targets": t})
    a = make_stepper()
    a.start(net_a)
    for _ in range(3):
        a.run()
    state = a.get_state()
    net_b.handler.set_from_numpy(net_b.buffer.parameters, net_a.get("parameters"))
    b = create_from_description(get_description(a))
    b.start(net_b)
    b.set_state(state)
    for _ in range(3):
        a.run()
        b.run()
    assert np.array_equal(net_a.get("parameters"), net_b.get("parameters"))


def test_set_state_rejects_wrong_names_and_shapes():
    net = quadratic()
    stepper = MomentumStepper(0.1, 0.9)
    with pytest.raises(RuntimeError, match="start"):
        stepper.set_state({"velocity": np.zeros(3)})
    stepper.start(net)
    with pytest.raises(ValueError, match="velocity"):
        stepper.set_state({"speed": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        stepper.set_state({"velocity": np.zeros(4)})


def test_forward_stepper_does_not_change_parameters():
    x, t = make_data(10)
    net = float64_net()
    net.provide_external_data({"default": x, "targets": t})
    before = net.get("parameters")
    stepper = ForwardStepper()
    stepper.start(net)
    stepper.run()
    assert np.array_equal(net.get("parameters"), before)
    assert net.get_loss_values()["total_loss"] > 0


def test_stepper_descriptions_hold_settings_not_state():
    net = quadratic()
    stepper = AdamStepper(learning_rate=0.01, beta1=0.8)
    stepper.start(net)
    stepper.run()
    description = get_description(stepper)
    assert description == {
        "@type": "AdamStepper",
        "learning_rate": 0.01,
        "beta1": 0.8,
        "beta2": 0.999,
        "epsilon": 1e-8,
    }
    assert isinstance(create_from_description(description), AdamStepper)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MomentumStepper(0.1, momentum=1.5),
        lambda: AdamStepper(beta2=1.0),
        lambda: SgdStepper(-1.0),
        lambda: RMSPropStepper(decay=-0.1),
    ],
)
def test_invalid_settings_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_steppers_are_registered_entry_points():
    from brainstorm import registry

    names = registry.available("brainstorm.steppers")
    for name in ("SgdStepper", "MomentumStepper", "NesterovStepper", "AdamStepper"):
        assert name in names
    assert registry.load("brainstorm.steppers", "ForwardStepper") is bs.training.ForwardStepper
    assert registry.load("brainstorm.steppers", "RMSPropStepper") is RMSPropStepper
    assert bs.training.AdaDeltaStepper is AdaDeltaStepper


def test_carry_context_continues_sequences_and_resets_each_epoch():
    import brainstorm as bs
    from brainstorm.handlers import NumpyHandler

    inp = bs.layers.Input({"default": ("T", "B", 3), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    inp >> bs.layers.Lstm(4, name="Lstm") >> bs.layers.FullyConnected(3, "linear") >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(inp, handler=NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(0.5), seed=1)
    rng = np.random.RandomState(0)
    x, t = rng.randn(6, 2, 3), rng.randint(0, 3, (6, 2, 1))
    stepper = bs.training.SgdStepper(learning_rate=0.0)
    stepper.carry_context = True
    stepper.start(net)
    outputs = []
    for part in (slice(0, 3), slice(3, 6), None, slice(0, 3)):
        if part is None:
            stepper.start_epoch()
            continue
        net.provide_external_data({"default": x[part], "targets": t[part]})
        stepper.run()
        outputs.append(net.get("Lstm.outputs.default")[:3])
    net.provide_external_data({"default": x, "targets": t})
    net.forward_pass()
    whole = net.get("Lstm.outputs.default")[:6]
    np.testing.assert_allclose(outputs[0], whole[:3])
    np.testing.assert_allclose(outputs[1], whole[3:])
    np.testing.assert_allclose(outputs[2], whole[:3])  # a new epoch starts from zero
