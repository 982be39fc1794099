"""The Clockwork layer: a simple recurrent layer whose units tick at different rates.

Direction (``reverse``), context, masks and bidirectional use work as for
:mod:`brainstorm.layers.recurrent_layer` (details in
:mod:`brainstorm.layers._recurrent`).
"""

from __future__ import annotations

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers._recurrent import ClockworkMixin, check_recurrent_arguments
from brainstorm.layers.recurrent_layer import RecurrentLayerImpl
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["Clockwork", "ClockworkLayerImpl"]


def Clockwork(size, activation="tanh", name=None, reverse=False):
    """Create a clockwork recurrent layer.

    Like :func:`~brainstorm.layers.recurrent_layer.Recurrent`, but unit ``k``
    computes a new value only at the steps ``tau`` with
    ``tau mod timing[k] == 0``, and keeps its previous value otherwise.
    ``tau`` counts the steps since the start of the sequence from 0 (every
    unit updates at ``tau = 0``), in processing order; unlike the reference,
    whose ``t`` restarted at 0 in every forward pass, ``tau`` continues across
    passes chained by context, and it restarts after a step where the mask
    is 0. ``R`` is a full matrix, not block-structured as in the
    Clockwork-RNN paper.

    The parameter ``timing`` ``(size,)`` gets no gradient and must be set by
    the initializer to positive integers, e.g.
    ``net.initialize({'Clockwork': {'timing': [1, 1, 2, 2, 4, 4]}, ...})``.

    Args:
        size: the number of units.
        activation: one of ``'tanh'``, ``'sigmoid'``, ``'rel'``, ``'linear'``,
            ``'el'``.
        name: the layer's name (default ``'Clockwork'``).
        reverse: process the sequence from the last time step to the first.

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>`` (with
        the optional input ``'mask'``).
    """
    size = check_recurrent_arguments(size, activation, reverse, layer_label(name, "Clockwork"))
    return ConstructionWrapper.create(
        ClockworkLayerImpl, name=name, size=size, activation=activation, reverse=reverse
    )


class ClockworkLayerImpl(ClockworkMixin, RecurrentLayerImpl):
    """Implementation of :func:`Clockwork`.

    Parameters ``W``, ``R``, ``bias`` (as Recurrent) and ``timing (S,)``;
    internals as Recurrent plus ``Tau ('T', 'B', 1)``, the step counter.
    """
