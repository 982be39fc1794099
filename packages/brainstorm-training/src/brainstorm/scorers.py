"""Scorers: performance measures computed from a network's outputs and targets.

A scorer is called on one batch and returns a **sum** over that batch (of
correct decisions, of squared errors, ...). :func:`gather_losses_and_scores`
collects, batch by batch, ``(weight, value)`` pairs, where the weight is the
number of rows scored (or the sum of the mask); :func:`aggregate_losses_and_scores`
then divides the summed values by the summed weights. So the result is the
mean over all rows of all batches, however unequal the batch sizes are::

    scorers = [bs.scorers.Accuracy(), bs.scorers.MeanSquaredError()]
    trainer.add_hook(bs.hooks.MonitorScores('valid_getter', scorers, name='validation'))

All time steps count: outputs ``(T, B, ..., F)`` are flattened to ``(T*B*..., F)``
rows, so use a mask to exclude padding of sequences.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from brainstorm.describable import Describable
from brainstorm.utils import flatten_all_but_last

__all__ = [
    "Scorer",
    "Accuracy",
    "Hamming",
    "MeanSquaredError",
    "gather_losses_and_scores",
    "aggregate_losses_and_scores",
]


class Scorer(Describable):
    """Base class of scorers.

    Args:
        out_name (str): path of the network output to score, e.g.
            ``'Output.outputs.predictions'``; empty to use the one given to
            :func:`gather_losses_and_scores` or else ``net.output_name``.
        targets_name (str): name of the network input holding the targets;
            empty (the default) to use the one given to
            :func:`gather_losses_and_scores` (or ``evaluate``), which defaults
            to ``'targets'``. (The reference defaulted to ``'targets'`` here,
            so that the targets name given to ``evaluate`` never took effect.)
        mask_name (str): name of the network input holding a mask (one weight
            per row, usually 0 or 1); empty for no mask.
        name (str | None): the name under which the score is logged. Defaults
            to the class name.

    Attributes:
        __name__ (str): the name under which the score is logged.
    """

    def __init__(self, out_name="", targets_name="", mask_name="", name=None):
        self.out_name = out_name
        self.targets_name = targets_name
        self.mask_name = mask_name
        self.__name__ = name if name is not None else type(self).__name__

    def __call__(self, true_labels, predicted, mask=None):
        """Score one batch.

        Args:
            true_labels (numpy.ndarray): targets, ``(N, K)``.
            predicted (numpy.ndarray): network outputs, ``(N, F)``.
            mask (numpy.ndarray | None): ``(N, 1)`` weights of the rows.

        Returns:
            float: the score summed over the (weighted) rows.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    @staticmethod
    def aggregate(errors):
        """Combine per-batch results.

        Args:
            errors (list[tuple[float, float]]): ``(weight, value)`` per batch.

        Returns:
            float: ``sum(values) / sum(weights)`` (NaN if all weights are 0).
        """
        errors = np.asarray(errors, dtype=np.float64).reshape(-1, 2)
        total_weight = errors[:, 0].sum()
        if total_weight == 0:
            return float("nan")
        return float(errors[:, 1].sum() / total_weight)


def _weighted(values, mask):
    """Multiply per-row values ``(N, ...)`` with a ``(N, 1)`` mask."""
    if mask is None:
        return values
    return values * mask.reshape((mask.shape[0],) + (1,) * (values.ndim - 1))


