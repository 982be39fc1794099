"""The documentation's walkthrough (cifar10_cnn.py), run as written on in-memory data.

Differences to the text: the data are small random images held in memory
instead of the CIFAR-10 file (16x16 instead of 32x32, which the three poolings
still reduce to 1x1), there is no GPU (``set_handler(PyCudaHandler())`` is
left out), and if brainstorm-tools is not installed, an equivalent of
``get_in_out_layers`` is built here; if the convolution layers are not
installed, each ``Convolution2D`` is replaced by a ``FullyConnected`` layer of
the same name and the poolings are left out.
"""

import numpy as np

import brainstorm as bs
from brainstorm.data_iterators import Minibatches
from brainstorm.initializers import Gaussian

HAS_CONV = hasattr(bs.layers, "Convolution2D") and hasattr(bs.layers, "Pooling2D")
SIZE = 16


def get_in_out_layers(task_type, in_shape, out_size):
    """``bs.tools.get_in_out_layers`` for classification, if tools is installed."""
    try:
        tools = bs.tools
    except AttributeError:
        tools = None
    if tools is not None:
        return tools.get_in_out_layers(task_type, in_shape, out_size)
    assert task_type == "classification"
    inp = bs.layers.Input({"default": ("T", "B", *in_shape), "targets": ("T", "B", 1)})
    fc = bs.layers.FullyConnected(out_size, activation="linear", name="Output_projection")
    out = bs.layers.SoftmaxCE(name="Output")
    fc >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    return inp, fc


def make_images(n, rnd):
    """Images whose class is the brightest of 10 regions (learnable, in memory)."""
    targets = rnd.randint(0, 10, size=(1, n, 1))
    images = rnd.uniform(0, 0.5, size=(1, n, SIZE, SIZE, 3))
    for i, label in enumerate(targets[0, :, 0]):
        row, col = divmod(int(label), 5)
        images[0, i, row * 8 : row * 8 + 8, col * 3 : col * 3 + 3, :] += 0.5
    return images, targets


def test_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    bs.global_rnd.set_seed(42)

    rnd = np.random.RandomState(0)
    ds = {"training": make_images(20, rnd), "validation": make_images(20, rnd)}
    getter_tr = Minibatches(100, default=ds["training"][0], targets=ds["training"][1])
    getter_va = Minibatches(100, default=ds["validation"][0], targets=ds["validation"][1])

    inp, fc = get_in_out_layers("classification", (SIZE, SIZE, 3), 10)

    if HAS_CONV:
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
    else:
        (
            inp
            >> bs.layers.FullyConnected(32, name="Conv1")
            >> bs.layers.FullyConnected(32, name="Conv2")
            >> bs.layers.FullyConnected(64, name="Conv3")
            >> bs.layers.FullyConnected(64, name="FC")
            >> fc
        )

    network = bs.Network.from_layer(fc)

    network.initialize(
        {
            "Conv*": {"W": Gaussian(0.01), "bias": 0},
            "FC": {"W": Gaussian(0.1), "bias": 0},
            "Output_projection": {"W": Gaussian(0.1), "bias": 0},
        }
    )

    trainer = bs.Trainer(bs.training.MomentumStepper(learning_rate=0.01, momentum=0.9))
    trainer.add_hook(bs.hooks.ProgressBar())

    scorers = [bs.scorers.Accuracy(out_name="Output.outputs.probabilities")]
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

    trainer.add_hook(bs.hooks.StopAfterEpoch(20))

    trainer.train(network, getter_tr, valid_getter=getter_va)

    print("Best validation accuracy:", max(trainer.logs["validation"]["Accuracy"]))

    # what the walkthrough promises
    out = capsys.readouterr()
    assert "Best validation accuracy:" in out.out
    assert "Epoch 20" in out.out and "Epoch 20: 100%" in out.err
    assert trainer.current_epoch_nr == 20
    accuracies = trainer.logs["validation"]["Accuracy"]
    assert len(accuracies) == 21
    assert len(trainer.logs["rolling_training"]["Accuracy"]) == 20
    assert (tmp_path / "cifar10_cnn_best.hdf5").exists()
    best = bs.Network.from_hdf5("cifar10_cnn_best.hdf5")
    result = bs.training.evaluate(best, getter_va, scorers)
    assert result["Accuracy"] == max(accuracies)
