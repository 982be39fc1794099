"""The Merge layer: concatenation along the last feature axis."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError, flatten_all_but_last

__all__ = ["Merge", "MergeLayerImpl"]


def Merge(name=None):
    """Create a layer that concatenates its two inputs along the last axis.

    The inputs ``inputs_1`` and ``inputs_2`` must be of the same kind (time-,
    batch- or constant-sized) and agree on every feature dimension but the last.
    (Connecting several outputs to one input concatenates them too, but only
    this layer gives contiguous memory, which GPU handlers want.)

    Args:
        name: the layer's name (default ``'Merge'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example::

        merge = Merge()
        a >> 'inputs_1' - merge
        b >> 'inputs_2' - merge
    """
    return ConstructionWrapper.create(MergeLayerImpl, name=name)


class MergeLayerImpl(Layer):
    """Implementation of :func:`Merge`."""

    expected_inputs = {
        "inputs_1": StructureTemplate("..."),
        "inputs_2": StructureTemplate("..."),
    }
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        a, b = in_shapes["inputs_1"], in_shapes["inputs_2"]
        if (
            a.buffer_type != b.buffer_type
            or not a.feature_shape
            or not b.feature_shape
            or a.feature_shape[:-1] != b.feature_shape[:-1]
        ):
            raise LayerValidationError(
                f"Layer {layer_label(self.name, self.type_name)}: inputs_1 {a.shape} and "
                f"inputs_2 {b.shape} must be of the same kind and agree on all but the "
                f"last dimension"
            )
        last = a.feature_shape[-1] + b.feature_shape[-1]
        shape = a.shape[:-1] + (last,)
        return OrderedDict(default=BufferStructure(*shape)), OrderedDict(), OrderedDict()

    def forward_pass(self, buffers, training_pass=True):
        self.handler.merge_tt(
            flatten_all_but_last(buffers.inputs.inputs_1),
            flatten_all_but_last(buffers.inputs.inputs_2),
            flatten_all_but_last(buffers.outputs.default),
        )

    def backward_pass(self, buffers):
        self.handler.split_add_tt(
            flatten_all_but_last(buffers.output_deltas.default),
            flatten_all_but_last(buffers.input_deltas.inputs_1),
            flatten_all_but_last(buffers.input_deltas.inputs_2),
        )
