"""Every hook does what it says."""

import os
import signal
import sys

import h5py
import numpy as np
import pytest
from training_test_helpers import FeedLog, float64_net, make_data

import brainstorm as bs
from brainstorm import hooks
from brainstorm.data_iterators import Minibatches, Undivided
from brainstorm.training import (
    Exponential,
    MomentumStepper,
    SgdStepper,
    Trainer,
    load_logs,
    save_logs,
)


def data_iters(n=12, batch_size=4):
    x, t = make_data(n)
    return Minibatches(batch_size, default=x, targets=t), Undivided(default=x, targets=t)


def run(trainer, net=None, epochs=None, **named):
    if epochs is not None:
        trainer.add_hook(hooks.StopAfterEpoch(epochs, name="stop_after"))
    train, valid = data_iters()
    named.setdefault("valid", valid)
    net = net if net is not None else float64_net()
    trainer.train(net, train, **named)
    return net


def quiet(stepper=None):
    return Trainer(stepper or SgdStepper(0.3), verbose=False)


# ----------------------------------------------------------------- stoppers


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stopper_stops_after_patience_checks_without_improvement(patience):
    # best value at entry 2 (epoch 2); no improvement afterwards
    trainer = quiet()
    trainer.add_hook(FeedLog([5.0, 4.0, 3.0, 3.5, 3.0, 4.0, 3.2, 3.1, 3.05]))
    trainer.add_hook(hooks.EarlyStopper("feed.value", patience=patience))
    run(trainer, epochs=20)
    assert trainer.current_epoch_nr == 2 + patience
    assert len(trainer.logs["feed"]["value"]) == 3 + patience


def test_early_stopper_with_max_criterion_keeps_going_while_improving():
    trainer = quiet()
    trainer.add_hook(FeedLog([0.1, 0.2, 0.3, 0.4, 0.4, 0.4]))
    trainer.add_hook(hooks.EarlyStopper("feed.value", patience=2, criterion="max"))
    run(trainer, epochs=20)
    assert trainer.current_epoch_nr == 5  # best at 3; entries 4 and 5 are no improvement


def test_early_stopper_explains_a_missing_log():
    trainer = quiet()
    trainer.add_hook(hooks.EarlyStopper("validation.Accuracy"))
    with pytest.raises(KeyError, match="validation.Accuracy"):
        run(trainer, epochs=2)


def test_stop_after_epoch(capsys):
    trainer = Trainer(SgdStepper(0.1))
    trainer.add_hook(hooks.StopAfterEpoch(3))
    run(trainer)
    assert trainer.current_epoch_nr == 3 and trainer.current_update_nr == 9
    assert "maximum number of epochs (3)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "criterion, threshold, values, stop_epoch",
    [("min", 2.0, [5, 4, 3, 2, 1], 3), ("max", 0.9, [0.5, 0.8, 0.95, 0.99], 2)],
)
def test_stop_after_threshold_reached(criterion, threshold, values, stop_epoch):
    trainer = quiet()
    trainer.add_hook(FeedLog(values))
    trainer.add_hook(hooks.StopAfterThresholdReached("feed.value", threshold, criterion=criterion))
    run(trainer, epochs=10)
    assert trainer.current_epoch_nr == stop_epoch


def regression_net_and_data():
    """A linear regression network (float32) that diverges with a big learning rate."""
    inp = bs.layers.Input({"default": ("T", "B", 3), "targets": ("T", "B", 2)})
    out = bs.layers.SquaredError(name="Output")
    inp - "default" >> bs.layers.FullyConnected(2, activation="linear", name="Lin") >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out)
    net.initialize(bs.initializers.Gaussian(0.1), seed=1)
    rng = np.random.RandomState(0)
    x = rng.randn(1, 12, 3)
    return net, Minibatches(4, default=x, targets=x[..., :2] * 2)


def test_stop_on_nan_stops_a_diverging_run():
    net, train = regression_net_and_data()
    trainer = quiet(SgdStepper(learning_rate=100.0))
    trainer.add_hook(hooks.StopOnNan(timescale="update"))
    trainer.add_hook(hooks.StopAfterEpoch(100))
    with np.errstate(all="ignore"):  # the overflow is the point of the test
        trainer.train(net, train)
    assert trainer.current_epoch_nr < 100
    assert not net.handler.is_fully_finite(net.buffer.parameters) or not np.isfinite(
        net.get_loss_values()["total_loss"]
    )
    # stopped at the first non-finite update: one update earlier everything was finite
    assert trainer.current_update_nr > 3


