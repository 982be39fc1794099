"""The NoOp layer: passes its input through unchanged."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["NoOp", "NoOpLayerImpl"]


def NoOp(name=None):
    """Create a layer that copies its input forward and its deltas backward.

    Useful as a named junction, e.g. to collect several outputs in one place.

    Args:
        name: the layer's name (default ``'NoOp'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.
    """
    return ConstructionWrapper.create(NoOpLayerImpl, name=name)


class NoOpLayerImpl(Layer):
    """Implementation of :func:`NoOp`."""

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        outputs = OrderedDict(default=BufferStructure(*in_shapes["default"].shape))
        return outputs, OrderedDict(), OrderedDict()

    def forward_pass(self, buffers, training_pass=True):
        self.handler.copy_to(buffers.inputs.default, buffers.outputs.default)

    def backward_pass(self, buffers):
        dx = buffers.input_deltas.default
        self.handler.add_tt(buffers.output_deltas.default, dx, dx)
