"""The Highway layer: the gated combination of a highway network."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_same_feature_shapes, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["Highway", "HighwayLayerImpl"]


def Highway(name=None):
    """Create the combination step of a highway layer: ``y = T * (H - x) + x``.

    Only the combination: the transform ``H`` and the gate ``T`` (usually a
    sigmoid) are built with other layers and wired into the inputs ``H`` and
    ``T``; ``x`` is the carried input. All three must have the same shape.

    Args:
        name: the layer's name (default ``'Highway'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example::

        x = FullyConnected(10, name='x')
        hw = Highway()
        x >> FullyConnected(10, name='H') >> 'H' - hw
        x >> FullyConnected(10, activation='sigmoid', name='T') >> 'T' - hw
        x >> 'x' - hw
    """
    return ConstructionWrapper.create(HighwayLayerImpl, name=name)


class HighwayLayerImpl(Layer):
    """Implementation of :func:`Highway`.

    Internals: ``diff`` (``H - x``) and the backward-only ``tmp``.
    """

    expected_inputs = {
        "H": StructureTemplate("T", "B", "..."),
        "T": StructureTemplate("T", "B", "..."),
        "x": StructureTemplate("T", "B", "..."),
    }
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        check_same_feature_shapes(in_shapes, ("H", "T", "x"), layer_label(self.name, "Highway"))
        shape = in_shapes["x"].shape
        outputs = OrderedDict(default=BufferStructure(*shape))
        internals = OrderedDict()
        internals["diff"] = BufferStructure(*shape)
        internals["tmp"] = BufferStructure(*shape, is_backward_only=True)
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        H, T, x = buffers.inputs.H, buffers.inputs.T, buffers.inputs.x
        y, diff = buffers.outputs.default, buffers.internals.diff
        _h.subtract_tt(H, x, diff)
        _h.mult_tt(T, diff, y)
        _h.add_tt(y, x, y)

    def backward_pass(self, buffers):
        _h = self.handler
        T, diff, tmp = buffers.inputs.T, buffers.internals.diff, buffers.internals.tmp
        dy = buffers.output_deltas.default
        dH, dT, dx = buffers.input_deltas.H, buffers.input_deltas.T, buffers.input_deltas.x
        _h.mult_tt(dy, T, tmp)  # dy * T
        _h.add_tt(dH, tmp, dH)
        _h.mult_add_tt(dy, diff, dT)
        _h.add_tt(dx, dy, dx)  # dx += dy * (1 - T)
        _h.subtract_tt(dx, tmp, dx)
