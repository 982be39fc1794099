#!/usr/bin/env python
"""CIFAR-10 with a small convolutional network (the walkthrough of the documentation).

Prepare the data first (it lands in $BRAINSTORM_DATA_DIR, or pass --data-dir):

    brainstorm-prepare-cifar10 --data-dir ../data

Then run ``python cifar10_cnn.py`` from this folder, or anywhere with
BRAINSTORM_DATA_DIR set. ``--epochs 1`` makes a short run. The best network is
saved as cifar10_cnn_best.hdf5 in the current folder.
"""

import argparse
import os
import sys

import h5py

import brainstorm as bs
from brainstorm.data_iterators import Minibatches
from brainstorm.initializers import Gaussian

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=20, help="stop after this many epochs (20)")
parser.add_argument("--batch-size", type=int, default=100, help="images per batch (100)")
args = parser.parse_args()

bs.global_rnd.set_seed(42)

# ---------------------------- Set up Iterators ----------------------------- #

data_dir = os.environ.get("BRAINSTORM_DATA_DIR", "../data")
data_file = os.path.join(data_dir, "CIFAR-10.hdf5")
if not os.path.exists(data_file):
    sys.exit(
        f"{data_file} not found; prepare it with:  brainstorm-prepare-cifar10 --data-dir {data_dir}"
    )
with h5py.File(data_file, "r") as f:
    ds = f["normalized_split"]
    x_tr, y_tr = ds["training"]["default"][:], ds["training"]["targets"][:]
    x_va, y_va = ds["validation"]["default"][:], ds["validation"]["targets"][:]

getter_tr = Minibatches(args.batch_size, default=x_tr, targets=y_tr)
getter_va = Minibatches(args.batch_size, default=x_va, targets=y_va)

# ----------------------------- Set up Network ------------------------------ #

inp, fc = bs.tools.get_in_out_layers("classification", (32, 32, 3), 10)

(
    inp
    >> bs.layers.Convolution2D(32, kernel_size=(5, 5), padding=2, name="Conv1")
    >> bs.layers.Pooling2D(type="max", kernel_size=(3, 3), stride=(2, 2))
    >> bs.layers.Convolution2D(32, kernel_size=(5, 5), padding=2, name="Conv2")
    >> bs.layers.Pooling2D(type="max", kernel_size=(3, 3), stride=(2, 2))
    >> bs.layers.Convolution2D(64, kernel_size=(5, 5), padding=2, name="Conv3")
    >> bs.layers.Pooling2D(type="max", kernel_size=(3, 3), stride=(2, 2))
    >> bs.layers.FullyConnected(64, name="FC")
    >> fc
)

network = bs.Network.from_layer(fc)

# Uncomment the next line to use the GPU (needs brainstorm-handlers-cuda)
# network.set_handler(bs.handlers.PyCudaHandler())
network.initialize(
    {
        "Conv*": {"W": Gaussian(0.01), "bias": 0},
        "FC": {"W": Gaussian(0.1), "bias": 0},
        "Output_projection": {"W": Gaussian(0.1), "bias": 0},
    }
)

# ----------------------------- Set up Trainer ------------------------------ #

trainer = bs.Trainer(bs.training.MomentumStepper(learning_rate=0.01, momentum=0.9))
trainer.add_hook(bs.hooks.ProgressBar())
scorers = [bs.scorers.Accuracy(out_name="Output.outputs.predictions")]
trainer.train_scorers = scorers
trainer.add_hook(bs.hooks.MonitorScores("valid_getter", scorers, name="validation"))
trainer.add_hook(
    bs.hooks.SaveBestNetwork(
        "validation.Accuracy",
        filename="cifar10_cnn_best.hdf5",
        name="best weights",
        criterion="max",
    )
)
trainer.add_hook(bs.hooks.StopAfterEpoch(args.epochs))

# -------------------------------- Train ------------------------------------ #

trainer.train(network, getter_tr, valid_getter=getter_va)
print("Best validation accuracy:", max(trainer.logs["validation"]["Accuracy"]))
