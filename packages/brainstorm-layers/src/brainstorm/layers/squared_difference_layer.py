"""The SquaredDifference layer: the element-wise squared difference of two inputs."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_same_feature_shapes, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["SquaredDifference", "SquaredDifferenceLayerImpl"]


def SquaredDifference(name=None):
    """Create a layer computing ``(x1 - x2)²`` element-wise (no factor ½ since 0.5).

    The inputs ``inputs_1`` and ``inputs_2`` must have the same shape; both
    receive deltas. For a regression loss against targets, ``SquaredError``
    is usually more convenient.

    Args:
        name: the layer's name (default ``'SquaredDifference'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.
    """
    return ConstructionWrapper.create(SquaredDifferenceLayerImpl, name=name)


class SquaredDifferenceLayerImpl(Layer):
    """Implementation of :func:`SquaredDifference`.

    Internals: ``diff`` (``x1 - x2``) and the backward-only ``tmp``; unlike the
    reference, the backward pass leaves its output deltas untouched.
    """

    expected_inputs = {
        "inputs_1": StructureTemplate("T", "B", "..."),
        "inputs_2": StructureTemplate("T", "B", "..."),
    }
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        check_same_feature_shapes(in_shapes, ("inputs_1", "inputs_2"), label)
        shape = in_shapes["inputs_1"].shape
        outputs = OrderedDict(default=BufferStructure(*shape))
        internals = OrderedDict()
        internals["diff"] = BufferStructure(*shape)
        internals["tmp"] = BufferStructure(*shape, is_backward_only=True)
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        diff = buffers.internals.diff
        _h.subtract_tt(buffers.inputs.inputs_1, buffers.inputs.inputs_2, diff)
        _h.mult_tt(diff, diff, buffers.outputs.default)

    def backward_pass(self, buffers):
        _h = self.handler
        tmp = buffers.internals.tmp
        dx1, dx2 = buffers.input_deltas.inputs_1, buffers.input_deltas.inputs_2
        _h.mult_tt(buffers.output_deltas.default, buffers.internals.diff, tmp)
        _h.mult_st(2.0, tmp, tmp)  # 2 (x1 - x2) dy
        _h.add_tt(dx1, tmp, dx1)
        _h.subtract_tt(dx2, tmp, dx2)
