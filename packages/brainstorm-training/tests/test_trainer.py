"""The Trainer: hook calls, logs, counters, errors, descriptions."""

import json

import numpy as np
import pytest
from training_test_helpers import Recorder, float64_net, make_data

import brainstorm as bs
from brainstorm.data_iterators import Minibatches, Undivided
from brainstorm.describable import create_from_description, get_description
from brainstorm.hooks import Hook, MonitorScores, StopAfterEpoch
from brainstorm.scorers import Accuracy
from brainstorm.training import SgdStepper, Trainer


def iters(n=12, batch_size=4, seed=0):
    x, t = make_data(n, seed=seed)
    return Minibatches(batch_size, default=x, targets=t), Undivided(default=x, targets=t)


def test_hooks_are_called_in_order_with_an_epoch_zero_round():
    calls = []
    trainer = Trainer(SgdStepper(0.1), verbose=False)
    trainer.add_hook(Recorder(calls, "upd", timescale="update"))
    trainer.add_hook(Recorder(calls, "every_epoch"))
    trainer.add_hook(Recorder(calls, "every_2nd_update", timescale="update", interval=2))
    trainer.add_hook(Recorder(calls, "every_2nd_epoch", interval=2))
    trainer.add_hook(StopAfterEpoch(2))
    train, _ = iters(n=12, batch_size=4)  # 3 batches per epoch
    trainer.train(float64_net(), train)
    expected = [
        # before training: update hooks first, then epoch hooks
        ("upd", "update", 0, 0),
        ("every_2nd_update", "update", 0, 0),
        ("every_epoch", "epoch", 0, 0),
        ("every_2nd_epoch", "epoch", 0, 0),
        ("upd", "update", 1, 1),
        ("upd", "update", 1, 2),
        ("every_2nd_update", "update", 1, 2),
        ("upd", "update", 1, 3),
        ("every_epoch", "epoch", 1, 3),
        ("upd", "update", 2, 4),
        ("every_2nd_update", "update", 2, 4),
        ("upd", "update", 2, 5),
        ("upd", "update", 2, 6),
        ("every_2nd_update", "update", 2, 6),
        ("every_epoch", "epoch", 2, 6),
        ("every_2nd_epoch", "epoch", 2, 6),
    ]
    assert calls == expected
    assert (trainer.current_epoch_nr, trainer.current_update_nr) == (2, 6)
    assert [h.priority for h in trainer.hooks.values()] == [0, 1, 2, 3, 4]


def test_add_hook_rejects_duplicate_names():
    trainer = Trainer(SgdStepper())
    trainer.add_hook(StopAfterEpoch(3))
    with pytest.raises(ValueError, match="StopAfterEpoch"):
        trainer.add_hook(StopAfterEpoch(5))
    trainer.add_hook(StopAfterEpoch(5, name="other"))
    assert list(trainer.hooks) == ["StopAfterEpoch", "other"]


def test_a_stop_in_the_epoch_zero_round_prevents_training():
    trainer = Trainer(SgdStepper(), verbose=False)
    trainer.add_hook(StopAfterEpoch(0))
    net = float64_net()
    before = net.get("parameters")
    trainer.train(net, iters()[0])
    assert trainer.current_epoch_nr == 0 and trainer.current_update_nr == 0
    assert np.array_equal(net.get("parameters"), before)


def test_all_hooks_of_a_stopping_round_still_run():
    calls = []
    trainer = Trainer(SgdStepper(), verbose=False)
    trainer.add_hook(StopAfterEpoch(1))
    trainer.add_hook(Recorder(calls, "after"))
    trainer.train(float64_net(), iters()[0])
    assert calls[-1] == ("after", "epoch", 1, 3)


def test_an_update_hook_stop_ends_training_in_the_epoch_without_its_epoch_hooks():
    # (the reference ran the epoch hooks on the unfinished epoch; they run when a
    # continued run finishes it, see test_resume)
    class StopAtUpdate(Hook):
        def __call__(self, epoch_nr, update_nr, net, stepper, logs):
            if update_nr == 2:
                raise StopIteration()

    calls = []
    trainer = Trainer(SgdStepper(), verbose=False)
    trainer.add_hook(StopAtUpdate(timescale="update"))
    trainer.add_hook(Recorder(calls, "update_hook", timescale="update"))
    trainer.add_hook(Recorder(calls, "epoch_hook"))
    trainer.train(float64_net(), iters()[0])
    assert trainer.current_update_nr == 2 and trainer.current_epoch_nr == 1
    assert calls[-2:] == [("update_hook", "update", 1, 1), ("update_hook", "update", 1, 2)]
    assert ("epoch_hook", "epoch", 0, 0) in calls and calls.count(
        ("epoch_hook", "epoch", 1, 2)
    ) == 0
    assert "rolling_training" not in trainer.logs


