"""The Trainer: runs the training loop, calls the hooks, collects the logs.

It also saves a whole training run to one HDF5 file and continues it later
with bit-identical results (see :meth:`Trainer.save_run`)::

    trainer = bs.Trainer(bs.training.MomentumStepper(learning_rate=0.1, momentum=0.9))
    trainer.add_hook(bs.hooks.StopAfterEpoch(50))
    trainer.save_run_every('run.hdf5')             # after every epoch
    trainer.train(net, train_iter, valid=valid_iter)

    # later, in a fresh process, after the same set-up of the data iterators:
    trainer, net = bs.Trainer.load_run('run.hdf5')
    trainer.train(net, train_iter, valid=valid_iter)   # continues with the next epoch
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import OrderedDict

import numpy as np

from brainstorm.describable import Describable, create_from_description, get_description
from brainstorm.scorers import aggregate_losses_and_scores, gather_losses_and_scores
from brainstorm.training.utils import check_data_names, read_logs, run_network, write_logs
from brainstorm.utils import given

__all__ = ["Trainer", "RUN_FORMAT"]

#: The ``format`` attribute of a training-run file written by :meth:`Trainer.save_run`.
RUN_FORMAT = "Training run v1.0"

_TRAINING_ITER = "training_data_iter"


def _print(text=""):
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)


def _format_value(value):
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def _plain(value):
    """NumPy scalars to Python numbers, so that logs are clean lists of numbers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.shape == ():
        return value.item()
    return value