class Accuracy(Scorer):
    """Fraction of rows classified correctly.

    With several output columns the predicted class is the argmax of a row
    and the target is a class index (or, if the targets have as many columns
    as the outputs, the argmax of a one-hot row). With a single output column
    (a sigmoid output for two classes) the predicted class is 1 where the
    output is at least ``threshold``, and 0 elsewhere.

    Args:
        out_name (str): see :class:`Scorer`.
        targets_name (str): see :class:`Scorer`.
        mask_name (str): see :class:`Scorer`.
        name (str | None): see :class:`Scorer`.
        threshold (float): decision threshold for single-column outputs.
            Defaults to 0.5. (New; it comes after the reference's arguments, so
            ``Accuracy('Output.outputs.predictions')`` works as there.)

    Example:
        >>> acc = Accuracy()
        >>> acc(np.array([[1], [0]]), np.array([[0.2, 0.8], [0.3, 0.7]]))
        1.0
    """

    def __init__(self, out_name="", targets_name="", mask_name="", name=None, threshold=0.5):
        super().__init__(out_name, targets_name, mask_name, name)
        self.threshold = threshold

    def __call__(self, true_labels, predicted, mask=None):
        """Number of correctly classified rows (mask-weighted); see :class:`Scorer`."""
        if true_labels.shape[1] not in (1, predicted.shape[1]):
            raise ValueError(
                f"{self.__name__}: targets have {true_labels.shape[1]} columns; expected 1 "
                f"(class ids) or {predicted.shape[1]} (one-hot, like the predictions)"
            )
        if predicted.shape[1] > 1:
            predicted_class = predicted.argmax(axis=1)
            if true_labels.shape[1] == predicted.shape[1]:
                true_class = true_labels.argmax(axis=1)
            else:
                true_class = true_labels[:, 0]
        else:
            predicted_class = (predicted[:, 0] >= self.threshold).astype(np.int64)
            true_class = true_labels[:, 0]
        correct = (predicted_class == true_class).astype(np.float64)
        return float(_weighted(correct, mask).sum())


class Hamming(Scorer):
    """Fraction of correct binary decisions (one minus the Hamming loss).

    Each output column is a binary decision (output ``>= threshold`` means 1),
    compared with the binary targets of the same shape; a row scores the
    fraction of its columns that are right.

    Args:
        threshold (float): decision threshold. Defaults to 0.5.
        out_name (str): see :class:`Scorer`.
        targets_name (str): see :class:`Scorer`.
        mask_name (str): see :class:`Scorer`.
        name (str | None): see :class:`Scorer`.

    Example:
        >>> Hamming()(np.array([[1, 0]]), np.array([[0.9, 0.7]]))
        0.5
    """

    def __init__(self, out_name="", targets_name="", mask_name="", name=None, threshold=0.5):
        super().__init__(out_name, targets_name, mask_name, name)
        self.threshold = threshold

    def __call__(self, true_labels, predicted, mask=None):
        """Sum over rows of the fraction of correct columns; see :class:`Scorer`."""
        _check_same_shape(self, true_labels, predicted)
        decisions = predicted >= self.threshold
        correct = (decisions == true_labels.astype(bool)).astype(np.float64)
        return float(_weighted(correct, mask).sum() / true_labels.shape[1])


class MeanSquaredError(Scorer):
    """Half the squared error per row: ``0.5 * sum_f (t - y)**2``, averaged over rows.

    Args:
        out_name (str): see :class:`Scorer`.
        targets_name (str): see :class:`Scorer`.
        mask_name (str): see :class:`Scorer`.
        name (str | None): see :class:`Scorer`.

    Example:
        >>> MeanSquaredError()(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]))
        0.5
    """

    def __call__(self, true_labels, predicted, mask=None):
        """Sum over rows of half the squared error; see :class:`Scorer`."""
        _check_same_shape(self, true_labels, predicted)
        errors = (np.asarray(true_labels, dtype=np.float64) - predicted) ** 2
        return float(0.5 * _weighted(errors, mask).sum())


def _check_same_shape(scorer, true_labels, predicted):
    if np.shape(true_labels) != np.shape(predicted):
        raise ValueError(
            f"{scorer.__name__}: targets of shape {np.shape(true_labels)} do not match the "
            f"outputs of shape {np.shape(predicted)}"
        )


def _input_or_none(net, name):
    return net.get_input(name) if name else None


