"""The three benchmark networks in PyTorch, for a side-by-side comparison (optional).

``bench_train_step.py --peer torch`` times these next to Brainstorm's networks in
the same rounds (between the same two peak measurements). They are built to do
the same matrix products: the same layer sizes, batch and sequence length,
float32 on the CPU, no gradient for the input data, and a plain SGD update of
every parameter. Differences that remain: ``torch.nn.LSTM`` has no peephole
connections (three elementwise products fewer per step, same GEMMs), and
PyTorch computes convolutions and pooling in NCHW with its own kernels
(oneDNN / MKL on x86).

Imported only when PyTorch is installed; nothing of Brainstorm depends on it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["build", "version"]

LEARNING_RATE = 1e-3


def version():
    return f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"


class _Classifier:
    """A model, its inputs and targets, and one train step."""

    def __init__(self, model, inputs, targets, time_major=False):
        self.model = model
        self.inputs = inputs
        self.targets = targets
        self.time_major = time_major
        self.loss = nn.CrossEntropyLoss()
        self.parameters = [p for p in model.parameters() if p.requires_grad]

    def step(self):
        for p in self.parameters:
            p.grad = None
        outputs = self.model(self.inputs)
        if self.time_major:  # (T, B, classes) -> (T * B, classes)
            outputs = outputs.reshape(-1, outputs.shape[-1])
        self.loss(outputs, self.targets).backward()
        with torch.no_grad():
            for p in self.parameters:
                p.add_(p.grad, alpha=-LEARNING_RATE)


class _Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(205, 512)
        self.output = nn.Linear(512, 205)

    def forward(self, x):
        hidden, _ = self.lstm(x)
        return self.output(hidden)


def build(key, seed=0):
    """The PyTorch twin of a benchmark network (``'mlp'``, ``'cnn'`` or ``'lstm'``)."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    if key == "mlp":
        model = nn.Sequential(
            nn.Linear(784, 1200),
            nn.ReLU(),
            nn.Linear(1200, 1200),
            nn.ReLU(),
            nn.Linear(1200, 10),
        )
        inputs = torch.from_numpy(rng.randn(100, 784).astype(np.float32))
        targets = torch.from_numpy(rng.randint(0, 10, 100))
        return _Classifier(model, inputs, targets)
    if key == "cnn":
        layers = []
        channels = 3
        for filters in (32, 32, 64):
            layers += [
                nn.Conv2d(channels, filters, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2),
            ]
            channels = filters
        layers += [nn.Flatten(), nn.Linear(3 * 3 * 64, 64), nn.ReLU(), nn.Linear(64, 10)]
        inputs = torch.from_numpy(rng.randn(100, 3, 32, 32).astype(np.float32))
        targets = torch.from_numpy(rng.randint(0, 10, 100))
        return _Classifier(nn.Sequential(*layers), inputs, targets)
    if key == "lstm":
        symbols = rng.randint(0, 205, (100, 50))
        inputs = torch.from_numpy(np.eye(205, dtype=np.float32)[np.roll(symbols, 1, axis=0)])
        targets = torch.from_numpy(symbols.reshape(-1))
        return _Classifier(_Lstm(), inputs, targets, time_major=True)
    raise KeyError(key)
