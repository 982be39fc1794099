"""Helpers of the training machinery: running a network over data, evaluating
it, and storing logs in HDF5 files."""

from __future__ import annotations

import warnings

import numpy as np

from brainstorm.scorers import aggregate_losses_and_scores, gather_losses_and_scores

__all__ = [
    "run_network",
    "evaluate",
    "check_data_names",
    "write_logs",
    "read_logs",
    "save_logs",
    "load_logs",
    "LOGS_FORMAT",
]

#: The ``format`` attribute of a logs file written by :func:`save_logs`.
LOGS_FORMAT = "Logs file v1.0"


def run_network(net, iterator, all_inputs=True):
    """Provide each batch of ``iterator`` to ``net`` and yield its index.

    The caller runs the passes it needs inside the loop.

    Args:
        net (brainstorm.structure.network.Network): the network.
        iterator: what calling a data iterator with a handler returns (a
            generator of dicts name -> array).
        all_inputs (bool): require data for every input of the network.

    Yields:
        int: the index of the batch, from 0.

    Example:
        >>> for _ in run_network(net, Minibatches(10, default=x)(net.handler)):
        ...     net.forward_pass()
    """
    for i, data in enumerate(iterator):
        net.provide_external_data(data, all_inputs=all_inputs)
        yield i


def check_data_names(net, data_iter, iter_name="training_data_iter"):
    """Check that a data iterator provides exactly the inputs of ``net``.

    Args:
        net (brainstorm.structure.network.Network): the network.
        data_iter (brainstorm.data_iterators.DataIterator): the iterator.
        iter_name (str): how to call the iterator in the message.

    Raises:
        KeyError: naming both sets of names and the difference.
    """
    provided = set(data_iter.data_shapes)
    expected = set(net.layers["Input"].out_shapes)
    if provided != expected:
        missing = sorted(expected - provided)
        extra = sorted(provided - expected)
        raise KeyError(
            f"The data names provided by {iter_name} {sorted(provided)} do not match the "
            f"network's input names {sorted(expected)} (missing: {missing}, unexpected: {extra})"
        )


def evaluate(net, iter, scorers=(), out_name="", targets_name="targets", mask_name=""):
    """Run ``net`` (forward only, no training pass) over all data of ``iter``.

    Args:
        net (brainstorm.structure.network.Network): the network.
        iter (brainstorm.data_iterators.DataIterator): the data.
        scorers (Sequence[brainstorm.scorers.Scorer]): scorers to compute.
        out_name (str): output for scorers without their own ``out_name``.
        targets_name (str): targets input for scorers without their own.
        mask_name (str): mask input for scorers without their own.

    Returns:
        OrderedDict: ``total_loss`` (and one entry per Loss layer if there are
        several), averaged over sequences, then one entry per scorer.

    Example:
        >>> evaluate(net, Minibatches(100, default=x, targets=t), [Accuracy()])
        OrderedDict([('total_loss', 0.31...), ('Accuracy', 0.91...)])
    """
    scores = {}
    for _ in run_network(net, iter(handler=net.handler)):
        net.forward_pass()
        gather_losses_and_scores(
            net,
            scorers,
            scores,
            out_name=out_name,
            targets_name=targets_name,
            mask_name=mask_name,
        )
    return aggregate_losses_and_scores(scores, net, scorers)


# ------------------------------------------------------------------- logs files


#: Keys HDF5 cannot take as names as they are ('.' names the group itself).
_SPECIAL_KEYS = {"": "%00", ".": "%2E"}


def _entry_name(key):
    """A log key as an HDF5 name: ``/`` (which would nest) and ``%`` escaped, and the
    keys ``''`` and ``'.'`` spelled out."""
    key = str(key)
    return _SPECIAL_KEYS.get(key) or key.replace("%", "%25").replace("/", "%2F")


_SPECIAL_NAMES = {name: key for key, name in _SPECIAL_KEYS.items()}


def _key(name):
    if name in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[name]
    return name.replace("%2F", "/").replace("%25", "%")


def write_logs(group, logs):
    """Write nested logs into an HDF5 group.

    Dicts become groups, lists of numbers (or of strings) become datasets.
    Keys are written as strings (any character; ``/`` and ``%`` are escaped in
    the file). A list of anything else is skipped with a warning.

    Args:
        group (h5py.Group): where to write (should be empty).
        logs (dict): nested dict with lists of numbers at the leaves.
    """
    import h5py

    for key, value in logs.items():
        name = _entry_name(key)
        if isinstance(value, dict):
            write_logs(group.create_group(name), value)
            continue
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = None
        if array is not None and array.dtype.kind in "biuf":
            group.create_dataset(name, data=array)
        elif (
            array is not None and array.dtype.kind == "U" and all(isinstance(v, str) for v in value)
        ):
            strings = group.create_dataset(
                name, data=array.astype(object), dtype=h5py.string_dtype()
            )
            strings.attrs["strings"] = True
        else:
            warnings.warn(
                f"log {key!r} holds values that are neither all numbers nor all strings; "
                f"it is not written",
                RuntimeWarning,
                stacklevel=2,
            )


def read_logs(group):
    """Read logs written by :func:`write_logs`.

    Args:
        group (h5py.Group): the group to read.

    Returns:
        dict: nested dict with lists of Python numbers at the leaves.
    """
    import h5py

    logs = {}
    for name, value in group.items():
        key = _key(name)
        if isinstance(value, h5py.Group):
            logs[key] = read_logs(value)
        elif value.attrs.get("strings", False):
            logs[key] = [str(s) for s in value.asstr()[()]]
        else:
            logs[key] = np.asarray(value[()]).tolist()
    return logs


def save_logs(filename, logs):
    """Save logs to an HDF5 file ("Logs file v1.0"), atomically.

    Args:
        filename (str | os.PathLike): where to write.
        logs (dict): nested logs, e.g. ``trainer.logs``.
    """
    from brainstorm.structure.network_file import atomic_write_hdf5
    from brainstorm.utils import get_brainstorm_info

    def write(f):
        f.attrs["info"] = get_brainstorm_info()
        f.attrs["format"] = LOGS_FORMAT.encode()
        write_logs(f, logs)

    atomic_write_hdf5(filename, write)


def load_logs(filename):
    """Load logs saved by :func:`save_logs` (or the ``SaveLogs`` hook).

    Args:
        filename (str | os.PathLike): the logs file.

    Returns:
        dict: the nested logs.

    Raises:
        ValueError: if the file is not a brainstorm logs file.
    """
    import h5py

    with h5py.File(filename, "r") as f:
        fmt = f.attrs.get("format", b"")
        fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        if not fmt.startswith("Logs file v"):
            raise ValueError(f"{filename} is not a brainstorm logs file (format {fmt!r})")
        return read_logs(f)
