"""Saving a training run and continuing it gives exactly the uninterrupted result."""

import h5py
import numpy as np
import pytest
from training_test_helpers import float64_net, make_data

import brainstorm as bs
from brainstorm import hooks
from brainstorm.data_iterators import AddGaussianNoise, Minibatches
from brainstorm.training import MomentumStepper, Trainer

EPOCHS = 4


class Crash(Exception):
    pass


class CrashingMinibatches(Minibatches):
    """Minibatches that raise in the middle of a given epoch (a simulated crash)."""

    def __init__(self, crash_epoch, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_epoch = crash_epoch
        self.epochs_started = 0

    def __call__(self, handler=None):
        self.epochs_started += 1
        for i, batch in enumerate(super().__call__(handler)):
            if self.epochs_started == self.crash_epoch and i == 1:
                raise Crash()
            yield batch


def setup(crash_epoch=None, seed=42):
    """The same script every time: seed, data iterators, network, trainer."""
    bs.global_rnd.set_seed(seed)
    x, t = make_data(24, seed=5)
    xv, tv = make_data(10, seed=6)
    if crash_epoch is None:
        inner = Minibatches(5, default=x, targets=t)
    else:
        inner = CrashingMinibatches(crash_epoch, 5, default=x, targets=t)
    train = AddGaussianNoise(inner, {"default": 0.1})  # a wrapper with its own random state
    valid = Minibatches(4, default=xv, targets=tv)  # shuffled: uses its random state too
    net = float64_net(dropout=0.3)  # dropout masks come from the handler's random state
    net.set_weight_modifiers({"Hid": {"W": bs.value_modifiers.ConstrainL2Norm(1.5)}})
    trainer = Trainer(MomentumStepper(learning_rate=0.2, momentum=0.9), verbose=False)
    trainer.train_scorers = [bs.scorers.Accuracy()]
    trainer.add_hook(hooks.MonitorScores("valid", [bs.scorers.Accuracy()], name="validation"))
    trainer.add_hook(hooks.ModifyStepperAttribute(bs.training.Exponential(0.2, 0.8)))
    trainer.add_hook(hooks.StopAfterEpoch(EPOCHS))
    return trainer, net, train, valid


def uninterrupted():
    trainer, net, train, valid = setup()
    trainer.train(net, train, valid=valid)
    return trainer, net


@pytest.mark.parametrize("load_first", [False, True])
def test_a_crashed_run_continued_from_its_file_is_bit_identical(tmp_path, load_first):
    run_file = tmp_path / "run.hdf5"
    reference, reference_net = uninterrupted()

    trainer, net, train, valid = setup(crash_epoch=3)
    trainer.save_run_every(run_file)
    with pytest.raises(Crash):
        trainer.train(net, train, valid=valid)
    assert trainer.current_epoch_nr == 3  # crashed in epoch 3; the file holds epoch 2

    # a fresh "process": same script, then load the run and continue it
    del trainer, net
    if load_first:  # (the set-up reseeds bs.global_rnd after the run was loaded)
        trainer, net = Trainer.load_run(run_file)
        _, _, train, valid = setup()
    else:
        _, _, train, valid = setup()
        trainer, net = Trainer.load_run(run_file)
    assert trainer.current_epoch_nr == 2
    assert trainer.stepper.learning_rate == pytest.approx(0.2 * 0.8**2)
    trainer.verbose = False
    trainer.train(net, train, valid=valid)

    assert trainer.current_epoch_nr == EPOCHS
    assert trainer.current_update_nr == reference.current_update_nr
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    assert trainer.logs == reference.logs
    assert trainer.stepper.learning_rate == reference.stepper.learning_rate
    # the run was saved again when it stopped
    with h5py.File(run_file, "r") as f:
        assert f.attrs["current_epoch_nr"] == EPOCHS


class FailingStart(hooks.Hook):
    def start(self, net, stepper, verbose, named_data_iters):
        raise KeyError("no such layer")


@pytest.mark.parametrize("failing_start", [False, True])
def test_restore_run_into_a_trainer_built_by_the_script(tmp_path, failing_start):
    run_file = tmp_path / "run.hdf5"
    reference, reference_net = uninterrupted()

    trainer, net, train, valid = setup()
    trainer.hooks["StopAfterEpoch"].max_epochs = 2
    trainer.train(net, train, valid=valid)
    trainer.save_run(run_file)

    trainer, net, train, valid = setup()
    trainer.restore_run(run_file, net)
    if failing_start:  # a hook fails to start; the user fixes the script and tries again
        trainer.add_hook(FailingStart())
        with pytest.raises(KeyError, match="no such layer"):
            trainer.train(net, train, valid=valid)
        del trainer.hooks["FailingStart"]
    trainer.train(net, train, valid=valid)
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    assert trainer.logs == reference.logs


def test_without_restoring_the_random_states_the_run_differs(tmp_path):
    """The check above is sharp: the random states matter in this set-up."""
    run_file = tmp_path / "run.hdf5"
    reference, reference_net = uninterrupted()
    trainer, net, train, valid = setup()
    trainer.hooks["StopAfterEpoch"].max_epochs = 2
    trainer.train(net, train, valid=valid)
    trainer.save_run(run_file)
    with h5py.File(run_file, "r+") as f:  # without the handler's: other dropout masks
        del f["random_states/handler"]
    trainer, net, train, valid = setup()
    net.handler.rnd.seed(0)
    trainer.restore_run(run_file, net)
    trainer.train(net, train, valid=valid)
    assert not np.array_equal(net.get("parameters"), reference_net.get("parameters"))


def test_the_run_file_holds_everything_and_no_pickle(tmp_path):
    run_file = tmp_path / "run.hdf5"
    trainer, net, train, valid = setup()
    trainer.hooks["StopAfterEpoch"].max_epochs = 1
    trainer.train(net, train, valid=valid)
    trainer.save_run(run_file)
    with h5py.File(run_file, "r") as f:
        fmt = f.attrs["format"]
        assert (fmt.decode() if isinstance(fmt, bytes) else fmt) == "Training run v1.0"
        assert set(f) == {"trainer", "network", "stepper", "logs", "random_states"}
        assert set(f["network"]) == {"description", "parameters", "states"}
        assert set(f["stepper"]) == {"velocity"}
        assert set(f["random_states"]) == {"network", "handler", "iterators"}
        assert set(f["random_states/iterators"]) == {"training_data_iter", "valid"}
        assert f["random_states/iterators/training_data_iter"].attrs["depth"] == 2
        assert f["logs/validation/Accuracy"].shape == (2,)
        for name in ("trainer", "network/description"):
            assert f[name][()].startswith(b"{")  # JSON


def test_restore_checks_the_file_and_the_network(tmp_path):
    trainer, net, train, valid = setup()
    with pytest.raises(RuntimeError, match="train"):
        trainer.save_run(tmp_path / "x.hdf5")
    net.save_as_hdf5(tmp_path / "net.hdf5")
    with pytest.raises(ValueError, match="not a brainstorm training-run file"):
        Trainer.load_run(tmp_path / "net.hdf5")
    with pytest.raises(FileNotFoundError):
        Trainer.load_run(tmp_path / "missing.hdf5")

    trainer.hooks["StopAfterEpoch"].max_epochs = 1
    trainer.train(net, train, valid=valid)
    trainer.save_run(tmp_path / "run.hdf5")
    other = bs.Network.from_layer(
        bs.layers.Input({"default": ("T", "B", 4), "targets": ("T", "B", 1)}) - "default"
        >> bs.layers.FullyConnected(2, name="Other")
    )
    with pytest.raises(ValueError, match="architecture"):
        trainer.restore_run(tmp_path / "run.hdf5", other)

    with pytest.raises(ValueError, match="MomentumStepper"):
        Trainer(bs.training.SgdStepper()).restore_run(tmp_path / "run.hdf5", net)

    trainer.restore_run(tmp_path / "run.hdf5", net)
    with pytest.raises(ValueError, match="valid"):
        trainer.train(net, train, validation=valid)


class PauseAt(hooks.Hook):
    """Stops training after a given update (as StopOnSigQuit(timescale='update') does
    when the user presses Ctrl+\\)."""

    def __init__(self, update, name=None):
        super().__init__(name=name, timescale="update")
        self.update = update

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        if update_nr == self.update:
            raise StopIteration("paused")


@pytest.mark.parametrize("pause_at", [7, 10])  # in epoch 2 (5 updates each); its last update
def test_a_run_stopped_in_the_middle_of_an_epoch_continues_with_the_rest_of_it(tmp_path, pause_at):
    run_file = tmp_path / "run.hdf5"
    reference, reference_net = uninterrupted()
    assert reference.current_update_nr == 5 * EPOCHS

    trainer, net, train, valid = setup()
    trainer.add_hook(PauseAt(pause_at))
    trainer.save_run_every(run_file)
    trainer.train(net, train, valid=valid)
    assert (trainer.current_epoch_nr, trainer.current_update_nr) == (2, pause_at)
    with h5py.File(run_file, "r") as f:
        assert f["unfinished_epoch"].attrs["batches"] == pause_at - 5

    trainer, net, train, valid = setup()  # the script again, without the pause
    trainer.restore_run(run_file, net)
    trainer.train(net, train, valid=valid)
    assert trainer.current_update_nr == reference.current_update_nr
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    # the file held the run before the epoch hooks of the stop (which logged, drew
    # validation batches and lowered the learning rate): the logs are as if it never
    # stopped, and so is everything after
    assert trainer.logs == reference.logs
    assert trainer.stepper.learning_rate == reference.stepper.learning_rate


def recurrent_setup(pause_at=None):
    bs.global_rnd.set_seed(3)
    inp = bs.layers.Input({"default": ("T", "B", 3), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    inp >> bs.layers.Lstm(4, name="Lstm") >> bs.layers.FullyConnected(3, "linear") >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(inp, handler=bs.handlers.NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(0.5), seed=1)
    rng = np.random.RandomState(0)
    x, t = rng.randn(5, 8, 3), rng.randint(0, 3, (5, 8, 1))
    stepper = MomentumStepper(learning_rate=0.1, momentum=0.5)
    stepper.carry_context = True  # each batch continues the sequences of the one before
    trainer = Trainer(stepper, verbose=False)
    if pause_at is not None:
        trainer.add_hook(PauseAt(pause_at))
    trainer.add_hook(hooks.StopAfterEpoch(2))
    return trainer, net, Minibatches(2, shuffle=False, default=x, targets=t)


def test_the_carried_context_of_an_unfinished_epoch_is_continued(tmp_path):
    run_file = tmp_path / "run.hdf5"
    reference, reference_net, data = recurrent_setup()
    reference.train(reference_net, data)
    trainer, net, data = recurrent_setup(pause_at=6)  # update 2 of epoch 2
    trainer.train(net, data)
    trainer.save_run(run_file)  # (by hand, after train returned)
    with h5py.File(run_file, "r") as f:
        assert f["unfinished_epoch"].attrs["has_context"]
    trainer, net, data = recurrent_setup()
    trainer.restore_run(run_file, net)
    trainer.train(net, data)
    assert trainer.current_update_nr == reference.current_update_nr == 8
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))


def test_an_unfinished_epoch_needs_the_data_it_was_trained_on(tmp_path):
    run_file = tmp_path / "run.hdf5"
    trainer, net, data = recurrent_setup(pause_at=7)
    trainer.train(net, data)
    trainer.save_run(run_file)
    trainer, net, _ = recurrent_setup()
    trainer.restore_run(run_file, net)
    rng = np.random.RandomState(0)
    x, t = rng.randn(5, 4, 3), rng.randint(0, 3, (5, 4, 1))  # 2 batches, not 4
    with pytest.raises(ValueError, match="after update 3 of its epoch.*only 2 batches"):
        trainer.train(net, Minibatches(2, shuffle=False, default=x, targets=t))


def test_save_best_network_does_not_take_old_log_entries_for_new_ones(tmp_path):
    # the monitor logs every 2nd epoch, the hook looks every epoch: continued after
    # epoch 2, it must not take the epoch-2 entry for a new one at epoch 3 (and
    # overwrite the best network with the epoch-3 network)
    def best_setup(best_file, epochs):
        trainer, net, train, valid = setup()
        for name in ("validation", "ModifyStepperAttribute", "StopAfterEpoch"):
            del trainer.hooks[name]
        trainer.add_hook(hooks.MonitorLoss("valid", name="validation", interval=2))
        trainer.add_hook(hooks.SaveBestNetwork("validation.total_loss", best_file, "min"))
        trainer.add_hook(hooks.StopAfterEpoch(epochs))
        return trainer, net, train, valid

    reference, reference_net, train, valid = best_setup(tmp_path / "reference.hdf5", 3)
    reference.train(reference_net, train, valid=valid)
    trainer, net, train, valid = best_setup(tmp_path / "best.hdf5", 2)
    trainer.train(net, train, valid=valid)
    trainer.save_run(tmp_path / "run.hdf5")
    trainer, net, train, valid = best_setup(tmp_path / "best.hdf5", 3)
    trainer.restore_run(tmp_path / "run.hdf5", net)
    trainer.train(net, train, valid=valid)
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    best = bs.Network.from_hdf5(tmp_path / "best.hdf5").get("parameters")
    expected = bs.Network.from_hdf5(tmp_path / "reference.hdf5").get("parameters")
    assert np.array_equal(best, expected)
    assert not np.array_equal(best, net.get("parameters"))


def test_freeze_values_keeps_the_weights_training_starts_from(tmp_path):
    trainer, net, train, valid = setup()
    net.set_weight_modifiers({"Hid": {"W": bs.value_modifiers.FreezeValues()}})
    start = net.get("Hid.parameters.W")
    other = net.get("Out_proj.parameters.W")
    trainer.hooks["StopAfterEpoch"].max_epochs = 1
    trainer.train(net, train, valid=valid)
    assert np.array_equal(net.get("Hid.parameters.W"), start)  # (frozen from update 1 on)
    assert not np.array_equal(net.get("Out_proj.parameters.W"), other)  # the rest trained
    trainer.save_run(tmp_path / "run.hdf5")
    trainer, net = Trainer.load_run(tmp_path / "run.hdf5")  # FreezeValues() anew
    trainer.verbose = False
    trainer.hooks["StopAfterEpoch"].max_epochs = EPOCHS
    _, _, train, valid = setup()
    trainer.train(net, train, valid=valid)
    assert trainer.current_epoch_nr == EPOCHS
    assert np.array_equal(net.get("Hid.parameters.W"), start)


def test_continuing_a_run_that_stopped_asks_its_stop_checks_again(tmp_path):
    # a script that continues its run file if there is one: run twice, it must not
    # train an epoch more each time
    run_file = tmp_path / "run.hdf5"
    trainer, net, train, valid = setup()
    trainer.save_run_every(run_file)
    trainer.train(net, train, valid=valid)
    finished = net.get("parameters")
    for _ in range(2):
        trainer, net = Trainer.load_run(run_file)
        trainer.verbose = False
        _, _, train, valid = setup()
        trainer.train(net, train, valid=valid)
        assert (trainer.current_epoch_nr, trainer.current_update_nr) == (EPOCHS, 5 * EPOCHS)
        assert np.array_equal(net.get("parameters"), finished)
    # with a higher limit it trains on
    trainer, net = Trainer.load_run(run_file)
    trainer.verbose = False
    trainer.hooks["StopAfterEpoch"].max_epochs = EPOCHS + 1
    _, _, train, valid = setup()
    trainer.train(net, train, valid=valid)
    assert (trainer.current_epoch_nr, trainer.current_update_nr) == (EPOCHS + 1, 5 * EPOCHS + 5)


def test_a_training_iterator_also_monitored_under_another_name_is_continued_right(tmp_path):
    # the inner (clean, shuffled) iterator of the training data is monitored too:
    # continuing the unfinished epoch must draw its batches from the epoch's start
    def shared_setup():
        trainer, net, train, _ = setup()
        return trainer, net, train, train.iter

    reference, reference_net, train, valid = shared_setup()
    reference.train(reference_net, train, valid=valid)
    trainer, net, train, valid = shared_setup()
    trainer.add_hook(PauseAt(7))
    trainer.train(net, train, valid=valid)
    trainer.save_run(tmp_path / "run.hdf5")
    trainer, net, train, valid = shared_setup()
    trainer.restore_run(tmp_path / "run.hdf5", net)
    trainer.train(net, train, valid=valid)
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    assert trainer.logs == reference.logs


def test_after_the_stop_checks_ended_a_continued_run_a_higher_limit_continues_it(tmp_path):
    reference, reference_net = uninterrupted()
    trainer, net, train, valid = setup()
    trainer.hooks["StopAfterEpoch"].max_epochs = 2
    trainer.train(net, train, valid=valid)
    trainer.save_run(tmp_path / "run.hdf5")
    trainer, net = Trainer.load_run(tmp_path / "run.hdf5")
    trainer.verbose = False
    _, _, train, valid = setup()
    trainer.train(net, train, valid=valid)  # still stopped: returns at once
    assert trainer.current_epoch_nr == 2
    trainer.hooks["StopAfterEpoch"].max_epochs = EPOCHS  # then raised: the same run goes on
    trainer.train(net, train, valid=valid)
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    assert trainer.logs == reference.logs


def test_a_run_stopped_by_an_update_stop_check_is_not_continued_by_rerunning(tmp_path):
    run_file = tmp_path / "run.hdf5"

    def script():
        trainer, net, train, valid = setup()
        trainer.add_hook(
            hooks.StopAfterThresholdReached(
                "rolling_training.total_loss", 10.0, timescale="update", interval=2
            )
        )
        if run_file.exists():
            trainer.restore_run(run_file, net)
        trainer.save_run_every(run_file)
        trainer.train(net, train, valid=valid)
        return trainer

    first = script()  # the rolling loss exists after epoch 1: stop at update 6
    assert (first.current_epoch_nr, first.current_update_nr) == (2, 6)
    again = script()
    assert (again.current_epoch_nr, again.current_update_nr) == (2, 6)
    assert again.logs == first.logs


def test_train_called_again_after_a_stop_in_an_epoch_goes_on_with_the_rest_of_it():
    reference, reference_net = uninterrupted()
    trainer, net, train, valid = setup()
    trainer.add_hook(PauseAt(7))
    trainer.train(net, train, valid=valid)
    del trainer.hooks["PauseAt"]
    trainer.train(net, train, valid=valid)  # (the same process: no run file)
    assert trainer.current_update_nr == reference.current_update_nr
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    assert trainer.logs == reference.logs


def test_an_update_monitor_of_the_training_iterator_under_another_name_is_continued_right(
    tmp_path,
):
    # the monitor draws shuffled batches from the training data's inner iterator
    # between updates: continuing must not replay only the training batches
    def shared_setup():
        trainer, net, train, _ = setup()
        trainer.add_hook(hooks.MonitorLoss("clean", name="clean", timescale="update", interval=2))
        return trainer, net, train, train.iter

    reference, reference_net, train, clean = shared_setup()
    reference.train(reference_net, train, valid=clean, clean=clean)
    trainer, net, train, clean = shared_setup()
    trainer.add_hook(PauseAt(7))
    trainer.train(net, train, valid=clean, clean=clean)
    trainer.save_run(tmp_path / "run.hdf5")
    trainer, net, train, clean = shared_setup()
    trainer.restore_run(tmp_path / "run.hdf5", net)
    trainer.train(net, train, valid=clean, clean=clean)
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
    assert trainer.logs == reference.logs


class StopBeforeTraining(hooks.Hook):
    """An update-timescale stop check that says stop at count 0 while ``blocking``."""

    checks_stop = True

    def __init__(self, name=None):
        super().__init__(name=name, timescale="update")
        self.blocking = True

    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        if update_nr == 0 and self.blocking:
            raise StopIteration("not yet")


def test_a_run_stopped_by_an_update_hook_before_training_is_asked_again_and_then_continued(
    tmp_path,
):
    # a stop in the round of hook calls before training (count 0) by an update hook:
    # continued, the same stop check is asked again (not the epoch ones), and once
    # it lets the run go, the round's epoch hooks run before the first epoch
    run_file = tmp_path / "run.hdf5"
    reference, reference_net = uninterrupted()

    def script(blocking):
        trainer, net, train, valid = setup()
        trainer.add_hook(StopBeforeTraining())
        trainer.hooks["StopBeforeTraining"].blocking = blocking
        if run_file.exists():
            trainer.restore_run(run_file, net)
        trainer.save_run_every(run_file)
        trainer.train(net, train, valid=valid)
        return trainer, net

    trainer, _ = script(blocking=True)
    assert trainer.current_update_nr == 0 and "validation" not in trainer.logs
    with h5py.File(run_file, "r") as f:
        assert f.attrs["stopped_at"] == "update"
    trainer, _ = script(blocking=True)  # asked again: still stopped
    assert trainer.current_update_nr == 0 and "validation" not in trainer.logs
    trainer, net = script(blocking=False)  # let go: count 0's epoch hooks, then training
    assert trainer.current_update_nr == reference.current_update_nr
    assert trainer.logs == reference.logs
    assert np.array_equal(net.get("parameters"), reference_net.get("parameters"))
