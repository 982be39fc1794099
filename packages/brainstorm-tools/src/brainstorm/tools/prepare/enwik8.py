"""``brainstorm-prepare-enwik8``: the Hutter Prize data (enwik8.zip) to ``HutterPrize.hdf5``.

Reads ``enwik8.zip`` (http://mattmahoney.net/dc/enwik8.zip, 100 million bytes of
Wikipedia XML), downloading it when it is missing and the network allows, and
prepares it for character-level language modelling:

* every byte value that occurs becomes a class id, in increasing order of the
  byte (the file attribute ``unique`` lists the byte of each id; 205 for enwik8);
* the targets are the next character (the very last target of the test part,
  which has no next character, is 0);
* the last 10 million characters are validation (5 million) and test
  (5 million) data, the rest training data;
* each part is cut into sequences of 100 characters laid out for batches of 100
  sequences such that sequence ``k`` of batch ``b + 1`` continues sequence ``k``
  of batch ``b``: pass the context from batch to batch (``Minibatches(100,
  shuffle=False)``) and the network reads the text without a break.

Layout: ``split/{training, validation, test}/{default, targets}``, each
``(100, N, 1)`` uint8 (time, sequences, 1).
"""

from __future__ import annotations

import zipfile
import zlib

import numpy as np

from brainstorm.tools.prepare._common import (
    PreparationError,
    check_output,
    locate_archive,
    make_parser,
    progress,
    resolve_paths,
    run,
    say,
    write_dataset,
    write_hdf5,
)

__all__ = ["main", "prepare_enwik8", "convert_to_batches", "encode_bytes"]

URL = "http://mattmahoney.net/dc/enwik8.zip"
ARCHIVE = "enwik8.zip"
MEMBER = "enwik8"
OUTPUT_NAME = "HutterPrize.hdf5"
SEQ_LEN = 100
BATCH_SIZE = 100
TEST_CHARS = 5_000_000

DESCRIPTION = """\
The Hutter Prize Wikipedia dataset, prepared for character-level language
modeling.

The data was obtained from the link:
http://mattmahoney.net/dc/enwik8.zip

Attributes
==========

description: This description.

unique: A 1-D array of the unique characters (byte values 0-255) in the
dataset. The index of each character was used as its class ID.

Variants
========

split: Split into 'training', 'validation' and 'test' sets of {n_train},
{n_valid} and {n_test} characters respectively. The targets are the next
characters (the last target of the test set is 0). Each sequence is {seq_len}
characters long. The dataset has been prepared expecting minibatches of
{batch_size} sequences: sequence k of batch b+1 continues sequence k of batch
b. Data and targets are uint8 arrays of shape ({seq_len}, N, 1).
"""


def encode_bytes(raw):
    """Map bytes to class ids in increasing byte order.

    Args:
        raw (numpy.ndarray): uint8 data.

    Returns:
        tuple[numpy.ndarray, numpy.ndarray]: the bytes that occur (``unique``,
        uint8) and the ids of ``raw`` (uint8, same shape), such that
        ``unique[ids] == raw``.
    """
    present = np.bincount(raw, minlength=256) > 0
    unique = np.flatnonzero(present).astype(np.uint8)
    table = np.zeros(256, dtype=np.uint8)
    table[unique] = np.arange(unique.size, dtype=np.uint8)
    return unique, table[raw]


def convert_to_batches(serial_data, length, batch_size):
    """Lay a 1-D sequence out as ``(length, N, 1)`` for stateful minibatches.

    The text is cut into ``batch_size`` contiguous rows; batch ``b`` (columns
    ``b * batch_size`` to ``(b + 1) * batch_size``) holds piece ``b`` of every
    row, so sequence ``k`` of batch ``b + 1`` continues sequence ``k`` of batch
    ``b``.

    Args:
        serial_data (numpy.ndarray): 1-D data; its size must be a multiple of
            ``length * batch_size``.
        length (int): time steps per sequence.
        batch_size (int): sequences per batch.

    Returns:
        numpy.ndarray: ``(length, N, 1)`` with ``N = size / length``.
    """
    if serial_data.size % (length * batch_size):
        raise ValueError(
            f"The data size {serial_data.size} is not a multiple of length * batch_size = "
            f"{length * batch_size}"
        )
    num_batches = serial_data.size // (length * batch_size)
    rows = serial_data.reshape(batch_size, num_batches, length)
    # out[t, b * batch_size + k] = rows[k, b, t]
    laid_out = rows.transpose(2, 1, 0).reshape(length, num_batches * batch_size)
    return np.ascontiguousarray(laid_out)[:, :, None]


