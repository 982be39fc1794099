"""The Convolution2D layer: a 2-D convolution of NHWC images followed by an activation."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import (
    check_activation,
    check_positive_int,
    is_int,
    layer_label,
)
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError, flatten_time

__all__ = ["Convolution2D", "Convolution2DLayerImpl"]


def Convolution2D(num_filters, kernel_size, stride=(1, 1), padding=0, activation="rel", name=None):
    """Create a 2-D convolution layer for images: ``y = act(conv(x, W) + bias)``.

    Images are NHWC: the input has the feature shape ``(height, width,
    channels)`` and the output ``(out_height, out_width, num_filters)`` with
    ``out_height = (height + 2 * padding - kernel_height) // stride_rows + 1``
    (the same for the width). As usual in neural networks the "convolution" is
    a cross-correlation: the filters are not flipped.

    Args:
        num_filters: the number of filters (output channels), a positive int.
        kernel_size: ``(rows, columns)`` of the filters, or an int for a
            square kernel.
        stride: ``(rows, columns)`` step between neighbouring windows, or an
            int for both (default ``(1, 1)``).
        padding: how many zero pixels to add on every side of each image, a
            non-negative int (default 0).
        activation: one of ``'rel'`` (ReLU), ``'sigmoid'``, ``'tanh'``,
            ``'linear'`` and ``'el'`` (ELU).
        name: the layer's name (default ``'Convolution2D'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> conv = Convolution2D(32, kernel_size=(5, 5), padding=2, name='Conv1')
    """
    label = layer_label(name, "Convolution2D")
    check_activation(activation, label)
    return ConstructionWrapper.create(
        Convolution2DLayerImpl,
        name=name,
        num_filters=check_positive_int(num_filters, "num_filters", label),
        kernel_size=check_pair(kernel_size, "kernel_size", label),
        stride=check_pair(stride, "stride", label),
        padding=check_padding(padding, label),
        activation=activation,
    )


# -- argument checks shared with Pooling2D --------------------------------------------------


def check_pair(value, what, label):
    """``value`` as a ``(rows, columns)`` tuple of positive ints.

    An int means the same for both; a list is accepted because tuples come back
    from a JSON description as lists.
    """
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(is_int(v) and v >= 1 for v in pair):
        raise LayerValidationError(
            f"Layer {label}: {what} must be a positive int or a pair (rows, columns) of "
            f"positive ints, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def check_padding(value, label):
    """Return ``value`` as an int if it is a non-negative integer, else raise."""
    if not is_int(value) or value < 0:
        raise LayerValidationError(
            f"Layer {label}: padding must be a non-negative int (pixels on every side), "
            f"got {value!r}"
        )
    return int(value)


def image_shape(in_shape, label):
    """The ``(height, width, channels)`` of an input structure, or raise."""
    features = in_shape.feature_shape
    if len(features) != 3:
        raise LayerValidationError(
            f"Layer {label}: the input must be images with the feature shape "
            f"(height, width, channels), got {features}"
        )
    return features


def output_image_size(image, kernel_size, stride, padding, label):
    """``(out_height, out_width)`` of sliding ``kernel_size`` windows over padded images.

    Raises:
        LayerValidationError: if the kernel is larger than the padded image.
    """
    height, width = image[:2]
    padded = (height + 2 * padding, width + 2 * padding)
    if kernel_size[0] > padded[0] or kernel_size[1] > padded[1]:
        raise LayerValidationError(
            f"Layer {label}: the kernel {kernel_size[0]}x{kernel_size[1]} does not fit the "
            f"input images {height}x{width} padded by {padding} "
            f"({padded[0]}x{padded[1]} pixels)"
        )
    return tuple((p - k) // s + 1 for p, k, s in zip(padded, kernel_size, stride))


class Convolution2DLayerImpl(Layer):
    """Implementation of :func:`Convolution2D`.

    Parameters ``W`` (num_filters, kernel rows, kernel columns, channels) and
    ``bias`` (num_filters,). The forward pass writes the convolution into the
    output and applies the activation there in place (every activation
    derivative is computed from the outputs), so the only internal is the
    backward-only ``dH``, the deltas before the activation (none for
    ``'linear'``). Time and batch are flattened into one image axis for the
    handler's batch operations.
    """

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = {"num_filters", "kernel_size", "stride", "padding", "activation"}
    overwrites_gradients = True  # W and bias are written, not added to
    overwrites_backward_internals = ("dH",)  # written by the activation's derivative

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        # The reference fell back to 'tanh' here while its wrapper passed 'rel'.
        self.activation = check_activation(kwargs.get("activation", "rel"), label)
        if "num_filters" not in kwargs or "kernel_size" not in kwargs:
            raise LayerValidationError(f"Layer {label}: num_filters and kernel_size are required")
        self.num_filters = check_positive_int(kwargs["num_filters"], "num_filters", label)
        self.kernel_size = check_pair(kwargs["kernel_size"], "kernel_size", label)
        self.stride = check_pair(kwargs.get("stride", (1, 1)), "stride", label)
        self.padding = check_padding(kwargs.get("padding", 0), label)
        image = image_shape(in_shapes["default"], label)
        out_height, out_width = output_image_size(
            image, self.kernel_size, self.stride, self.padding, label
        )
        out_shape = (out_height, out_width, self.num_filters)

        outputs = OrderedDict()
        outputs["default"] = BufferStructure("T", "B", *out_shape)

        parameters = OrderedDict()
        parameters["W"] = BufferStructure(self.num_filters, *self.kernel_size, image[2])
        parameters["bias"] = BufferStructure(self.num_filters)

        internals = OrderedDict()
        if self.activation != "linear":
            internals["dH"] = BufferStructure("T", "B", *out_shape, is_backward_only=True)
        return outputs, parameters, internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        y = flatten_time(buffers.outputs.default)
        _h.conv2d_forward_batch(
            flatten_time(buffers.inputs.default),
            buffers.parameters.W,
            buffers.parameters.bias,
            y,
            self.padding,
            self.stride,
        )
        if self.activation != "linear":
            _h.act_func[self.activation](y, y)

    def backward_pass(self, buffers):
        _h = self.handler
        dy = flatten_time(buffers.output_deltas.default)
        if self.activation == "linear":
            dH = dy
        else:
            y = flatten_time(buffers.outputs.default)
            dH = flatten_time(buffers.internals.dH)
            # The pre-activation was never stored: derivatives are computed from y.
            _h.act_func_deriv[self.activation](y, y, dy, dH)
        skip = "default" in self.inputs_without_deltas  # nobody reads the data's deltas
        _h.conv2d_backward_batch(
            flatten_time(buffers.inputs.default),
            buffers.parameters.W,
            self.padding,
            self.stride,
            None if skip else flatten_time(buffers.input_deltas.default),
            dH,
            buffers.gradients.W,
            buffers.gradients.bias,
        )
