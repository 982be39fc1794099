"""Regression tests for defects found in review."""

import numpy as np
import pytest
from training_test_helpers import Recorder, float64_net, make_data, make_net

import brainstorm as bs
from brainstorm.data_iterators import Minibatches, Undivided
from brainstorm.handlers import NumpyHandler
from brainstorm.hooks import Hook
from brainstorm.scorers import Accuracy, Hamming, MeanSquaredError
from brainstorm.training import evaluate


class StopAtOnce(Hook):
    def __call__(self, epoch_nr, update_nr, net, stepper, logs):
        raise StopIteration("stop")


def iterator(x, t, batch_size=5):
    return bs.data_iterators.Minibatches(batch_size, default=x, targets=t, shuffle=True)


def test_update_hook_stopping_at_epoch_zero_stops_training():
    x, t = make_data(10)
    calls = []
    trainer = bs.Trainer(bs.training.SgdStepper(0.1), verbose=False)
    trainer.add_hook(StopAtOnce(timescale="update"))
    trainer.add_hook(Recorder(calls, name="epoch_hook"))
    trainer.train(make_net(), iterator(x, t))
    assert trainer.current_epoch_nr == 0 and trainer.current_update_nr == 0
    assert calls == []  # the epoch hooks of round 0 do not run after a stop


def _trainer(epochs):
    trainer = bs.Trainer(bs.training.MomentumStepper(0.1, 0.9), verbose=False)
    trainer.add_hook(bs.hooks.MonitorLoss("valid"))
    trainer.add_hook(bs.hooks.StopAfterEpoch(epochs))
    return trainer


def test_failed_resume_can_be_retried(tmp_path):
    x, t = make_data(20)
    bs.global_rnd.set_seed(5)
    net = make_net()
    _trainer(4).train(net, iterator(x, t), valid=iterator(x, t))
    reference = net.get("parameters")
    bs.global_rnd.set_seed(5)
    trainer = _trainer(2)
    trainer.save_run_every(tmp_path / "run.hdf5")
    trainer.train(make_net(), iterator(x, t), valid=iterator(x, t))
    resumed, net = bs.Trainer.load_run(tmp_path / "run.hdf5")
    resumed.hooks["StopAfterEpoch"].max_epochs = 4
    with pytest.raises(ValueError, match="pass the same names"):
        resumed.train(net, iterator(x, t), validation=iterator(x, t))
    resumed.train(net, iterator(x, t), valid=iterator(x, t))
    assert len(resumed.logs["MonitorLoss"]["total_loss"]) == 5
    assert np.array_equal(net.get("parameters"), reference)


def test_restore_run_checks_everything_before_changing_the_network(tmp_path):
    x, t = make_data(10)
    trainer = _trainer(1)
    trainer.train(make_net(), iterator(x, t), valid=iterator(x, t))
    trainer.save_run(tmp_path / "run.hdf5")
    net = make_net(seed=7)
    before = net.get("parameters")
    other = bs.Trainer(bs.training.AdamStepper(), verbose=False)
    with pytest.raises(ValueError, match="trained with MomentumStepper"):
        other.restore_run(tmp_path / "run.hdf5", net)
    assert np.array_equal(net.get("parameters"), before)


