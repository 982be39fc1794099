"""The main job: train a Brainstorm network on real handwritten digits.

The digits are scikit-learn's (1797 grey 8x8 images of the digits 0-9, shipped
inside the scikit-learn package: no download). The network is the reference's
``mnist_pi`` example scaled to them: dropout on the inputs, two rectified hidden
layers with dropout, a softmax output, a max-norm constraint on the weights and
SGD with momentum whose learning rate decays by 3% per epoch. The network with
the lowest validation loss is saved to an HDF5 file, reloaded from there, and
scored on the test set (about 97-98% accuracy, in about ten seconds).

Run it from anywhere (it needs scikit-learn next to brainstorm-core,
brainstorm-layers and brainstorm-training)::

    python examples/digits_demo.py [--epochs N] [--output-dir DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

import numpy as np

import brainstorm as bs
from brainstorm.data_iterators import Minibatches, Undivided


def load_digits_split(rnd):
    """Digits scaled to [0, 1], shaped ``(1, N, 64)``, split 1197/300/300."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("This example needs scikit-learn: pip install scikit-learn")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel values 0..16
    t = digits.target.astype(np.int64)
    order = rnd.permutation(len(x))
    x, t = x[order], t[order]
    parts = {"training": slice(0, 1197), "validation": slice(1197, 1497), "test": slice(1497, None)}
    return {
        name: (x[part].reshape(1, -1, 64), t[part].reshape(1, -1, 1))
        for name, part in parts.items()
    }


def build_network():
    """Input -> Dropout -> Hid1 -> Dropout -> Hid2 -> Dropout -> 10 -> SoftmaxCE -> Loss."""
    inp = bs.layers.Input({"default": ("T", "B", 64), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    (
        inp - "default"
        >> bs.layers.Dropout(drop_prob=0.2)
        >> bs.layers.FullyConnected(256, activation="rel", name="Hid1")
        >> bs.layers.Dropout(drop_prob=0.5)
        >> bs.layers.FullyConnected(256, activation="rel", name="Hid2")
        >> bs.layers.Dropout(drop_prob=0.5)
        >> bs.layers.FullyConnected(10, activation="linear", name="Output_projection")
        >> out
    )
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out)
    net.initialize({"*": {"W": bs.initializers.Gaussian(0.05), "bias": 0}})
    net.set_weight_modifiers({"Hid*": {"W": bs.value_modifiers.ConstrainL2Norm(3.0)}})
    return net


def one_blas_thread():
    """Matrices this small multiply faster on one BLAS thread, and a busy machine
    slows multi-threaded BLAS down by an order of magnitude; threadpoolctl comes
    with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class EpochSummary(bs.hooks.Hook):
    """One line per epoch with the logged losses and accuracies (a hook of our own)."""

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        valid = logs["validation"]
        line = f"epoch {epoch_nr:3d}  lr {stepper.learning_rate:.3f}"
        if epoch_nr > 0:
            train = logs["rolling_training"]
            line += (
                f" | training loss {train['total_loss'][-1]:.3f}"
                f" accuracy {train['Accuracy'][-1]:.3f}"
            )
        else:
            line += f" | {'before training':<34}"
        line += (
            f" | validation loss {valid['total_loss'][-1]:.3f} accuracy {valid['Accuracy'][-1]:.3f}"
        )
        if np.argmin(valid["total_loss"]) == len(valid["total_loss"]) - 1:
            line += "  (best: saved)"
        print(line, flush=True)


def main(argv=None):
    """Parse the command line and run the demo with one BLAS thread."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs to train (default 100)")
    parser.add_argument(
        "--output-dir",
        default=None,
        help="where to write the best network (default: a new temporary folder)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print the trainer's full logs of every epoch"
    )
    args = parser.parse_args(argv)
    with one_blas_thread():
        return run(args)


def run(args):
    """Train, save the best network, reload it and score it on the test set."""
    started = time.perf_counter()

    bs.global_rnd.set_seed(42)
    data = load_digits_split(bs.global_rnd.create_random_state())
    x_tr, t_tr = data["training"]
    x_va, t_va = data["validation"]
    x_te, t_te = data["test"]
    print(
        f"Handwritten digits (scikit-learn): {x_tr.shape[1]} training, "
        f"{x_va.shape[1]} validation, {x_te.shape[1]} test images of 8x8 pixels"
    )
    getter_tr = Minibatches(32, default=x_tr, targets=t_tr)
    getter_va = Minibatches(100, shuffle=False, default=x_va, targets=t_va)

    net = build_network()
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="brainstorm-digits-")
    os.makedirs(out_dir, exist_ok=True)
    best_file = os.path.abspath(os.path.join(out_dir, "digits_best.hdf5"))
    print(f"The network with the lowest validation loss is saved to {best_file}")

    learning_rate = 0.5
    trainer = bs.Trainer(
        bs.training.MomentumStepper(learning_rate=learning_rate, momentum=0.9),
        verbose=args.verbose,
    )
    trainer.add_hook(bs.hooks.ProgressBar(leave=args.verbose))
    scorers = [bs.scorers.Accuracy(out_name="Output.outputs.predictions")]
    trainer.train_scorers = scorers
    trainer.add_hook(bs.hooks.MonitorScores("valid_getter", scorers, name="validation"))
    trainer.add_hook(
        bs.hooks.SaveBestNetwork(
            "validation.total_loss", filename=best_file, name="best weights", criterion="min"
        )
    )
    if not args.verbose:
        trainer.add_hook(EpochSummary())
    # after the summary, so that it shows the learning rate used in the epoch
    trainer.add_hook(bs.hooks.ModifyStepperAttribute(bs.training.Exponential(learning_rate, 0.97)))
    trainer.add_hook(bs.hooks.StopAfterEpoch(args.epochs))
    trainer.train(net, getter_tr, valid_getter=getter_va)

    losses = trainer.logs["validation"]["total_loss"]
    best_epoch = int(np.argmin(losses))
    print()
    print(
        f"Best validation loss {losses[best_epoch]:.4f} at epoch {best_epoch} (validation "
        f"accuracy {trainer.logs['validation']['Accuracy'][best_epoch]:.4f}); "
        f"that network is in {best_file}"
    )
    best_net = bs.Network.from_hdf5(best_file)
    test = bs.training.evaluate(best_net, Undivided(default=x_te, targets=t_te), scorers)
    print(f"Test accuracy of the best network, reloaded from its file: {test['Accuracy']:.4f}")
    print(f"Wall time: {time.perf_counter() - started:.1f} s")
    return test["Accuracy"]


if __name__ == "__main__":
    main()
