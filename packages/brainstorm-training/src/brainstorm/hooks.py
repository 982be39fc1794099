"""Hooks: what the Trainer calls regularly while it trains.

A hook is called every ``interval`` epochs or updates (its ``timescale``), and
once before training starts (at count 0). It can

* **monitor**: return a value or a (nested) dict of values, which the trainer
  logs under the hook's name (``trainer.logs['validation']['Accuracy']``) and
  prints;
* **save**: write the network or the logs to a file;
* **stop** the training by raising ``StopIteration`` (the remaining hooks of
  that round still run);
* **visualize** logged values, or change the stepper.

Example::

    scorers = [bs.scorers.Accuracy()]
    trainer.add_hook(bs.hooks.ProgressBar())
    trainer.add_hook(bs.hooks.MonitorScores('valid_getter', scorers, name='validation'))
    trainer.add_hook(bs.hooks.SaveBestNetwork('validation.Accuracy', filename='best.hdf5'))
    trainer.add_hook(bs.hooks.EarlyStopper('validation.Accuracy', patience=10, criterion='max'))
    trainer.add_hook(bs.hooks.StopAfterEpoch(50))

A hook of your own subclasses :class:`Hook` and implements ``__call__``; it is
found in descriptions once its module is imported (or registered in the
``brainstorm.hooks`` entry-point group).
"""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from collections import OrderedDict

import numpy as np

from brainstorm.describable import Describable, create_from_description, get_description
from brainstorm.training.utils import check_data_names, evaluate, save_logs
from brainstorm.utils import get_by_path, given

__all__ = [
    "Hook",
    "SaveBestNetwork",
    "SaveLogs",
    "SaveNetwork",
    "MonitorLayerDeltas",
    "MonitorLayerGradients",
    "MonitorLayerInOuts",
    "MonitorLayerParameters",
    "MonitorLoss",
    "MonitorScores",
    "EarlyStopper",
    "StopAfterEpoch",
    "StopAfterThresholdReached",
    "StopOnNan",
    "StopOnSigQuit",
    "ProgressBar",
    "InfoUpdater",
    "BokehVisualizer",
    "ModifyStepperAttribute",
]

_TIMESCALES = ("epoch", "update")


def _write_line(text, file=None):
    """Print a line without garbling an active progress bar."""
    from tqdm import tqdm

    tqdm.write(text, file=file if file is not None else sys.stdout)


