"""The L2Decay layer: half the squared L2 norm of activations, as a loss."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time_and_features

__all__ = ["L2Decay", "L2DecayLayerImpl"]


def L2Decay(name=None):
    """Create a layer computing ``½ sum(x²)`` of its input per time step and sequence.

    The output ``loss`` has shape ``('T', 'B', 1)``. Feed it into a ``Loss``
    layer (whose ``importance`` sets the strength) to regularise activations.
    For decay of *weights* use the value modifier
    ``brainstorm.value_modifiers.L2Decay`` instead.

    Args:
        name: the layer's name (default ``'L2Decay'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example::

        hidden >> L2Decay() >> Loss(importance=1e-4)
    """
    return ConstructionWrapper.create(L2DecayLayerImpl, name=name)


class L2DecayLayerImpl(Layer):
    """Implementation of :func:`L2Decay` (internal ``tmp``: the squared input)."""

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        outputs = OrderedDict(loss=BufferStructure("T", "B", 1))
        internals = OrderedDict(tmp=BufferStructure(*in_shapes["default"].shape))
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        tmp = buffers.internals.tmp
        loss = flatten_time_and_features(buffers.outputs.loss)
        _h.mult_tt(buffers.inputs.default, buffers.inputs.default, tmp)
        _h.sum_t(flatten_time_and_features(tmp), axis=1, out=loss)
        _h.mult_st(0.5, loss, loss)

    def backward_pass(self, buffers):
        self.handler.mult_add_mv(
            flatten_time_and_features(buffers.inputs.default),
            flatten_time_and_features(buffers.output_deltas.loss),
            flatten_time_and_features(buffers.input_deltas.default),
        )
