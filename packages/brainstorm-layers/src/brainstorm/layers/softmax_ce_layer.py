"""The SoftmaxCE layer: softmax with multinomial cross-entropy loss."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError, flatten_all_but_last

__all__ = ["SoftmaxCE", "SoftmaxCELayerImpl"]


def SoftmaxCE(name=None):
    """Create a softmax layer with integrated multinomial cross-entropy loss.

    The softmax over the last axis of the input ``default`` goes to the output
    ``predictions`` (also reachable as ``probabilities``, its name before
    release 0.5). The input ``targets`` holds 0-based class indices, with the
    input's shape except for a last dimension of 1; the output ``loss`` holds
    ``-ln(clip(p_target, 1e-6, 1))`` per position. For pixel-wise
    classification the class axis must be the last one (NHWC).

    No deltas are computed for ``targets``, and deltas arriving at
    ``predictions`` are ignored.

    Args:
        name: the layer's name (default ``'SoftmaxCE'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example::

        out = SoftmaxCE(name='Output')
        inp - 'targets' >> 'targets' - out
        out - 'loss' >> Loss()
    """
    return ConstructionWrapper.create(SoftmaxCELayerImpl, name=name)


class SoftmaxCELayerImpl(Layer):
    """Implementation of :func:`SoftmaxCE` (backward-only internal ``t_bin``)."""

    #: written by binarize_v
    overwrites_backward_internals = ("t_bin",)

    expected_inputs = {
        "default": StructureTemplate("T", "B", "..."),
        "targets": StructureTemplate("T", "B", "..."),
    }
    expected_kwargs = set()
    computes_no_input_deltas_for = ("targets",)
    takes_no_output_deltas_from = ("predictions",)
    output_aliases = {"probabilities": "predictions"}

    def setup(self, kwargs, in_shapes):
        in_features = in_shapes["default"].feature_shape
        target_features = in_shapes["targets"].feature_shape
        expected = in_features[:-1] + (1,)
        if target_features != expected:
            raise LayerValidationError(
                f"Layer {layer_label(self.name, self.type_name)}: targets must hold one "
                f"class index per position, i.e. have shape {('T', 'B') + expected}, but "
                f"have shape {in_shapes['targets'].shape}"
            )
        outputs = OrderedDict()
        outputs["predictions"] = BufferStructure("T", "B", *in_features)
        outputs["loss"] = BufferStructure("T", "B", *target_features)
        internals = OrderedDict()
        internals["t_bin"] = BufferStructure("T", "B", *in_features, is_backward_only=True)
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        x = flatten_all_but_last(buffers.inputs.default)
        targets = flatten_all_but_last(buffers.inputs.targets)
        p = flatten_all_but_last(buffers.outputs.predictions)
        loss = flatten_all_but_last(buffers.outputs.loss)

        _h.softmax_m(x, p)
        # cross entropy with one-hot targets: -ln(p[target])
        _h.index_m_by_v(p, targets, loss)
        _h.clip_t(loss, 1e-6, 1.0, loss)
        _h.log_t(loss, loss)
        _h.mult_st(-1.0, loss, loss)

    def backward_pass(self, buffers):
        _h = self.handler
        targets = flatten_all_but_last(buffers.inputs.targets)
        p = flatten_all_but_last(buffers.outputs.predictions)
        dloss = flatten_all_but_last(buffers.output_deltas.loss)
        t_bin = flatten_all_but_last(buffers.internals.t_bin)
        dx = flatten_all_but_last(buffers.input_deltas.default)

        # d loss / d x = p - onehot(target), scaled by the incoming loss deltas
        _h.binarize_v(targets, t_bin)
        _h.subtract_tt(p, t_bin, t_bin)
        _h.mult_add_mv(t_bin, dloss, dx)
