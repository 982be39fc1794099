"""The Pooling2D layer: max or average pooling of NHWC images, channel by channel."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.layers.convolution_layer import (
    check_padding,
    check_pair,
    image_shape,
    output_image_size,
)
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError, flatten_time

__all__ = ["Pooling2D", "Pooling2DLayerImpl"]

POOLING_TYPES = ("max", "avg")


def Pooling2D(kernel_size, type="max", stride=(1, 1), padding=0, name=None):
    """Create a 2-D pooling layer for images (NHWC), channel by channel.

    The output has the feature shape ``(out_height, out_width, channels)`` with
    ``out_height = (height + 2 * padding - kernel_rows) // stride_rows + 1``
    (the same for the width). Note that the default stride is ``(1, 1)``, as in
    the reference, not the kernel size: pass ``stride=(2, 2)`` for the usual
    down-sampling.

    Max pooling outputs the largest pixel of each window (padding pixels never
    win; the first maximum wins ties) and sends the deltas to it. Average
    pooling divides by the number of pixels of the window that are not padding.

    Args:
        kernel_size: ``(rows, columns)`` of the windows, or an int for square ones.
        type: ``'max'`` (default) or ``'avg'``.
        stride: ``(rows, columns)`` step between neighbouring windows, or an
            int for both (default ``(1, 1)``).
        padding: how many pixels to add on every side of each image, a
            non-negative int (default 0).
        name: the layer's name (default ``'Pooling2D'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> pool = Pooling2D(kernel_size=(3, 3), type='max', stride=(2, 2))
    """
    label = layer_label(name, "Pooling2D")
    return ConstructionWrapper.create(
        Pooling2DLayerImpl,
        name=name,
        kernel_size=check_pair(kernel_size, "kernel_size", label),
        type=_check_type(type, label),
        stride=check_pair(stride, "stride", label),
        padding=check_padding(padding, label),
    )


def _check_type(pooling_type, label):
    if not isinstance(pooling_type, str) or pooling_type not in POOLING_TYPES:
        raise LayerValidationError(
            f"Layer {label}: type must be 'max' or 'avg', got {pooling_type!r}"
        )
    return pooling_type


class Pooling2DLayerImpl(Layer):
    """Implementation of :func:`Pooling2D`.

    Max pooling keeps the internal ``argmax``, shaped like the output: the
    winning pixel of each window as its in-image index ``(y * width + x) *
    channels + c``, stored as a float (-1 for a window made only of padding).
    Average pooling has no internals. Time and batch are flattened into one
    image axis for the handler's batch operations.
    """

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    # The reference's layer accepted (and ignored) 'activation_function'.
    expected_kwargs = {"kernel_size", "type", "stride", "padding", "activation_function"}

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        if "kernel_size" not in kwargs:
            raise LayerValidationError(f"Layer {label}: kernel_size is required")
        self.kernel_size = check_pair(kwargs["kernel_size"], "kernel_size", label)
        self.type = _check_type(kwargs.get("type", "max"), label)
        self.stride = check_pair(kwargs.get("stride", (1, 1)), "stride", label)
        self.padding = check_padding(kwargs.get("padding", 0), label)
        image = image_shape(in_shapes["default"], label)
        out_height, out_width = output_image_size(
            image, self.kernel_size, self.stride, self.padding, label
        )
        out_shape = (out_height, out_width, image[2])

        outputs = OrderedDict()
        outputs["default"] = BufferStructure("T", "B", *out_shape)
        internals = OrderedDict()
        if self.type == "max":
            internals["argmax"] = BufferStructure("T", "B", *out_shape)
        return outputs, OrderedDict(), internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        x = flatten_time(buffers.inputs.default)
        y = flatten_time(buffers.outputs.default)
        if self.type == "max":
            argmax = flatten_time(buffers.internals.argmax)
            _h.maxpool2d_forward_batch(x, self.kernel_size, y, self.padding, self.stride, argmax)
        else:
            _h.avgpool2d_forward_batch(x, self.kernel_size, y, self.padding, self.stride)

    def backward_pass(self, buffers):
        _h = self.handler
        x = flatten_time(buffers.inputs.default)
        y = flatten_time(buffers.outputs.default)
        dx = flatten_time(buffers.input_deltas.default)
        dy = flatten_time(buffers.output_deltas.default)
        if self.type == "max":
            argmax = flatten_time(buffers.internals.argmax)
            _h.maxpool2d_backward_batch(
                x, self.kernel_size, y, self.padding, self.stride, argmax, dx, dy
            )
        else:
            _h.avgpool2d_backward_batch(x, self.kernel_size, y, self.padding, self.stride, dx, dy)
