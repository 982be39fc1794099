"""What the data preparation commands share: options, downloads, progress, writing."""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "PreparationError",
    "default_data_dir",
    "make_parser",
    "add_validation_size",
    "find_or_download",
    "locate_archive",
    "image_sets",
    "target_fill",
    "download",
    "check_output",
    "write_dataset",
    "write_hdf5",
    "progress",
    "resolve_paths",
    "run",
    "say",
]

#: The environment variable naming the data folder (as in the reference).
DATA_DIR_ENV = "BRAINSTORM_DATA_DIR"
_CHUNK_BYTES = 1 << 20
_TIMEOUT = 60


class PreparationError(Exception):
    """A problem the user can fix (missing file, file exists, bad input file)."""


def default_data_dir():
    """``$BRAINSTORM_DATA_DIR`` or the current folder."""
    return os.environ.get(DATA_DIR_ENV) or "."


def make_parser(prog, description, output_name, source_help):
    """The options every data command has.

    Args:
        prog (str): the command's name.
        description (str): one paragraph for ``--help``.
        output_name (str): default file name of the result, inside the data folder.
        source_help (str): what ``--source`` is for this data set.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"folder with the downloaded files and for the result "
        f"(default: ${DATA_DIR_ENV}, or the current folder)",
    )
    parser.add_argument("--source", default=None, help=source_help)
    parser.add_argument(
        "--output", default=None, help=f"the HDF5 file to write (default: DATA_DIR/{output_name})"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite the output file if it exists"
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="never download: fail if the source files are missing",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def add_validation_size(parser, default):
    """Add ``--validation-size`` (training images set aside) to an image command's parser."""
    parser.add_argument(
        "--validation-size",
        type=int,
        default=default,
        help=f"training images set aside for validation (default {default})",
    )


def resolve_paths(args, output_name):
    """(data folder, output file) from parsed options."""
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    output = args.output if args.output is not None else os.path.join(data_dir, output_name)
    return data_dir, output


def say(message, quiet):
    """Print a status line to stderr unless quiet."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def progress(total, desc, quiet, unit="it", unit_scale=False):
    """A tqdm progress bar on stderr (disabled when quiet)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        disable=quiet,
        file=sys.stderr,
        leave=True,
        dynamic_ncols=True,
    )


def check_output(path, force):
    """Refuse to overwrite ``path`` unless ``force``; create its folder if needed.

    Raises:
        PreparationError: if the file exists and ``force`` is false, or the
            folder cannot be created.
    """
    if os.path.exists(path) and not force:
        raise PreparationError(f"{path} already exists; pass --force to overwrite it")
    if os.path.isdir(path):
        raise PreparationError(f"{path} is a folder, not a file name")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise PreparationError(f"Cannot create the output folder {folder}: {err}") from None


def download(urls, destination, quiet=False):
    """Download the first of ``urls`` that works to ``destination``.

    The file appears under its name only when complete.

    Raises:
        PreparationError: if every URL fails (the message lists the reasons).
    """
    folder = os.path.dirname(os.path.abspath(destination))
    os.makedirs(folder, exist_ok=True)
    reasons = []
    for url in urls:
        say(f"Downloading {url}", quiet)
        fd, tmp = tempfile.mkstemp(prefix=".download-", dir=folder)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=_TIMEOUT) as answer,
            ):
                length = answer.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                with progress(total, os.path.basename(destination), quiet, "B", True) as bar:
                    while True:
                        block = answer.read(_CHUNK_BYTES)
                        if not block:
                            break
                        out.write(block)
                        received += len(block)
                        bar.update(len(block))
            # (a connection closed early just ends the reading: no exception)
            if total is not None and received != total:
                reasons.append(f"{url}: the connection closed after {received} of {total} bytes")
                continue
            os.replace(tmp, destination)
            return destination
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            reasons.append(
                f"{url}: {getattr(err, 'reason', None) or str(err) or type(err).__name__}"
            )
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise PreparationError(
        f"Could not download {os.path.basename(destination)}:\n  "
        + "\n  ".join(reasons)
        + f"\nDownload it yourself from {urls[0]} and put it at {destination} "
        f"(or pass its location with --source)."
    )


