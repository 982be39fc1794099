"""The ClockworkLstm layer: a peephole LSTM whose cells tick at different rates.

Direction (``reverse``), context, masks, bidirectional use and the layout of
the internals are as for :mod:`brainstorm.layers.lstm_layer` (details in
:mod:`brainstorm.layers._recurrent`).
"""

from __future__ import annotations

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers._recurrent import ClockworkMixin, check_recurrent_arguments
from brainstorm.layers.lstm_layer import LstmLayerImpl
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["ClockworkLstm", "ClockworkLstmLayerImpl"]


def ClockworkLstm(size, activation="tanh", name=None, reverse=False):
    """Create a clockwork peephole LSTM layer.

    Like :func:`~brainstorm.layers.lstm_layer.Lstm`, but cell ``k`` computes a
    new state and output only at the steps ``tau`` with
    ``tau mod timing[k] == 0``; otherwise it keeps the cell state and output
    of the previous step. ``tau`` counts the steps since the start of the
    sequence from 0 in processing order, continues across passes chained by
    context (the reference restarted it in every pass) and restarts after a
    step where the mask is 0 (see
    :func:`~brainstorm.layers.clockwork_layer.Clockwork`).

    The parameter ``timing`` ``(size,)`` gets no gradient and must be set by
    the initializer to positive integers.

    Args:
        size: the number of cells.
        activation: one of ``'tanh'``, ``'sigmoid'``, ``'rel'``, ``'linear'``,
            ``'el'``.
        name: the layer's name (default ``'ClockworkLstm'``).
        reverse: process the sequence from the last time step to the first.

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>`` (with
        the optional input ``'mask'``).
    """
    size = check_recurrent_arguments(size, activation, reverse, layer_label(name, "ClockworkLstm"))
    return ConstructionWrapper.create(
        ClockworkLstmLayerImpl, name=name, size=size, activation=activation, reverse=reverse
    )


class ClockworkLstmLayerImpl(ClockworkMixin, LstmLayerImpl):
    """Implementation of :func:`ClockworkLstm`.

    Parameters of Lstm plus ``timing (S,)``; internals of Lstm plus the step
    counter ``Tau ('T', 'B', 1)``.
    """
