"""The Square layer: y = x**2 / 2, elementwise."""

from collections import OrderedDict

from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper


def Square(name=None):
    """Create a layer that squares its input elementwise and halves it: y = x**2 / 2.

    The layer has one input and one output (both named ``default``) of the same
    shape, and no parameters.

    Args:
        name (str, optional): Name of the layer in the network; defaults to
            ``'Square'`` (numbered if several are used).

    Returns:
        ConstructionWrapper: The layer, ready to be wired with ``>>``.

    Example:
        >>> import brainstorm as bs
        >>> inp = bs.layers.Input({'default': ('T', 'B', 4)})
        >>> sq = inp >> bs.layers.Square(name='Sq')
    """
    return ConstructionWrapper.create(SquareLayerImpl, name=name)


class SquareLayerImpl(Layer):
    """Implementation of :func:`Square`; the type name is the class name without ``LayerImpl``."""

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        """Declare the buffers: one output shaped like the input, no parameters or internals."""
        feature_shape = in_shapes["default"].feature_shape
        outputs = OrderedDict(default=BufferStructure("T", "B", *feature_shape))
        return outputs, OrderedDict(), OrderedDict()

    def forward_pass(self, buffers, training_pass=True):
        """y = x * x * 0.5, written into the output buffer."""
        x = buffers.inputs.default
        y = buffers.outputs.default
        self.handler.mult_tt(x, x, y)
        self.handler.mult_st(0.5, y, y)

    def backward_pass(self, buffers):
        """dx += dy * x: deltas are accumulated, never overwritten."""
        x = buffers.inputs.default
        dx = buffers.input_deltas.default
        dy = buffers.output_deltas.default
        self.handler.mult_add_tt(dy, x, dx)