class Hook(Describable):
    """Base class of hooks.

    Args:
        name (str | None): the name under which the hook's results are logged.
            Defaults to the class name.
        timescale (str): ``'epoch'`` or ``'update'``: what ``interval`` counts.
            Defaults to ``'epoch'``.
        interval (int): call the hook every ``interval`` epochs/updates.
            Defaults to 1.
        verbose (bool | None): print the hook's messages and logs; None uses
            the trainer's verbosity.

    Attributes:
        __name__ (str): the hook's name.
        priority (int): order in which the trainer calls its hooks (set by
            ``Trainer.add_hook``: the order of adding).
        run_verbosity (bool): the verbosity in effect (set by :meth:`start`).
    """

    __undescribed__ = {"run_verbosity": None}
    #: Whether :meth:`Trainer.evaluate` calls this hook; hooks that save, stop or
    #: steer training say False.
    used_by_evaluate = True
    #: Whether the hook only decides whether training stops (``StopAfterEpoch``,
    #: ``EarlyStopper``, ...): when a run that such a hook stopped is continued, the
    #: hooks of the timescale of the stop are asked again before training goes on.
    checks_stop = False
    #: Whether the hook reads buffers of the last training batch (inputs, outputs,
    #: deltas), which a hook that runs the network on other data replaces.
    reads_last_batch = False
    #: Whether the hook runs the network on other data (e.g. a validation set).
    runs_network = False

    def __init__(self, name=None, timescale="epoch", interval=1, verbose=None):
        if timescale not in _TIMESCALES:
            raise ValueError(f"timescale must be 'epoch' or 'update', got {timescale!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int, got {interval!r}")
        self.__name__ = name if name is not None else type(self).__name__
        self.priority = 0
        self.timescale = timescale
        self.interval = interval
        self.verbose = verbose
        self.run_verbosity = None

    def start(self, net, stepper, verbose, named_data_iters):
        """Called once at the start of ``Trainer.train`` (and ``Trainer.evaluate``).

        Args:
            net (brainstorm.structure.network.Network): the network.
            stepper (brainstorm.training.steppers.TrainingStepper): the stepper.
            verbose (bool): the trainer's verbosity.
            named_data_iters (dict): name -> data iterator; the training data
                iterator is ``'training_data_iter'``.
        """
        self.run_verbosity = verbose if self.verbose is None else self.verbose

    def message(self, msg):
        """Print ``"<name> >> msg"`` if verbose.

        Args:
            msg (str): the message.
        """
        if self.run_verbosity:
            _write_line(f"{self.__name__} >> {msg}")

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Run the hook.

        Args:
            epoch_nr (int): the current epoch (0 before training).
            update_nr (int): the number of updates done so far.
            net (brainstorm.structure.network.Network): the network.
            stepper (brainstorm.training.steppers.TrainingStepper): the stepper.
            logs (dict): the trainer's logs so far.

        Returns:
            None, a number, or a (nested) dict of numbers to log.

        Raises:
            StopIteration: to stop the training.
        """

    def end(self):
        """Called once when ``Trainer.train`` returns (also after an error):
        release what :meth:`start` acquired."""

    def continue_run(self, logs):
        """Called after :meth:`start` when ``Trainer.train`` continues a saved run
        (``Trainer.load_run`` / ``restore_run``), with the restored logs: a hook
        that keeps track of what it saw in the logs sets itself up from them here.
        Does nothing by default.

        Args:
            logs (dict): the trainer's logs as saved with the run.
        """


def _lookup_log(hook, logs, log_name, epoch_nr=None):
    """The values of log ``log_name``, or None while it cannot exist yet.

    The ``rolling_training`` logs start at the end of epoch 1 (for a hook on the
    ``'update'`` timescale: after the updates of epoch 1). Other logs are written at
    epoch 0 too, by a hook added before this one, but a hook on the ``'update'``
    timescale runs before the epoch hooks of epoch 0. Any other missing log is an
    error.
    """
    try:
        values = get_by_path(logs, log_name)
    except KeyError as err:
        rolling = log_name.split(".")[0] == "rolling_training"
        # the epochs before it can exist: 1 for rolling logs, 1 for an update hook,
        # 2 for both
        if epoch_nr is not None and epoch_nr < rolling + (hook.timescale == "update"):
            return None
        raise KeyError(
            f"{hook.__name__}: there is no log {log_name!r} (add the hook that logs it "
            f"before this one): {err.args[0]}"
        ) from None
    if isinstance(values, dict):
        raise KeyError(
            f"{hook.__name__}: log {log_name!r} is a group of logs {sorted(values)}, not one log"
        )
    return values


def _check_scorers(hook, scorers):
    from brainstorm.scorers import Scorer

    for scorer in scorers:
        if not isinstance(scorer, Scorer):
            raise TypeError(
                f"{type(hook).__name__}: scorers must be scorer objects, e.g. Accuracy(); "
                f"got {given(scorer)}"
            )


def _check_criterion(criterion):
    if criterion not in ("min", "max"):
        raise ValueError(f"criterion must be 'min' or 'max', got {criterion!r}")


def _best_index(values, criterion):
    """Index of the best finite value (the first one on ties), or None."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return None
    if criterion == "min":
        return int(np.argmin(np.where(np.isfinite(values), values, np.inf)))
    return int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _stop(hook, reason):
    """Say why (if the hook is verbose) and stop the training."""
    hook.message(f"Stopping because {reason}.")
    raise StopIteration()


class _LogWatcher(Hook):
    """Common part of the hooks that watch one logged value for a criterion."""

    used_by_evaluate = False

    def __init__(self, log_name, criterion, name, timescale, interval, verbose):
        super().__init__(name, timescale, interval, verbose)
        _check_criterion(criterion)
        self.log_name = log_name
        self.criterion = criterion

    def _values(self, logs, epoch_nr):
        """The watched log's values, or None before they exist (epoch 0)."""
        return _lookup_log(self, logs, self.log_name, epoch_nr)


# ############################## savers ########################################


