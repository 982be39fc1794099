"""The HDF5 network file ("Network file v1.0").

Layout: file attributes ``info`` (who wrote it), ``format`` and optional
``comment``; dataset ``description`` (JSON text of the network description);
dataset ``parameters`` (the flat parameter vector) and, new in brainstorm 0.6,
dataset ``states`` (non-trainable layer state such as BatchNorm statistics).

Files are written to a temporary name in the same folder and renamed, so a
crash never leaves a half-written file under the real name. Reading parses
JSON only: no pickle, no import of names found in the file; any damage is
reported as a ``ValueError`` naming the file. (One limit remains: a file
damaged in the HDF5 metadata can crash the HDF5 C library itself, which no
Python code can catch; load files from strangers in a subprocess if that
matters.)
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from brainstorm.utils import get_brainstorm_info

__all__ = ["write_network_file", "read_network_file", "FORMAT", "atomic_write", "atomic_write_hdf5"]

FORMAT = "Network file v1.0"
_FORMAT_PREFIX = "Network file v"


def _permissions_for(filename):
    if os.path.exists(filename):
        return os.stat(filename).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(filename, write, suffix=""):
    """Call ``write(path)`` to write a temporary file next to ``filename``, then
    rename it to ``filename``: a failed write leaves an existing file as it was.

    Args:
        filename: the file to write.
        write: ``write(path)`` writes the whole file at ``path``.
        suffix: ending of the temporary file's name (some writers pick the
            format from it).

    Raises:
        FileNotFoundError: if the folder of ``filename`` does not exist.
    """
    filename = os.fspath(filename)
    directory = os.path.dirname(os.path.abspath(filename))
    if not os.path.isdir(directory):  # (else the error would name the temporary file)
        raise FileNotFoundError(f"Cannot write {filename}: the folder {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private; give it the permissions of a file
        # created normally (or those of the file it replaces).
        os.chmod(tmp, _permissions_for(filename))
        os.replace(tmp, filename)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_hdf5(filename, write):
    """Call ``write(h5py.File)`` on a temporary file, then rename it to ``filename``
    (see :func:`atomic_write`)."""
    import h5py

    def write_file(path):
        with h5py.File(path, "w") as f:
            write(f)

    atomic_write(filename, write_file, suffix=".hdf5")


def write_network_file(filename, description, parameters, states, comment=""):
    """Write a network file (see the module docstring)."""

    def write(f):
        f.attrs["info"] = get_brainstorm_info()
        f.attrs["format"] = FORMAT.encode()
        if comment:
            f.attrs["comment"] = str(comment).encode()
        f["description"] = json.dumps(description).encode()
        f.create_dataset("parameters", data=np.asarray(parameters), compression="gzip")
        f.create_dataset("states", data=np.asarray(states))

    atomic_write_hdf5(filename, write)


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.shape == ():
        return _text(value[()])
    return str(value)


def read_network_file(filename):
    """Read a network file.

    Returns:
        (description dict, parameters ndarray, states ndarray)

    Raises:
        ValueError: for files that are not brainstorm network files, newer
            formats, or truncated/corrupt content (the message says which).
    """
    filename = os.fspath(filename)
    if not os.path.exists(filename):
        raise FileNotFoundError(f"No such network file: {filename}")
    try:
        description, parameters, states = _read(filename)
    except ValueError:
        raise
    except Exception as err:  # h5py raises many kinds of errors on damaged files
        raise ValueError(
            f"{filename} is not a readable network file (truncated or corrupt?): "
            f"{type(err).__name__}: {err}"
        ) from None
    if not isinstance(description, dict) or description.get("@type") != "Network":
        raise ValueError(f"{filename}: the description is not that of a Network")
    if "architecture" not in description:
        raise ValueError(f"{filename}: the description has no architecture")
    if parameters.ndim != 1 or parameters.dtype.kind != "f":
        raise ValueError(f"{filename}: 'parameters' must be a flat float array")
    return description, parameters, states.reshape(-1)


def _read(filename):
    import h5py

    with h5py.File(filename, "r") as f:
        fmt = _text(f.attrs.get("format", b""))
        if not fmt.startswith(_FORMAT_PREFIX):
            raise ValueError(
                f"{filename} is not a brainstorm network file (format attribute {fmt!r}, "
                f"expected {FORMAT!r})"
            )
        try:
            version = tuple(int(x) for x in fmt[len(_FORMAT_PREFIX) :].split("."))
        except ValueError:
            raise ValueError(f"{filename}: unreadable format version {fmt!r}") from None
        if version[0] > 1:
            raise ValueError(
                f"{filename} was written in {fmt!r}, newer than this brainstorm reads "
                f"({FORMAT!r}); upgrade brainstorm-core"
            )
        for name in ("description", "parameters"):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise ValueError(f"{filename}: the network file has no {name!r} dataset")
        try:
            description = json.loads(_text(f["description"][()]))
        except json.JSONDecodeError as err:
            raise ValueError(f"{filename}: the description is not valid JSON ({err})") from None
        parameters = np.asarray(f["parameters"][()])
        states = np.asarray(f["states"][()]) if "states" in f else np.zeros(0)
    return description, parameters, states
