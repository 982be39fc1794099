"""Value modifiers: constraints on parameters and changes to gradients.

A :class:`ValueModifier` changes a parameter view in place; the network runs
weight modifiers after every update (``net.set_weight_modifiers``). A
:class:`GradientModifier` changes the gradients given the parameters; the
network runs gradient modifiers at the end of every backward pass
(``net.set_gradient_modifiers``). A plain value modifier used as a gradient
modifier is applied to the gradient view alone::

    net.set_weight_modifiers({'Hid*': {'W': ConstrainL2Norm(1.0)}})
    net.set_gradient_modifiers(default=[ClipValues(-5, 5), L2Decay(1e-4)])

Modifiers work on any handler: they compute only with handler operations
(temporaries come from ``handler.allocate``), never with NumPy on the view.
"""

from __future__ import annotations

import numpy as np

from brainstorm.randomness import Seedable

__all__ = [
    "ValueModifier",
    "GradientModifier",
    "ConstrainL2Norm",
    "ClipValues",
    "MaskValues",
    "FreezeValues",
    "L1Decay",
    "L2Decay",
]


class ValueModifier(Seedable):
    """Base class of modifiers that change one view in place.

    Attributes:
        layer_name (str): the layer whose view this instance modifies (set by
            the network; not part of the description).
        view_name (str): the name of that view, e.g. ``'W'``.
    """

    __undescribed__ = {"layer_name": "", "view_name": "", "_device_arrays": {}}

    def __init__(self):
        super().__init__()
        self.layer_name = ""
        self.view_name = ""
        self._device_arrays = {}

    def __call__(self, handler, view):
        """Modify ``view`` in place.

        Args:
            handler (brainstorm.handlers.Handler): the handler ``view`` lives on.
            view: the array to modify.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    def start(self, handler, view):
        """Called before training with the values ``view`` starts from (weight
        modifiers: :meth:`~brainstorm.structure.network.Network.start_weight_modifiers`,
        which the Trainer calls). Does nothing by default; :class:`FreezeValues`
        keeps the values here.

        Args:
            handler (brainstorm.handlers.Handler): the handler ``view`` lives on.
            view: the array the modifier will modify.
        """

    def __repr__(self):
        where = f"{self.layer_name}.{self.view_name}" if self.layer_name else "unassigned"
        return f"<{type(self).__name__} on {where}>"

    def _on_device(self, handler, name, array):
        """A copy of the NumPy ``array`` on ``handler``'s device, made once per handler."""
        key = (name, id(handler))
        cached = self._device_arrays.get(key)
        # keeping the handler in the entry keeps its id unique while cached
        if cached is None or cached[0] is not handler:
            device_array = handler.allocate(array.shape)
            handler.set_from_numpy(device_array, array)
            cached = (handler, device_array)
            self._device_arrays[key] = cached
        return cached[1]

    def _check_shape(self, array, view, what):
        if tuple(array.shape) != tuple(view.shape):
            raise ValueError(
                f"{self!r}: the {what} has shape {tuple(array.shape)} but the view has "
                f"shape {tuple(view.shape)}"
            )

    # Copies (the network deep-copies a modifier for every view it matches) and
    # pickles leave device arrays and handlers behind.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_device_arrays"] = {}
        return state