class SaveBestNetwork(_LogWatcher):
    """Save the network whenever a logged value reaches a new best.

    The value counts as improved when the last entry of the log is strictly
    better than all entries before it. With a ``filename`` the network is
    written there (atomically); without one its parameters (and states, such as
    BatchNorm running statistics) are kept in memory. The hook acts only when
    its log got a new entry since its last call (so a monitor on another
    interval is no problem); ``rolling_training`` logs, which start with the
    first epoch, are skipped at epoch 0.

    Args:
        log_name (str): dotted name of the log entry to watch, e.g.
            ``'validation.Accuracy'`` or ``'rolling_training.total_loss'``.
        filename (str | None): HDF5 file to save the network to.
        criterion (str): ``'max'`` (e.g. accuracy) or ``'min'`` (e.g. a loss).
            Defaults to ``'max'``.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`; use the one of the monitor that
            logs the value.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.

    Example:
        >>> trainer.add_hook(bs.hooks.SaveBestNetwork('validation.total_loss',
        ...                                           filename='best_loss.hdf5',
        ...                                           criterion='min'))
        >>> # after training:
        >>> net = trainer.hooks['SaveBestNetwork'].load_best_network()
    """

    __undescribed__ = {
        "parameters": None,
        "states": None,
        "_net_description": None,
        "_entries_seen": None,
        "_seen_at": None,
    }

    def __init__(
        self,
        log_name,
        filename=None,
        criterion="max",
        name=None,
        timescale="epoch",
        interval=1,
        verbose=None,
    ):
        super().__init__(log_name, criterion, name, timescale, interval, verbose)
        self.filename = None if filename is None else os.fspath(filename)
        self.parameters = None
        self.states = None
        self._net_description = None
        self._entries_seen = None
        self._seen_at = {}  # log entry -> the epoch/update at which this hook saw it first

    def continue_run(self, logs):
        """The entries of the restored logs count as seen (see :meth:`Hook.continue_run`):
        only entries logged after the restored run continues can improve on them."""
        try:
            values = get_by_path(logs, self.log_name)
        except KeyError:
            return
        if not isinstance(values, dict):
            self._entries_seen = len(values)

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Save the network if the watched value improved; see :class:`Hook`."""
        values = self._values(logs, epoch_nr)
        if values is None or len(values) == self._entries_seen:
            return  # nothing new logged since the last call (e.g. another interval)
        self._entries_seen = len(values)
        if self._seen_at is None:
            self._seen_at = {}
        self._seen_at[len(values) - 1] = epoch_nr if self.timescale == "epoch" else update_nr
        best = _best_index(values, self.criterion)
        if best is not None and best == len(values) - 1:
            if self.filename is not None:
                net.save_as_hdf5(self.filename)
                where = f"saved the network to {self.filename}"
            else:
                self.parameters = net.handler.get_numpy_copy(net.buffer.parameters)
                self.states = net.handler.get_numpy_copy(net.buffer.states)
                self._net_description = get_description(net)
                where = "kept its parameters in memory"
            self.message(
                f"{self.log_name} improved to {_format_value(values[best])} "
                f"(criterion: {self.criterion}); {where}"
            )
        elif best is not None:
            # (when it was logged is known if this hook saw it as the newest entry)
            seen = self._seen_at.get(best)
            when = "" if seen is None else f" at {self.timescale} {seen}"
            self.message(f"best {self.log_name} so far: {_format_value(values[best])}{when}")

    def load_best_network(self):
        """The best network saved so far.

        Returns:
            brainstorm.structure.network.Network: loaded from ``filename``, or
            rebuilt with the parameters kept in memory.

        Raises:
            RuntimeError: if nothing was saved yet.
        """
        from brainstorm.structure.network import Network

        if self.filename is not None:
            if not os.path.exists(self.filename):
                raise RuntimeError(f"{self.__name__}: nothing saved yet ({self.filename})")
            return Network.from_hdf5(self.filename)
        if self.parameters is None:
            raise RuntimeError(f"{self.__name__}: nothing saved yet")
        net = create_from_description(self._net_description)
        net.handler.set_from_numpy(net.buffer.parameters, self.parameters)
        if self.states is not None and self.states.size:  # e.g. BatchNorm running statistics
            net.handler.set_from_numpy(net.buffer.states, self.states)
        return net

    def load_parameters(self):
        """The flat parameter vector of the best network (a NumPy array).

        Raises:
            RuntimeError: if nothing was saved yet.
        """
        if self.filename is None:
            if self.parameters is None:
                raise RuntimeError(f"{self.__name__}: nothing saved yet")
            return self.parameters.copy()
        return self.load_best_network().get("parameters")


class _FileWriter(Hook):
    """Common part of the hooks that write one file at every call."""

    used_by_evaluate = False

    def __init__(self, filename, name=None, timescale="epoch", interval=1):
        super().__init__(name, timescale, interval)
        self.filename = os.fspath(filename)


class SaveLogs(_FileWriter):
    """Write the trainer's logs to an HDF5 file ("Logs file v1.0") at every call.

    Nested logs become groups, each list of values a dataset. Read the file
    back with :func:`brainstorm.training.utils.load_logs`.

    Args:
        filename (str): the HDF5 file (rewritten atomically).
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
    """

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Write the logs; see :class:`Hook`."""
        save_logs(self.filename, logs)


class SaveNetwork(_FileWriter):
    """Save the network to a file at every call (by default after every epoch).

    Args:
        filename (str): the HDF5 file (rewritten atomically).
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
    """

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Save the network; see :class:`Hook`."""
        net.save_as_hdf5(self.filename)

    def load_network(self):
        """The network last saved by this hook.

        Returns:
            brainstorm.structure.network.Network: the loaded network.
        """
        from brainstorm.structure.network import Network

        return Network.from_hdf5(self.filename)


# ############################## monitors ######################################


def _stats(values):
    """min/avg/max of a NumPy array, or None if it is empty."""
    if values.size == 0:
        return None
    return OrderedDict(min=float(values.min()), avg=float(values.mean()), max=float(values.max()))


def _parameter_stats(values):
    """:func:`_stats`, plus those of the rows' L2 norms for arrays of 2+ dimensions."""
    stats = _stats(values)
    if stats is not None and values.ndim >= 2:
        norms = np.sqrt((values.reshape(values.shape[0], -1) ** 2).sum(axis=1))
        for key, value in _stats(norms).items():
            stats[f"{key}_L2_norm"] = value
    return stats


def _view_stats(handler, view, stats=_stats):
    """``{name: stats(array)}`` for the non-empty arrays of a buffer view."""
    log = OrderedDict()
    for key, array in view.items():
        array_stats = stats(handler.get_numpy_copy(array))
        if array_stats is not None:
            log[key] = array_stats
    return log


