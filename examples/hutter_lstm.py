#!/usr/bin/env python
"""Character-level language model of the Hutter Prize data (enwik8) with one LSTM.

Prepare the data first (it lands in $BRAINSTORM_DATA_DIR, or pass --data-dir):

    brainstorm-prepare-enwik8 --data-dir ../data

HutterPrize.hdf5 is laid out for batches of 100 sequences taken in order:
sequence k of batch b + 1 continues sequence k of batch b. So the LSTM state
at the end of a batch is the right start for the next one, and this example
passes it on (the context), which the reference example forgot: there every
batch started from zero. The state is reset at the start of every epoch.

``--epochs``, ``--hidden`` and ``--batch-size`` (which must match the
``--batch-size`` the data was prepared with) make short runs possible. The
best network is saved as hutter_lstm_best.hdf5 in the current folder.
"""

import argparse
import os
import sys

import h5py

import brainstorm as bs
from brainstorm.data_iterators import Minibatches, OneHot
from brainstorm.initializers import Gaussian

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=500, help="stop after this many epochs (500)")
parser.add_argument("--batch-size", type=int, default=100, help="sequences per batch (100)")
parser.add_argument("--hidden", type=int, default=1000, help="LSTM cells (1000)")
parser.add_argument(
    "--monitor-interval", type=int, default=3000, help="updates between validations (3000)"
)
args = parser.parse_args()

bs.global_rnd.set_seed(42)


# ---------------------------- Set up Iterators ----------------------------- #

data_dir = os.environ.get("BRAINSTORM_DATA_DIR", "../data")
data_file = os.path.join(data_dir, "HutterPrize.hdf5")
if not os.path.exists(data_file):
    sys.exit(
        f"{data_file} not found; prepare it with:  brainstorm-prepare-enwik8 --data-dir {data_dir}"
    )
with h5py.File(data_file, "r") as f:
    vocabulary = len(f.attrs["unique"])  # 205 for enwik8
    ds = f["split"]
    x_tr, y_tr = ds["training"]["default"][:], ds["training"]["targets"][:]
    x_va, y_va = ds["validation"]["default"][:], ds["validation"]["targets"][:]

# shuffle=False keeps the batches in the order that continues the sequences
getter_tr = OneHot(
    Minibatches(args.batch_size, default=x_tr, targets=y_tr, shuffle=False),
    {"default": vocabulary},
)
getter_va = OneHot(
    Minibatches(args.batch_size, default=x_va, targets=y_va, shuffle=False),
    {"default": vocabulary},
)

# ----------------------------- Set up Network ------------------------------ #

network = bs.tools.create_net_from_spec("classification", vocabulary, vocabulary, f"L{args.hidden}")

# Uncomment the next line to use the GPU (needs brainstorm-handlers-cuda)
# network.set_handler(bs.handlers.PyCudaHandler())
network.initialize(Gaussian(0.01))

# ----------------------------- Set up Trainer ------------------------------ #

stepper = bs.training.MomentumStepper(learning_rate=0.01, momentum=0.9)
stepper.carry_context = True  # each batch continues the sequences of the previous one
trainer = bs.Trainer(stepper)
trainer.add_hook(bs.hooks.ProgressBar())
scorers = [bs.scorers.Accuracy(out_name="Output.outputs.predictions")]
trainer.add_hook(
    bs.hooks.MonitorScores(
        "valid_getter",
        scorers,
        name="validation",
        interval=args.monitor_interval,
        timescale="update",
    )
)
trainer.add_hook(
    bs.hooks.SaveBestNetwork(
        "validation.total_loss",
        filename="hutter_lstm_best.hdf5",
        name="best weights",
        criterion="min",
    )
)
trainer.add_hook(bs.hooks.StopAfterEpoch(args.epochs))

# -------------------------------- Train ------------------------------------ #

trainer.train(network, getter_tr, valid_getter=getter_va)
# the reference printed the maximum here
print("Best validation set loss:", min(trainer.logs["validation"]["total_loss"]))
