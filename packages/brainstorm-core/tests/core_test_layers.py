"""Small layers defined the way a user defines custom layers, for core's tests."""

from collections import OrderedDict

from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time


def Scale(name=None):
    """y = x * w, one weight per feature."""
    return ConstructionWrapper.create(ScaleLayerImpl, name=name)


class ScaleLayerImpl(Layer):
    expected_inputs = {"default": StructureTemplate("T", "B", "F")}

    def setup(self, kwargs, in_shapes):
        f = in_shapes["default"].feature_shape
        return (
            OrderedDict(default=BufferStructure("T", "B", *f)),
            OrderedDict(w=BufferStructure(*f)),
            OrderedDict(tmp=BufferStructure("T", "B", *f, is_backward_only=True)),
        )

    def forward_pass(self, buffers, training_pass=True):
        x = flatten_time(buffers.inputs.default)
        y = flatten_time(buffers.outputs.default)
        w = buffers.parameters.w.reshape((1, buffers.parameters.w.shape[0]))
        self.handler.mult_mv(x, w, y)

    def backward_pass(self, buffers):
        x = flatten_time(buffers.inputs.default)
        dx = flatten_time(buffers.input_deltas.default)
        dy = flatten_time(buffers.output_deltas.default)
        w = buffers.parameters.w.reshape((1, buffers.parameters.w.shape[0]))
        self.handler.mult_add_mv(dy, w, dx)
        tmp = flatten_time(buffers.internals.tmp)
        self.handler.mult_tt(dy, x, tmp)
        self.handler.sum_t(tmp, 0, buffers.gradients.w.reshape((1, tmp.shape[1])))


def Accumulate(name=None):
    """y_t = x_t + 0.5 * y_{t-1}: a minimal recurrent layer with context."""
    return ConstructionWrapper.create(AccumulateLayerImpl, name=name)


class AccumulateLayerImpl(Layer):
    expected_inputs = {"default": StructureTemplate("T", "B", "F")}

    def setup(self, kwargs, in_shapes):
        f = in_shapes["default"].feature_shape
        return (
            OrderedDict(default=BufferStructure("T", "B", *f, context_size=1)),
            OrderedDict(),
            OrderedDict(),
        )

    def forward_pass(self, buffers, training_pass=True):
        x, y = buffers.inputs.default, buffers.outputs.default
        for t in range(x.shape[0]):
            self.handler.mult_st(0.5, y[t - 1], y[t])
            self.handler.add_tt(y[t], x[t], y[t])

    def backward_pass(self, buffers):
        dx, dy = buffers.input_deltas.default, buffers.output_deltas.default
        for t in reversed(range(dx.shape[0])):
            self.handler.mult_add_st(0.5, dy[t + 1], dy[t])
            self.handler.add_tt(dx[t], dy[t], dx[t])


def SumLoss(name=None):
    """A loss: sum of the inputs divided by the batch size."""
    return ConstructionWrapper.create(SumLossLayerImpl, name=name)


class SumLossLayerImpl(Layer):
    expected_inputs = {"default": StructureTemplate("T", "B", "...")}

    def setup(self, kwargs, in_shapes):
        return OrderedDict(loss=BufferStructure(1)), OrderedDict(), OrderedDict()

    def forward_pass(self, buffers, training_pass=True):
        x = buffers.inputs.default
        self.handler.sum_t(x, None, buffers.outputs.loss)
        self.handler.mult_st(1.0 / x.shape[1], buffers.outputs.loss, buffers.outputs.loss)

    def backward_pass(self, buffers):
        dx = buffers.input_deltas.default
        self.handler.add_st(1.0 / dx.shape[1], dx, dx)