class _LayerMonitor(Hook):
    """Common part of the hooks that monitor the buffers of one layer."""

    _prefix = ""

    def __init__(self, layer_name, name=None, timescale="epoch", interval=1, verbose=None):
        if name is None:
            name = f"{self._prefix}_{layer_name}"
        super().__init__(name, timescale, interval, verbose)
        self.layer_name = layer_name

    def start(self, net, stepper, verbose, named_data_iters):
        """Check that the layer exists; see :class:`Hook`.

        Raises:
            KeyError: naming the available layers.
        """
        super().start(net, stepper, verbose, named_data_iters)
        if self.layer_name not in net.layers:
            raise KeyError(
                f"{self.__name__}: no layer named {self.layer_name!r} in the network; "
                f"layers: {list(net.layers)}"
            )


class MonitorLayerDeltas(_LayerMonitor):
    """Log min/avg/max of a layer's internals, output deltas and input deltas.

    Logged as ``{'internals': {name: {'min', 'avg', 'max'}}, 'output_deltas':
    {...}, 'input_deltas': {...}}``; the values are those of the last batch
    processed. Default name: ``MonitorDeltas_<layer_name>``.

    Args:
        layer_name (str): the layer to monitor.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    _prefix = "MonitorDeltas"
    reads_last_batch = True

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """The statistics; see :class:`Hook`."""
        layer = net.buffer[self.layer_name]
        log = OrderedDict()
        for category in ("internals", "output_deltas", "input_deltas"):
            log[category] = _view_stats(net.handler, layer[category])
        return log


class MonitorLayerGradients(_LayerMonitor):
    """Log min/avg/max of each gradient of a layer: ``{name: {'min', 'avg', 'max'}}``.

    Default name: ``MonitorGradients_<layer_name>``.

    Args:
        layer_name (str): the layer to monitor.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    _prefix = "MonitorGradients"

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """The statistics; see :class:`Hook`."""
        return _view_stats(net.handler, net.buffer[self.layer_name].gradients)


class MonitorLayerInOuts(_LayerMonitor):
    """Log min/avg/max of the inputs and outputs of a layer.

    Logged as ``{'inputs': {name: {'min', 'avg', 'max'}}, 'outputs': {...}}``.
    Default name: ``MonitorInOuts_<layer_name>``.

    Args:
        layer_name (str): the layer to monitor.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    _prefix = "MonitorInOuts"
    reads_last_batch = True

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """The statistics; see :class:`Hook`."""
        layer = net.buffer[self.layer_name]
        return OrderedDict(
            inputs=_view_stats(net.handler, layer.inputs),
            outputs=_view_stats(net.handler, layer.outputs),
        )


class MonitorLayerParameters(_LayerMonitor):
    """Log statistics of each parameter of a layer.

    For every parameter ``{'min', 'avg', 'max'}``; for parameters with two or
    more dimensions also ``'min_L2_norm'``, ``'avg_L2_norm'`` and
    ``'max_L2_norm'`` of the L2 norms of its rows (the incoming weights of each
    unit for ``W`` of a FullyConnected layer). Default name:
    ``MonitorParameters_<layer_name>``.

    Args:
        layer_name (str): the layer to monitor.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    _prefix = "MonitorParameters"

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """The statistics; see :class:`Hook`."""
        parameters = net.buffer[self.layer_name].parameters
        return _view_stats(net.handler, parameters, _parameter_stats)


class MonitorLoss(Hook):
    """Log the losses of the network on a data set.

    Logs ``{'total_loss': ...}`` (plus one entry per Loss layer if there are
    several), averaged over all sequences of the data.

    Args:
        iter_name (str): name of the data iterator, as given to ``Trainer.train``
            (``trainer.train(net, train_iter, valid_getter=valid_iter)``).
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    __undescribed__ = {"iter": None}

    runs_network = True

    def __init__(self, iter_name, name=None, timescale="epoch", interval=1, verbose=None):
        super().__init__(name, timescale, interval, verbose)
        if not isinstance(iter_name, str):
            raise TypeError(
                f"{type(self).__name__}: iter_name must be the name of a data iterator given to "
                f"train (e.g. 'valid' for trainer.train(net, train_iter, valid=valid_iter)), "
                f"got {type(iter_name).__name__}"
            )
        self.iter_name = iter_name
        self.iter = None

    def start(self, net, stepper, verbose, named_data_iters):
        """Find the data iterator; see :class:`Hook`.

        Raises:
            KeyError: if there is no such iterator, or its data names do not
                match the network's inputs.
        """
        super().start(net, stepper, verbose, named_data_iters)
        if self.iter_name not in named_data_iters:
            raise KeyError(
                f"{self.__name__}: no data iterator named {self.iter_name!r}; the trainer "
                f"was given {sorted(named_data_iters)} (pass it as "
                f"trainer.train(net, train_iter, {self.iter_name}=...))"
            )
        self.iter = named_data_iters[self.iter_name]
        check_data_names(net, self.iter, self.iter_name)

    def _scorers(self):
        return ()

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Evaluate the network on the data; see :class:`Hook`."""
        return evaluate(net, self.iter, scorers=self._scorers())