class GradientModifier(ValueModifier):
    """Base class of modifiers that change the gradients using the parameters."""

    def __call__(self, handler, parameters, gradients):
        """Modify ``gradients`` in place.

        Args:
            handler (brainstorm.handlers.Handler): the handler the arrays live on.
            parameters: the parameter view (read only).
            gradients: the matching gradient view, modified in place.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")


class ConstrainL2Norm(ValueModifier):
    """Limit the L2 norm of every unit's incoming weights.

    The view is treated as a matrix of ``shape[0]`` rows (one per unit, the
    remaining axes flattened); every row whose L2 norm exceeds ``limit`` is
    rescaled to have norm exactly ``limit``. 1-D views (biases) are left alone.
    The view must be contiguous (parameter views are).

    Args:
        limit (float): the largest allowed L2 norm. Defaults to 1.

    Example:
        >>> net.set_weight_modifiers(Rnn={'W': ConstrainL2Norm(2.0)})
    """

    __default_values__ = {"limit": 1.0}

    def __init__(self, limit=1.0):
        super().__init__()
        if not limit > 0:
            raise ValueError(f"ConstrainL2Norm: limit must be positive, got {limit}")
        self.limit = limit

    def __call__(self, handler, view):
        if len(view.shape) < 2:
            return
        rows = view.shape[0]
        matrix = view.reshape((rows, view.size // rows))
        squares = handler.allocate(matrix.shape)
        handler.mult_tt(matrix, matrix, squares)
        divisor = handler.allocate((rows, 1))
        handler.sum_t(squares, axis=1, out=divisor)
        handler.sqrt_t(divisor, divisor)
        # divisor = max(norm / limit, 1): rows within the limit are divided by 1
        handler.mult_st(1.0 / self.limit, divisor, divisor)
        handler.clip_t(divisor, 1.0, float(np.finfo(handler.dtype).max), divisor)
        handler.divide_mv(matrix, divisor, matrix)

    def __repr__(self):
        return f"{super().__repr__()[:-1]}, limit={self.limit}>"


class ClipValues(ValueModifier):
    """Clip every value into ``[low, high]``.

    Works as weight modifier and as gradient modifier (gradient clipping).

    Args:
        low (float): lower bound. Defaults to -1.
        high (float): upper bound. Defaults to 1.

    Example:
        >>> net.set_gradient_modifiers(default=ClipValues(-10, 10))
    """

    __default_values__ = {"low": -1.0, "high": 1.0}

    def __init__(self, low=-1.0, high=1.0):
        super().__init__()
        if not low <= high:
            raise ValueError(f"ClipValues: low must not exceed high, but {low} > {high}")
        self.low = low
        self.high = high

    def __call__(self, handler, view):
        handler.clip_t(view, self.low, self.high, view)

    def __repr__(self):
        return f"{super().__repr__()[:-1]}, [{self.low}, {self.high}]>"


class MaskValues(ValueModifier):
    """Multiply the view elementwise by a fixed mask, e.g. to keep weights at 0.

    The mask is copied to the handler's device on first use (once per handler).
    Its description holds the mask as a nested list.

    Args:
        mask (array_like): the mask; must have the view's shape.

    Example:
        >>> net.set_weight_modifiers(Rnn={'R': MaskValues(np.tri(10))})
    """

    def __init__(self, mask):
        super().__init__()
        self.mask = np.array(mask)

    def __init_from_description__(self, description):
        super().__init_from_description__(description)
        self.mask = np.array(self.mask)

    def __call__(self, handler, view):
        self._check_shape(self.mask, view, "mask")
        handler.mult_tt(view, self._on_device(handler, "mask", self.mask), view)


class FreezeValues(ValueModifier):
    """Keep a view at fixed values: reset it on every call.

    Without ``weights`` the values the view has when training starts are kept
    (see :meth:`ValueModifier.start`; outside a Trainer, the values seen at the
    first call). Only explicitly given ``weights`` are part of the description.

    Args:
        weights (array_like | None): the values to keep. Defaults to None
            (the first values seen).

    Example:
        >>> net.set_weight_modifiers(Embedding={'W': FreezeValues()})
    """

    __undescribed__ = {"_frozen": None}
    __default_values__ = {"weights": None}

    def __init__(self, weights=None):
        super().__init__()
        self.weights = None if weights is None else np.array(weights)
        self._frozen = None

    def __init_from_description__(self, description):
        super().__init_from_description__(description)
        if self.weights is not None:
            self.weights = np.array(self.weights)

    def start(self, handler, view):
        """Keep the values ``view`` starts from (unless ``weights`` were given or
        values are kept already)."""
        if self._frozen is None and self.weights is None:
            self._frozen = handler.get_numpy_copy(view)

    def __call__(self, handler, view):
        if self._frozen is None:
            if self.weights is None:
                self._frozen = handler.get_numpy_copy(view)
            else:
                self._frozen = self.weights
        self._check_shape(self._frozen, view, "frozen weights")
        handler.copy_to(self._on_device(handler, "frozen", self._frozen), view)


class _WeightDecay(GradientModifier):
    """Common part of :class:`L1Decay` and :class:`L2Decay`: the ``factor``."""

    __default_values__ = {"factor": 0.0}

    def __init__(self, factor=0.0):
        super().__init__()
        self.factor = factor


class L1Decay(_WeightDecay):
    """L1 weight decay: ``gradients += factor * sign(parameters)``.

    Args:
        factor (float): strength of the decay. Defaults to 0.

    Example:
        >>> net.set_gradient_modifiers({'Hid': {'W': L1Decay(1e-5)}})
    """

    def __call__(self, handler, parameters, gradients):
        signs = handler.allocate(parameters.shape)
        handler.sign_t(parameters, signs)
        handler.mult_add_st(self.factor, signs, gradients)


class L2Decay(_WeightDecay):
    """L2 weight decay: ``gradients += factor * parameters``.

    Args:
        factor (float): strength of the decay. Defaults to 0.

    Example:
        >>> net.set_gradient_modifiers({'Hid': {'W': L2Decay(1e-4)}})
    """

    def __call__(self, handler, parameters, gradients):
        handler.mult_add_st(self.factor, parameters, gradients)
