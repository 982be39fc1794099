"""The BinomialCrossEntropy layer: binary cross-entropy summed over features."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_same_feature_shapes, layer_label
from brainstorm.layers._layer_ops import CLIP_EPSILON, binary_cross_entropy
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time_and_features

__all__ = ["BinomialCrossEntropy", "BinomialCrossEntropyLayerImpl"]


def BinomialCrossEntropy(name=None):
    """Create a layer computing the binary cross-entropy of probabilities and targets.

    The input ``default`` holds probabilities in ``[0, 1]`` (e.g. the output
    of a sigmoid layer), ``targets`` the binary targets (same shape). The
    output ``default`` of shape ``('T', 'B', 1)`` is, per time step and
    sequence, ``sum over features of -(t ln y + (1 - t) ln(1 - y))``
    (logarithms clipped at ``1e-6``). No deltas are computed for ``targets``.

    Args:
        name: the layer's name (default ``'BinomialCrossEntropy'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.
    """
    return ConstructionWrapper.create(BinomialCrossEntropyLayerImpl, name=name)


class BinomialCrossEntropyLayerImpl(Layer):
    """Implementation of :func:`BinomialCrossEntropy`.

    Internals: ``cee`` (element-wise loss), ``tmp`` (scratch space of both
    passes) and the backward-only ``ceed``.
    """

    expected_inputs = {
        "default": StructureTemplate("T", "B", "..."),
        "targets": StructureTemplate("T", "B", "..."),
    }
    expected_kwargs = set()
    computes_no_input_deltas_for = ("targets",)

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        check_same_feature_shapes(in_shapes, ("default", "targets"), label)
        shape = in_shapes["default"].shape
        outputs = OrderedDict(default=BufferStructure("T", "B", 1))
        internals = OrderedDict()
        internals["cee"] = BufferStructure(*shape)
        internals["tmp"] = BufferStructure(*shape)
        internals["ceed"] = BufferStructure(*shape, is_backward_only=True)
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        cee = buffers.internals.cee
        binary_cross_entropy(
            self.handler,
            buffers.inputs.default,
            buffers.inputs.targets,
            cee,
            buffers.internals.tmp,
        )
        self.handler.sum_t(
            flatten_time_and_features(cee),
            axis=1,
            out=flatten_time_and_features(buffers.outputs.default),
        )

    def backward_pass(self, buffers):
        _h = self.handler
        y, t = buffers.inputs.default, buffers.inputs.targets
        ceed, tmp = buffers.internals.ceed, buffers.internals.tmp
        # d loss / d y = (y - t) / (y (1 - y)), the denominator clipped
        _h.mult_tt(y, y, ceed)
        _h.subtract_tt(y, ceed, ceed)
        _h.clip_t(ceed, CLIP_EPSILON, 1.0, ceed)
        _h.subtract_tt(y, t, tmp)
        _h.divide_tt(tmp, ceed, ceed)
        _h.mult_add_mv(
            flatten_time_and_features(ceed),
            flatten_time_and_features(buffers.output_deltas.default),
            flatten_time_and_features(buffers.input_deltas.default),
        )
