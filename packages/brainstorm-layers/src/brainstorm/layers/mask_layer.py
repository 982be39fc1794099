"""The Mask layer: multiplies its input by a (broadcast) mask."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError, product

__all__ = ["Mask", "MaskLayerImpl"]


def Mask(name=None):
    """Create a layer that multiplies its input by a mask: ``y = x * mask``.

    The mask (input ``mask``) may have the shape ``('T', 'B', 1)`` (one value
    per time step and sequence), the input's shape with the last dimension 1
    (one value per pixel, say) or the full input shape (per-feature masking).
    It is typically the mask provided by a data iterator, so that sequences of
    different lengths contribute only their valid steps to a loss. No deltas
    are computed for the mask.

    Args:
        name: the layer's name (default ``'Mask'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example::

        mask = Mask()
        inp - 'mask' >> 'mask' - mask
        out_layer - 'loss' >> mask >> Loss()
    """
    return ConstructionWrapper.create(MaskLayerImpl, name=name)


class MaskLayerImpl(Layer):
    """Implementation of :func:`Mask`."""

    expected_inputs = {
        "default": StructureTemplate("T", "B", "..."),
        "mask": StructureTemplate("T", "B", "..."),
    }
    expected_kwargs = set()
    computes_no_input_deltas_for = ("mask",)

    def setup(self, kwargs, in_shapes):
        in_features = in_shapes["default"].feature_shape
        mask_features = in_shapes["mask"].feature_shape
        per_position = in_features[:-1] + (1,)
        if mask_features == (1,):
            # one value per (t, b): rows are time steps and sequences
            self._split = 2
        elif mask_features in (per_position, in_features):
            # one value per position, or per entry: rows are all but the last axis
            self._split = 1 + len(in_features)
        else:
            raise LayerValidationError(
                f"Layer {layer_label(self.name, self.type_name)}: the mask has shape "
                f"{in_shapes['mask'].shape}, but must be ('T', 'B', 1), "
                f"{('T', 'B') + per_position} or {in_shapes['default'].shape}"
            )
        outputs = OrderedDict(default=BufferStructure(*in_shapes["default"].shape))
        return outputs, OrderedDict(), OrderedDict()

    def _flat(self, buffer):
        rows = product(buffer.shape[: self._split])
        return buffer.reshape((rows, product(buffer.shape[self._split :])))

    def forward_pass(self, buffers, training_pass=True):
        self.handler.mult_mv(
            self._flat(buffers.inputs.default),
            self._flat(buffers.inputs.mask),
            self._flat(buffers.outputs.default),
        )

    def backward_pass(self, buffers):
        self.handler.mult_add_mv(
            self._flat(buffers.output_deltas.default),
            self._flat(buffers.inputs.mask),
            self._flat(buffers.input_deltas.default),
        )
