#!/usr/bin/env python
"""MNIST, permutation invariant: an MLP with dropout (the reference's mnist_pi example).

Prepare the data first (it lands in $BRAINSTORM_DATA_DIR, or pass --data-dir):

    brainstorm-prepare-mnist --data-dir ../data

Then run ``python mnist_pi.py`` from this folder, or anywhere with
BRAINSTORM_DATA_DIR set. ``--epochs 1`` makes a short run. The best network is
saved as mnist_pi_best.hdf5 in the current folder.
"""

import argparse
import os
import sys

import h5py

import brainstorm as bs
from brainstorm.data_iterators import Minibatches
from brainstorm.initializers import Gaussian

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=500, help="stop after this many epochs (500)")
parser.add_argument("--batch-size", type=int, default=100, help="sequences per batch (100)")
args = parser.parse_args()

bs.global_rnd.set_seed(42)

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

inp, fc = bs.tools.get_in_out_layers("classification", (28, 28, 1), 10, projection_name="FC")
network = bs.Network.from_layer(
    inp
    >> bs.layers.Dropout(drop_prob=0.2)
    >> bs.layers.FullyConnected(1200, name="Hid1", activation="rel")
    >> bs.layers.Dropout(drop_prob=0.5)
    >> bs.layers.FullyConnected(1200, name="Hid2", activation="rel")
    >> bs.layers.Dropout(drop_prob=0.5)
    >> fc
)

# Uncomment the next line to use the GPU (needs brainstorm-handlers-cuda)
# network.set_handler(bs.handlers.PyCudaHandler())
network.initialize(Gaussian(0.01))
network.set_weight_modifiers({"FC": bs.value_modifiers.ConstrainL2Norm(1)})

# ----------------------------- Set up Trainer ------------------------------ #

trainer = bs.Trainer(bs.training.MomentumStepper(learning_rate=0.1, momentum=0.9))
trainer.add_hook(bs.hooks.ProgressBar())
scorers = [bs.scorers.Accuracy(out_name="Output.outputs.predictions")]
trainer.add_hook(bs.hooks.MonitorScores("valid_getter", scorers, name="validation"))
trainer.add_hook(
    bs.hooks.SaveBestNetwork(
        "validation.Accuracy", filename="mnist_pi_best.hdf5", name="best weights", criterion="max"
    )
)
trainer.add_hook(bs.hooks.StopAfterEpoch(args.epochs))

# -------------------------------- Train ------------------------------------ #

trainer.train(network, getter_tr, valid_getter=getter_va)
print("Best validation set accuracy:", max(trainer.logs["validation"]["Accuracy"]))