def test_stop_on_nan_checks_named_logs_and_the_rolling_loss():
    trainer = quiet()
    trainer.add_hook(FeedLog([1.0, 2.0, float("nan")]))
    trainer.add_hook(hooks.StopOnNan(["feed.value"], check_parameters=False))
    run(trainer, epochs=10)
    assert trainer.current_epoch_nr == 2

    net, train = regression_net_and_data()
    diverging = quiet(SgdStepper(learning_rate=100.0))
    diverging.add_hook(hooks.StopOnNan(check_parameters=False))
    diverging.add_hook(hooks.StopAfterEpoch(100))
    with np.errstate(all="ignore"):
        diverging.train(net, train)
    assert diverging.current_epoch_nr < 100
    assert not np.isfinite(diverging.logs["rolling_training"]["total_loss"][-1])
    assert np.isfinite(diverging.logs["rolling_training"]["total_loss"][-2])


@pytest.mark.skipif(not hasattr(signal, "SIGQUIT"), reason="no SIGQUIT on this platform")
def test_stop_on_sigquit_stops_at_the_next_call_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGQUIT)

    class SendQuit(hooks.Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            if epoch_nr == 2:
                os.kill(os.getpid(), signal.SIGQUIT)

    trainer = quiet()
    trainer.add_hook(SendQuit())
    trainer.add_hook(hooks.StopOnSigQuit())
    run(trainer, epochs=10)
    assert trainer.current_epoch_nr == 2
    assert signal.getsignal(signal.SIGQUIT) == previous


# ----------------------------------------------------------------- savers


def test_save_best_network_writes_only_on_improvement(tmp_path):
    filename = tmp_path / "best.hdf5"
    trainer = quiet()
    saved = []

    class Watch(hooks.Hook):
        """Records the file's content after SaveBestNetwork ran."""

        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            saved.append(
                (os.stat(filename).st_mtime_ns, bs.Network.from_hdf5(filename).get("parameters"))
            )
            params.append(net.get("parameters"))

    params = []
    trainer.add_hook(FeedLog([0.5, 0.7, 0.6, 0.7, 0.9, 0.8]))
    trainer.add_hook(hooks.SaveBestNetwork("feed.value", filename=filename, criterion="max"))
    trainer.add_hook(Watch())
    run(trainer, epochs=5)
    # improvements at epochs 0, 1 and 4 (0.7 again at epoch 3 is no improvement)
    contents = [p for _, p in saved]
    for epoch, expected_source in [(0, 0), (1, 1), (2, 1), (3, 1), (4, 4), (5, 4)]:
        assert np.array_equal(contents[epoch], params[expected_source])
    mtimes = [m for m, _ in saved]
    assert mtimes[1] == mtimes[2] == mtimes[3] and mtimes[4] == mtimes[5]
    best = trainer.hooks["SaveBestNetwork"].load_best_network()
    assert np.array_equal(best.get("parameters"), params[4])
    assert np.array_equal(trainer.hooks["SaveBestNetwork"].load_parameters(), params[4])


def test_save_best_network_in_memory_and_min_criterion():
    trainer = quiet()
    trainer.add_hook(FeedLog([3.0, 2.0, 2.5, 1.0, 1.5], name="loss"))
    trainer.add_hook(hooks.SaveBestNetwork("loss.value", criterion="min", name="best"))
    snapshots = []

    class Snap(hooks.Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            snapshots.append(net.get("parameters"))

    trainer.add_hook(Snap())
    run(trainer, epochs=4)
    best = trainer.hooks["best"].load_best_network()
    assert np.array_equal(best.get("parameters"), snapshots[3])
    assert best.handler.dtype == np.float64
    with pytest.raises(RuntimeError, match="nothing saved"):
        hooks.SaveBestNetwork("x").load_best_network()


def test_save_best_network_reports_where_it_saved(tmp_path, capsys):
    trainer = Trainer(SgdStepper(0.1))
    trainer.add_hook(hooks.MonitorLoss("valid", name="validation"))
    filename = str(tmp_path / "net.hdf5")
    trainer.add_hook(hooks.SaveBestNetwork("validation.total_loss", filename, criterion="min"))
    run(trainer, epochs=1)
    assert f"saved the network to {filename}" in capsys.readouterr().out


def test_save_logs_writes_the_nested_logs(tmp_path):
    filename = tmp_path / "logs.hdf5"
    trainer = quiet()
    trainer.train_scorers = [bs.scorers.Accuracy()]
    trainer.add_hook(hooks.MonitorScores("valid", [bs.scorers.Accuracy()], name="validation"))
    trainer.add_hook(hooks.SaveLogs(filename))
    run(trainer, epochs=2)
    with h5py.File(filename, "r") as f:
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
        assert text["format"] == "Logs file v1.0"
        assert text["info"].startswith("Created with brainstorm")
        # SaveLogs ran before StopAfterEpoch's round ended: epochs 0, 1, 2
        assert f["validation/Accuracy"].shape == (3,)
        assert np.allclose(f["validation/total_loss"][()], trainer.logs["validation"]["total_loss"])
        assert np.allclose(
            f["rolling_training/total_loss"][()], trainer.logs["rolling_training"]["total_loss"]
        )
    assert load_logs(filename) == trainer.logs


def test_save_network_saves_every_call(tmp_path):
    filename = tmp_path / "net.hdf5"
    trainer = quiet()
    trainer.add_hook(hooks.SaveNetwork(filename, name="saver"))
    net = run(trainer, epochs=2)
    loaded = trainer.hooks["saver"].load_network()
    assert np.array_equal(loaded.get("parameters"), net.get("parameters"))


# ----------------------------------------------------------------- monitors


def test_monitor_loss_and_scores_log_evaluations():
    trainer = quiet()
    trainer.add_hook(hooks.MonitorLoss("valid"))
    trainer.add_hook(hooks.MonitorScores("valid", [bs.scorers.Accuracy()], name="scores"))
    net = run(trainer, epochs=1)
    expected = bs.training.evaluate(net, data_iters()[1], [bs.scorers.Accuracy()])
    assert trainer.logs["MonitorLoss"]["total_loss"][-1] == pytest.approx(expected["total_loss"])
    assert trainer.logs["scores"]["Accuracy"][-1] == pytest.approx(expected["Accuracy"])


def test_logs_with_any_keys_and_string_values_survive_saving(tmp_path):
    # per-class scores under int keys, a '/' and a '%' in keys, strings as values
    filename = tmp_path / "logs.hdf5"
    trainer = quiet()

    class PerClass(hooks.Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            return {
                "value": {0: 0.5, 1: 0.25, "a/b": 1.0, "50%/2F": 2.0, "status": "ok", ".": 3.0},
                "": 4.0,
            }

    trainer.add_hook(PerClass(name="per/class"))
    trainer.add_hook(hooks.SaveLogs(filename))
    run(trainer, epochs=1)
    assert trainer.logs["per/class"]["value"]["0"] == [0.5, 0.5]  # (keys become strings)
    assert trainer.logs["per/class"]["value"]["status"] == ["ok", "ok"]
    assert load_logs(filename) == trainer.logs
    trainer.save_run(tmp_path / "run.hdf5")
    restored = Trainer.load_run(tmp_path / "run.hdf5")[0]
    assert restored.logs == trainer.logs


def test_monitor_layer_parameters_logs_statistics_and_row_norms():
    trainer = quiet()
    trainer.add_hook(hooks.MonitorLayerParameters("Hid"))
    net = run(trainer, epochs=1)
    log = trainer.logs["MonitorParameters_Hid"]
    assert list(log) == ["W", "bias"]
    assert set(log["W"]) == {"min", "avg", "max", "min_L2_norm", "avg_L2_norm", "max_L2_norm"}
    assert set(log["bias"]) == {"min", "avg", "max"}
    W = net.get("Hid.parameters.W")
    norms = np.sqrt((W**2).sum(axis=1))
    assert log["W"]["max"][-1] == pytest.approx(W.max())
    assert log["W"]["avg"][-1] == pytest.approx(W.mean())
    assert log["W"]["min_L2_norm"][-1] == pytest.approx(norms.min())
    assert log["W"]["max_L2_norm"][-1] == pytest.approx(norms.max())
    assert len(log["bias"]["min"]) == 2  # epoch 0 and epoch 1


def test_monitor_layer_gradients_deltas_and_inouts_after_the_last_batch():
    trainer = quiet()
    for hook in (
        hooks.MonitorLayerGradients("Hid", timescale="update"),
        hooks.MonitorLayerDeltas("Hid", timescale="update"),
        hooks.MonitorLayerInOuts("Hid", timescale="update"),
    ):
        trainer.add_hook(hook)
    values = {}

    class Grab(hooks.Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            values["dW"] = net.get("Hid.gradients.W")
            values["out_deltas"] = net.get("Hid.output_deltas.default")
            values["in_deltas"] = net.get("Hid.input_deltas.default")
            values["inputs"] = net.get("Hid.inputs.default")
            values["outputs"] = net.get("Hid.outputs.default")

    trainer.add_hook(Grab(timescale="update"))
    run(trainer, epochs=1)
    grads = trainer.logs["MonitorGradients_Hid"]
    assert list(grads) == ["W", "bias"]
    assert grads["W"]["min"][-1] == pytest.approx(values["dW"].min())
    deltas = trainer.logs["MonitorDeltas_Hid"]
    assert list(deltas) == ["internals", "output_deltas", "input_deltas"]
    assert deltas["output_deltas"]["default"]["max"][-1] == pytest.approx(
        values["out_deltas"].max()
    )
    assert deltas["input_deltas"]["default"]["avg"][-1] == pytest.approx(values["in_deltas"].mean())
    assert np.abs(values["in_deltas"]).max() > 0
    inouts = trainer.logs["MonitorInOuts_Hid"]
    assert list(inouts) == ["inputs", "outputs"]
    assert inouts["inputs"]["default"]["min"][-1] == pytest.approx(values["inputs"].min())
    assert inouts["outputs"]["default"]["max"][-1] == pytest.approx(values["outputs"].max())
    assert len(grads["W"]["min"]) == 4  # update 0 and updates 1..3


def test_layer_monitors_name_a_missing_layer():
    trainer = quiet()
    trainer.add_hook(hooks.MonitorLayerDeltas("Nope"))
    with pytest.raises(KeyError, match="Nope.*Hid"):
        run(trainer, epochs=1)


# ----------------------------------------------------------------- stepper attributes


def test_modify_stepper_attribute_changes_the_learning_rate():
    stepper = MomentumStepper(learning_rate=1.0, momentum=0.5)
    seen = []

    class SeeLr(hooks.Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            seen.append((epoch_nr, stepper.learning_rate))

    trainer = quiet(stepper)
    trainer.add_hook(hooks.ModifyStepperAttribute(Exponential(1.0, 0.5)))
    trainer.add_hook(hooks.ModifyStepperAttribute(Exponential(0.5, 0.0), "momentum", name="mom"))
    trainer.add_hook(SeeLr())
    run(trainer, epochs=3)
    assert seen == [(0, 1.0), (1, 0.5), (2, 0.25), (3, 0.125)]
    assert stepper.momentum == 0.0


def test_modify_stepper_attribute_needs_an_existing_attribute():
    trainer = quiet(SgdStepper())
    trainer.add_hook(hooks.ModifyStepperAttribute(Exponential(1.0, 0.5), "momentum"))
    with pytest.raises(AttributeError, match="momentum"):
        run(trainer, epochs=1)


# ----------------------------------------------------------------- progress and info


def test_progress_bar_prints_lines_with_rate_when_not_a_terminal(capsys):
    trainer = Trainer(SgdStepper(0.1), verbose=False)
    trainer.add_hook(hooks.ProgressBar())
    run(trainer, epochs=2)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("Epoch 1: 100%") and "3/3" in err[0] and "batch/s" in err[0]
    assert err[1].startswith("Epoch 2: 100%")


def test_progress_bar_draws_a_live_tqdm_bar(capsys):
    trainer = Trainer(SgdStepper(0.1), verbose=False)
    trainer.add_hook(hooks.ProgressBar(live=True))
    run(trainer, epochs=1)
    err = capsys.readouterr().err
    assert "\r" in err and "Epoch 1: 100%" in err and "3/3" in err


def test_progress_bar_closes_an_unfinished_epoch(capsys):
    class StopAtUpdate(hooks.Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            if update_nr == 2:
                raise StopIteration()

    trainer = Trainer(SgdStepper(0.1), verbose=False)
    trainer.add_hook(hooks.ProgressBar())
    trainer.add_hook(StopAtUpdate(timescale="update"))
    run(trainer, epochs=3)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "2/3" in err[0]


def test_info_updater_fills_run_info():
    class FakeRun:
        def __init__(self):
            self.info = {}

    fake = FakeRun()
    trainer = quiet()
    trainer.add_hook(hooks.MonitorLoss("valid", name="validation"))
    trainer.add_hook(hooks.InfoUpdater(fake))
    net = run(trainer, epochs=2)
    assert fake.info["epoch_nr"] == 2 and fake.info["update_nr"] == 6
    assert fake.info["logs"] == trainer.logs and fake.info["logs"] is not trainer.logs
    assert fake.info["nr_parameters"] == net.get("parameters").size
    description = bs.get_description(trainer.hooks["InfoUpdater"])
    assert "run" not in description


# ----------------------------------------------------------------- visualization


def test_bokeh_visualizer_without_bokeh_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bokeh", None)
    with pytest.raises(ImportError, match=r"pip install brainstorm-training\[live_viz\]"):
        hooks.BokehVisualizer(["validation.total_loss"])


def test_bokeh_visualizer_writes_an_updating_html_file(tmp_path):
    pytest.importorskip("bokeh")
    filename = tmp_path / "curves"
    seen = []

    class Look(hooks.Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            seen.append((tmp_path / "curves.html").read_text())

    trainer = quiet()
    trainer.add_hook(hooks.MonitorLoss("valid", name="validation"))
    trainer.add_hook(hooks.BokehVisualizer(["validation.total_loss", "nothing.yet"], filename))
    trainer.add_hook(Look())
    run(trainer, epochs=2)
    assert len(seen) == 3
    assert all('http-equiv="refresh"' in page for page in seen)
    final = (tmp_path / "curves.html").read_text()
    assert "validation.total_loss" in final and "http-equiv" not in final
    assert len(final) > 1000


def test_bokeh_visualizer_aligns_curves_at_the_current_epoch(tmp_path):
    pytest.importorskip("bokeh")
    hook = hooks.BokehVisualizer(filename=tmp_path / "v.html")
    logs = {"validation": {"loss": [3.0, 2.0, 1.0]}, "rolling_training": {"loss": [2.5, 1.5]}}
    plot = hook.write_html(logs, count=2)
    curves = {r.name or i: r.data_source.data for i, r in enumerate(plot.renderers)}
    xs = sorted(tuple(data["x"]) for data in curves.values())
    # lines and markers for both logs (log_names=None: every numeric log)
    assert xs == [(0, 1, 2), (0, 1, 2), (1, 2), (1, 2)]


def test_hooks_validate_their_arguments():
    with pytest.raises(ValueError, match="timescale"):
        hooks.StopAfterEpoch(3, timescale="minute")
    with pytest.raises(ValueError, match="interval"):
        hooks.SaveLogs("x.hdf5", interval=0)
    with pytest.raises(ValueError, match="criterion"):
        hooks.EarlyStopper("a.b", criterion="best")


def test_hooks_are_registered_entry_points():
    from brainstorm import registry

    names = registry.available("brainstorm.hooks")
    assert len(names) == 18
    assert (
        registry.load("brainstorm.hooks", "ModifyStepperAttribute") is hooks.ModifyStepperAttribute
    )


def test_save_best_network_says_when_the_best_value_was_logged(capsys):
    trainer = Trainer(SgdStepper(0.1))
    # logged at epochs 0, 2, 4 (interval 2); the hook runs every epoch
    trainer.add_hook(FeedLog([3.0, 1.0, 2.0], name="loss", interval=2))
    trainer.add_hook(hooks.SaveBestNetwork("loss.value", criterion="min", name="best"))
    run(trainer, epochs=4)
    out = capsys.readouterr().out
    assert "best >> best loss.value so far: 1 at epoch 2" in out  # (not "epoch 1")
    assert "at epoch 1" not in out


def test_logs_mixing_numbers_and_strings_are_not_saved_as_strings(tmp_path):
    with pytest.warns(RuntimeWarning, match="log 'mixed' holds values that are neither all"):
        save_logs(tmp_path / "logs.hdf5", {"mixed": ["a", 1, 2.5], "numbers": [1.0, 2]})
    assert load_logs(tmp_path / "logs.hdf5") == {"numbers": [1.0, 2.0]}
