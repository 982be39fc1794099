"""Steppers: one training step (forward, backward, parameter update).

Every stepper works on the network's two flat vectors, ``net.buffer.parameters``
and ``net.buffer.gradients``, with handler operations only, and keeps its
state (velocity, moment estimates, ...) in arrays allocated by the handler, so
it runs unchanged on any handler (CPU or GPU).

Below, θ are the parameters, g the gradients of the current batch, lr the
learning rate and t the number of the update (from 1).
"""

from __future__ import annotations

import numpy as np

from brainstorm.describable import Describable
from brainstorm.structure.buffers import array_shape

__all__ = [
    "TrainingStepper",
    "ForwardStepper",
    "SgdStepper",
    "MomentumStepper",
    "NesterovStepper",
    "AdamStepper",
    "RMSPropStepper",
    "AdaDeltaStepper",
]


class TrainingStepper(Describable):
    """Base class of steppers.

    A subclass lists the names of its state arrays (each shaped like the
    parameter vector) in ``state_names``; :meth:`start` allocates them as
    zero-filled attributes of those names, and :meth:`get_state` /
    :meth:`set_state` copy them (a saved training run stores them).

    Attributes:
        net (brainstorm.structure.network.Network | None): the network being
            trained (set by :meth:`start`; not part of the description).
    """

    __undescribed__ = {"net", "context"}
    #: names of the state arrays, each shaped like the parameter vector
    state_names = ()
    #: Set to True to continue each batch's sequences from the recurrent state
    #: the previous batch ended in (for data laid out so that batch k+1 continues
    #: batch k, like the enwik8 example); the state is reset at every epoch.
    carry_context = False
    context = None

    def start(self, net):
        """Prepare to train ``net``: allocate fresh (zero) state arrays.

        Args:
            net (brainstorm.structure.network.Network): the network to train.
        """
        self.net = net
        self.context = None
        shape = array_shape(net.buffer.parameters)
        for name in self.state_names:
            setattr(self, name, net.handler.zeros(shape))

    def run(self):
        """Do one training step on the data currently in the network."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def _scratch(self):
        return self.net.handler.allocate(array_shape(self.net.buffer.parameters))

    def start_epoch(self):
        """Called by the Trainer before each epoch: forgets the carried context."""
        self.context = None

    def _forward_backward(self):
        context = self.context if self.carry_context else None
        if context and self._context_batch_size(context) != self.net.buffer_manager.batch_size:
            context = None  # e.g. the smaller last batch: its sequences start afresh
        self.net.forward_pass(training_pass=True, context=context)
        self.net.backward_pass()
        if self.carry_context:
            self.context = self.net.get_context()

    @staticmethod
    def _context_batch_size(context):
        return next(iter(context.values())).shape[1]

    def get_state(self):
        """A copy of the stepper's state.

        Returns:
            dict[str, numpy.ndarray]: state name -> array (empty before
            :meth:`start` or for stateless steppers).
        """
        if getattr(self, "net", None) is None:
            return {}
        return {
            name: self.net.handler.get_numpy_copy(getattr(self, name)) for name in self.state_names
        }

    def set_state(self, state):
        """Overwrite the stepper's state (after :meth:`start`).

        Args:
            state (dict[str, numpy.ndarray]): as returned by :meth:`get_state`.

        Raises:
            RuntimeError: if :meth:`start` was not called.
            ValueError: if names or shapes do not match.
        """
        if getattr(self, "net", None) is None:
            raise RuntimeError(f"{type(self).__name__}.set_state needs start(net) first")
        if set(state) != set(self.state_names):
            raise ValueError(
                f"{type(self).__name__} state has entries {sorted(self.state_names)}, "
                f"got {sorted(state)}"
            )
        for name in self.state_names:
            target = getattr(self, name)
            values = np.asarray(state[name])
            if values.shape != tuple(array_shape(target)):
                raise ValueError(
                    f"{type(self).__name__} state {name!r} has shape "
                    f"{tuple(array_shape(target))}, got {values.shape}"
                )
            self.net.handler.set_from_numpy(target, values)


def _check_nonnegative(cls_name, **values):
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{cls_name}: {name} must not be negative, got {value}")


def _check_fraction(cls_name, **values):
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{cls_name}: {name} must lie in [0, 1), got {value}")


class ForwardStepper(TrainingStepper):
    """Only runs the forward pass (no backward pass, no update).

    Useful to collect statistics with hooks without training.

    Args:
        use_training_pass (bool): run the forward pass as a training pass
            (e.g. with dropout). Defaults to False.
    """

    def __init__(self, use_training_pass=False):
        self.use_training_pass = use_training_pass

    def run(self):
        """Run the forward pass."""
        self.net.forward_pass(training_pass=self.use_training_pass)


class SgdStepper(TrainingStepper):
    """Stochastic gradient descent: ``θ ← θ − lr·g``.

    Args:
        learning_rate (float): lr. Defaults to 0.1.

    Example:
        >>> trainer = bs.Trainer(bs.training.SgdStepper(learning_rate=0.01))
    """

    def __init__(self, learning_rate=0.1):
        _check_nonnegative("SgdStepper", learning_rate=learning_rate)
        self.learning_rate = learning_rate

    def run(self):
        """Forward, backward, then ``θ ← θ − lr·g``."""
        self._forward_backward()
        self.net.handler.mult_add_st(
            -self.learning_rate, self.net.buffer.gradients, self.net.buffer.parameters
        )


class MomentumStepper(TrainingStepper):
    """Gradient descent with (classical) momentum.

    ``v ← μ·v − lr'·g``, ``θ ← θ + v``, where ``lr' = lr·(1 − μ)`` if
    ``scale_learning_rate`` (so that the step size in a steady state does not
    depend on μ), else ``lr' = lr``.

    Args:
        learning_rate (float): lr. Defaults to 0.1.
        momentum (float): μ. Defaults to 0.0.
        scale_learning_rate (bool): scale lr by ``1 − μ``. Defaults to True.

    Example:
        >>> stepper = bs.training.MomentumStepper(learning_rate=0.01, momentum=0.9)
    """

    state_names = ("velocity",)
    __undescribed__ = {"velocity"}

    def __init__(self, learning_rate=0.1, momentum=0.0, scale_learning_rate=True):
        _check_nonnegative(type(self).__name__, learning_rate=learning_rate)
        _check_fraction(type(self).__name__, momentum=momentum)
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.scale_learning_rate = scale_learning_rate

    def _effective_learning_rate(self):
        if self.scale_learning_rate:
            return (1.0 - self.momentum) * self.learning_rate
        return self.learning_rate

    def run(self):
        """Forward, backward, then the momentum update."""
        lr = self._effective_learning_rate()
        self._forward_backward()
        _h, params = self.net.handler, self.net.buffer.parameters
        _h.mult_st(self.momentum, self.velocity, self.velocity)
        _h.mult_add_st(-lr, self.net.buffer.gradients, self.velocity)
        _h.add_tt(self.velocity, params, params)


class NesterovStepper(MomentumStepper):
    """Gradient descent with Nesterov's accelerated momentum.

    First the momentum step ``v ← μ·v``, ``θ ← θ + v``; then forward and
    backward pass at that look-ahead point; then ``v ← v − lr'·g`` and
    ``θ ← θ − lr'·g`` (``lr'`` as in :class:`MomentumStepper`).

    Args:
        learning_rate (float): lr. Defaults to 0.1.
        momentum (float): μ. Defaults to 0.0.
        scale_learning_rate (bool): scale lr by ``1 − μ``. Defaults to True.
    """

    def run(self):
        """Look-ahead momentum step, forward, backward, then the gradient step."""
        lr = self._effective_learning_rate()
        _h, params = self.net.handler, self.net.buffer.parameters
        _h.mult_st(self.momentum, self.velocity, self.velocity)
        _h.add_tt(self.velocity, params, params)
        self._forward_backward()
        grads = self.net.buffer.gradients
        _h.mult_add_st(-lr, grads, self.velocity)
        _h.mult_add_st(-lr, grads, params)


class AdamStepper(TrainingStepper):
    """Adam (Kingma & Ba, 2015) with bias correction.

    ``m ← β1·m + (1 − β1)·g``, ``v ← β2·v + (1 − β2)·g²``,
    ``θ ← θ − lr · m̂ / (√v̂ + ε)`` with ``m̂ = m / (1 − β1^t)`` and
    ``v̂ = v / (1 − β2^t)``.

    Args:
        learning_rate (float): lr. Defaults to 0.001.
        beta1 (float): β1, decay of the first moment. Defaults to 0.9.
        beta2 (float): β2, decay of the second moment. Defaults to 0.999.
        epsilon (float): ε. Defaults to 1e-8.

    Example:
        >>> trainer = bs.Trainer(bs.training.AdamStepper(learning_rate=0.002))
    """

    state_names = ("m", "v")
    __undescribed__ = {"m", "v", "step", "_tmp"}

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8):
        _check_nonnegative("AdamStepper", learning_rate=learning_rate, epsilon=epsilon)
        _check_fraction("AdamStepper", beta1=beta1, beta2=beta2)
        self.learning_rate = learning_rate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon

    def start(self, net):
        """Allocate zero moments, reset the update count; see :class:`TrainingStepper`."""
        super().start(net)
        self._tmp = self._scratch()
        self.step = 0

    def get_state(self):
        """The moments ``m`` and ``v`` and the update count ``step`` (a 0-d array)."""
        state = super().get_state()
        if state:
            state["step"] = np.array(self.step, dtype=np.int64)
        return state

    def set_state(self, state):
        """Restore what :meth:`get_state` returned; see :class:`TrainingStepper`."""
        state = dict(state)
        step = int(np.asarray(state.pop("step", 0)))
        super().set_state(state)
        self.step = step

    def run(self):
        """Forward, backward, then the Adam update."""
        self._forward_backward()
        self.step += 1
        _h, params, grads = self.net.handler, self.net.buffer.parameters, self.net.buffer.gradients
        b1, b2, tmp = self.beta1, self.beta2, self._tmp
        _h.mult_st(b1, self.m, self.m)
        _h.mult_add_st(1.0 - b1, grads, self.m)
        _h.mult_tt(grads, grads, tmp)
        _h.mult_st(b2, self.v, self.v)
        _h.mult_add_st(1.0 - b2, tmp, self.v)
        # tmp = sqrt(v̂) + ε, then θ -= lr / (1 - β1^t) * m / tmp
        _h.mult_st(1.0 / (1.0 - b2**self.step), self.v, tmp)
        _h.sqrt_t(tmp, tmp)
        _h.add_st(self.epsilon, tmp, tmp)
        _h.divide_tt(self.m, tmp, tmp)
        _h.mult_add_st(-self.learning_rate / (1.0 - b1**self.step), tmp, params)


class RMSPropStepper(TrainingStepper):
    """RMSProp (Tieleman & Hinton, 2012).

    ``r ← ρ·r + (1 − ρ)·g²``, ``θ ← θ − lr · g / (√r + ε)``.

    Args:
        learning_rate (float): lr. Defaults to 0.001.
        decay (float): ρ. Defaults to 0.9.
        epsilon (float): ε. Defaults to 1e-8.
    """

    state_names = ("mean_square",)
    __undescribed__ = {"mean_square", "_tmp"}

    def __init__(self, learning_rate=0.001, decay=0.9, epsilon=1e-8):
        _check_nonnegative("RMSPropStepper", learning_rate=learning_rate, epsilon=epsilon)
        _check_fraction("RMSPropStepper", decay=decay)
        self.learning_rate = learning_rate
        self.decay = decay
        self.epsilon = epsilon

    def start(self, net):
        """Allocate the zero mean square; see :class:`TrainingStepper`."""
        super().start(net)
        self._tmp = self._scratch()

    def run(self):
        """Forward, backward, then the RMSProp update."""
        self._forward_backward()
        _h, params, grads = self.net.handler, self.net.buffer.parameters, self.net.buffer.gradients
        tmp, r = self._tmp, self.mean_square
        _h.mult_tt(grads, grads, tmp)
        _h.mult_st(self.decay, r, r)
        _h.mult_add_st(1.0 - self.decay, tmp, r)
        _h.sqrt_t(r, tmp)
        _h.add_st(self.epsilon, tmp, tmp)
        _h.divide_tt(grads, tmp, tmp)
        _h.mult_add_st(-self.learning_rate, tmp, params)


class AdaDeltaStepper(TrainingStepper):
    """AdaDelta (Zeiler, 2012).

    ``E[g²] ← ρ·E[g²] + (1 − ρ)·g²``,
    ``Δ = −√(E[Δ²] + ε) / √(E[g²] + ε) · g``,
    ``E[Δ²] ← ρ·E[Δ²] + (1 − ρ)·Δ²``, ``θ ← θ + lr·Δ``.

    Args:
        learning_rate (float): lr, a factor on the step (1 in the paper).
            Defaults to 1.0.
        decay (float): ρ. Defaults to 0.95.
        epsilon (float): ε. Defaults to 1e-6.
    """

    state_names = ("mean_square_grad", "mean_square_delta")
    __undescribed__ = {"mean_square_grad", "mean_square_delta", "_tmp", "_delta"}

    def __init__(self, learning_rate=1.0, decay=0.95, epsilon=1e-6):
        _check_nonnegative("AdaDeltaStepper", learning_rate=learning_rate, epsilon=epsilon)
        _check_fraction("AdaDeltaStepper", decay=decay)
        self.learning_rate = learning_rate
        self.decay = decay
        self.epsilon = epsilon

    def start(self, net):
        """Allocate the zero running averages; see :class:`TrainingStepper`."""
        super().start(net)
        self._tmp = self._scratch()
        self._delta = self._scratch()

    def run(self):
        """Forward, backward, then the AdaDelta update."""
        self._forward_backward()
        _h, params, grads = self.net.handler, self.net.buffer.parameters, self.net.buffer.gradients
        rho, eps = self.decay, self.epsilon
        eg, ed, tmp, delta = self.mean_square_grad, self.mean_square_delta, self._tmp, self._delta
        _h.mult_tt(grads, grads, tmp)
        _h.mult_st(rho, eg, eg)
        _h.mult_add_st(1.0 - rho, tmp, eg)
        # delta = -sqrt(E[Δ²] + ε) / sqrt(E[g²] + ε) * g
        _h.add_st(eps, ed, delta)
        _h.sqrt_t(delta, delta)
        _h.add_st(eps, eg, tmp)
        _h.sqrt_t(tmp, tmp)
        _h.divide_tt(delta, tmp, delta)
        _h.mult_tt(delta, grads, delta)
        _h.mult_st(-1.0, delta, delta)
        _h.mult_tt(delta, delta, tmp)
        _h.mult_st(rho, ed, ed)
        _h.mult_add_st(1.0 - rho, tmp, ed)
        _h.mult_add_st(self.learning_rate, delta, params)