def find_or_download(candidates, urls, destination, allow_download, quiet, what):
    """The first existing path of ``candidates``, else download to ``destination``.

    Args:
        candidates (list[str]): where the file may already be.
        urls (list[str]): where to download it from (tried in order).
        destination (str): where a download is stored.
        allow_download (bool): False to fail instead of downloading.
        quiet (bool): no progress output.
        what (str): the file, for messages.

    Raises:
        PreparationError: if the file is missing and cannot be downloaded.
    """
    for path in candidates:
        if os.path.isfile(path):
            return path
    if not allow_download:
        raise PreparationError(
            f"{what} not found (looked for {', '.join(candidates)}). Download it from "
            f"{urls[0]} and put it at {destination}, or pass its location with --source."
        )
    return download(urls, destination, quiet)


def locate_archive(args, data_dir, name, urls):
    """The archive given with ``--source``, else ``name`` in the data folder.

    Args:
        args (argparse.Namespace): the parsed options.
        data_dir (str): the data folder.
        name (str): the archive's file name.
        urls (list[str]): where to download it from when it is missing.

    Raises:
        PreparationError: if ``--source`` is not a file, or the archive is
            missing and cannot be downloaded.
    """
    if args.source is not None:
        if not os.path.isfile(args.source):
            raise PreparationError(f"--source {args.source} is not a file")
        return args.source
    return find_or_download(
        [os.path.join(data_dir, name)],
        urls,
        os.path.join(data_dir, name),
        not args.no_download,
        args.quiet,
        name,
    )


def image_sets(train, test, validation_size):
    """The five sets an image command writes, and the size of the training split.

    ``normalized_split`` sets the last ``validation_size`` training images aside
    for validation; ``normalized_full`` trains on all of them.

    Args:
        train (tuple): ``(images, targets)`` of the training part, one image
            per entry of the first axis.
        test (tuple): ``(images, targets)`` of the test part.
        validation_size (int): ``--validation-size``.

    Returns:
        tuple: ``(n_train, sets)``, with ``sets`` mapping each group name to
        ``(images, targets, offset, count)``.

    Raises:
        PreparationError: unless ``0 < validation_size < len(train images)``.
    """
    (train_x, train_t), (test_x, test_t) = train, test
    n_valid = validation_size
    if not 0 < n_valid < train_x.shape[0]:
        raise PreparationError(
            f"--validation-size must lie between 1 and {train_x.shape[0] - 1} (the number of "
            f"training images minus one), got {n_valid}"
        )
    n_train = train_x.shape[0] - n_valid
    sets = {
        "normalized_split/training": (train_x, train_t, 0, n_train),
        "normalized_split/validation": (train_x, train_t, n_train, n_valid),
        "normalized_split/test": (test_x, test_t, 0, test_x.shape[0]),
        "normalized_full/training": (train_x, train_t, 0, train_x.shape[0]),
        "normalized_full/test": (test_x, test_t, 0, test_x.shape[0]),
    }
    return n_train, sets


def target_fill(targets, offset):
    """A ``fill`` for :func:`write_dataset`: ``targets[offset + start : offset + stop]``
    shaped ``(1, N, 1)``."""
    return lambda start, stop: targets[offset + start : offset + stop].reshape(1, -1, 1)


def write_hdf5(path, write, force):
    """Write an HDF5 file atomically (temporary name, then rename).

    Args:
        path (str): the file to write.
        write (callable): ``write(h5py.File)`` fills the file.
        force (bool): allow overwriting an existing file.
    """
    from brainstorm.structure.network_file import atomic_write_hdf5 as write_hdf5_atomically

    check_output(path, force)
    write_hdf5_atomically(path, write)


def write_dataset(group, name, shape, dtype, fill, axis, bar=None, chunk=1000):
    """Create a gzip-compressed dataset and fill it slice by slice along ``axis``.

    Args:
        group (h5py.Group): where to create it.
        name (str): the dataset's name.
        shape (tuple[int]): its shape.
        dtype: its dtype.
        fill (callable): ``fill(start, stop)`` returns the values of the slice
            ``[start:stop]`` along ``axis``.
        axis (int): the axis to fill along.
        bar: a progress bar advanced by the number of entries written, or None.
        chunk (int): the slice length.
    """
    ds = group.create_dataset(name, shape=shape, dtype=dtype, compression="gzip", chunks=True)
    index = [slice(None)] * len(shape)
    for start in range(0, shape[axis], chunk):
        stop = min(start + chunk, shape[axis])
        index[axis] = slice(start, stop)
        ds[tuple(index)] = np.asarray(fill(start, stop), dtype=dtype)
        if bar is not None:
            bar.update(stop - start)
    return ds


def run(prepare, parser, argv):
    """Parse ``argv``, call ``prepare(args)``, and turn user errors into exit code 1."""
    args = parser.parse_args(argv)
    try:
        prepare(args)
    except PreparationError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0
