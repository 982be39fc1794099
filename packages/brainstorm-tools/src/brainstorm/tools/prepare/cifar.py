"""``brainstorm-prepare-cifar10`` and ``-cifar100``: the binary CIFAR archives to HDF5.

Reads ``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz`` (the "binary
version" of https://www.cs.toronto.edu/~kriz/cifar.html), downloading it when it
is missing and the network allows. Only the known members are read from the
archive; nothing is extracted to disk.

Layout of the result (``N`` images each)::

    normalized_split/training    first 40000 training images
    normalized_split/validation  last 10000 training images
    normalized_split/test        the 10000 test images
    normalized_full/training     all 50000 training images
    normalized_full/test         the 10000 test images

each with ``default`` ``(1, N, 32, 32, 3)`` float32 (NHWC) and ``targets``
``(1, N, 1)`` uint8 (the class; CIFAR-100: the fine label). Every image is
normalized with the pixel-wise mean and standard deviation of
``normalized_split/training`` (computed in float64, stored as the file
attributes ``mean`` and ``std``, shaped ``(32, 32, 3)``).
"""

from __future__ import annotations

import tarfile
import zlib

import numpy as np

from brainstorm.tools.prepare._common import (
    PreparationError,
    add_validation_size,
    check_output,
    image_sets,
    locate_archive,
    make_parser,
    progress,
    resolve_paths,
    run,
    say,
    target_fill,
    write_dataset,
    write_hdf5,
)

__all__ = ["main_cifar10", "main_cifar100", "prepare_cifar", "read_cifar_archive", "DATASETS"]

IMAGE_BYTES = 32 * 32 * 3
VALIDATION_SIZE = 10000
_BLOCK = 1000  # images per normalization step


class _Dataset:
    def __init__(self, name, archive, url, members, label_bytes, label_index, classes):
        self.name = name
        self.archive = archive
        self.url = url
        self.members = members  # part -> list of member names
        self.label_bytes = label_bytes
        self.label_index = label_index
        self.classes = classes

    @property
    def output_name(self):
        return f"{self.name}.hdf5"


DATASETS = {
    "CIFAR-10": _Dataset(
        "CIFAR-10",
        "cifar-10-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        {
            "train": [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
            "test": ["cifar-10-batches-bin/test_batch.bin"],
        },
        label_bytes=1,
        label_index=0,
        classes=10,
    ),
    "CIFAR-100": _Dataset(
        "CIFAR-100",
        "cifar-100-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        {"train": ["cifar-100-binary/train.bin"], "test": ["cifar-100-binary/test.bin"]},
        label_bytes=2,
        label_index=1,  # byte 0 is the coarse label, byte 1 the fine one
        classes=100,
    ),
}

DESCRIPTION = """\
The {name} dataset is a labeled subset of the 80 million tiny images dataset.
It consists of 60000 32x32 colour images in {classes} classes{label_note}.
There are 50000 training images and 10000 test images.

The data was read from the binary version: {url}

Attributes
==========

description: This description.

mean: The pixel-wise mean of the first {n_train} training set images, shape
(32, 32, 3).

std: The pixel-wise standard deviation of the first {n_train} training set
images, shape (32, 32, 3).

Variants
========

normalized_full: Contains 'training' and 'test' sets. Image data has been
normalized by subtracting 'mean' and dividing by 'std'.

normalized_split: Contains 'training' (first {n_train} out of the full
training set), 'validation' (remaining {n_valid} out of the full training set)
and 'test' sets. Image data has been normalized by subtracting 'mean' and
dividing by 'std'.

Every set has 'default' (images in NHWC order, shape (1, N, 32, 32, 3),
float32) and 'targets' (class ids, shape (1, N, 1), uint8).
"""


