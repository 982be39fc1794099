"""Schedules: values that change over the course of training.

A schedule is called by the :class:`~brainstorm.hooks.ModifyStepperAttribute`
hook as ``schedule(epoch_nr, update_nr, timescale, interval, net, stepper, logs)``
and returns the new value of a stepper attribute. "The current count" below is
``epoch_nr`` for the timescale ``'epoch'`` and ``update_nr`` for ``'update'``::

    trainer.add_hook(bs.hooks.ModifyStepperAttribute(
        bs.training.Exponential(0.1, 0.5), attr_name='learning_rate', interval=10))
"""

from __future__ import annotations

import math

from brainstorm.describable import Describable

__all__ = ["Linear", "Exponential", "MultiStep", "DecreaseAfterEpoch"]


def _current(epoch_nr, update_nr, timescale):
    if timescale == "epoch":
        return epoch_nr
    if timescale == "update":
        return update_nr
    raise ValueError(f"timescale must be 'epoch' or 'update', got {timescale!r}")


class Linear(Describable):
    """Change a value linearly in ``num_changes`` equal steps, one per call.

    The value after the k-th change (k = current count // interval) is
    ``initial + k * (final - initial) / num_changes``, and stays at ``final``
    after ``num_changes`` changes.

    Args:
        initial_value (float): the value at count 0.
        final_value (float): the value reached after ``num_changes`` changes.
        num_changes (int): number of changes, at least 1.

    Example:
        >>> sched = Linear(1.0, 0.0, 4)
        >>> [sched(e, 0, 'epoch', 1, None, None, None) for e in range(6)]
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """

    def __init__(self, initial_value, final_value, num_changes):
        if num_changes < 1:
            raise ValueError(f"Linear: num_changes must be at least 1, got {num_changes}")
        self.initial_value = initial_value
        self.final_value = final_value
        self.num_changes = num_changes

    def __call__(self, epoch_nr, update_nr, timescale, interval, net, stepper, logs):
        """The value for the current count; see the module docstring for the arguments."""
        changes = min(_current(epoch_nr, update_nr, timescale) // interval, self.num_changes)
        if changes >= self.num_changes:
            return self.final_value  # exactly (the steps may not add up to it)
        step = (self.final_value - self.initial_value) / self.num_changes
        return self.initial_value + changes * step


class Exponential(Describable):
    """Multiply a value by ``factor`` at every call.

    The value is ``initial * factor ** (current count // interval)``, clipped
    to ``[minimum, maximum]``.

    Args:
        initial_value (float): the value at count 0.
        factor (float): the factor per change.
        minimum (float): lower bound. Defaults to -inf.
        maximum (float): upper bound. Defaults to +inf.

    Example:
        >>> sched = Exponential(1.0, 0.5, minimum=0.2)
        >>> [sched(e, 0, 'epoch', 1, None, None, None) for e in range(4)]
        [1.0, 0.5, 0.25, 0.2]
    """

    def __init__(self, initial_value, factor, minimum=-math.inf, maximum=math.inf):
        self.initial_value = initial_value
        self.factor = factor
        self.minimum = minimum
        self.maximum = maximum

    def __call__(self, epoch_nr, update_nr, timescale, interval, net, stepper, logs):
        """The value for the current count; see the module docstring for the arguments."""
        changes = _current(epoch_nr, update_nr, timescale) // interval
        value = self.initial_value * self.factor**changes
        return min(max(value, self.minimum), self.maximum)


class MultiStep(Describable):
    """A piecewise constant value: ``values[i]`` from count ``steps[i]`` on.

    Args:
        initial_value (float): the value before ``steps[0]``.
        steps (list[int]): increasing counts at which the value changes.
        values (list[float]): the value from each step on.

    Raises:
        ValueError: if ``steps`` and ``values`` differ in length, or steps do
            not increase; at call time if the hook's interval is not 1.

    Example:
        >>> sched = MultiStep(0.1, [2, 4], [0.05, 0.01])
        >>> [sched(e, 0, 'epoch', 1, None, None, None) for e in range(6)]
        [0.1, 0.1, 0.05, 0.05, 0.01, 0.01]
    """

    def __init__(self, initial_value, steps, values):
        steps, values = list(steps), list(values)
        if len(steps) != len(values):
            raise ValueError(
                f"MultiStep: steps and values must have the same length, got {len(steps)} "
                f"and {len(values)}"
            )
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"MultiStep: steps must increase, got {steps}")
        self.initial_value = initial_value
        self.steps = steps
        self.values = values

    def __call__(self, epoch_nr, update_nr, timescale, interval, net, stepper, logs):
        """The value for the current count; see the module docstring for the arguments."""
        if interval != 1:
            raise ValueError(f"MultiStep needs a hook interval of 1, got {interval}")
        current = _current(epoch_nr, update_nr, timescale)
        value = self.initial_value
        for step, step_value in zip(self.steps, self.values):
            if current >= step:
                value = step_value
        return value


class DecreaseAfterEpoch(Describable):
    """Constant for the first ``T`` epochs, then decreasing as ``1/epoch``.

    The value is ``initial * T / max(epoch_nr + 1, T)`` (whatever the timescale).

    Args:
        initial_value (float): the value during the first epochs.
        T (int): epoch from which the value decreases.

    Example:
        >>> sched = DecreaseAfterEpoch(1.0, 2)
        >>> [sched(e, 0, 'epoch', 1, None, None, None) for e in range(4)]
        [1.0, 1.0, 0.6666666666666666, 0.5]
    """

    def __init__(self, initial_value, T):
        if T < 1:
            raise ValueError(f"DecreaseAfterEpoch: T must be at least 1, got {T}")
        self.initial_value = initial_value
        self.T = T

    def __call__(self, epoch_nr, update_nr, timescale, interval, net, stepper, logs):
        """The value for the current epoch; see the module docstring for the arguments."""
        return self.initial_value * self.T / max(epoch_nr + 1, self.T)
