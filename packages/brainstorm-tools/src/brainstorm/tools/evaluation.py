"""Apply a network to data: scores, and the values of any of its buffers."""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate", "extract", "extract_and_save", "BUFFERS_FORMAT"]

#: The ``format`` attribute of a file written by :func:`extract_and_save`.
BUFFERS_FORMAT = "Buffers file v1.0"

# category of a buffer path -> attribute of the layer holding its structures
_STRUCTURES = {
    "inputs": "in_shapes",
    "input_deltas": "in_shapes",
    "outputs": "out_shapes",
    "output_deltas": "out_shapes",
    "internals": "internal_shapes",
    "parameters": "parameter_shapes",
    "gradients": "parameter_shapes",
    "states": "state_shapes",
}


def evaluate(network, iter, scorers=(), out_name="", targets_name="targets", mask_name=None):
    """Evaluate one or more scores for a network.

    This tool can be used to evaluate scores of a trained network on test
    data. Every batch is run forward (not as a training pass, no context
    carried between batches); losses are averaged over sequences and scores
    aggregated by their scorers (see :mod:`brainstorm.scorers`).

    Example:
        >>> from brainstorm.scorers import Accuracy
        >>> evaluate(net, Minibatches(100, default=x, targets=t), [Accuracy()])
        OrderedDict([('total_loss', 0.31...), ('Accuracy', 0.91...)])

    Args:
        network (brainstorm.structure.Network): network to be evaluated.
        iter (brainstorm.DataIterator): a data iterator which produces the
            data on which the scores are computed.
        scorers (tuple[brainstorm.scorers.Scorer]): a list or tuple of Scorers.
        out_name (Optional[str]): name of the network output which is scored
            against the targets; defaults to ``network.output_name``.
        targets_name (Optional[str]): name of the targets data provided by the
            data iterator (``iter``).
        mask_name (Optional[str]): name of the mask data provided by the data
            iterator (``iter``).

    Returns:
        collections.OrderedDict: ``total_loss`` (one entry per Loss layer too,
        if there are several), then one entry per scorer.
    """
    from brainstorm.training.utils import evaluate as evaluate_network

    return evaluate_network(
        network,
        iter,
        scorers,
        out_name=out_name or "",
        targets_name=targets_name,
        mask_name=mask_name or "",
    )


def _buffer_kind(network, path):
    """``'time'``, ``'batch'`` or ``'constant'`` for a dotted buffer path.

    Raises:
        KeyError: if the path names no buffer of the network.
    """
    if not isinstance(path, str):
        raise TypeError(f"Buffer names must be strings, got {path!r}")
    parts = path.split(".")
    if len(parts) != 3 or parts[0] not in network.layers or parts[1] not in _STRUCTURES:
        raise KeyError(
            f"{path!r} is not a buffer path of the form 'Layer.category.name' (categories: "
            f"{', '.join(_STRUCTURES)}; layers: {', '.join(network.layers)})"
        )
    layer_name, category, name = parts
    layer = network.layers[layer_name]
    structures = getattr(layer, _STRUCTURES[category])
    if category == "outputs" and name not in structures:
        name = getattr(layer, "output_aliases", {}).get(name, name)
    if name not in structures:
        raise KeyError(
            f"Layer {layer_name!r} has no {category} buffer {parts[2]!r}; it has "
            f"{list(structures) or 'none'}"
        )
    return {2: "time", 1: "batch", 0: "constant"}[structures[name].buffer_type]


def _check_buffer_names(network, buffer_names):
    if isinstance(buffer_names, str):
        buffer_names = [buffer_names]
    buffer_names = list(buffer_names)
    if not buffer_names:
        raise ValueError("No buffer names given")
    kinds = {}
    for path in buffer_names:
        kind = _buffer_kind(network, path)
        if kind == "constant":
            raise ValueError(
                f"{path!r} does not depend on the data (it has no time or batch axis); "
                f"read it with network.get({path!r})"
            )
        kinds[path] = kind
    return kinds


def _run_batches(network, iter, kinds):
    """Yield one dict path -> numpy array ``(T, B, ...)`` / ``(B, ...)`` per batch."""
    from brainstorm.training.utils import run_network

    for _ in run_network(network, iter(handler=network.handler), all_inputs=False):
        network.forward_pass()
        time_size = network.buffer_manager.time_size
        batch = {}
        for path, kind in kinds.items():
            value = network.get(path)
            # time-sized buffers of recurrent layers carry a context slot at the end
            batch[path] = value[:time_size] if kind == "time" else value
        yield batch


def _pad_time(array, time_size):
    if array.shape[0] == time_size:
        return array
    padded = np.zeros((time_size,) + array.shape[1:], dtype=array.dtype)
    padded[: array.shape[0]] = array
    return padded