def read_cifar_archive(path, dataset):
    """Read the records of a binary CIFAR archive.

    Args:
        path (str): the ``.tar.gz`` file.
        dataset (_Dataset): which CIFAR (an entry of :data:`DATASETS`).

    Returns:
        dict[str, tuple[numpy.ndarray, numpy.ndarray]]: part ('train',
        'test') -> (images ``(N, 32, 32, 3)`` uint8, labels ``(N,)`` uint8).

    Raises:
        PreparationError: for a missing member or a corrupt archive.
    """
    record = dataset.label_bytes + IMAGE_BYTES
    parts = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for part, members in dataset.members.items():
                records = []
                for member in members:
                    try:
                        f = archive.extractfile(member)
                    except KeyError:
                        f = None
                    if f is None:
                        raise PreparationError(
                            f"{path} has no file {member}; is it the binary version of "
                            f"{dataset.name} ({dataset.archive})?"
                        )
                    raw = f.read()
                    if len(raw) % record:
                        raise PreparationError(
                            f"{member} in {path} holds {len(raw)} bytes, not a multiple of "
                            f"the {record}-byte records (truncated or not {dataset.name})"
                        )
                    records.append(np.frombuffer(raw, dtype=np.uint8).reshape(-1, record))
                data = np.concatenate(records)
                labels = data[:, dataset.label_index].copy()
                if labels.size and labels.max() >= dataset.classes:
                    raise PreparationError(
                        f"{path} holds labels >= {dataset.classes}; is it {dataset.name}?"
                    )
                images = data[:, dataset.label_bytes :].reshape(-1, 3, 32, 32)
                parts[part] = (images.transpose(0, 2, 3, 1), labels)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise PreparationError(f"Cannot read {path}: {err}") from None
    return parts


def pixel_statistics(images):
    """Pixel-wise mean and standard deviation (population, float64) of ``images``."""
    n = images.shape[0]
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, n, _BLOCK):
        total += images[start : start + _BLOCK].sum(axis=0, dtype=np.float64)
    mean = total / n
    squares = np.zeros_like(mean)
    for start in range(0, n, _BLOCK):
        squares += ((images[start : start + _BLOCK] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(squares / n)


def prepare_cifar(args, dataset):
    """Run the command for parsed options (see :func:`main_cifar10`)."""
    data_dir, output = resolve_paths(args, dataset.output_name)
    check_output(output, args.force)
    archive = locate_archive(args, data_dir, dataset.archive, [dataset.url])
    say(f"Reading {archive} ...", args.quiet)
    parts = read_cifar_archive(archive, dataset)
    train_images = parts["train"][0]
    n_train, sets = image_sets(parts["train"], parts["test"], args.validation_size)
    mean, std = pixel_statistics(train_images[:n_train])  # of the split's training part
    scale = np.where(std > 0, std, 1.0)  # a constant pixel stays 0 instead of NaN

    def images(array, offset):
        def fill(start, stop):
            block = (array[offset + start : offset + stop] - mean) / scale
            return block.astype(np.float32)[None]

        return fill

    def write(f):
        f.attrs["description"] = DESCRIPTION.format(
            name=dataset.name,
            classes=dataset.classes,
            label_note=" (the fine labels are used)" if dataset.label_bytes == 2 else "",
            url=dataset.url,
            n_train=n_train,
            n_valid=args.validation_size,
        )
        f.attrs["mean"] = mean
        f.attrs["std"] = std
        total = sum(count for *_, count in sets.values())
        with progress(total, f"Writing {dataset.output_name}", args.quiet, "images") as bar:
            for name, (x, t, offset, count) in sets.items():
                group = f.create_group(name)
                write_dataset(
                    group, "default", (1, count, 32, 32, 3), np.float32, images(x, offset), 1, bar
                )
                write_dataset(group, "targets", (1, count, 1), np.uint8, target_fill(t, offset), 1)

    write_hdf5(output, write, args.force)
    say(f"Wrote {output}", args.quiet)


def build_parser(dataset):
    parser = make_parser(
        f"brainstorm-prepare-{dataset.name.lower().replace('-', '')}",
        f"Convert {dataset.archive} (the binary version of {dataset.name}) into "
        f"{dataset.output_name} for brainstorm (downloading it if missing).",
        dataset.output_name,
        f"the downloaded {dataset.archive} (default: DATA_DIR/{dataset.archive})",
    )
    add_validation_size(parser, VALIDATION_SIZE)
    return parser


def _main(name, argv):
    dataset = DATASETS[name]
    return run(lambda args: prepare_cifar(args, dataset), build_parser(dataset), argv)


def main_cifar10(argv=None):
    """Entry point of ``brainstorm-prepare-cifar10``; returns the exit code."""
    return _main("CIFAR-10", argv)


def main_cifar100(argv=None):
    """Entry point of ``brainstorm-prepare-cifar100``; returns the exit code."""
    return _main("CIFAR-100", argv)