def test_save_run_refuses_the_middle_of_an_epoch(tmp_path):
    class SaveNow(Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            if update_nr == 2:
                trainer.save_run(tmp_path / "run.hdf5")

    x, t = make_data(20)
    trainer = _trainer(1)
    trainer.add_hook(SaveNow(timescale="update"))
    with pytest.raises(RuntimeError, match="middle of an epoch"):
        trainer.train(make_net(), iterator(x, t), valid=iterator(x, t))


def test_evaluate_calls_monitors_once_with_fresh_logs(tmp_path):
    x, t = make_data(10)
    trainer = bs.Trainer(bs.training.SgdStepper(0.1), verbose=False)
    trainer.add_hook(bs.hooks.MonitorScores("valid", [Accuracy()], name="validation", interval=2))
    trainer.add_hook(
        bs.hooks.SaveBestNetwork("validation.Accuracy", filename=str(tmp_path / "best.hdf5"))
    )
    trainer.add_hook(bs.hooks.StopAfterEpoch(3))
    net = make_net()
    trainer.train(net, iterator(x, t), valid=iterator(x, t))
    saved = (tmp_path / "best.hdf5").stat().st_mtime_ns
    results = trainer.evaluate(net, valid=iterator(x, t))
    assert list(results) == ["validation"]
    assert len(results["validation"]["Accuracy"]) == 1
    assert (tmp_path / "best.hdf5").stat().st_mtime_ns == saved


def test_carry_context_starts_afresh_when_the_batch_size_changes():
    inp = bs.layers.Input({"default": ("T", "B", 2), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    inp >> bs.layers.Lstm(3) >> bs.layers.FullyConnected(2, "linear") >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out)
    net.initialize(bs.initializers.Gaussian(0.1))
    rng = np.random.RandomState(0)
    x, t = rng.randn(4, 7, 2), rng.randint(0, 2, (4, 7, 1))
    stepper = bs.training.SgdStepper(0.1)
    stepper.carry_context = True
    trainer = bs.Trainer(stepper, verbose=False)
    trainer.add_hook(bs.hooks.StopAfterEpoch(2))
    trainer.train(net, bs.data_iterators.Minibatches(3, shuffle=False, default=x, targets=t))
    assert trainer.current_update_nr == 6


def test_scorers_reject_mismatched_shapes():
    predicted = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="do not match"):
        Hamming()(np.zeros((4, 1)), predicted)
    with pytest.raises(ValueError, match="do not match"):
        MeanSquaredError()(np.zeros((4, 1)), predicted)
    with pytest.raises(ValueError, match="columns"):
        Accuracy()(np.zeros((4, 2)), predicted)


# --- session 3 review: SaveBestNetwork states, logs of epoch 0, pixel-wise masks ---------


def _batchnorm_net():
    inp = bs.layers.Input({"default": ("T", "B", 3), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    (
        inp
        >> bs.layers.BatchNorm(name="BN")
        >> bs.layers.FullyConnected(2, activation="linear", name="Proj")
        >> out
    )
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out, handler=NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(0.5), seed=3)
    return net


def test_save_best_network_in_memory_keeps_the_states():
    net = _batchnorm_net()
    net.handler.set_from_numpy(net.buffer.BN.states.mean, np.array([1.0, 2.0, 3.0]))
    hook = bs.hooks.SaveBestNetwork("watched", criterion="min")
    hook(1, 10, net, None, {"watched": [0.5]})
    net.handler.set_from_numpy(net.buffer.BN.states.mean, np.array([7.0, 7.0, 7.0]))
    best = hook.load_best_network()
    assert np.array_equal(best.buffer.BN.states.mean, [1.0, 2.0, 3.0])
    assert np.array_equal(best.buffer.parameters, net.buffer.parameters)


@pytest.mark.parametrize(
    "hook",
    [
        lambda: bs.hooks.SaveBestNetwork("rolling_training.total_loss", criterion="min"),
        lambda: bs.hooks.EarlyStopper("rolling_training.total_loss", patience=2),
        lambda: bs.hooks.StopAfterThresholdReached("rolling_training.total_loss", 0.1, "min"),
        lambda: bs.hooks.StopOnNan(logs_to_check=["rolling_training.total_loss"]),
    ],
)
def test_watched_training_logs_do_not_exist_yet_at_epoch_0(hook):
    instance = hook()
    net = float64_net()
    assert instance(0, 0, net, None, {}) is None  # before training: nothing to watch
    with pytest.raises(KeyError, match="rolling_training.total_loss"):
        instance(1, 3, net, None, {})  # a missing log later is still an error


@pytest.mark.parametrize("log", ["validation.total_loss", "rolling_training.total_loss"])
def test_log_watchers_on_the_update_timescale_wait_for_their_log(log):
    # at count 0 the update hooks run before the epoch hooks (which log the
    # validation), and the rolling logs appear only at the end of epoch 1
    x, t = make_data(20)
    trainer = bs.Trainer(bs.training.SgdStepper(0.1), verbose=False)
    trainer.add_hook(bs.hooks.MonitorLoss("valid", name="validation"))
    trainer.add_hook(bs.hooks.StopAfterThresholdReached(log, -1.0, timescale="update"))
    trainer.add_hook(bs.hooks.StopOnNan([log], timescale="update"))
    trainer.add_hook(bs.hooks.StopAfterEpoch(2))
    data = Minibatches(5, default=x, targets=t)
    trainer.train(float64_net(), data, valid=data)
    assert trainer.current_update_nr == 8
    hook = bs.hooks.EarlyStopper("misspelled.total_loss", timescale="update")
    assert hook(0, 0, None, None, {}) is None
    with pytest.raises(KeyError, match="no log 'misspelled.total_loss'"):
        hook(1, 1, None, None, {"validation": {"total_loss": [1.0]}})


def test_a_per_step_mask_spreads_over_pixelwise_outputs():
    inp = bs.layers.Input(
        {"default": ("T", "B", 2, 2, 4), "targets": ("T", "B", 2, 2, 1), "mask": ("T", "B", 1)}
    )
    out, mask_layer = bs.layers.SoftmaxCE(name="Output"), bs.layers.Mask(name="Masked")
    inp - "default" >> out
    inp - "targets" >> "targets" - out
    out - "loss" >> mask_layer >> bs.layers.Loss()
    inp - "mask" >> "mask" - mask_layer
    net = bs.Network.from_layer(out, handler=NumpyHandler(np.float64))
    rng = np.random.RandomState(0)
    x, t = rng.randn(2, 3, 2, 2, 4), rng.randint(0, 4, (2, 3, 2, 2, 1))
    mask = np.ones((2, 3, 1))
    mask[1, 0] = 0
    scores = evaluate(
        net, Undivided(default=x, targets=t, mask=mask), scorers=[Accuracy(mask_name="mask")]
    )
    hits = x.argmax(axis=-1) == t[..., 0]  # softmax keeps the argmax of its inputs
    counted = np.broadcast_to(mask[:, :, :, None] == 1, hits.shape)
    assert scores["Accuracy"] == pytest.approx(hits[counted].mean())
    assert hits[counted].mean() != pytest.approx(hits.mean())  # the mask matters here


def test_accuracy_takes_the_references_arguments_in_order():
    acc = Accuracy("Output.outputs.predictions", "t", "m", "acc")
    assert (acc.out_name, acc.targets_name, acc.mask_name, acc.__name__) == (
        "Output.outputs.predictions",
        "t",
        "m",
        "acc",
    )
    assert acc.threshold == 0.5 and Accuracy(threshold=0.3).threshold == 0.3


# --- session 3 review: mistakes that trained silently --------------------------------


def test_trainer_wants_objects_not_classes():
    with pytest.raises(TypeError, match="stepper object"):
        bs.training.Trainer(None)
    with pytest.raises(TypeError, match="the class SgdStepper"):
        bs.training.Trainer(bs.training.SgdStepper)
    trainer = bs.training.Trainer(bs.training.SgdStepper())
    with pytest.raises(TypeError, match="the class ProgressBar"):
        trainer.add_hook(bs.hooks.ProgressBar)


def _loss_free_net():
    inp = bs.layers.Input({"default": ("T", "B", 3), "targets": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    inp >> bs.layers.FullyConnected(2, activation="linear", name="Proj") >> out
    inp - "targets" >> "targets" - out
    net = bs.Network.from_layer(out, handler=NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(0.5), seed=1)
    return net


def test_training_a_network_without_a_loss_layer_is_refused():
    x, t = np.ones((1, 4, 3)), np.zeros((1, 4, 1))
    trainer = bs.training.Trainer(bs.training.SgdStepper(), verbose=False)
    with pytest.raises(ValueError, match="no Loss layer"):
        trainer.train(_loss_free_net(), Undivided(default=x, targets=t))


def test_training_from_all_zero_parameters_warns():
    net = make_net()
    net.initialize(0.0)
    x, t = make_data()
    trainer = bs.training.Trainer(bs.training.SgdStepper(), verbose=False)
    trainer.add_hook(bs.hooks.StopAfterEpoch(1))
    with pytest.warns(UserWarning, match="initialize"):
        trainer.train(net, Undivided(default=x, targets=t))


def test_training_data_without_batches_is_an_error():
    class NoBatches(Undivided):
        def __call__(self, handler=None):
            return iter(())

    x, t = make_data()
    trainer = bs.training.Trainer(bs.training.SgdStepper(), verbose=False)
    trainer.add_hook(bs.hooks.StopAfterEpoch(3))
    with pytest.raises(ValueError, match="no batches in epoch 1"):
        trainer.train(make_net(), NoBatches(default=x, targets=t))


def test_save_best_network_added_before_its_monitor_is_reported():
    x, t = make_data()
    trainer = bs.training.Trainer(bs.training.SgdStepper(), verbose=False)
    trainer.add_hook(bs.hooks.SaveBestNetwork("validation.total_loss", criterion="min"))
    trainer.add_hook(bs.hooks.MonitorLoss("valid", name="validation"))
    trainer.add_hook(bs.hooks.StopAfterEpoch(1))
    with pytest.raises(KeyError, match="validation.total_loss"):
        trainer.train(
            make_net(), Undivided(default=x, targets=t), valid=Undivided(default=x, targets=t)
        )


def test_save_best_network_acts_only_on_new_log_entries():
    net = make_net()
    hook = bs.hooks.SaveBestNetwork("v", criterion="min")
    hook(1, 1, net, None, {"v": [1.0]})
    saved = hook.load_parameters()
    net.handler.set_from_numpy(net.buffer.parameters, saved + 1)
    hook(2, 2, net, None, {"v": [1.0]})  # the monitor runs every other epoch
    assert np.array_equal(hook.load_parameters(), saved)
    hook(3, 3, net, None, {"v": [1.0, 0.5]})
    assert np.array_equal(hook.load_parameters(), saved + 1)


def test_monitors_want_an_iterator_name_and_scorer_objects():
    x, t = make_data()
    with pytest.raises(TypeError, match="iter_name must be the name"):
        bs.hooks.MonitorLoss(Undivided(default=x, targets=t))
    with pytest.raises(TypeError, match="the class Accuracy"):
        bs.hooks.MonitorScores("valid", [Accuracy])


def test_layer_monitors_added_after_an_evaluating_monitor_are_warned_about():
    trainer = bs.Trainer(bs.training.SgdStepper(0.1), verbose=False)
    trainer.add_hook(bs.hooks.MonitorLayerInOuts("Hid"))  # before: fine
    trainer.add_hook(bs.hooks.MonitorLoss("valid", name="validation"))
    trainer.add_hook(bs.hooks.MonitorLayerParameters("Hid"))  # reads no batch: fine
    trainer.add_hook(bs.hooks.MonitorLayerDeltas("Out", timescale="update"))  # other timescale
    with pytest.warns(
        UserWarning, match="MonitorDeltas_Hid reads .* add MonitorDeltas_Hid before validation"
    ):
        trainer.add_hook(bs.hooks.MonitorLayerDeltas("Hid"))
