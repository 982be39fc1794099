"""``brainstorm-prepare-mnist``: MNIST from the IDX files to ``MNIST.hdf5``.

Reads the four standard files (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``; uncompressed ones work too), downloading them
when they are missing and the network allows. Never unpickles anything.

Layout of the result (``N`` images each)::

    normalized_split/training    first 50000 training images
    normalized_split/validation  last 10000 training images
    normalized_split/test        the 10000 test images
    normalized_full/training     all 60000 training images
    normalized_full/test         the 10000 test images

each with ``default`` ``(1, N, 28, 28, 1)`` float32 (pixel values / 255) and
``targets`` ``(1, N, 1)`` int64 (the digit).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from brainstorm.tools.prepare._common import (
    PreparationError,
    add_validation_size,
    check_output,
    find_or_download,
    image_sets,
    make_parser,
    progress,
    resolve_paths,
    run,
    say,
    target_fill,
    write_dataset,
    write_hdf5,
)

__all__ = ["main", "prepare_mnist", "read_idx", "FILES", "MIRRORS"]

#: part -> (images file, labels file), as distributed.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: Where the files can be downloaded from, tried in order.
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
OUTPUT_NAME = "MNIST.hdf5"
VALIDATION_SIZE = 10000

# IDX type codes -> big-endian NumPy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

DESCRIPTION = """\
The MNIST handwritten digit database is a preprocessed subset of NIST's
Special Database 3 and Special Database 1. It consists of 70000 28x28
grey-scale images of handwritten digits (0-9), with approximately 7000 images
per class. There are 60000 training images and 10000 test images.

The data was read from the IDX files of http://yann.lecun.com/exdb/mnist/

Attributes
==========

description: This description.

Variants
========

normalized_full: Contains 'training' and 'test' sets. Image data has been
normalized by dividing all pixel values by 255.

normalized_split: Contains 'training' (first {n_train} out of the full
training set), 'validation' (remaining {n_valid} out of the full training set)
and 'test' sets. Image data has been normalized by dividing all pixel values
by 255.

Every set has 'default' (images, shape (1, N, 28, 28, 1), float32) and
'targets' (digits, shape (1, N, 1), int64).
"""


def read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into a NumPy array.

    Raises:
        PreparationError: if the file is not a valid IDX file.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: corrupt compressed data
        raise PreparationError(f"Cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise PreparationError(f"{path} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise PreparationError(f"{path} is truncated (incomplete header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if len(raw) - header != expected:
        raise PreparationError(
            f"{path} has {len(raw) - header} bytes of data, but its header announces "
            f"{shape} = {expected} bytes (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _read_part(paths):
    images_path, labels_path = paths
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise PreparationError(
            f"{images_path} must hold 28x28 images, but holds an array of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise PreparationError(
            f"{labels_path} must hold one label per image of {images_path} "
            f"({images.shape[0]}), but holds an array of shape {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise PreparationError(f"{labels_path} holds labels > 9; is it an MNIST labels file?")
    return images, labels.astype(np.int64)


def _locate(args, data_dir):
    source = args.source if args.source is not None else data_dir
    # a data folder that does not exist yet is made by the downloads
    if args.source is not None and not os.path.isdir(source):
        raise PreparationError(f"--source must be the folder holding the IDX files: {source}")
    paths = {}
    for part, names in FILES.items():
        found = []
        for name in names:
            plain = name[: -len(".gz")]
            found.append(
                find_or_download(
                    [os.path.join(source, name), os.path.join(source, plain)],
                    [mirror + name for mirror in MIRRORS],
                    os.path.join(source, name),
                    not args.no_download,
                    args.quiet,
                    name,
                )
            )
        paths[part] = found
    return paths


def prepare_mnist(args):
    """Run the command for parsed options (see :func:`main`)."""
    data_dir, output = resolve_paths(args, OUTPUT_NAME)
    check_output(output, args.force)
    paths = _locate(args, data_dir)
    say("Reading the IDX files ...", args.quiet)
    train = _read_part(paths["train"])
    test = _read_part(paths["test"])
    n_train, sets = image_sets(train, test, args.validation_size)

    def images(array, offset):
        def fill(start, stop):
            block = array[offset + start : offset + stop].astype(np.float32) / np.float32(255)
            return block.reshape((1, stop - start, 28, 28, 1))

        return fill

    def write(f):
        f.attrs["description"] = DESCRIPTION.format(n_train=n_train, n_valid=args.validation_size)
        total = sum(count for *_, count in sets.values())
        with progress(total, "Writing MNIST.hdf5", args.quiet, "images") as bar:
            for name, (x, t, offset, count) in sets.items():
                group = f.create_group(name)
                write_dataset(
                    group, "default", (1, count, 28, 28, 1), np.float32, images(x, offset), 1, bar
                )
                write_dataset(group, "targets", (1, count, 1), np.int64, target_fill(t, offset), 1)

    write_hdf5(output, write, args.force)
    say(f"Wrote {output}", args.quiet)


def build_parser():
    parser = make_parser(
        "brainstorm-prepare-mnist",
        "Convert the MNIST IDX files into MNIST.hdf5 for brainstorm (downloading them if missing).",
        OUTPUT_NAME,
        "the folder holding the four IDX files (default: the data folder)",
    )
    add_validation_size(parser, VALIDATION_SIZE)
    return parser


def main(argv=None):
    """Entry point of ``brainstorm-prepare-mnist``; returns the exit code."""
    return run(prepare_mnist, build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