class MonitorScores(MonitorLoss):
    """Log the losses and some scores of the network on a data set.

    Args:
        iter_name (str): name of the data iterator, as given to ``Trainer.train``.
        scorers (list[brainstorm.scorers.Scorer]): the scores to compute.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.

    Example:
        >>> scorers = [bs.scorers.Accuracy(out_name='Output.outputs.probabilities')]
        >>> trainer.add_hook(bs.hooks.MonitorScores('valid_getter', scorers,
        ...                                         name='validation'))
    """

    def __init__(self, iter_name, scorers, name=None, timescale="epoch", interval=1, verbose=None):
        super().__init__(iter_name, name, timescale, interval, verbose)
        self.scorers = list(scorers)
        _check_scorers(self, self.scorers)

    def _scorers(self):
        return self.scorers


# ############################## stoppers ######################################


class EarlyStopper(_LogWatcher):
    """Stop when a logged value has not improved for ``patience`` log entries.

    Use the timescale and interval of the monitor that logs the value.

    Args:
        log_name (str): dotted name of the log entry, e.g. ``'validation.Accuracy'``.
        patience (int): stop once this many entries in a row have not improved
            on the best one (1: at the first entry without improvement).
            Defaults to 1.
        criterion (str): ``'min'`` (e.g. a loss) or ``'max'`` (e.g. accuracy).
            Defaults to ``'min'``.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.

    Example:
        >>> trainer.add_hook(bs.hooks.EarlyStopper('validation.Accuracy',
        ...                                        patience=10, criterion='max'))
    """

    checks_stop = True

    def __init__(
        self,
        log_name,
        patience=1,
        criterion="min",
        name=None,
        timescale="epoch",
        interval=1,
        verbose=None,
    ):
        super().__init__(log_name, criterion, name, timescale, interval, verbose)
        self.patience = patience

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Stop if there was no improvement for too long; see :class:`Hook`."""
        values = self._values(logs, epoch_nr)
        if values is None:
            return
        best = _best_index(values, self.criterion)
        if best is None:
            best = 0
        if len(values) - 1 - best >= self.patience:
            _stop(
                self,
                f"{self.log_name} did not improve for {self.patience} checks "
                f"(criterion: {self.criterion})",
            )


class StopAfterEpoch(Hook):
    """Stop the training after ``max_epochs`` epochs.

    Args:
        max_epochs (int): the number of epochs to train.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    used_by_evaluate = False

    checks_stop = True

    def __init__(self, max_epochs, name=None, timescale="epoch", interval=1, verbose=None):
        super().__init__(name, timescale, interval, verbose)
        self.max_epochs = max_epochs

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Stop once ``epoch_nr >= max_epochs``; see :class:`Hook`."""
        if epoch_nr >= self.max_epochs:
            _stop(self, f"the maximum number of epochs ({self.max_epochs}) was reached")


class StopAfterThresholdReached(_LogWatcher):
    """Stop once a logged value reaches a threshold.

    Args:
        log_name (str): dotted name of the log entry.
        threshold (float): the value to reach.
        criterion (str): ``'min'``: stop when the value is at most
            ``threshold``; ``'max'``: at least. Defaults to ``'min'``.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.

    Example:
        >>> trainer.add_hook(StopAfterThresholdReached('validation.Accuracy',
        ...                                            threshold=0.97, criterion='max'))
    """

    checks_stop = True

    def __init__(
        self,
        log_name,
        threshold,
        criterion="min",
        name=None,
        timescale="epoch",
        interval=1,
        verbose=None,
    ):
        super().__init__(log_name, criterion, name, timescale, interval, verbose)
        self.threshold = threshold

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Stop if the threshold was reached; see :class:`Hook`."""
        values = self._values(logs, epoch_nr)
        if values is None:
            return
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        if self.criterion == "max":
            reached = values.max() >= self.threshold
        else:
            reached = values.min() <= self.threshold
        if reached:
            _stop(
                self,
                f"{self.log_name} reached the threshold {self.threshold} "
                f"(criterion: {self.criterion})",
            )


