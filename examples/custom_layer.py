#!/usr/bin/env python
"""A layer defined in this script, checked with brainstorm.testing, then trained on MNIST.

The layer, ``ScaledSquare``, computes ``y = scale * x**2 / 2`` per feature, with
a learned ``scale`` for each feature. A layer is two things (see the
"Internals" part of the documentation):

* a construction function that returns ``ConstructionWrapper.create(...)``;
* an implementation class whose name ends in ``LayerImpl``, derived from
  ``Layer``, which declares its buffers in ``setup`` and computes with handler
  operations only (so it runs on the GPU as well).

Defining the class is enough for brainstorm to find it: no registration is
needed in a script. (A distribution registers its layers as entry points, see
plugins/brainstorm-example-plugin.)

Prepare the data first with ``brainstorm-prepare-mnist --data-dir ../data``;
``--epochs 1`` makes a short run.
"""

import argparse
import os
import sys
from collections import OrderedDict

import h5py

import brainstorm as bs
from brainstorm.data_iterators import Minibatches
from brainstorm.initializers import Gaussian
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.testing import check_layer, get_test_configurations
from brainstorm.utils import flatten_time_and_features

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=500, help="stop after this many epochs (500)")
parser.add_argument("--batch-size", type=int, default=100, help="sequences per batch (100)")
args = parser.parse_args()

bs.global_rnd.set_seed(42)


# ------------------------------ Custom Layer ------------------------------- #


def ScaledSquare(name=None):
    """Create a layer computing ``scale * x**2 / 2`` per feature (``scale`` is learned)."""
    return ConstructionWrapper.create(ScaledSquareLayerImpl, name=name)


class ScaledSquareLayerImpl(Layer):
    # one input named 'default' with time and batch axes and any features
    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    # no keyword arguments besides the name
    expected_kwargs = set()

    def setup(self, kwargs, in_shapes):
        # the output has the shape of the input; one parameter per feature;
        # an internal buffer for x**2 and a backward-only one for scratch work
        features = in_shapes["default"].feature_shape
        size = in_shapes["default"].feature_size
        outputs = OrderedDict(default=BufferStructure("T", "B", *features))
        parameters = OrderedDict(scale=BufferStructure(size))
        internals = OrderedDict(
            squares=BufferStructure("T", "B", size),
            scratch=BufferStructure("T", "B", size, is_backward_only=True),
        )
        return outputs, parameters, internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        x = flatten_time_and_features(buffers.inputs.default)
        y = flatten_time_and_features(buffers.outputs.default)
        squares = flatten_time_and_features(buffers.internals.squares)
        scale = buffers.parameters.scale
        scale = scale.reshape((1, scale.shape[0]))  # a row vector, for the *_mv operations
        _h.mult_tt(x, x, squares)
        _h.mult_st(0.5, squares, squares)
        _h.mult_mv(squares, scale, y)

    def backward_pass(self, buffers):
        _h = self.handler
        x = flatten_time_and_features(buffers.inputs.default)
        dx = flatten_time_and_features(buffers.input_deltas.default)
        dy = flatten_time_and_features(buffers.output_deltas.default)
        squares = flatten_time_and_features(buffers.internals.squares)
        scratch = flatten_time_and_features(buffers.internals.scratch)
        scale = buffers.parameters.scale
        scale = scale.reshape((1, scale.shape[0]))
        dscale = buffers.gradients.scale
        dscale = dscale.reshape((1, dscale.shape[0]))
        # input deltas are ADDED: dx += dy * scale * x
        _h.mult_tt(dy, x, scratch)
        _h.mult_add_mv(scratch, scale, dx)
        # gradient of the scale: sum over time and batch of dy * x**2 / 2
        _h.mult_tt(dy, squares, scratch)
        _h.sum_t(scratch, axis=0, out=dscale)


# Check the derivatives (finite differences), the adding of deltas and the
# description round trip, for several time and batch sizes.
for configuration in get_test_configurations():
    check_layer(
        ScaledSquare(),
        {"default": (3, 2)},
        time_steps=configuration["time_steps"],
        batch_size=configuration["batch_size"],
    )
print("ScaledSquare passed the layer checks.")

# ---------------------------- Set up Iterators ----------------------------- #

data_dir = os.environ.get("BRAINSTORM_DATA_DIR", "../data")
data_file = os.path.join(data_dir, "MNIST.hdf5")
if not os.path.exists(data_file):
    sys.exit(
        f"{data_file} not found; prepare it with:  brainstorm-prepare-mnist --data-dir {data_dir}"
    )
with h5py.File(data_file, "r") as f:
    ds = f["normalized_split"]
    x_tr, y_tr = ds["training"]["default"][:], ds["training"]["targets"][:]
    x_va, y_va = ds["validation"]["default"][:], ds["validation"]["targets"][:]

getter_tr = Minibatches(args.batch_size, default=x_tr, targets=y_tr)
getter_va = Minibatches(args.batch_size, default=x_va, targets=y_va)

# ----------------------------- Set up Network ------------------------------ #

inp, out = bs.tools.get_in_out_layers("classification", (28, 28, 1), 10)
network = bs.Network.from_layer(
    inp
    >> bs.layers.FullyConnected(500, name="Hid1", activation="linear")
    >> ScaledSquare(name="MySquareLayer")
    >> out
)

# Uncomment the next line to use the GPU (needs brainstorm-handlers-cuda)
# network.set_handler(bs.handlers.PyCudaHandler())
network.initialize({"MySquareLayer": {"scale": 1.0}, "default": Gaussian(0.01)})

# ----------------------------- Set up Trainer ------------------------------ #

trainer = bs.Trainer(bs.training.MomentumStepper(learning_rate=0.01, momentum=0.9))
trainer.add_hook(bs.hooks.ProgressBar())
scorers = [bs.scorers.Accuracy(out_name="Output.outputs.predictions")]
trainer.add_hook(bs.hooks.MonitorScores("valid_getter", scorers, name="validation"))
trainer.add_hook(bs.hooks.EarlyStopper("validation.Accuracy", patience=10, criterion="max"))
trainer.add_hook(bs.hooks.StopAfterEpoch(args.epochs))

# -------------------------------- Train ------------------------------------ #

trainer.train(network, getter_tr, valid_getter=getter_va)
print("Best validation set accuracy:", max(trainer.logs["validation"]["Accuracy"]))
