"""Argument checks shared by the layers of brainstorm-layers.

Every layer validates its arguments twice: in its construction function, so a
mistake fails where it is made, and in ``setup``, so an architecture loaded from
a file is checked too. Both raise :class:`~brainstorm.utils.LayerValidationError`
naming the layer.
"""

from __future__ import annotations

import numbers

from brainstorm.utils import LayerValidationError

__all__ = [
    "ACTIVATIONS",
    "check_activation",
    "check_number",
    "check_positive_int",
    "check_same_feature_shapes",
    "is_int",
    "layer_label",
]

#: The activation functions every handler provides (``handler.act_func[name]``).
ACTIVATIONS = ("sigmoid", "tanh", "rel", "linear", "el")


def is_int(value):
    """Whether ``value`` is an integer (NumPy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(value, what, label):
    """Return ``value`` as an int if it is a positive integer (NumPy's too), else
    raise :class:`~brainstorm.utils.LayerValidationError` naming ``what`` and the layer."""
    if not is_int(value) or value < 1:
        raise LayerValidationError(f"Layer {label}: {what} must be a positive int, got {value!r}")
    return int(value)


def layer_label(name, type_name):
    """How errors refer to a layer: ``"'fc1' (FullyConnected)"`` or ``'FullyConnected'``."""
    return type_name if name is None else f"{name!r} ({type_name})"


def check_activation(activation, label):
    """Return ``activation`` if it names a known activation function.

    Args:
        activation: the ``activation=`` argument of a layer.
        label: the layer, as :func:`layer_label` formats it.

    Raises:
        LayerValidationError: for anything but the names in :data:`ACTIVATIONS`.
    """
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise LayerValidationError(
            f"Layer {label}: unknown activation {activation!r}; choose one of "
            f"{', '.join(repr(a) for a in ACTIVATIONS)}"
        )
    return activation


def check_number(value, what, label, low=None, high=None, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a real number inside the given bounds.

    Args:
        value: the argument to check.
        what: the argument's name, for the message.
        label: the layer, as :func:`layer_label` formats it.
        low: the smallest allowed value (None: unbounded).
        high: the largest allowed value (None: unbounded).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Raises:
        LayerValidationError: if ``value`` is not a number or out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LayerValidationError(f"Layer {label}: {what} must be a number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value < low or (low_open and value == low))
    too_high = high is not None and (value > high or (high_open and value == high))
    if too_low or too_high or value != value:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        bounds = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open else "]")
        raise LayerValidationError(f"Layer {label}: {what} must be in {bounds}, got {value!r}")
    return value


def check_same_feature_shapes(in_shapes, names, label):
    """Raise unless the inputs ``names`` have identical shapes (kind and features).

    Args:
        in_shapes: input name -> BufferStructure, as passed to ``setup``.
        names: the input names that must agree.
        label: the layer, as :func:`layer_label` formats it.

    Raises:
        LayerValidationError: naming every input and its shape.
    """
    shapes = [in_shapes[n].shape for n in names]
    if any(s != shapes[0] for s in shapes[1:]):
        listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
        raise LayerValidationError(f"Layer {label}: inputs must have the same shape, got {listed}")