def gather_losses_and_scores(
    net, scorers, scores, out_name="", targets_name="targets", mask_name=""
):
    """Append the losses and scores of the batch currently in ``net``.

    Call after a forward pass. For each entry of ``net.get_loss_values()``
    appends ``(batch_size, loss)``; for each scorer appends ``(weight, score)``,
    where weight is the number of rows (time steps times sequences) or the
    sum of the mask.

    Args:
        net (brainstorm.structure.network.Network): the network.
        scorers (list[Scorer]): the scorers to run.
        scores (dict[str, list]): name -> list of ``(weight, value)``; missing
            names are added.
        out_name (str): output path for scorers without their own ``out_name``;
            defaults to ``net.output_name``.
        targets_name (str): targets input for scorers without their own.
        mask_name (str): mask input for scorers without their own.

    Raises:
        ValueError: if no output to score is known, or two scorers (or a scorer
            and a loss) have the same name.
    """
    batch_size = net.buffer_manager.batch_size
    losses = net.get_loss_values()
    _check_names(scorers, losses)
    for name, loss in losses.items():
        scores.setdefault(name, []).append((batch_size, loss))
    for scorer in scorers:
        path = scorer.out_name or out_name or net.output_name
        if not path:
            raise ValueError(
                f"Scorer {scorer.__name__!r}: no output to score; give it out_name "
                f"(e.g. 'Output.outputs.predictions') or set net.output_name"
            )
        outputs = net.get(path)
        predicted = flatten_all_but_last(outputs)
        true_labels = flatten_all_but_last(
            net.get_input(scorer.targets_name or targets_name or "targets")
        )
        mask = _input_or_none(net, scorer.mask_name or mask_name)
        if mask is not None:
            mask = flatten_all_but_last(_mask_for(mask, outputs, scorer))
            weight = float(mask.sum())
        else:
            weight = predicted.shape[0]
        value = scorer(true_labels, predicted, mask)
        scores.setdefault(scorer.__name__, []).append((weight, value))


def _check_names(scorers, losses):
    """ValueError if two scorers, or a scorer and a loss, would be logged under one name
    (their results would be pooled into one meaningless number)."""
    seen = set(losses)
    for scorer in scorers:
        name = scorer.__name__
        if name in seen:
            what = "a loss" if name in losses else "another scorer"
            raise ValueError(
                f"Scorer name {name!r} is also the name of {what}: their results would be "
                f"pooled; give the scorer another name, e.g. "
                f"{type(scorer).__name__}(..., name='{name}_2')"
            )
        seen.add(name)


def _mask_for(mask, outputs, scorer):
    """The mask with one entry per row of ``outputs``: a per-step mask ``(T, B, 1)``
    is spread over the positions of pixel-wise outputs ``(T, B, H, W, C)``."""
    if mask.shape[:-1] == outputs.shape[:-1]:
        return mask
    lead = mask.shape[:-1]
    if mask.shape[-1] != 1 or outputs.shape[: len(lead)] != lead:
        raise ValueError(
            f"Scorer {scorer.__name__!r}: a mask of shape {mask.shape} does not fit outputs "
            f"of shape {outputs.shape}"
        )
    spread = mask.reshape(lead + (1,) * (outputs.ndim - len(lead)))
    return np.broadcast_to(spread, outputs.shape[:-1] + (1,)).copy()


def _weighted_average(pairs):
    """``sum(weight * value) / sum(weight)`` of ``(weight, value)`` pairs."""
    pairs = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    total_weight = pairs[:, 0].sum()
    if total_weight == 0:
        return float("nan")
    return float((pairs[:, 0] * pairs[:, 1]).sum() / total_weight)


def aggregate_losses_and_scores(scores, net, scorers):
    """Combine what :func:`gather_losses_and_scores` collected.

    Args:
        scores (dict[str, list]): name -> list of ``(weight, value)``.
        net (brainstorm.structure.network.Network): the network (unused; kept
            for the reference signature).
        scorers (list[Scorer]): the scorers whose entries to aggregate with
            their own ``aggregate``.

    Returns:
        OrderedDict: losses (batch-size-weighted means) first, then one entry
        per scorer.
    """
    results = OrderedDict()
    scorer_names = {scorer.__name__ for scorer in scorers}
    for name, values in scores.items():
        if name not in scorer_names:
            results[name] = _weighted_average(values)
    for scorer in scorers:
        if scorer.__name__ in scores:
            results[scorer.__name__] = scorer.aggregate(scores[scorer.__name__])
    return results
