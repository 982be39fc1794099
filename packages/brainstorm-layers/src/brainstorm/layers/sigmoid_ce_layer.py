"""The SigmoidCE layer: logistic sigmoid with binary cross-entropy loss."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_same_feature_shapes, layer_label
from brainstorm.layers._layer_ops import binary_cross_entropy
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["SigmoidCE", "SigmoidCELayerImpl"]


def SigmoidCE(name=None):
    """Create a sigmoid layer with integrated binary cross-entropy loss.

    For multi-label classification: ``predictions = sigmoid(default)`` and,
    element-wise, ``loss = -(t ln y + (1 - t) ln(1 - y))`` (logarithms clipped
    at ``1e-6``) with the input ``targets`` (same shape as ``default``, values
    usually 0 or 1). No deltas are computed for ``targets``, and deltas
    arriving at ``predictions`` are ignored.

    Args:
        name: the layer's name (default ``'SigmoidCE'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.
    """
    return ConstructionWrapper.create(SigmoidCELayerImpl, name=name)


class SigmoidCELayerImpl(Layer):
    """Implementation of :func:`SigmoidCE`.

    Internals: ``tmp`` (scratch of the forward pass) and the backward-only
    ``dcee``.
    """

    expected_inputs = {
        "default": StructureTemplate("T", "B", "..."),
        "targets": StructureTemplate("T", "B", "..."),
    }
    expected_kwargs = set()
    computes_no_input_deltas_for = ("targets",)
    takes_no_output_deltas_from = ("predictions",)
    output_aliases = {"probabilities": "predictions"}  # (its name before Brainstorm 0.5)

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        check_same_feature_shapes(in_shapes, ("default", "targets"), label)
        shape = in_shapes["default"].shape
        outputs = OrderedDict()
        outputs["predictions"] = BufferStructure(*shape)
        outputs["loss"] = BufferStructure(*shape)
        internals = OrderedDict()
        internals["tmp"] = BufferStructure(*shape)
        internals["dcee"] = BufferStructure(*shape, is_backward_only=True)
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        y = buffers.outputs.predictions
        self.handler.sigmoid(buffers.inputs.default, y)
        binary_cross_entropy(
            self.handler, y, buffers.inputs.targets, buffers.outputs.loss, buffers.internals.tmp
        )

    def backward_pass(self, buffers):
        _h = self.handler
        dcee = buffers.internals.dcee
        # d loss / d x = y - t (the sigmoid's derivative cancels)
        _h.subtract_tt(buffers.outputs.predictions, buffers.inputs.targets, dcee)
        _h.mult_add_tt(dcee, buffers.output_deltas.loss, buffers.input_deltas.default)
