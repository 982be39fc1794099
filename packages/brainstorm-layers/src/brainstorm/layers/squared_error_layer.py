"""The SquaredError layer: half the squared error against targets, for regression."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_same_feature_shapes, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["SquaredError", "SquaredErrorLayerImpl"]


def SquaredError(name=None):
    """Create a layer computing half the squared error, element-wise: ``(x - t)² / 2``.

    Interface-compatible with ``SoftmaxCE`` and ``SigmoidCE`` (regression
    networks use it as their output layer): the output ``predictions`` is a
    copy of the input ``default``, the output ``loss`` holds the element-wise
    error against ``targets`` (same shape). No deltas are computed for
    ``targets``, and deltas arriving at ``predictions`` are ignored.

    Args:
        name: the layer's name (default ``'SquaredError'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.
    """
    return ConstructionWrapper.create(SquaredErrorLayerImpl, name=name)


class SquaredErrorLayerImpl(Layer):
    """Implementation of :func:`SquaredError` (internal ``diff`` = ``x - t``)."""

    expected_inputs = {
        "default": StructureTemplate("T", "B", "..."),
        "targets": StructureTemplate("T", "B", "..."),
    }
    expected_kwargs = set()
    computes_no_input_deltas_for = ("targets",)
    takes_no_output_deltas_from = ("predictions",)

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        check_same_feature_shapes(in_shapes, ("default", "targets"), label)
        shape = in_shapes["default"].shape
        outputs = OrderedDict()
        outputs["predictions"] = BufferStructure(*shape)
        outputs["loss"] = BufferStructure(*shape)
        internals = OrderedDict(diff=BufferStructure(*shape))
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        x, diff, loss = buffers.inputs.default, buffers.internals.diff, buffers.outputs.loss
        _h.copy_to(x, buffers.outputs.predictions)
        _h.subtract_tt(x, buffers.inputs.targets, diff)
        _h.mult_tt(diff, diff, loss)
        _h.mult_st(0.5, loss, loss)

    def backward_pass(self, buffers):
        self.handler.mult_add_tt(
            buffers.output_deltas.loss, buffers.internals.diff, buffers.input_deltas.default
        )