class Trainer(Describable):
    """Trains a network with a stepper, calling hooks and collecting their logs.

    Args:
        stepper (brainstorm.training.steppers.TrainingStepper): the optimizer.
        verbose (bool): print the logs of the hooks. Defaults to True.

    Attributes:
        stepper: the stepper.
        verbose (bool): print logs.
        hooks (OrderedDict[str, brainstorm.hooks.Hook]): name -> hook, in the
            order they are called.
        train_scorers (list[brainstorm.scorers.Scorer]): scores computed on the
            training batches; logged with the training losses after every
            epoch under ``'rolling_training'``.
        current_epoch_nr (int): epochs done (the current one while training).
        current_update_nr (int): updates done.
        logs (dict): everything the hooks logged: nested dicts with lists of
            values, e.g. ``trainer.logs['validation']['Accuracy']``.
        results (dict): what the hooks logged during :meth:`evaluate`.
        run_file (str | None): where :meth:`train` saves the run (see
            :meth:`save_run_every`).
        run_file_interval (int): epochs between those saves.

    A trainer's description holds the stepper, the hooks and the scorers, but
    neither the counters, logs nor any data iterator (or data).
    """

    __undescribed__ = {
        "current_epoch_nr": 0,
        "current_update_nr": 0,
        "logs": {},
        "results": {},
        "_net": None,
        "_named_data_iters": None,
        "_pending_restore": None,
        "_in_epoch": False,
        "_epoch_position": None,
        "_stopped": False,
        "_stopped_at": "epoch",
    }
    __default_values__ = {"run_file": None, "run_file_interval": 1}

    def __init__(self, stepper, verbose=True):
        from brainstorm.training.steppers import TrainingStepper

        if not isinstance(stepper, TrainingStepper):
            raise TypeError(
                f"Trainer needs a stepper object, e.g. bs.training.SgdStepper(learning_rate=0.1); "
                f"got {given(stepper)}"
            )
        self.stepper = stepper
        self.verbose = verbose
        self.hooks = OrderedDict()
        self.train_scorers = []
        self.run_file = None
        self.run_file_interval = 1
        self.current_epoch_nr = 0
        self.current_update_nr = 0
        self.logs = {}
        self.results = {}
        self._net = None
        self._named_data_iters = None
        self._pending_restore = None
        self._in_epoch = False
        # where an epoch stopped by an update hook ended (see _train_epochs)
        self._epoch_position = None
        # whether the last train() ended with a stop at the end of an epoch, and the
        # timescale of the hooks that stopped it ('update': before training, at count 0)
        self._stopped = False
        self._stopped_at = "epoch"

    def __init_from_description__(self, description):
        hooks = sorted(getattr(self, "hooks", {}).values(), key=lambda hook: hook.priority)
        self.hooks = OrderedDict((hook.__name__, hook) for hook in hooks)
        self.train_scorers = list(getattr(self, "train_scorers", None) or [])
        self.verbose = getattr(self, "verbose", True)
        self.run_file = getattr(self, "run_file", None)
        self.run_file_interval = getattr(self, "run_file_interval", 1)

    # ------------------------------------------------------------------ hooks

    def add_hook(self, hook):
        """Add a hook; hooks are called in the order they were added.

        Hooks that rely on logs of other hooks (``SaveBestNetwork``,
        ``EarlyStopper``) must be added after the hook that logs the value;
        hooks that read the last training batch (``MonitorLayerDeltas``,
        ``MonitorLayerInOuts``) before those that run the network on other data
        (``MonitorLoss``, ``MonitorScores``; a warning says so).

        Args:
            hook (brainstorm.hooks.Hook): the hook.

        Raises:
            ValueError: if a hook with the same name was added before.
        """
        from brainstorm.hooks import Hook

        if not isinstance(hook, Hook):
            raise TypeError(
                f"add_hook needs a hook object, e.g. bs.hooks.ProgressBar(); got {given(hook)}"
            )
        name = hook.__name__
        if name in self.hooks:
            raise ValueError(
                f"A hook named {name!r} was already added; give one of them another name (name=...)"
            )
        if hook.reads_last_batch:
            runner = next(
                (
                    other
                    for other in self.hooks.values()
                    if other.runs_network and other.timescale == hook.timescale
                ),
                None,
            )
            if runner is not None:
                warnings.warn(
                    f"{name} reads the buffers of the last training batch, but {runner.__name__} "
                    f"(added before it, on the same timescale) runs the network on other data "
                    f"first: add {name} before {runner.__name__}",
                    UserWarning,
                    stacklevel=2,
                )
        priorities = [h.priority for h in self.hooks.values()]
        hook.priority = max(priorities) + 1 if priorities else 0
        self.hooks[name] = hook

    def _start_hooks(self, net, named_data_iters):
        for hook in self.hooks.values():
            hook.start(net, self.stepper, self.verbose, named_data_iters)

    def _end_hooks(self):
        for hook in self.hooks.values():
            end = getattr(hook, "end", None)
            if end is not None:
                end()

    def _emit_hooks(self, net, timescale, logs=None, stop_checks_only=False):
        """Call the hooks of ``timescale`` that are due (with ``stop_checks_only``,
        only those with ``checks_stop``); True if one asked to stop."""
        logs = self.logs if logs is None else logs
        count = self.current_epoch_nr if timescale == "epoch" else self.current_update_nr
        should_stop = False
        for name, hook in self.hooks.items():
            if hook.timescale != timescale or count % hook.interval != 0:
                continue
            if stop_checks_only and not hook.checks_stop:
                continue
            try:
                result = hook(
                    epoch_nr=self.current_epoch_nr,
                    update_nr=self.current_update_nr,
                    net=net,
                    stepper=self.stepper,
                    logs=self.logs,
                )
            except StopIteration as stop:
                if stop.args and (self.verbose if hook.verbose is None else hook.verbose):
                    _print(f"{name} >> {stop.args[0]}")
                should_stop = True
                continue
            if result is not None:
                self._add_log(name, result, hook.verbose, logs)
        sys.stdout.flush()
        return should_stop

    def _add_log(self, name, value, verbose=None, logs=None, indent=0):
        verbose = self.verbose if verbose is None else verbose
        logs = self.logs if logs is None else logs
        if isinstance(value, dict):
            if verbose:
                _print(" " * indent + name)
            group = logs.setdefault(name, {})
            for key, item in value.items():
                # (keys are strings, as in a saved run or logs file)
                self._add_log(str(key), item, verbose, group, indent + 2)
        elif value is not None:
            value = _plain(value)
            if verbose:
                _print(" " * indent + f"{name:<{max(1, 30 - indent)}}: {_format_value(value)}")
            logs.setdefault(name, []).append(value)

    # ------------------------------------------------------------------ training

    def _print_header(self, text):
        if self.verbose:
            _print()
            _print(f"{'-' * 20} {text} {'-' * 20}")

    def train(self, net, training_data_iter, **named_data_iters):
        """Train a network.

        Calls every hook's ``start``, then all hooks once at count 0 (so
        monitors log the state before training; skipped when continuing a
        restored run), then runs epochs until a hook stops the training. In
        each epoch, for every batch: stepper step (forward, backward, update),
        training losses and ``train_scorers`` gathered, weight modifiers
        applied, ``'update'`` hooks called; after the epoch the aggregated
        training losses and scores are logged as ``'rolling_training'`` and the
        ``'epoch'`` hooks are called. A stop requested by an update hook ends
        training at once, in the middle of the epoch (without its epoch hooks);
        the next ``train`` call, or a run saved then and continued, goes on
        with the rest of that epoch.

        Args:
            net (brainstorm.structure.network.Network): the network to train.
            training_data_iter (brainstorm.data_iterators.DataIterator): the
                training data; its data names must equal the network's inputs.
            **named_data_iters: further data iterators, used by hooks by name
                (e.g. ``valid_getter=...`` for ``MonitorScores('valid_getter', ...)``).

        Raises:
            KeyError: if the names of the training data do not match the
                network's inputs (the message names both sets).
        """
        check_data_names(net, training_data_iter, _TRAINING_ITER)
        if not net.loss_layers:
            raise ValueError(
                "The network has no Loss layer, so there is nothing to minimize; connect the "
                "loss output, e.g.  out - 'loss' >> bs.layers.Loss()"
            )
        if _TRAINING_ITER in named_data_iters:
            raise ValueError(f"{_TRAINING_ITER!r} is reserved for the training data iterator")
        named_data_iters = dict(named_data_iters)
        named_data_iters[_TRAINING_ITER] = training_data_iter
        self._net, self._named_data_iters = net, named_data_iters
        resuming = self._pending_restore is not None
        parameters = net.handler.get_numpy_copy(net.buffer.parameters)
        if not resuming and parameters.size and not np.any(parameters):
            warnings.warn(
                "Every parameter of the network is 0: was net.initialize(...) forgotten? "
                "(Hidden units that start alike stay alike.)",
                stacklevel=2,
            )
        if not resuming:
            self._print_header("Before Training")
        self.stepper.start(net)
        pending = self._pending_restore
        unfinished = self._apply_pending_restore(net, named_data_iters) if resuming else None
        self._stopped = False
        self._epoch_position = None
        net.start_weight_modifiers()  # (FreezeValues keeps the weights training starts from)
        try:
            self._start_hooks(net, named_data_iters)
            if resuming:
                for hook in self.hooks.values():
                    hook.continue_run(self.logs)
                # a run that stopped (not paused): its stop checks are asked again at
                # the count where it stopped; if one still says stop, nothing more is
                # done (raise e.g. StopAfterEpoch's max_epochs to train on) and the
                # restored run stays pending, for another train() call
                stopped_at = pending.get("stopped_at", "epoch")
                timescale = stopped_at if unfinished is None else "update"
                if (unfinished is not None or pending.get("stopped", False)) and self._emit_hooks(
                    net, timescale, stop_checks_only=True
                ):
                    self._stopped, self._stopped_at = unfinished is None, stopped_at
                    if unfinished is not None:  # (save_run writes the same run again)
                        self._epoch_position = pending["unfinished"]
                    return
            # the restored states are in place and the hooks started: from here on a
            # failure leaves a run in progress (a retry after a failing hook's start()
            # applies them again, instead of starting afresh)
            self._pending_restore = None
            # count 0: update hooks, then (if none asked to stop) epoch hooks; a run
            # stopped by an update hook there runs the epoch hooks when continued
            before_training = ("update", "epoch") if not resuming else ()
            if resuming and pending.get("stopped") and pending.get("stopped_at") == "update":
                before_training = ("epoch",)
            for timescale in before_training:
                if self._emit_hooks(net, timescale):
                    self._stopped, self._stopped_at = True, timescale
                    self._maybe_save_run(stopped=True)
                    return
            self._train_epochs(net, training_data_iter, unfinished)
        finally:
            self._end_hooks()

    def _train_epochs(self, net, training_data_iter, unfinished=None):
        """The epochs of :meth:`train`; ``unfinished`` (from a restored run) continues
        an epoch that an update hook stopped: ``{'batches': done, 'scores': ...}``."""
        chain = _iterator_chain(training_data_iter)
        stop_states = None
        while True:
            if unfinished is None:
                self.current_epoch_nr += 1
                self.stepper.start_epoch()
                self._print_header(f"Epoch {self.current_epoch_nr}")
                done, scores = 0, {}
            else:
                done, scores = unfinished["batches"], unfinished["scores"]
                stop_states = unfinished.get("stop_states")
                unfinished = None
                self._print_header(f"Epoch {self.current_epoch_nr}, after its update {done}")
            # where this epoch's batches come from: the data iterators' random states
            # before the epoch; an epoch stopped part-way is continued from there
            # by drawing its first `done` batches again (see save_run)
            start_states = [_get_rnd_state(it, "rnd") for it in chain]
            self._epoch_position = None
            self._in_epoch = True
            batches = _skip_batches(training_data_iter(handler=net.handler), done)
            if stop_states is not None:
                # (as they were at the stop: hooks may have drawn from an iterator of
                # the training data under another name too, which redrawing the
                # batches does not repeat)
                for it, state in zip(chain, stop_states):
                    if state is not None:
                        it.rnd.set_state(state)
                stop_states = None
            for _ in run_network(net, batches):
                done += 1
                self.current_update_nr += 1
                # one handler session for the passes and the update (see Handler.session)
                with net.handler.session():
                    self.stepper.run()
                    gather_losses_and_scores(net, self.train_scorers, scores)
                    net.apply_weight_modifiers()
                if self._emit_hooks(net, "update"):
                    self._epoch_position = self._position(net, done, scores, chain, start_states)
                    break
            self._in_epoch = False
            if self._epoch_position is not None:
                # an update hook stopped training in the middle of the epoch: it ends
                # at once, and the epoch hooks (and the rolling log) come when a
                # continued run finishes the epoch: a saved run, or this one at the
                # next train() call (the run as it is now, pending as if restored)
                self._pending_restore = self._run_in_memory(net)
                self._maybe_save_run(stopped=True)
                return
            if done == 0:
                raise ValueError(
                    f"The training data iterator gave no batches in epoch "
                    f"{self.current_epoch_nr}: is its data empty?"
                )
            if scores:
                rolling = aggregate_losses_and_scores(scores, net, self.train_scorers)
                self._add_log("rolling_training", rolling)
            stop = self._emit_hooks(net, "epoch")
            self._stopped, self._stopped_at = stop, "epoch"
            self._maybe_save_run(stopped=stop)
            if stop:
                return

    def _position(self, net, done, scores, chain, start_states):
        """Where an update hook stopped an epoch, after update ``done``: what
        :meth:`save_run` stores besides the run to continue the epoch as if it had
        never stopped. The training data iterator (``chain``: it and the iterators
        it wraps) goes back to its state before the epoch (``start_states``), also
        where it is passed under another name too."""
        context = self.stepper.context if self.stepper.carry_context else None
        at_start = {id(it): state for it, state in zip(chain, start_states)}
        states = {
            name: [at_start.get(id(it), _get_rnd_state(it, "rnd")) for it in _iterator_chain(top)]
            for name, top in self._named_data_iters.items()
        }
        return {
            "batches": done,
            "scores": {name: list(values) for name, values in scores.items()},
            "iterator_states": states,
            "stop_states": [_get_rnd_state(it, "rnd") for it in chain],
            "context": _numpy_context(net.handler, context),
        }

    def _run_in_memory(self, net):
        """What :meth:`restore_run` would leave pending for the run as it is now,
        stopped in the middle of an epoch (see :meth:`_position`)."""
        position = self._epoch_position
        return {
            "stepper": self.stepper.get_state(),
            "iterators": position["iterator_states"],
            "unfinished": position,
            "stopped": False,
            "network": net.rnd.get_state(),
            "handler": (_get_rnd_state(net.handler, "rnd"), "the stopped run"),
        }

    def evaluate(self, net, **named_data_iters):
        """Call every monitoring hook once on ``net`` (no training); return what they logged.

        Hooks that save, stop or steer training (``used_by_evaluate = False``)
        are left out. Useful to run the monitors on other data, e.g. a test set:
        ``trainer.evaluate(net, valid_getter=test_iter)``.

        Args:
            net (brainstorm.structure.network.Network): the network.
            **named_data_iters: data iterators by the names the hooks use.

        Returns:
            dict: the logs of this evaluation (also kept in ``self.results``).
        """
        self.results = {}
        hooks = [(n, h) for n, h in self.hooks.items() if getattr(h, "used_by_evaluate", True)]
        try:
            for _, hook in hooks:
                hook.start(net, self.stepper, self.verbose, dict(named_data_iters))
            for name, hook in hooks:  # each once, whatever its timescale and interval
                result = hook(
                    epoch_nr=self.current_epoch_nr,
                    update_nr=self.current_update_nr,
                    net=net,
                    stepper=self.stepper,
                    logs=self.results,
                )
                if result is not None:
                    self._add_log(name, result, hook.verbose, self.results)
        finally:
            for _, hook in hooks:
                end = getattr(hook, "end", None)
                if end is not None:
                    end()
        return self.results

    # ------------------------------------------------------------ saving a run

    def save_run_every(self, filename, interval=1):
        """Save the training run to ``filename`` during :meth:`train`.

        The run is saved after every ``interval`` epochs (once all hooks of
        that epoch ran) and when training stops. Pass ``None`` to stop saving.

        Args:
            filename (str | os.PathLike | None): the run file.
            interval (int): epochs between saves. Defaults to 1.
        """
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int, got {interval!r}")
        self.run_file = None if filename is None else os.fspath(filename)
        self.run_file_interval = interval

    def _maybe_save_run(self, stopped):
        if self.run_file is None:
            return
        if stopped or self.current_epoch_nr % self.run_file_interval == 0:
            self.save_run(self.run_file)

    def save_run(self, filename):
        """Save the whole training run to one HDF5 file (atomically).

        The file holds everything needed to continue the run exactly: the
        trainer's description (stepper settings, hooks, scorers), the network
        (description, parameters, states), the stepper's state (e.g.
        velocities), the counters, the logs and the random states of the
        network, of its handler and of every data iterator of the last
        :meth:`train` call (but not their data). No pickle is used.

        Call it from an epoch hook, through ``save_run_every``, or after
        :meth:`train` returned; the continued run starts with the next epoch,
        or, if an update hook stopped training in the middle of an epoch (e.g.
        ``StopOnSigQuit(timescale='update')``; training ends there without the
        epoch's hooks), with the rest of that epoch, as if it had never
        stopped: the file then also holds how many updates of the epoch were
        done, the training scores gathered so far, the stepper's carried context
        and the data iterators' random states from the epoch's start (the
        continued run draws those batches again, without training on them).
        A ``SaveBestNetwork`` without a filename keeps its best network in
        memory only, which is not saved (a warning says so).

        Args:
            filename (str | os.PathLike): the file to write.

        Raises:
            RuntimeError: if :meth:`train` was never called, or an epoch is in
                progress.
        """
        from brainstorm.structure.network_file import atomic_write_hdf5
        from brainstorm.utils import get_brainstorm_info

        if self._net is None:
            raise RuntimeError("save_run needs a network: call train() first")
        if self._in_epoch:
            raise RuntimeError(
                "save_run cannot save in the middle of an epoch (the rest of the epoch would "
                "be skipped when continuing); save from an epoch hook or use save_run_every"
            )
        unsaved = [
            name
            for name, hook in self.hooks.items()
            if type(hook).__name__ == "SaveBestNetwork" and getattr(hook, "filename", None) is None
        ]
        if unsaved:
            warnings.warn(
                f"save_run does not store the best network that {unsaved} keep in memory; "
                f"give them a filename to keep it across a resumed run",
                RuntimeWarning,
                stacklevel=2,
            )
        net = self._net
        position = self._epoch_position  # (None unless stopped in the middle of an epoch)
        trainer_description = get_description(self)
        net_description = get_description(net)
        params = net.handler.get_numpy_copy(net.buffer.parameters)
        states = net.handler.get_numpy_copy(net.buffer.states)
        stepper_state = self.stepper.get_state()
        handler_state = _get_rnd_state(net.handler, "rnd")
        if position is None:
            iterator_states = {
                name: _iterator_rnd_states(it) for name, it in self._named_data_iters.items()
            }
        else:
            iterator_states = position["iterator_states"]

        def write(f):
            f.attrs["info"] = get_brainstorm_info()
            f.attrs["format"] = RUN_FORMAT.encode()
            f.attrs["current_epoch_nr"] = self.current_epoch_nr
            f.attrs["current_update_nr"] = self.current_update_nr
            f.attrs["stopped"] = bool(self._stopped and position is None)
            f.attrs["stopped_at"] = self._stopped_at  # (the stop's timescale)
            f["trainer"] = json.dumps(trainer_description).encode()
            g = f.create_group("network")
            g["description"] = json.dumps(net_description).encode()
            g.create_dataset("parameters", data=params)
            g.create_dataset("states", data=states)
            g = f.create_group("stepper")
            for name, value in stepper_state.items():
                g.create_dataset(name, data=np.asarray(value))
            write_logs(f.create_group("logs"), self.logs)
            g = f.create_group("random_states")
            _write_rnd_state(g, "network", net.rnd.get_state())
            if handler_state is not None:
                _write_rnd_state(g, "handler", handler_state)
            its = g.create_group("iterators")
            for name, chain in iterator_states.items():
                chain_group = its.create_group(name)
                for depth, state in enumerate(chain):
                    if state is not None:
                        _write_rnd_state(chain_group, str(depth), state)
                chain_group.attrs["depth"] = len(chain)
            if position is not None:
                _write_epoch_position(f.create_group("unfinished_epoch"), position)

        atomic_write_hdf5(filename, write)

    @classmethod
    def load_run(cls, filename):
        """Rebuild a trainer and its network from a file written by :meth:`save_run`.

        Continue training with ``trainer.train(net, train_iter, **named_iters)``,
        passing data iterators created as in the original run; their random
        states are restored from the file at that call. Hooks that hold
        objects that cannot be described (``InfoUpdater``'s run) need them set
        again.

        Args:
            filename (str | os.PathLike): the run file.

        Returns:
            tuple[Trainer, brainstorm.structure.network.Network]: the trainer
            and the network, as they were when the run was saved.

        Raises:
            ValueError: if the file is not a training-run file.
        """
        with _open_run_file(filename) as f:
            trainer = create_from_description(json.loads(_text(f["trainer"][()])))
            if not isinstance(trainer, Trainer):
                raise ValueError(f"{filename}: the stored trainer is not a Trainer")
            net = create_from_description(json.loads(_text(f["network/description"][()])))
        trainer.restore_run(filename, net)
        return trainer, net

    def restore_run(self, filename, net):
        """Continue a saved run with this trainer and an identically built network.

        Overwrites the network's parameters, states and random states, this
        trainer's counters and logs, and the stepper's settings (which hooks
        such as ``ModifyStepperAttribute`` may have changed). At the next
        :meth:`train` call the stepper's state and the data iterators' random
        states are applied, and the random states of the network and its
        handler once more (the handler's derives from ``bs.global_rnd``, which
        the script may seed again in between); that call then continues the
        run without the round of hook calls before training. If the run had
        stopped at the end of an epoch, the hooks with ``checks_stop`` are asked
        again first, and training ends at once if one still says stop. (A run
        stopped by an update hook in that round before training is asked at the
        update timescale, and then gets the round's epoch hooks.) This
        trainer's hooks and scorers are kept.

        Args:
            filename (str | os.PathLike): a file written by :meth:`save_run`.
            net (brainstorm.structure.network.Network): a network with the
                architecture of the saved one.

        Raises:
            ValueError: if the file is not a training-run file, or does not fit
                the network or the stepper's type.
        """
        with _open_run_file(filename) as f:
            stored_stepper = json.loads(_text(f["trainer"][()])).get("stepper", {})
            stored = json.loads(_text(f["network/description"][()]))
            if stored.get("architecture") != json.loads(json.dumps(net.architecture)):
                raise ValueError(f"{filename}: the saved network has a different architecture")
            params = np.asarray(f["network/parameters"][()])
            states = np.asarray(f["network/states"][()])
            stepper_state = {name: np.asarray(d[()]) for name, d in f["stepper"].items()}
            logs = read_logs(f["logs"])
            epoch_nr = int(f.attrs["current_epoch_nr"])
            stopped = bool(f.attrs.get("stopped", False))
            stopped_at = _text(f.attrs.get("stopped_at", "epoch"))
            if stopped_at not in ("update", "epoch"):
                raise ValueError(f"{filename}: unknown timescale of the stop {stopped_at!r}")
            update_nr = int(f.attrs["current_update_nr"])
            rnd = f["random_states"]
            network_state = _read_rnd_state(rnd["network"])
            handler_state = _read_rnd_state(rnd["handler"]) if "handler" in rnd else None
            iterator_states = {}
            for name, chain_group in rnd["iterators"].items():
                depth = int(chain_group.attrs["depth"])
                iterator_states[name] = [
                    _read_rnd_state(chain_group[str(i)]) if str(i) in chain_group else None
                    for i in range(depth)
                ]
            unfinished = None
            if "unfinished_epoch" in f:  # (a position as _position makes it)
                unfinished = _read_epoch_position(f["unfinished_epoch"])
                unfinished["iterator_states"] = iterator_states
        if stored_stepper.get("@type") != type(self.stepper).__name__:
            raise ValueError(
                f"{filename}: the run was trained with {stored_stepper.get('@type')}, this "
                f"trainer has {type(self.stepper).__name__}"
            )
        targets = (
            ("parameters", params, net.buffer.parameters),
            ("states", states, net.buffer.states),
        )
        for what, values, target in targets:
            if values.shape != tuple(target.shape):
                raise ValueError(
                    f"{filename}: saved {what} have shape {values.shape}, the network's "
                    f"{tuple(target.shape)}"
                )
        for _, values, target in targets:
            net.handler.set_from_numpy(target, values)
        for key, value in stored_stepper.items():
            if key != "@type":  # settings changed during training, e.g. the learning rate
                setattr(self.stepper, key, create_from_description(value))
        net.rnd.set_state(network_state)
        if handler_state is not None:
            _set_rnd_state(net.handler, handler_state, filename)
        self.logs = logs
        self.current_epoch_nr = epoch_nr
        self.current_update_nr = update_nr
        self._epoch_position = None
        self._pending_restore = {
            "stepper": stepper_state,
            "iterators": iterator_states,
            "unfinished": unfinished,
            "stopped": stopped,
            "stopped_at": stopped_at,
            # (applied again at train(): the set-up of the data between here and
            # there may reseed global_rnd, from which the handler's state derives)
            "network": network_state,
            "handler": (handler_state, filename),
        }

    def _apply_pending_restore(self, net, named_data_iters):
        """Apply the stepper's and data iterators' states of a restored run (after
        ``stepper.start``); return where an unfinished epoch stopped, or None."""
        pending = self._pending_restore
        saved = pending["iterators"]
        if set(saved) != set(named_data_iters):
            raise ValueError(
                f"The saved run used the data iterators {sorted(saved)}, but train() was "
                f"given {sorted(named_data_iters)}; pass the same names to continue it"
            )
        chains = {name: _iterator_chain(named_data_iters[name]) for name in saved}
        for name, states in saved.items():
            if len(chains[name]) != len(states):
                raise ValueError(
                    f"Data iterator {name!r} wraps {len(chains[name])} iterators, the saved "
                    f"one {len(states)}; create it as in the saved run"
                )
        # everything fits: apply (train() forgets the pending state once the hooks
        # started too)
        self.stepper.set_state(pending["stepper"])
        net.rnd.set_state(pending["network"])
        handler_state, filename = pending["handler"]
        if handler_state is not None:
            _set_rnd_state(net.handler, handler_state, filename)
        for name, states in saved.items():
            for it, state in zip(chains[name], states):
                rnd = getattr(it, "rnd", None)
                if state is not None and rnd is not None:
                    rnd.set_state(state)
        unfinished = pending.get("unfinished")
        if unfinished is None:
            return None
        context = unfinished["context"]
        if context is not None:
            context = {path: net.handler.create_from_numpy(a) for path, a in context.items()}
        self.stepper.context = context
        return {
            "batches": unfinished["batches"],
            "scores": {name: list(values) for name, values in unfinished["scores"].items()},
            "stop_states": unfinished.get("stop_states"),
        }


