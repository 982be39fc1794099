"""The Elementwise layer: an activation function applied to every entry."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_activation, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["Elementwise", "ElementwiseLayerImpl"]


def Elementwise(activation="rel", name=None):
    """Create a layer that applies an activation function elementwise: ``y = act(x)``.

    Args:
        activation: one of ``'rel'`` (ReLU), ``'sigmoid'``, ``'tanh'``,
            ``'linear'`` and ``'el'`` (ELU).
        name: the layer's name (default ``'Elementwise'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> gate = Elementwise('sigmoid', name='Gate')
    """
    check_activation(activation, layer_label(name, "Elementwise"))
    return ConstructionWrapper.create(ElementwiseLayerImpl, name=name, activation=activation)


class ElementwiseLayerImpl(Layer):
    """Implementation of :func:`Elementwise` (backward-only internal ``dx``)."""

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = {"activation"}

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        self.activation = check_activation(kwargs.get("activation", "rel"), label)
        shape = in_shapes["default"].shape
        outputs = OrderedDict(default=BufferStructure(*shape))
        internals = OrderedDict(dx=BufferStructure(*shape, is_backward_only=True))
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        self.handler.act_func[self.activation](buffers.inputs.default, buffers.outputs.default)

    def backward_pass(self, buffers):
        _h = self.handler
        dx = buffers.internals.dx
        _h.act_func_deriv[self.activation](
            buffers.inputs.default, buffers.outputs.default, buffers.output_deltas.default, dx
        )
        _h.add_tt(dx, buffers.input_deltas.default, buffers.input_deltas.default)