class StopOnNan(Hook):
    """Stop if NaN or infinite values appear in the parameters or in logs.

    Args:
        logs_to_check (Sequence[str]): dotted names of logs to check.
            Defaults to ().
        check_parameters (bool): check the network's parameters. Defaults to True.
        check_training_loss (bool): check the training loss: the logged
            ``rolling_training.total_loss`` and, at the timescale ``'update'``,
            the loss of the last batch. Defaults to True.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    used_by_evaluate = False

    checks_stop = True

    def __init__(
        self,
        logs_to_check=(),
        check_parameters=True,
        check_training_loss=True,
        name=None,
        timescale="epoch",
        interval=1,
        verbose=None,
    ):
        super().__init__(name, timescale, interval, verbose)
        self.logs_to_check = (
            [logs_to_check] if isinstance(logs_to_check, str) else list(logs_to_check)
        )
        self.check_parameters = check_parameters
        self.check_training_loss = check_training_loss

    def _stop_on_non_finite(self, what):
        _stop(self, f"NaN or inf was detected in {what}")

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Stop on non-finite values; see :class:`Hook`."""
        for log_name in self.logs_to_check:
            values = _lookup_log(self, logs, log_name, epoch_nr)
            if values is not None and not np.all(np.isfinite(values)):
                self._stop_on_non_finite(log_name)
        if self.check_parameters and not net.handler.is_fully_finite(net.buffer.parameters):
            self._stop_on_non_finite("the parameters")
        if self.check_training_loss:
            rolling = logs.get("rolling_training", {})
            if "total_loss" in rolling and not np.all(np.isfinite(rolling["total_loss"])):
                self._stop_on_non_finite("rolling_training.total_loss")
            if self.timescale == "update" and update_nr > 0:
                if not np.all(np.isfinite(list(net.get_loss_values().values()))):
                    self._stop_on_non_finite("the training loss")


class StopOnSigQuit(Hook):
    """Stop after the next call if the process received SIGQUIT (Ctrl+\\).

    Lets you end the training loop early and go on with the rest of the
    script. Only where the platform has SIGQUIT (not on Windows) and when
    training runs in the main thread; elsewhere the hook warns and does nothing.

    Args:
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.
    """

    used_by_evaluate = False

    __undescribed__ = {"quit": False, "_previous_handler": None}

    def __init__(self, name=None, timescale="epoch", interval=1, verbose=None):
        super().__init__(name, timescale, interval, verbose)
        self.quit = False
        self._previous_handler = None

    def start(self, net, stepper, verbose, named_data_iters):
        """Install the SIGQUIT handler; see :class:`Hook`."""
        super().start(net, stepper, verbose, named_data_iters)
        self.quit = False
        if not hasattr(signal, "SIGQUIT"):
            warnings.warn(
                "StopOnSigQuit: this platform has no SIGQUIT", RuntimeWarning, stacklevel=2
            )
            return
        try:
            self._previous_handler = signal.signal(signal.SIGQUIT, self.receive_signal)
        except ValueError:  # not in the main thread
            warnings.warn(
                "StopOnSigQuit: can only listen for SIGQUIT in the main thread",
                RuntimeWarning,
                stacklevel=2,
            )

    def receive_signal(self, signum, stack):
        """The signal handler: remember to stop at the next call.

        Args:
            signum (int): the signal number.
            stack: the interrupted frame.
        """
        self.message("Received SIGQUIT: stopping at the next check")
        self.quit = True

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Stop if SIGQUIT was received; see :class:`Hook`."""
        if self.quit:
            raise StopIteration("Received SIGQUIT signal.")

    def end(self):
        """Restore the SIGQUIT handler that was installed before :meth:`start`."""
        if self._previous_handler is not None:
            try:
                signal.signal(signal.SIGQUIT, self._previous_handler)
            except ValueError:
                pass
            self._previous_handler = None


# ############################## progress and info #############################


class ProgressBar(Hook):
    """A progress bar over the batches of each epoch, with rate and ETA (tqdm).

    On a terminal the bar is drawn live on stderr; elsewhere (logs, CI) it
    prints a progress line to stderr at the end of each epoch, and every
    ``line_interval`` seconds during long epochs. The bar shows even when the
    trainer is not verbose.

    Args:
        name (str | None): see :class:`Hook`.
        live (bool | None): draw a live bar (True) or print lines (False);
            None decides by whether stderr is a terminal.
        line_interval (float): seconds between progress lines when not live.
            Defaults to 10.
        leave (bool): keep each epoch's finished live bar on the screen; if
            False it is cleared, leaving room for the epoch's logs. Progress
            lines (not live) are always kept. Defaults to True.
    """

    used_by_evaluate = False

    __undescribed__ = {
        "length": None,
        "_bar": None,
        "_epoch": None,
        "_state": None,
        "_active": False,
    }
    __default_values__ = {"live": None, "line_interval": 10.0, "leave": True}

    def __init__(self, name=None, live=None, line_interval=10.0, leave=True):
        super().__init__(name, "update", 1)
        self.live = live
        self.line_interval = line_interval
        self.leave = leave
        self.length = None
        self._bar = None
        self._epoch = None
        self._state = None
        self._active = False

    def start(self, net, stepper, verbose, named_data_iters):
        """Learn the number of batches per epoch; see :class:`Hook`."""
        super().start(net, stepper, verbose, named_data_iters)
        self._close()
        self._epoch = None
        training = named_data_iters.get("training_data_iter")
        self._active = training is not None  # not during Trainer.evaluate
        self.length = getattr(training, "length", None)

    def _open(self, epoch_nr):
        from tqdm import tqdm

        file = sys.stderr
        live = self.live if self.live is not None else _is_terminal(file)
        sys.stdout.flush()
        self._epoch = epoch_nr
        if live:
            self._bar = tqdm(
                total=self.length,
                desc=f"Epoch {epoch_nr}",
                unit="batch",
                file=file,
                leave=self.leave,
                dynamic_ncols=True,
            )
        else:
            now = time.monotonic()
            self._state = {"n": 0, "start": now, "last": now, "file": file}

    def _line(self):
        from tqdm import tqdm

        state = self._state
        text = tqdm.format_meter(
            state["n"],
            self.length,
            time.monotonic() - state["start"],
            ncols=80,
            prefix=f"Epoch {self._epoch}",
            unit="batch",
        )
        sys.stdout.flush()
        state["file"].write(text + "\n")
        state["file"].flush()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._state is not None:
            if self._state["n"] > 0:
                self._line()
            self._state = None

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Advance the bar by one batch; see :class:`Hook`."""
        if epoch_nr == 0 or update_nr == 0 or not self._active:
            return
        if epoch_nr != self._epoch:
            self._close()
            self._open(epoch_nr)
        if self._bar is not None:
            self._bar.update(1)
        elif self._state is not None:
            self._state["n"] += 1
            now = time.monotonic()
            done = self.length is not None and self._state["n"] >= self.length
            if not done and now - self._state["last"] >= self.line_interval:
                self._state["last"] = now
                self._line()
        count = self._bar.n if self._bar is not None else self._state["n"]
        if self.length is not None and count >= self.length:
            self._close()

    def end(self):
        """Close the bar of an unfinished epoch."""
        self._close()


