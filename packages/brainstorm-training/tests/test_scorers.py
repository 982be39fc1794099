"""Scorers, masks, and aggregation over batches of unequal size."""

import numpy as np
import pytest
from training_test_helpers import float64_net, make_data

import brainstorm as bs
from brainstorm.data_iterators import Minibatches, Undivided
from brainstorm.describable import create_from_description, get_description
from brainstorm.scorers import (
    Accuracy,
    Hamming,
    MeanSquaredError,
    Scorer,
    aggregate_losses_and_scores,
    gather_losses_and_scores,
)
from brainstorm.training import evaluate


def test_accuracy_argmax_with_index_and_one_hot_targets():
    predicted = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    labels = np.array([[1], [0], [0], [1]])
    assert Accuracy()(labels, predicted) == 3.0
    one_hot = np.eye(3)[labels[:, 0]]
    assert Accuracy()(one_hot, predicted) == 3.0


def test_accuracy_single_column_uses_threshold():
    """The reference compared raw probabilities with labels (always wrong)."""
    predicted = np.array([[0.9], [0.2], [0.6], [0.4], [0.5]])
    labels = np.array([[1], [0], [0], [1], [1]])
    assert Accuracy()(labels, predicted) == 3.0
    assert Accuracy(threshold=0.55)(labels, predicted) == 2.0


def test_accuracy_mask_weights_rows():
    predicted = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([[0], [0], [0]])
    mask = np.array([[1.0], [0.0], [1.0]])
    assert Accuracy()(labels, predicted, mask) == 2.0


def test_hamming_counts_fraction_of_correct_bits():
    predicted = np.array([[0.9, 0.1, 0.8], [0.4, 0.6, 0.2]])
    labels = np.array([[1, 0, 0], [0, 1, 0]])
    assert Hamming()(labels, predicted) == pytest.approx(2 / 3 + 1)
    assert Hamming()(labels, predicted, np.array([[0.0], [1.0]])) == pytest.approx(1.0)


def test_mean_squared_error_is_half_the_squared_error():
    predicted = np.array([[1.0, 2.0], [0.0, 0.0]])
    labels = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert MeanSquaredError()(labels, predicted) == pytest.approx(0.5 * (1 + 4 + 1 + 1))
    assert MeanSquaredError()(labels, predicted, np.array([[0.0], [1.0]])) == pytest.approx(1.0)


def test_aggregate_divides_summed_values_by_summed_weights():
    # 3 of 4 right, then 1 of 1 right: 4/5, not the mean of 0.75 and 1.0
    assert Scorer.aggregate([(4, 3.0), (1, 1.0)]) == pytest.approx(0.8)
    assert np.isnan(Scorer.aggregate([(0, 0.0)]))


def test_scores_over_unequal_batches_equal_the_whole_data():
    x, t = make_data(23)
    scorers = [Accuracy(), MeanSquaredError(targets_name="onehot"), Hamming(targets_name="onehot")]
    # a second targets input for MSE/Hamming on the predictions
    onehot = np.eye(3)[t[..., 0]]
    inp = bs.layers.Input(
        {"default": ("T", "B", 4), "targets": ("T", "B", 1), "onehot": ("T", "B", 3)}
    )
    out = bs.layers.SoftmaxCE(name="Output")
    (
        inp - "default"
        >> bs.layers.FullyConnected(5, activation="tanh", name="Hid")
        >> bs.layers.FullyConnected(3, activation="linear", name="Out_proj")
        >> out
    )
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out, handler=bs.handlers.NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(0.5), seed=3)
    whole = evaluate(net, Undivided(default=x, targets=t, onehot=onehot), scorers)
    batched = evaluate(net, Minibatches(5, default=x, targets=t, onehot=onehot), scorers)
    assert list(whole) == ["total_loss", "Accuracy", "MeanSquaredError", "Hamming"]
    for key in whole:
        assert batched[key] == pytest.approx(whole[key], rel=1e-12)
    # and against a direct computation
    net.provide_external_data({"default": x, "targets": t, "onehot": onehot})
    net.forward_pass()
    p = net.get("Output.outputs.predictions")[0]
    assert whole["Accuracy"] == pytest.approx(np.mean(p.argmax(1) == t[0, :, 0]))
    assert whole["MeanSquaredError"] == pytest.approx(0.5 * ((p - onehot[0]) ** 2).sum(1).mean())
    assert whole["total_loss"] == pytest.approx(-np.log(p[np.arange(23), t[0, :, 0]]).mean())