# ------------------------------------------------------------------ helpers


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _open_run_file:
    def __init__(self, filename):
        import h5py

        filename = os.fspath(filename)
        if not os.path.exists(filename):
            raise FileNotFoundError(f"No such training-run file: {filename}")
        try:
            self.f = h5py.File(filename, "r")
        except OSError as err:
            raise ValueError(f"{filename} is not a readable HDF5 file: {err}") from None
        fmt = _text(self.f.attrs.get("format", b""))
        if not fmt.startswith("Training run v"):
            self.f.close()
            raise ValueError(
                f"{filename} is not a brainstorm training-run file (format {fmt!r}, "
                f"expected {RUN_FORMAT!r})"
            )
        if not fmt.startswith("Training run v1."):
            self.f.close()
            raise ValueError(f"{filename} was written in a newer format ({fmt!r})")

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        self.f.close()


def _skip_batches(batches, count):
    """The generator ``batches`` after drawing (and dropping) its first ``count`` batches.

    Raises:
        ValueError: if it has fewer (the data differ from the saved run's).
    """
    for drawn in range(count):
        if next(batches, None) is None:
            raise ValueError(
                f"The saved run stopped after update {count} of its epoch, but the training "
                f"data iterator now gives only {drawn} batches: pass the same data to continue it"
            )
    return batches


