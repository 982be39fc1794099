"""The DeltasScaling layer: identity forward, scaled deltas backward."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_number, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError

__all__ = ["DeltasScaling", "DeltasScalingLayerImpl"]


def DeltasScaling(factor, name=None):
    """Create a layer that is the identity forward and multiplies deltas by ``factor``.

    With ``factor=-1`` it reverses gradients, as in domain-adversarial training.

    Args:
        factor: the number the deltas are multiplied with (required).
        name: the layer's name (default ``'DeltasScaling'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> reverse = DeltasScaling(-1.0, name='GradientReversal')
    """
    check_number(factor, "factor", layer_label(name, "DeltasScaling"))
    return ConstructionWrapper.create(DeltasScalingLayerImpl, name=name, factor=factor)


class DeltasScalingLayerImpl(Layer):
    """Implementation of :func:`DeltasScaling`."""

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = {"factor"}

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        if "factor" not in kwargs:
            raise LayerValidationError(f"Layer {label}: the argument 'factor' is required")
        self.factor = check_number(kwargs["factor"], "factor", label)
        outputs = OrderedDict(default=BufferStructure(*in_shapes["default"].shape))
        return outputs, OrderedDict(), OrderedDict()

    def forward_pass(self, buffers, training_pass=True):
        self.handler.copy_to(buffers.inputs.default, buffers.outputs.default)

    def backward_pass(self, buffers):
        self.handler.mult_add_st(
            self.factor, buffers.output_deltas.default, buffers.input_deltas.default
        )
