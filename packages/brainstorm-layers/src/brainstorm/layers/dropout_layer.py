"""The Dropout layer: randomly zeroes entries during training."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_number, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["Dropout", "DropoutLayerImpl"]


def Dropout(drop_prob=0.5, name=None):
    """Create a (inverted) dropout layer.

    In a training pass every entry is set to zero with probability
    ``drop_prob`` and the survivors are scaled by ``1 / (1 - drop_prob)``, so
    the expected output equals the input; otherwise the input is copied. The
    backward pass applies the same mask and scaling to the deltas (the
    reference forgot the scaling).

    Args:
        drop_prob: the probability of dropping an entry, in ``[0, 1)``.
        name: the layer's name (default ``'Dropout'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> drop = Dropout(0.2)
    """
    _check_drop_prob(drop_prob, layer_label(name, "Dropout"))
    return ConstructionWrapper.create(DropoutLayerImpl, name=name, drop_prob=drop_prob)


def _check_drop_prob(drop_prob, label):
    return check_number(drop_prob, "drop_prob", label, low=0.0, high=1.0, high_open=True)


class DropoutLayerImpl(Layer):
    """Implementation of :func:`Dropout`.

    The internal ``mask`` holds the scaled mask of the last forward pass:
    ``0`` or ``1/(1-p)`` after a training pass, ``1`` after any other pass.
    """

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = {"drop_prob"}

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        self.drop_prob = _check_drop_prob(kwargs.get("drop_prob", 0.5), label)
        shape = in_shapes["default"].shape
        outputs = OrderedDict(default=BufferStructure(*shape))
        internals = OrderedDict(mask=BufferStructure(*shape))
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        x, y, mask = buffers.inputs.default, buffers.outputs.default, buffers.internals.mask
        if training_pass and self.drop_prob > 0.0:
            keep_prob = 1.0 - self.drop_prob
            _h.generate_probability_mask(mask, keep_prob)
            _h.mult_st(1.0 / keep_prob, mask, mask)
            _h.mult_tt(x, mask, y)
        else:
            _h.fill(mask, 1.0)
            _h.copy_to(x, y)

    def backward_pass(self, buffers):
        self.handler.mult_add_tt(
            buffers.output_deltas.default, buffers.internals.mask, buffers.input_deltas.default
        )
