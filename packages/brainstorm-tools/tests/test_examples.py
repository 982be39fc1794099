"""Smoke test of the examples: each trains for a few updates on tiny generated data.

The data goes the way a user's does: small files in the original formats,
converted by the data commands, read by the examples from $BRAINSTORM_DATA_DIR.
The four examples run at the same time, in subprocesses.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.tools.prepare import cifar, enwik8, mnist

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TIMEOUT = 240

RUNS = {
    "mnist_pi": ["--epochs", "2", "--batch-size", "10"],
    "cifar10_cnn": ["--epochs", "2", "--batch-size", "5"],
    "hutter_lstm": [
        *("--epochs", "2", "--batch-size", "4", "--hidden", "8", "--monitor-interval", "3"),
    ],
    "custom_layer": ["--epochs", "2", "--batch-size", "10"],
}
BEST_FILES = {
    "mnist_pi": "mnist_pi_best.hdf5",
    "cifar10_cnn": "cifar10_cnn_best.hdf5",
    "hutter_lstm": "hutter_lstm_best.hdf5",
}

pytestmark = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason="the examples folder of the repository is not here"
)


def prepare_data(folder, make):
    make.mnist(folder, n_train=30, n_test=5)
    make.cifar10(folder / "cifar-10-binary.tar.gz", per_batch=3, n_test=2)
    rng = np.random.RandomState(0)
    text = np.frombuffer(b"abcde fg<>\n", dtype=np.uint8)[rng.randint(0, 11, 1000)]
    make.enwik8(folder / "enwik8.zip", text.tobytes())
    quiet = ["--data-dir", str(folder), "--quiet", "--no-download"]
    assert mnist.main([*quiet, "--validation-size", "10"]) == 0
    assert cifar.main_cifar10([*quiet, "--validation-size", "5"]) == 0
    # 84 training sequences of 10 characters in batches of 4: 21 updates per epoch
    assert enwik8.main([*quiet, "--seq-len", "10", "--batch-size", "4", "--test-chars", "80"]) == 0


def start(name, data_dir, work_dir, *extra):
    env = dict(os.environ, BRAINSTORM_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *extra],
        cwd=work_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process):
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"timed out after {TIMEOUT} s:\n{out[-2000:]}\n{err[-2000:]}")
    return process.returncode, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make):
    """Run all examples at once: name -> (exit code, stdout, stderr, working folder)."""
    data_dir = tmp_path_factory.mktemp("data")
    prepare_data(data_dir, make)
    processes = {}
    for name, extra in RUNS.items():
        work_dir = tmp_path_factory.mktemp(name)
        processes[name] = (start(name, data_dir, work_dir, *extra), work_dir)
    return {name: (*finish(process), work_dir) for name, (process, work_dir) in processes.items()}


@pytest.mark.parametrize("name", list(RUNS))
def test_example_runs(runs, name):
    code, out, err, work_dir = runs[name]
    assert code == 0, f"{name} failed:\n{out[-3000:]}\n{err[-3000:]}"
    assert "Epoch 2" in out
    assert "StopAfterEpoch" in out
    assert "Best validation" in out.splitlines()[-1]
    if name in BEST_FILES:
        net = bs.Network.from_hdf5(str(work_dir / BEST_FILES[name]))
        assert net.output_name == "Output.outputs.predictions"


def test_custom_layer_passes_the_layer_checks(runs):
    _, out, _, _ = runs["custom_layer"]
    assert "ScaledSquare passed the layer checks." in out


def test_hutter_lstm_monitors_on_updates(runs):
    _, out, _, _ = runs["hutter_lstm"]
    # validation every 3 updates (and once before training): 1 + 42 // 3 times
    assert out.count("\nvalidation\n") == 15


@pytest.mark.parametrize(
    "name, command", [("mnist_pi", "mnist"), ("cifar10_cnn", "cifar10"), ("hutter_lstm", "enwik8")]
)
def test_missing_data_names_the_command_that_prepares_it(tmp_path, name, command):
    code, _, err = finish(start(name, tmp_path, tmp_path))
    assert code == 1
    assert f"brainstorm-prepare-{command} --data-dir {tmp_path}" in err


def test_one_line_switches_to_the_gpu():
    for name in RUNS:
        lines = (EXAMPLES / f"{name}.py").read_text().splitlines()
        gpu = [line for line in lines if "PyCudaHandler" in line]
        assert gpu == ["# network.set_handler(bs.handlers.PyCudaHandler())"], name


def test_hutter_example_carries_the_context():
    source = (EXAMPLES / "hutter_lstm.py").read_text()
    assert "stepper.carry_context = True" in source