def _read_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            if MEMBER not in archive.namelist():
                raise PreparationError(f"{path} holds no file named {MEMBER!r}; is it enwik8.zip?")
            return archive.read(MEMBER)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        raise PreparationError(f"Cannot read {path}: {err}") from None


def _trim(data, block, what, quiet):
    keep = data.size - data.size % block
    if keep == 0:
        raise PreparationError(
            f"The {what} part has {data.size} characters, fewer than one batch of "
            f"seq_len * batch_size = {block}"
        )
    if keep != data.size:
        say(f"Dropping the last {data.size - keep} characters of the {what} part", quiet)
    return data[:keep]


def prepare_enwik8(args):
    """Run the command for parsed options (see :func:`main`)."""
    data_dir, output = resolve_paths(args, OUTPUT_NAME)
    check_output(output, args.force)
    for option in ("seq_len", "batch_size", "test_chars"):
        if getattr(args, option) < 1:
            raise PreparationError(f"--{option.replace('_', '-')} must be positive")
    archive = locate_archive(args, data_dir, ARCHIVE, [URL])
    say(f"Reading {archive} ...", args.quiet)
    raw = np.frombuffer(_read_archive(archive), dtype=np.uint8)
    n = args.test_chars
    if raw.size <= 2 * n + 1:
        raise PreparationError(
            f"{archive} holds {raw.size} characters, too few for validation and test parts of "
            f"{n} characters each plus training data"
        )
    unique, ids = encode_bytes(raw)
    targets = np.append(ids[1:], np.uint8(0))  # the last character has no successor
    bounds = {
        "training": (0, raw.size - 2 * n),
        "validation": (raw.size - 2 * n, raw.size - n),
        "test": (raw.size - n, raw.size),
    }
    block = args.seq_len * args.batch_size
    parts = {}
    for name, (start, stop) in bounds.items():
        data = _trim(ids[start:stop], block, name, args.quiet)
        target = targets[start : start + data.size]
        parts[name] = (
            convert_to_batches(data, args.seq_len, args.batch_size),
            convert_to_batches(target, args.seq_len, args.batch_size),
        )

    def write(f):
        f.attrs["description"] = DESCRIPTION.format(
            n_train=parts["training"][0].size,
            n_valid=parts["validation"][0].size,
            n_test=parts["test"][0].size,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
        )
        f.attrs["unique"] = unique
        total = sum(x.shape[1] for x, _ in parts.values())
        with progress(total, f"Writing {OUTPUT_NAME}", args.quiet, "sequences") as bar:
            for name, (x, t) in parts.items():
                group = f.create_group(f"split/{name}")
                for key, array in (("default", x), ("targets", t)):
                    write_dataset(
                        group,
                        key,
                        array.shape,
                        np.uint8,
                        lambda start, stop, a=array: a[:, start:stop],
                        1,
                        bar if key == "default" else None,
                        chunk=10000,
                    )

    write_hdf5(output, write, args.force)
    say(f"Wrote {output}", args.quiet)


def build_parser():
    parser = make_parser(
        "brainstorm-prepare-enwik8",
        "Convert enwik8.zip (the Hutter Prize data) into HutterPrize.hdf5 for brainstorm "
        "(downloading it if missing).",
        OUTPUT_NAME,
        f"the downloaded {ARCHIVE} (default: DATA_DIR/{ARCHIVE})",
    )
    parser.add_argument(
        "--seq-len", type=int, default=SEQ_LEN, help=f"characters per sequence ({SEQ_LEN})"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"sequences per batch the layout is made for ({BATCH_SIZE})",
    )
    parser.add_argument(
        "--test-chars",
        type=int,
        default=TEST_CHARS,
        help=f"characters of the validation part and of the test part ({TEST_CHARS})",
    )
    return parser


def main(argv=None):
    """Entry point of ``brainstorm-prepare-enwik8``; returns the exit code."""
    return run(prepare_enwik8, build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
