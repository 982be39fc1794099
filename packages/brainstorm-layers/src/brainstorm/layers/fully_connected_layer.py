"""The FullyConnected layer: an affine map followed by an activation function."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_activation, is_int, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError, flatten_time_and_features, product

__all__ = ["FullyConnected", "FullyConnectedLayerImpl"]


def FullyConnected(size=None, activation="rel", name=None):
    """Create a fully connected (inner product) layer: ``y = act(x W^T + bias)``.

    The input features are flattened, so the layer also follows convolutional
    layers.

    Args:
        size: the output feature shape, an int or a tuple of ints (the output
            then has several feature dimensions). None keeps the input's
            feature shape.
        activation: one of ``'rel'`` (ReLU), ``'sigmoid'``, ``'tanh'``,
            ``'linear'`` and ``'el'`` (ELU).
        name: the layer's name (default ``'FullyConnected'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> hidden = FullyConnected(100, activation='tanh', name='Hid1')
    """
    label = layer_label(name, "FullyConnected")
    check_activation(activation, label)
    size = _normalize_size(size, label)
    return ConstructionWrapper.create(
        FullyConnectedLayerImpl, name=name, size=size, activation=activation
    )


def _normalize_size(size, label):
    """``size`` as None or a tuple of positive ints (lists come from JSON)."""
    if size is None:
        return None
    shape = tuple(size) if isinstance(size, (list, tuple)) else (size,)
    valid = bool(shape) and all(is_int(s) and s > 0 for s in shape)
    if not valid:
        raise LayerValidationError(
            f"Layer {label}: size must be a positive int or a tuple of positive ints, got {size!r}"
        )
    shape = tuple(int(s) for s in shape)  # (NumPy integers too; JSON needs ints)
    return shape if len(shape) > 1 else shape[0]


class FullyConnectedLayerImpl(Layer):
    """Implementation of :func:`FullyConnected`.

    Parameters ``W`` (size, in_features) and ``bias`` (size,); internals ``H``
    (the pre-activation) and the backward-only ``dH``.
    """

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = {"size", "activation"}
    overwrites_gradients = True  # W and bias are written, not added to
    overwrites_backward_internals = ("dH",)  # written by the activation's derivative

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        self.activation = check_activation(kwargs.get("activation", "rel"), label)
        in_shape = in_shapes["default"]
        size = _normalize_size(kwargs.get("size"), label)
        if size is None:
            size = in_shape.feature_shape
        self.size = tuple(size) if isinstance(size, tuple) else (size,)
        n_out = product(self.size)

        outputs = OrderedDict()
        outputs["default"] = BufferStructure("T", "B", *self.size)

        parameters = OrderedDict()
        parameters["W"] = BufferStructure(n_out, in_shape.feature_size)
        parameters["bias"] = BufferStructure(n_out)

        internals = OrderedDict()
        internals["H"] = BufferStructure("T", "B", n_out)
        internals["dH"] = BufferStructure("T", "B", n_out, is_backward_only=True)
        return outputs, parameters, internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        W, bias = buffers.parameters.W, buffers.parameters.bias
        x = flatten_time_and_features(buffers.inputs.default)
        y = flatten_time_and_features(buffers.outputs.default)
        H = flatten_time_and_features(buffers.internals.H)

        # the bias first, the product added onto it: no extra pass over H
        _h.broadcast_t(bias.reshape((1, bias.shape[0])), 0, H)
        _h.dot_add_mm(x, W, H, transb=True)
        _h.act_func[self.activation](H, y)

    def backward_pass(self, buffers):
        _h = self.handler
        W = buffers.parameters.W
        dW, dbias = buffers.gradients.W, buffers.gradients.bias
        x = flatten_time_and_features(buffers.inputs.default)
        y = flatten_time_and_features(buffers.outputs.default)
        dy = flatten_time_and_features(buffers.output_deltas.default)
        H = flatten_time_and_features(buffers.internals.H)
        dH = flatten_time_and_features(buffers.internals.dH)

        _h.act_func_deriv[self.activation](H, y, dy, dH)
        if "default" not in self.inputs_without_deltas:  # nobody reads the data's deltas
            _h.dot_add_mm(dH, W, flatten_time_and_features(buffers.input_deltas.default))
        _h.dot_mm(dH, x, dW, transa=True)
        _h.sum_t(dH, axis=0, out=dbias)