def test_logs_are_nested_lists_and_rolling_training_has_train_scorers():
    train, valid = iters()
    trainer = Trainer(SgdStepper(0.5), verbose=False)
    trainer.train_scorers = [Accuracy()]
    trainer.add_hook(MonitorScores("valid_getter", [Accuracy()], name="validation"))
    trainer.add_hook(StopAfterEpoch(3))
    trainer.train(float64_net(), train, valid_getter=valid)
    logs = trainer.logs
    assert set(logs) == {"validation", "rolling_training"}
    assert list(logs["validation"]) == ["total_loss", "Accuracy"]
    assert len(logs["validation"]["Accuracy"]) == 4  # epochs 0..3
    assert len(logs["rolling_training"]["total_loss"]) == 3  # epochs 1..3
    assert list(logs["rolling_training"]) == ["total_loss", "Accuracy"]
    assert all(type(v) is float for v in logs["validation"]["total_loss"])
    assert logs["validation"]["total_loss"][-1] < logs["validation"]["total_loss"][0]


def test_verbose_output_shows_epochs_and_logs(capsys):
    train, valid = iters()
    trainer = Trainer(SgdStepper(0.5))
    trainer.add_hook(MonitorScores("valid_getter", [Accuracy()], name="validation"))
    trainer.add_hook(StopAfterEpoch(1))
    trainer.train(float64_net(), train, valid_getter=valid)
    out = capsys.readouterr().out
    assert "Before Training" in out and "Epoch 1" in out
    assert "validation\n  total_loss" in out
    assert "Accuracy" in out
    assert "StopAfterEpoch >> Stopping because the maximum number of epochs (1)" in out

    quiet = Trainer(SgdStepper(0.5), verbose=False)
    quiet.add_hook(MonitorScores("valid_getter", [Accuracy()], name="validation", verbose=True))
    quiet.add_hook(StopAfterEpoch(1))
    quiet.train(float64_net(), train, valid_getter=valid)
    out = capsys.readouterr().out
    assert "Epoch 1" not in out and "StopAfterEpoch" not in out
    assert "validation\n  total_loss" in out  # the hook's own verbosity wins


def test_training_data_names_must_match_the_inputs():
    x, t = make_data(8)
    trainer = Trainer(SgdStepper())
    with pytest.raises(KeyError) as err:
        trainer.train(float64_net(), Minibatches(4, default=x, labels=t))
    message = str(err.value)
    assert "['default', 'labels']" in message and "['default', 'targets']" in message
    assert "missing: ['targets']" in message and "unexpected: ['labels']" in message


def test_monitor_needs_its_iterator_by_name():
    trainer = Trainer(SgdStepper(), verbose=False)
    trainer.add_hook(MonitorScores("valid_getter", [Accuracy()]))
    with pytest.raises(KeyError, match="valid_getter"):
        trainer.train(float64_net(), iters()[0], validation=iters()[1])


def test_evaluate_runs_the_hooks_into_results():
    train, valid = iters()
    trainer = Trainer(SgdStepper(0.5), verbose=False)
    trainer.add_hook(MonitorScores("valid_getter", [Accuracy()], name="validation"))
    trainer.add_hook(StopAfterEpoch(1))
    net = float64_net()
    trainer.train(net, train, valid_getter=valid)
    logs_before = json.dumps(trainer.logs)
    results = trainer.evaluate(net, valid_getter=valid)
    assert results is trainer.results
    assert results["validation"]["Accuracy"] == [trainer.logs["validation"]["Accuracy"][-1]]
    assert json.dumps(trainer.logs) == logs_before


def test_description_round_trip_never_holds_data():
    train, valid = iters(n=40)
    scorers = [Accuracy(out_name="Output.outputs.probabilities")]
    trainer = Trainer(bs.training.MomentumStepper(0.1, momentum=0.9))
    trainer.train_scorers = scorers
    trainer.add_hook(bs.hooks.ProgressBar())
    trainer.add_hook(MonitorScores("valid_getter", scorers, name="validation"))
    trainer.add_hook(bs.hooks.SaveBestNetwork("validation.Accuracy", name="best"))
    trainer.add_hook(StopAfterEpoch(1))
    before = get_description(trainer)
    trainer.verbose = False
    trainer.train(float64_net(), train, valid_getter=valid)
    trainer.verbose = True
    after = get_description(trainer)
    assert after == before
    text = json.dumps(after)
    assert len(text) < 2000  # no data arrays
    assert "current_epoch_nr" not in text and "logs" not in after
    rebuilt = create_from_description(after)
    assert isinstance(rebuilt, Trainer)
    assert list(rebuilt.hooks) == ["ProgressBar", "validation", "best", "StopAfterEpoch"]
    assert rebuilt.hooks["validation"].iter is None
    assert rebuilt.current_epoch_nr == 0 and rebuilt.logs == {}
    assert get_description(rebuilt) == after
    assert rebuilt.stepper.momentum == 0.9 and rebuilt.train_scorers[0].__name__ == "Accuracy"


def test_trainer_is_importable_from_the_package_root():
    assert bs.Trainer is Trainer
    assert bs.training.Trainer is Trainer