def _is_terminal(file):
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


class InfoUpdater(Hook):
    """Copy the training state into the info dict of a Sacred experiment run.

    Writes ``epoch_nr``, ``update_nr``, ``logs`` (a copy) and ``nr_parameters``
    into ``run.info``. Works with anything that has an ``info`` dict; Sacred
    itself is not needed to install brainstorm.

    Args:
        run: the run (``sacred.run.Run``, e.g. the ``_run`` argument of a
            captured function). Not part of the hook's description: a hook
            rebuilt from a description does nothing until ``run`` is set again.
        name (str | None): see :class:`Hook`.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.

    Example:
        >>> @ex.automain
        ... def main(_run):
        ...     trainer.add_hook(bs.hooks.InfoUpdater(_run))
    """

    used_by_evaluate = False

    __undescribed__ = {"run": None}

    def __init__(self, run, name=None, timescale="epoch", interval=1):
        super().__init__(name, timescale, interval)
        self.run = run

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Update ``run.info``; see :class:`Hook`."""
        if self.run is None:
            return
        info = self.run.info
        info["epoch_nr"] = epoch_nr
        info["update_nr"] = update_nr
        info["logs"] = copy.deepcopy(logs)
        if "nr_parameters" not in info:
            info["nr_parameters"] = int(np.prod(net.buffer.parameters.shape))


class ModifyStepperAttribute(Hook):
    """Set an attribute of the stepper (e.g. the learning rate) from a schedule.

    Args:
        schedule: a callable like those of :mod:`brainstorm.training.schedules`,
            called with ``epoch_nr, update_nr, timescale, interval, net,
            stepper, logs``.
        attr_name (str): the stepper attribute. Defaults to ``'learning_rate'``.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        name (str | None): see :class:`Hook`.
        verbose (bool | None): see :class:`Hook`.

    Example:
        >>> trainer.add_hook(bs.hooks.ModifyStepperAttribute(
        ...     bs.training.Linear(0.1, 0.01, 10), attr_name='learning_rate'))
    """

    used_by_evaluate = False

    def __init__(
        self,
        schedule,
        attr_name="learning_rate",
        timescale="epoch",
        interval=1,
        name=None,
        verbose=None,
    ):
        super().__init__(name, timescale, interval, verbose)
        self.schedule = schedule
        self.attr_name = attr_name

    def start(self, net, stepper, verbose, named_data_iters):
        """Check that the stepper has the attribute; see :class:`Hook`.

        Raises:
            AttributeError: if it has not.
        """
        super().start(net, stepper, verbose, named_data_iters)
        if not hasattr(stepper, self.attr_name):
            raise AttributeError(
                f"{self.__name__}: {type(stepper).__name__} has no attribute {self.attr_name!r}"
            )

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Set the attribute to the schedule's value; see :class:`Hook`."""
        value = self.schedule(
            epoch_nr=epoch_nr,
            update_nr=update_nr,
            timescale=self.timescale,
            interval=self.interval,
            net=net,
            stepper=stepper,
            logs=logs,
        )
        setattr(stepper, self.attr_name, value)


# ############################## visualization #################################

_BOKEH_HINT = (
    "BokehVisualizer needs bokeh, which is not installed: pip install brainstorm-training[live_viz]"
)


def _import_bokeh():
    try:
        import bokeh.embed
        import bokeh.palettes
        import bokeh.plotting
        import bokeh.resources
    except ImportError as err:
        raise ImportError(_BOKEH_HINT) from err
    return bokeh


def _numeric_leaves(logs, prefix=""):
    names = []
    for key, value in logs.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            names.extend(_numeric_leaves(value, path + "."))
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            names.append(path)
    return names


