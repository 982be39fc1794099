"""The Input layer: where data enters a network."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError, is_valid_layer_name

__all__ = ["Input"]


def Input(out_shapes):
    """The input layer of a network; it is always named ``Input``.

    Args:
        out_shapes: data name -> shape template, e.g.
            ``{'default': ('T', 'B', 784), 'targets': ('T', 'B', 1)}``. Each entry
            becomes an output filled by ``net.provide_external_data``.

    Example:
        >>> inp = Input({'default': ('T', 'B', 784), 'targets': ('T', 'B', 1)})
    """
    return ConstructionWrapper.create(InputLayerImpl, name="Input", out_shapes=out_shapes)


class InputLayerImpl(Layer):
    """Implementation of :func:`Input`: provides outputs, never runs."""

    expected_inputs = {}
    expected_kwargs = {"out_shapes"}

    def setup(self, kwargs, in_shapes):
        if self.incoming:
            raise LayerValidationError("The Input layer cannot have incoming connections")
        out_shapes = kwargs.get("out_shapes")
        if not isinstance(out_shapes, dict) or not out_shapes:
            raise LayerValidationError(
                f"Input needs out_shapes, a dict of data names to shape templates, got "
                f"{out_shapes!r}"
            )
        outputs = OrderedDict()
        for name, shape in out_shapes.items():
            if name != "default" and not is_valid_layer_name(name):
                raise LayerValidationError(f"Invalid Input data name {name!r}")
            shape = tuple(shape)
            lead = 2 if shape[:2] == ("T", "B") else 1 if shape[:1] == ("B",) else 0
            if not lead or len(shape) == lead:
                raise LayerValidationError(
                    f"Input data {name!r}: shape template {shape} must be ('T', 'B', "
                    f"features...) or ('B', features...)"
                )
            outputs[name] = BufferStructure(*shape)
        return outputs, OrderedDict(), OrderedDict()

    def forward_pass(self, buffers, training_pass=True):
        pass

    def backward_pass(self, buffers):
        pass
