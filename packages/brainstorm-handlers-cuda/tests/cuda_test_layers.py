"""A small network whose buffers are strided views, built from layers defined here.

brainstorm-handlers-cuda depends on core only, so its tests cannot use the
layer library; these two layers (written the way a user writes custom layers)
use the handler ops a fully connected layer and a loss need.
"""

from collections import OrderedDict

import brainstorm as bs
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time


def Affine(size, name=None):
    """y = tanh(x W^T + b)."""
    return ConstructionWrapper.create(AffineLayerImpl, size=size, name=name)


class AffineLayerImpl(Layer):
    expected_inputs = {"default": StructureTemplate("T", "B", "F")}
    expected_kwargs = {"size"}

    def setup(self, kwargs, in_shapes):
        n_in, size = in_shapes["default"].feature_size, kwargs["size"]
        return (
            OrderedDict(default=BufferStructure("T", "B", size)),
            OrderedDict(W=BufferStructure(size, n_in), b=BufferStructure(size)),
            OrderedDict(d=BufferStructure("T", "B", size, is_backward_only=True)),
        )

    def forward_pass(self, buffers, training_pass=True):
        h = self.handler
        x, y = flatten_time(buffers.inputs.default), flatten_time(buffers.outputs.default)
        h.dot_mm(x, buffers.parameters.W, y, transb=True)
        h.add_mv(y, buffers.parameters.b.reshape((1, -1)), y)
        h.tanh(y, y)

    def backward_pass(self, buffers):
        h = self.handler
        x, y = flatten_time(buffers.inputs.default), flatten_time(buffers.outputs.default)
        dx, dy = (
            flatten_time(buffers.input_deltas.default),
            flatten_time(buffers.output_deltas.default),
        )
        d = flatten_time(buffers.internals.d)
        h.tanh_deriv(None, y, dy, d)
        h.dot_add_mm(d, buffers.parameters.W, dx)
        h.dot_mm(d, x, buffers.gradients.W, transa=True)
        h.sum_t(d, 0, buffers.gradients.b)


def SquareLoss(name=None):
    """loss = sum(x ** 2) / (2 * batch size)."""
    return ConstructionWrapper.create(SquareLossLayerImpl, name=name)


class SquareLossLayerImpl(Layer):
    expected_inputs = {"default": StructureTemplate("T", "B", "...")}

    def setup(self, kwargs, in_shapes):
        features = in_shapes["default"].feature_shape
        return (
            OrderedDict(loss=BufferStructure(1)),
            OrderedDict(),
            OrderedDict(sq=BufferStructure("T", "B", *features)),
        )

    def forward_pass(self, buffers, training_pass=True):
        h, x = self.handler, buffers.inputs.default
        h.mult_tt(x, x, buffers.internals.sq)
        h.sum_t(buffers.internals.sq, None, buffers.outputs.loss)
        h.mult_st(0.5 / x.shape[1], buffers.outputs.loss, buffers.outputs.loss)

    def backward_pass(self, buffers):
        x, dx = buffers.inputs.default, buffers.input_deltas.default
        self.handler.mult_add_st(1.0 / x.shape[1], x, dx)


def build_network(handler):
    """Input (a: 3, b: 4) -> Affine1 (sees a|b) and Affine2 (sees a) -> one loss (sees both).

    Input's outputs a and b are slices of the hub Affine1 reads, Affine2's input is
    a slice of it, and both Affine outputs are slices of the hub the loss reads.
    """
    inp = bs.layers.Input({"a": ("T", "B", 3), "b": ("T", "B", 4)})
    first, second, loss = Affine(5, name="Affine1"), Affine(2, name="Affine2"), SquareLoss("Loss")
    inp - "a" >> first
    inp - "b" >> first
    inp - "a" >> second
    first >> loss
    second >> loss
    return bs.Network.from_layer(loss, handler=handler)


#: Layers of brainstorm-layers to run on both handlers when it is installed:
#: (name, kwargs, input feature shape, input kind: 'normal' or ('ids', vocabulary)).
LIBRARY_LAYERS = [
    ("FullyConnected", {"size": 4, "activation": "tanh"}, (5,), "normal"),
    ("Elementwise", {"activation": "sigmoid"}, (6,), "normal"),
    ("BatchNorm", {}, (5,), "normal"),
    (
        "Convolution2D",
        {
            "num_filters": 3,
            "kernel_size": (3, 3),
            "stride": (2, 2),
            "padding": 1,
            "activation": "tanh",
        },
        (6, 5, 2),
        "normal",
    ),
    (
        "Convolution2D",
        {"num_filters": 2, "kernel_size": (2, 3), "activation": "rel"},
        (4, 5, 3),
        "normal",
    ),
    (
        "Pooling2D",
        {"kernel_size": (3, 3), "type": "max", "stride": (2, 2), "padding": 1},
        (6, 5, 2),
        "normal",
    ),
    ("Pooling2D", {"kernel_size": (2, 2), "type": "avg", "stride": (1, 1)}, (4, 5, 3), "normal"),
    ("Lstm", {"size": 4}, (3,), "normal"),
    ("Gru", {"size": 3}, (4,), "normal"),
    ("Recurrent", {"size": 3, "activation": "rel"}, (2,), "normal"),
    ("Embedding", {"vocab_size": 7, "size": 3}, (1,), ("ids", 7)),
]


def run_library_layer(handler, name, kwargs, in_shape, kind, seed=3):
    """Forward and backward of Input >> layer >> SquareLoss; returns named numpy results."""
    import numpy as np

    factory = getattr(bs.layers, name)
    inp = bs.layers.Input({"default": ("T", "B", *in_shape)})
    loss = SquareLoss(name="Loss")
    inp >> factory(name="Layer", **kwargs) >> loss
    net = bs.Network.from_layer(loss, handler=handler)
    net.initialize(bs.initializers.Gaussian(0.3), seed=1)
    rng = np.random.RandomState(seed)
    shape = (3, 2, *in_shape)
    data = rng.randint(0, kind[1], shape) if kind != "normal" else rng.randn(*shape)
    net.provide_external_data({"default": data})
    net.forward_pass(training_pass=True)
    net.backward_pass()
    paths = ["Layer.outputs.default", "Loss.outputs.loss", "gradients"]
    if kind == "normal":
        paths.append("Input.output_deltas.default")
    return [(path, net.get(path)) for path in paths]
