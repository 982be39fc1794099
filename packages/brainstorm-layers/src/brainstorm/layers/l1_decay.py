"""The L1Decay layer: the L1 norm of activations, as a loss for regularisation."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time_and_features

__all__ = ["L1Decay", "L1DecayLayerImpl"]


def L1Decay(name=None):
    """Create a layer computing the L1 norm of its input per time step and sequence.

    The output ``loss`` of shape ``('T', 'B', 1)`` is ``sum(|x|)`` over the
    features. Feed it into a ``Loss`` layer (whose ``importance`` sets the
    strength) to regularise activations. For decay of *weights* use the value
    modifier ``brainstorm.value_modifiers.L1Decay`` instead.

    Args:
        name: the layer's name (default ``'L1Decay'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example::

        hidden >> L1Decay() >> Loss(importance=1e-4)
    """
    return ConstructionWrapper.create(L1DecayLayerImpl, name=name)


class L1DecayLayerImpl(Layer):
    """Implementation of :func:`L1Decay` (internal ``tmp``: scratch space of both passes)."""

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        outputs = OrderedDict(loss=BufferStructure("T", "B", 1))
        internals = OrderedDict(tmp=BufferStructure(*in_shapes["default"].shape))
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        tmp = buffers.internals.tmp
        self.handler.abs_t(buffers.inputs.default, tmp)
        self.handler.sum_t(
            flatten_time_and_features(tmp),
            axis=1,
            out=flatten_time_and_features(buffers.outputs.loss),
        )

    def backward_pass(self, buffers):
        tmp = buffers.internals.tmp
        self.handler.sign_t(buffers.inputs.default, tmp)
        self.handler.mult_add_mv(
            flatten_time_and_features(tmp),
            flatten_time_and_features(buffers.output_deltas.loss),
            flatten_time_and_features(buffers.input_deltas.default),
        )
