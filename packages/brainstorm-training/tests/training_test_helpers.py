"""Small networks, data and hooks shared by the tests of brainstorm-training."""

from types import SimpleNamespace

import numpy as np

import brainstorm as bs
from brainstorm.handlers import NumpyHandler
from brainstorm.hooks import Hook


def make_net(handler=None, dropout=0.0, n_in=4, n_classes=3, hidden=5, seed=1):
    """Input(4) -> [Dropout] -> FC(5, tanh) 'Hid' -> FC(3) 'Out_proj' -> SoftmaxCE 'Output' -> Loss."""
    inp = bs.layers.Input({"default": ("T", "B", n_in), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    x = inp - "default"
    if dropout:
        x = x >> bs.layers.Dropout(dropout)
    (
        x
        >> bs.layers.FullyConnected(hidden, activation="tanh", name="Hid")
        >> bs.layers.FullyConnected(n_classes, activation="linear", name="Out_proj")
        >> out
    )
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out, handler=handler)
    net.initialize(bs.initializers.Gaussian(0.5), seed=seed)
    return net


def make_data(n=30, n_in=4, n_classes=3, seed=0):
    """Separable toy classification data: x (1, n, n_in), t (1, n, 1)."""
    rng = np.random.RandomState(seed)
    x = rng.randn(1, n, n_in)
    w = rng.randn(n_in, n_classes)
    t = (x[0] @ w).argmax(axis=1).reshape(1, n, 1)
    return x, t


def float64_net(**kwargs):
    return make_net(handler=NumpyHandler(np.float64), **kwargs)


class Recorder(Hook):
    """Appends ``(name, timescale, epoch_nr, update_nr)`` to a shared list at each call."""

    __undescribed__ = {"calls": None}

    def __init__(self, calls, name=None, timescale="epoch", interval=1, result=None):
        super().__init__(name, timescale, interval)
        self.calls = calls
        self.result = result

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        self.calls.append((self.__name__, self.timescale, epoch_nr, update_nr))
        return self.result


class FeedLog(Hook):
    """Logs the next value of a fixed sequence at every call."""

    def __init__(self, values, name="feed", timescale="epoch", interval=1):
        super().__init__(name, timescale, interval)
        self.values = list(values)
        self.position = 0

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        value = self.values[min(self.position, len(self.values) - 1)]
        self.position += 1
        return {"value": value}


class QuadraticNet:
    """A stand-in network with loss 0.5 * |A θ - b|², for checking steppers by hand.

    ``gradient(θ)`` is the exact gradient; the gradient buffer is filled from the
    parameters as they were at the last forward pass (so Nesterov's look-ahead
    can be checked).
    """

    def __init__(self, handler, theta0, seed=0):
        rng = np.random.RandomState(seed)
        self.A = rng.randn(len(theta0), len(theta0))
        self.b = rng.randn(len(theta0))
        self.handler = handler
        self.buffer = SimpleNamespace(
            parameters=handler.create_from_numpy(np.asarray(theta0, dtype=np.float64)),
            gradients=handler.zeros((len(theta0),)),
        )
        self.forward_points = []

    def gradient(self, theta):
        return self.A.T @ (self.A @ theta - self.b)

    def forward_pass(self, training_pass=False, context=None):
        self.forward_points.append(self.handler.get_numpy_copy(self.buffer.parameters))

    def backward_pass(self):
        self.handler.set_from_numpy(self.buffer.gradients, self.gradient(self.forward_points[-1]))

    def params(self):
        return self.handler.get_numpy_copy(self.buffer.parameters)