def extract(network, iter, buffer_names):
    """Apply the network to some data and return the requested buffers.

    Batches are returned as a dictionary, with one entry for each requested
    buffer, with the data in (T, B, ...) order: the batches are concatenated
    along the batch axis. Batches may differ in length (a ``Minibatches``
    iterator cuts each batch to its longest sequence according to a mask);
    shorter ones are padded with zeros at the end of the time axis, so the
    result has the time size of the longest batch. Buffers without a time
    axis (``('B', ...)``) are concatenated along their first axis.

    Only the data inputs are needed: targets and masks may be missing.

    Example:
        >>> getter = Minibatches(100, default=x_test)
        >>> features = extract(network, getter, ['Hid1.outputs.default'])
        >>> features['Hid1.outputs.default'].shape
        (1, 10000, 1200)

    Args:
        network (brainstorm.structure.Network): network with which the
            features are computed.
        iter (brainstorm.DataIterator): a data iterator which produces the
            data on which the features are computed.
        buffer_names (list[str] | str): names of the buffers (dotted notation,
            e.g. 'Output.outputs.predictions').

    Returns:
        dict[str, numpy.ndarray]: buffer name -> values for all the data.

    Raises:
        KeyError: for a path that names no buffer (checked before any data is
            processed).
        ValueError: for a buffer that does not depend on the data (parameters).
    """
    kinds = _check_buffer_names(network, buffer_names)
    collected = {path: [] for path in kinds}
    for batch in _run_batches(network, iter, kinds):
        for path, value in batch.items():
            collected[path].append(value)
    result = {}
    for path, arrays in collected.items():
        if not arrays:
            raise ValueError("The data iterator produced no batches")
        if kinds[path] == "time":
            time_size = max(a.shape[0] for a in arrays)
            result[path] = np.concatenate([_pad_time(a, time_size) for a in arrays], axis=1)
        else:
            result[path] = np.concatenate(arrays, axis=0)
    return result


def extract_and_save(network, iter, buffer_names, file_name):
    """Save the desired buffer values of a network to an HDF5 file.

    In particular, this tool can be used to save the predictions of a network
    on a dataset. In general, any number of internal, input or output buffers
    of the network can be extracted. The values are written batch by batch
    (never all in memory), into one dataset per buffer name, laid out as
    :func:`extract` returns them (zero-padded along time when batches differ
    in length). The file is written under a temporary name and renamed when
    complete, and has the attributes ``info`` and ``format``
    (``b'Buffers file v1.0'``).

    Example:
        >>> getter = Minibatches(100, default=x_test)
        >>> extract_and_save(network,
        ...                  getter,
        ...                  ['Output.outputs.predictions',
        ...                   'Hid1.internals.H'],
        ...                  'network_features.hdf5')

    Args:
        network (brainstorm.structure.Network): network with which the
            features are computed.
        iter (brainstorm.DataIterator): a data iterator which produces the
            data on which the features are computed.
        buffer_names (list[str] | str): names of the buffers to be saved
            (dotted notation). See example.
        file_name (str): name of the HDF5 file (including extension) in which
            the features are saved.

    Raises:
        KeyError, ValueError: as for :func:`extract`, before anything is written.
    """
    from brainstorm.structure.network_file import atomic_write_hdf5 as write_hdf5_atomically
    from brainstorm.utils import get_brainstorm_info

    kinds = _check_buffer_names(network, buffer_names)

    def write(f):
        f.attrs["info"] = get_brainstorm_info()
        f.attrs["format"] = BUFFERS_FORMAT.encode()
        datasets = {}
        for batch in _run_batches(network, iter, kinds):
            for path, value in batch.items():
                batch_axis = 1 if kinds[path] == "time" else 0
                if path not in datasets:
                    maxshape = list(value.shape)
                    maxshape[batch_axis] = None
                    if batch_axis == 1:
                        maxshape[0] = None
                    datasets[path] = f.create_dataset(
                        path,
                        data=value,
                        maxshape=tuple(maxshape),
                        chunks=True,
                        compression="gzip",
                    )
                    continue
                ds = datasets[path]
                start = ds.shape[batch_axis]
                new_shape = list(ds.shape)
                new_shape[batch_axis] += value.shape[batch_axis]
                if batch_axis == 1:
                    new_shape[0] = max(new_shape[0], value.shape[0])
                ds.resize(tuple(new_shape))  # new entries are zeros (the fill value)
                if batch_axis == 1:
                    ds[: value.shape[0], start:] = value
                else:
                    ds[start:] = value
        if not datasets:
            raise ValueError("The data iterator produced no batches")

    write_hdf5_atomically(file_name, write)