def test_masked_sequences_only_count_unmasked_steps():
    """Sequences of unequal length in batches of unequal size: a mask decides what counts."""
    rng = np.random.RandomState(0)
    T, B = 4, 7
    x = rng.randn(T, B, 4)
    t = rng.randint(0, 3, (T, B, 1))
    lengths = np.array([4, 1, 3, 2, 4, 1, 2])
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(float)[..., None]
    inp = bs.layers.Input(
        {"default": ("T", "B", 4), "targets": ("T", "B", 1), "mask": ("T", "B", 1)}
    )
    out = bs.layers.SoftmaxCE(name="Output")
    inp - "default" >> bs.layers.FullyConnected(3, activation="linear", name="Proj") >> out
    inp - "targets" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out, handler=bs.handlers.NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(1.0), seed=2)
    scorers = [Accuracy(mask_name="mask")]
    batched = evaluate(net, Minibatches(3, shuffle=False, default=x, targets=t, mask=mask), scorers)
    net.provide_external_data({"default": x, "targets": t, "mask": mask})
    net.forward_pass()
    p = net.get("Output.outputs.predictions")
    correct = (p.argmax(2) == t[..., 0]) & (mask[..., 0] > 0)
    assert batched["Accuracy"] == pytest.approx(correct.sum() / lengths.sum())


def test_gather_uses_net_output_name_and_explains_a_missing_output():
    x, t = make_data(6)
    net = float64_net()
    net.provide_external_data({"default": x, "targets": t})
    net.forward_pass()
    scores = {}
    gather_losses_and_scores(net, [Accuracy(name="acc")], scores)
    assert set(scores) == {"total_loss", "acc"}
    assert scores["total_loss"][0][0] == 6 and scores["acc"][0][0] == 6
    result = aggregate_losses_and_scores(scores, net, [Accuracy(name="acc")])
    assert list(result) == ["total_loss", "acc"]
    net.output_name = None
    with pytest.raises(ValueError, match="out_name"):
        gather_losses_and_scores(net, [Accuracy()], {})


def test_scorer_names_and_descriptions():
    acc = Accuracy(out_name="Output.outputs.probabilities", name="acc", threshold=0.3)
    rebuilt = create_from_description(get_description(acc))
    assert isinstance(rebuilt, Accuracy) and rebuilt.__name__ == "acc"
    assert rebuilt.threshold == 0.3 and rebuilt.out_name == "Output.outputs.probabilities"
    assert Hamming().__name__ == "Hamming"
    from brainstorm import registry

    assert registry.available("brainstorm.scorers") == ["Accuracy", "Hamming", "MeanSquaredError"]


def test_the_targets_name_given_to_evaluate_reaches_scorers_without_their_own():
    # the targets input is called 'labels': Accuracy() takes it from evaluate; a
    # scorer with its own targets_name keeps it
    x, t = make_data(11)
    inp = bs.layers.Input({"default": ("T", "B", 4), "labels": ("T", "B", 1)})
    out = bs.layers.SoftmaxCE(name="Output")
    inp - "default" >> bs.layers.FullyConnected(3, activation="linear", name="Proj") >> out
    inp - "labels" >> "targets" - out - "loss" >> bs.layers.Loss()
    net = bs.Network.from_layer(out, handler=bs.handlers.NumpyHandler(np.float64))
    net.initialize(bs.initializers.Gaussian(0.5), seed=3)
    data = Undivided(default=x, labels=t)
    scores = evaluate(
        net, data, [Accuracy(), Accuracy(targets_name="labels", name="own")], targets_name="labels"
    )
    net.provide_external_data({"default": x, "labels": t})
    net.forward_pass()
    p = net.get("Output.outputs.predictions")[0]
    assert scores["Accuracy"] == scores["own"] == pytest.approx(np.mean(p.argmax(1) == t[0, :, 0]))
    assert Accuracy().targets_name == ""  # (resolved to 'targets' when nothing else is given)
    with pytest.raises(KeyError, match="targets"):  # without it: the default name 'targets'
        evaluate(net, data, [Accuracy()])


def test_scorers_with_one_name_are_refused_not_pooled():
    x, t = make_data(6)
    net = float64_net()
    data = Undivided(default=x, targets=t)
    two = [Accuracy("Output.outputs.predictions"), Accuracy("Hid.outputs.default")]
    with pytest.raises(ValueError, match="'Accuracy' is also the name of another scorer"):
        evaluate(net, data, two)
    with pytest.raises(ValueError, match="'total_loss' is also the name of a loss"):
        evaluate(net, data, [Accuracy(name="total_loss")])
    scores = evaluate(net, data, [two[0], Accuracy("Hid.outputs.default", name="hidden")])
    assert set(scores) == {"total_loss", "Accuracy", "hidden"}