def _numpy_context(handler, context):
    if context is None:
        return None
    return {path: handler.get_numpy_copy(value) for path, value in context.items()}


def _write_epoch_position(group, position):
    """Where an epoch stopped (see :meth:`Trainer.save_run`); names are kept as JSON
    attributes (a score or buffer name may hold any character)."""
    group.attrs["batches"] = int(position["batches"])
    names = list(position["scores"])
    group.attrs["score_names"] = json.dumps(names)
    scores = group.create_group("scores")
    for i, name in enumerate(names):
        scores.create_dataset(str(i), data=np.asarray(position["scores"][name], dtype=np.float64))
    stop_states = position.get("stop_states") or []
    states = group.create_group("stop_states")  # the training iterators' at the stop
    states.attrs["depth"] = len(stop_states)
    for depth, state in enumerate(stop_states):
        if state is not None:
            _write_rnd_state(states, str(depth), state)
    context = position["context"]
    group.attrs["has_context"] = context is not None
    if context is not None:
        paths = list(context)
        group.attrs["context_paths"] = json.dumps(paths)
        g = group.create_group("context")
        for i, path in enumerate(paths):
            g.create_dataset(str(i), data=context[path])


def _read_epoch_position(group):
    names = json.loads(_text(group.attrs["score_names"]))
    scores = {
        name: [
            (float(w), float(v)) for w, v in np.asarray(group["scores"][str(i)][()]).reshape(-1, 2)
        ]
        for i, name in enumerate(names)
    }
    context = None
    if bool(group.attrs["has_context"]):
        paths = json.loads(_text(group.attrs["context_paths"]))
        context = {path: np.asarray(group["context"][str(i)][()]) for i, path in enumerate(paths)}
    stop_states = None
    if "stop_states" in group:
        states = group["stop_states"]
        stop_states = [
            _read_rnd_state(states[str(i)]) if str(i) in states else None
            for i in range(int(states.attrs["depth"]))
        ]
    return {
        "batches": int(group.attrs["batches"]),
        "scores": scores,
        "context": context,
        "stop_states": stop_states,
    }