class BokehVisualizer(Hook):
    """Plot logged values as curves in an HTML file, updated at every call.

    Needs the optional extra: ``pip install brainstorm-training[live_viz]``.
    The file is a standalone Bokeh document (zoom, pan, hide curves by
    clicking the legend). While training runs the page reloads itself every
    ``refresh`` seconds, so a browser showing it follows the training live;
    the last version, written when training ends, does not reload.

    Every curve ends at the current epoch (or update) and its earlier entries
    lie ``interval`` apart: right for logs written on the visualizer's own
    timescale and interval (monitors log from epoch 0, ``rolling_training``
    from epoch 1).

    Args:
        log_names (str | list[str] | None): dotted names of the logs to plot,
            e.g. ``['validation.Accuracy', 'rolling_training.total_loss']``;
            None plots every numeric log.
        filename (str | None): the HTML file (``.html`` is appended if
            missing). Defaults to ``'bokeh_visualisation.html'``.
        timescale (str): see :class:`Hook`.
        interval (int): see :class:`Hook`.
        name (str | None): see :class:`Hook`; also the title of the plot.
        verbose (bool | None): see :class:`Hook`.
        refresh (int): seconds between reloads of the page while training.
            Defaults to 10.
        inline_resources (bool): embed BokehJS in the file, so it works
            offline (about 1 MB more), instead of loading it from the CDN.
            Defaults to False.

    Raises:
        ImportError: if bokeh is not installed (naming the command that
            installs it).
    """

    used_by_evaluate = False

    __undescribed__ = {"_last_logs": None, "_last_count": None}
    __default_values__ = {"refresh": 10, "inline_resources": False}

    def __init__(
        self,
        log_names=None,
        filename=None,
        timescale="epoch",
        interval=1,
        name=None,
        verbose=None,
        refresh=10,
        inline_resources=False,
    ):
        _import_bokeh()
        super().__init__(name, timescale, interval, verbose)
        if isinstance(log_names, str):
            log_names = [log_names]
        self.log_names = None if log_names is None else list(log_names)
        filename = "bokeh_visualisation.html" if filename is None else os.fspath(filename)
        if not filename.endswith(".html"):
            filename += ".html"
        self.filename = filename
        self.refresh = refresh
        self.inline_resources = inline_resources
        self._last_logs = None
        self._last_count = None

    def start(self, net, stepper, verbose, named_data_iters):
        """Check that bokeh is importable; see :class:`Hook`."""
        super().start(net, stepper, verbose, named_data_iters)
        _import_bokeh()
        self._last_logs = None

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        """Rewrite the HTML file with the current logs; see :class:`Hook`."""
        self._last_logs = copy.deepcopy(logs)
        self._last_count = epoch_nr if self.timescale == "epoch" else update_nr
        self.write_html(logs, live=True, count=self._last_count)

    def end(self):
        """Write the final version of the file (without self-reloading)."""
        if self._last_logs is not None:
            self.write_html(self._last_logs, live=False, count=self._last_count)
            self.message(f"curves saved to {os.path.abspath(self.filename)}")

    def write_html(self, logs, live=False, count=None):
        """Write the plot of ``logs`` to ``filename`` (atomically).

        Args:
            logs (dict): the trainer's logs.
            live (bool): make the page reload itself every ``refresh`` seconds.
            count (int | None): the current epoch (or update): the x value of
                the last entry of every curve. None plots entry i at x = i.

        Returns:
            bokeh.plotting.figure: the plot that was written.
        """
        bokeh = _import_bokeh()
        names = self.log_names if self.log_names is not None else _numeric_leaves(logs)
        plot = bokeh.plotting.figure(
            title=self.__name__,
            x_axis_label=self.timescale,
            y_axis_label="value",
            width=1000,
            height=500,
            tools="pan,wheel_zoom,box_zoom,reset,save,crosshair,hover",
        )
        colours = bokeh.palettes.Category10_10
        drawn = 0
        for i, log_name in enumerate(names):
            try:
                values = get_by_path(logs, log_name)
            except KeyError:
                continue  # not logged (yet)
            if isinstance(values, dict):
                continue
            y = [float(v) if math.isfinite(float(v)) else float("nan") for v in values]
            if count is None:
                x = list(range(len(y)))
            else:
                x = [count - (len(y) - 1 - i) * self.interval for i in range(len(y))]
            colour = colours[i % len(colours)]
            plot.line(x, y, legend_label=log_name, line_color=colour, line_width=2)
            plot.scatter(x, y, legend_label=log_name, color=colour, size=5)
            drawn += 1
        if drawn:
            plot.legend.location = "top_left"
            plot.legend.click_policy = "hide"
        resources = bokeh.resources.INLINE if self.inline_resources else bokeh.resources.CDN
        html = bokeh.embed.file_html(plot, resources, title=self.__name__)
        if live and self.refresh:
            html = html.replace(
                "<head>", f'<head>\n<meta http-equiv="refresh" content="{int(self.refresh)}">', 1
            )
        _atomic_write_text(self.filename, html)
        return plot


def _atomic_write_text(filename, text):
    directory = os.path.dirname(os.path.abspath(filename))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".html", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, filename)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
