"""The Loss layer: where the network's objective is collected and backprop starts."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_number, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError

__all__ = ["Loss", "LossLayerImpl"]


def Loss(importance=1.0, name=None):
    """Create a layer that sums its input into a scalar loss.

    ``loss = importance * sum(input) / B``, where B is the batch size if the
    input has a batch dimension (1 otherwise): the loss is summed over time
    and features and averaged over sequences. The backward pass adds
    ``importance / B`` to every input delta; this is where backpropagation
    starts. A network may hold several Loss layers; their values are reported
    by ``net.get_loss_values()`` together with their sum, ``total_loss``
    (which is therefore not a valid name for a Loss layer).

    Args:
        importance: the factor the loss is multiplied with.
        name: the layer's name (default ``'Loss'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example::

        out_layer - 'loss' >> Loss(importance=0.5)
    """
    label = layer_label(name, "Loss")
    _check_name(name, label)
    check_number(importance, "importance", label)
    return ConstructionWrapper.create(LossLayerImpl, name=name, importance=importance)


def _check_name(name, label):
    if name == "total_loss":
        raise LayerValidationError(
            f"Layer {label}: 'total_loss' is reserved for the sum of all losses; "
            f"choose another name"
        )


class LossLayerImpl(Layer):
    """Implementation of :func:`Loss`; its output ``loss`` has shape ``(1,)``."""

    expected_inputs = {"default": StructureTemplate("...")}
    expected_kwargs = {"importance"}
    takes_no_output_deltas_from = ("loss",)

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        _check_name(self.name, label)
        self.importance = check_number(kwargs.get("importance", 1.0), "importance", label)
        # the position of the batch axis: 1 for ('T', 'B', ...), 0 for ('B', ...)
        self._batch_axis = {2: 1, 1: 0}.get(in_shapes["default"].buffer_type)
        return OrderedDict(loss=BufferStructure(1)), OrderedDict(), OrderedDict()

    def _scale(self, buffers):
        if self._batch_axis is None:
            return self.importance
        return self.importance / buffers.inputs.default.shape[self._batch_axis]

    def forward_pass(self, buffers, training_pass=True):
        loss = buffers.outputs.loss
        self.handler.sum_t(buffers.inputs.default, axis=None, out=loss)
        self.handler.mult_st(self._scale(buffers), loss, loss)

    def backward_pass(self, buffers):
        dx = buffers.input_deltas.default
        self.handler.add_st(self._scale(buffers), dx, dx)