def _iterator_chain(data_iter):
    """The iterator and, recursively, the iterators it wraps."""
    chain = []
    while data_iter is not None and data_iter not in chain:
        chain.append(data_iter)
        data_iter = getattr(data_iter, "iter", None)
    return chain


def _iterator_rnd_states(data_iter):
    return [_get_rnd_state(it, "rnd") for it in _iterator_chain(data_iter)]


def _get_rnd_state(obj, attr):
    rnd = getattr(obj, attr, None)
    if rnd is None or not hasattr(rnd, "get_state"):
        return None
    state = rnd.get_state()
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == "MT19937"):
        return None
    return state


def _write_rnd_state(group, name, state):
    kind, keys, pos, has_gauss, cached = state
    dataset = group.create_dataset(name, data=np.asarray(keys, dtype=np.uint32))
    dataset.attrs["kind"] = kind
    dataset.attrs["pos"] = int(pos)
    dataset.attrs["has_gauss"] = int(has_gauss)
    dataset.attrs["cached_gaussian"] = float(cached)


def _read_rnd_state(dataset):
    return (
        _text(dataset.attrs["kind"]),
        np.asarray(dataset[()], dtype=np.uint32),
        int(dataset.attrs["pos"]),
        int(dataset.attrs["has_gauss"]),
        float(dataset.attrs["cached_gaussian"]),
    )


def _set_rnd_state(handler, state, filename):
    rnd = getattr(handler, "rnd", None)
    if rnd is None or not hasattr(rnd, "set_state"):
        warnings.warn(
            f"{filename}: cannot restore the random state of {type(handler).__name__}",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    rnd.set_state(state)
