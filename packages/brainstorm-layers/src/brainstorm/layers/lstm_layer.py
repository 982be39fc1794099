"""The Lstm layer: a peephole LSTM ("vanilla" LSTM of Greff et al.).

Like every recurrent layer here it runs forward or, with ``reverse=True``,
backward in time, can continue from a context (``net.get_context()``), and
takes an optional ``mask`` input for sequences of unequal length; see
:mod:`brainstorm.layers._recurrent`. A bidirectional network is a forward and a
reverse layer fed from the same input and wired into the same next layer
(whose input then sees both outputs side by side), or one
:func:`~brainstorm.layers.bidirectional_layer.Bidirectional` layer::

    inp >> Lstm(64, name='Fwd') >> out
    inp >> Lstm(64, reverse=True, name='Bwd') >> out
    # or: inp >> Bidirectional(Lstm(64)) >> out

Layout. The four gates are computed together: the internals ``Ga`` and ``Gb``
``('T', 'B', 4 * S)`` hold the pre-activations and activations of the block
input ``z``, the input gate ``i``, the forget gate ``f`` and the output gate
``o`` side by side, in that order, so one matrix product per step serves all
four. The reference's separate internals map onto column blocks::

    Za = Ga[..., 0:S]     Ia = Ga[..., S:2S]    Fa = Ga[..., 2S:3S]   Oa = Ga[..., 3S:4S]
    Zb = Gb[..., 0:S]     Ib = Gb[..., S:2S]    Fb = Gb[..., 2S:3S]   Ob = Gb[..., 3S:4S]

(e.g. the reference's ``net.get('Lstm.internals.Fb')`` is
``net.get('Lstm.internals.Gb')[..., 2 * S:3 * S]``); ``Ca`` and ``Cb`` keep
their names. The parameters keep the reference's names and order; the fused
matrices are views over consecutive parameters.
"""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers._recurrent import (
    Clock,
    RecurrentLayerBase,
    Steps,
    check_recurrent_arguments,
    consecutive,
)
from brainstorm.structure.buffer_structure import BufferStructure
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time

__all__ = ["Lstm", "LstmLayerImpl"]


def Lstm(size, activation="tanh", reverse=False, name=None):
    """Create a peephole LSTM layer.

    For every step (``*`` is elementwise, ``c_{-1}`` and ``y_{-1}`` come from
    the context)::

        z_t = act(Wz x_t + Rz y_{t-1} + bz)
        i_t = sigmoid(Wi x_t + Ri y_{t-1} + pi * c_{t-1} + bi)
        f_t = sigmoid(Wf x_t + Rf y_{t-1} + pf * c_{t-1} + bf)
        c_t = i_t * z_t + f_t * c_{t-1}
        o_t = sigmoid(Wo x_t + Ro y_{t-1} + po * c_t + bo)
        y_t = o_t * act(c_t)

    Gradients are also correct when the pass started from a context (the
    reference used the wrong buffers for the first step then). Input
    features are flattened.

    Args:
        size: the number of cells.
        activation: the activation of block input and cell output: one of
            ``'tanh'``, ``'sigmoid'``, ``'rel'``, ``'linear'``, ``'el'``.
        reverse: process the sequence from the last time step to the first.
        name: the layer's name (default ``'Lstm'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``. Its
        optional input ``'mask'`` ``('T', 'B', 1)`` zeroes outputs and cell
        states where the mask is 0.

    Example:
        >>> inp >> Lstm(512) >> FullyConnected(205, activation='linear') >> out
    """
    check_recurrent_arguments(size, activation, reverse, layer_label(name, "Lstm"))
    return ConstructionWrapper.create(
        LstmLayerImpl, name=name, size=size, activation=activation, reverse=reverse
    )


_WEIGHTS = ("Wz", "Wi", "Wf", "Wo")
_PEEPHOLES = ("pi", "pf", "po")
_RECURRENT = ("Rz", "Ri", "Rf", "Ro")
_BIASES = ("bz", "bi", "bf", "bo")


class LstmLayerImpl(RecurrentLayerBase):
    """Implementation of :func:`Lstm` (layout in the module docstring).

    Parameters ``Wz, Wi, Wf, Wo (S, F)``, ``pi, pf, po (1, S)``,
    ``Rz, Ri, Rf, Ro (S, S)``, ``bz, bi, bf, bo (S,)``. Internals ``Ca``
    (cell state), ``Ga``, ``Gb``, ``Cb`` (activated cell state) and the
    backward-only ``dGa``, ``dCa``, ``dY`` (deltas of the outputs including the
    recurrent part) and ``dGb`` (``('B', 4 * S)``, scratch space of one step).
    """

    #: ClockworkLstm layers keep some cells' state and output from step to step.
    clockwork = False

    def parameter_shapes_for(self, size, in_size):
        parameters = OrderedDict()
        for name in _WEIGHTS:
            parameters[name] = BufferStructure(size, in_size)
        for name in _PEEPHOLES:
            parameters[name] = BufferStructure(1, size)
        for name in _RECURRENT:
            parameters[name] = BufferStructure(size, size)
        for name in _BIASES:
            parameters[name] = BufferStructure(size)
        return parameters

    def state_widths(self):
        return OrderedDict(Ca=self.size)

    def internal_shapes_for(self, size):
        internals = OrderedDict()
        # The reference's per-gate names stay reachable as slices of Ga/Gb.
        self.internal_slices = {
            f"{gate}{kind}": (f"G{kind}", i * size, (i + 1) * size)
            for kind in "ab"
            for i, gate in enumerate("ZIFO")
        }
        internals["Ga"] = BufferStructure("T", "B", 4 * size)
        internals["Gb"] = BufferStructure("T", "B", 4 * size)
        internals["Cb"] = BufferStructure("T", "B", size)
        for name, width in (("dGa", 4), ("dCa", 1), ("dY", 1)):
            internals[name] = BufferStructure("T", "B", width * size, is_backward_only=True)
        internals["dGb"] = BufferStructure("B", 4 * size, is_backward_only=True)
        return internals

    def _fused(self, view):
        """(W (4S, F), P (3S,) peepholes, R (4S, S), b (1, 4S)) over parameters or gradients."""
        S = self.size
        W = consecutive(view, _WEIGHTS).reshape((4 * S, self.in_size))
        P = consecutive(view, _PEEPHOLES)
        R = consecutive(view, _RECURRENT).reshape((4 * S, S))
        b = consecutive(view, _BIASES)
        return W, P, R, b

    def forward_pass(self, buffers, training_pass=True):
        _h, S = self.handler, self.size
        act = _h.act_func[self.activation]
        W, _, R, b = self._fused(buffers.parameters)
        pi, pf, po = (buffers.parameters[n] for n in _PEEPHOLES)
        steps = Steps(self, buffers)
        Ga, Gb, Ca, Cb = (buffers.internals[n] for n in ("Ga", "Gb", "Ca", "Cb"))
        y = buffers.outputs.default
        clock = Clock(_h, steps, buffers.parameters.timing) if self.clockwork else None

        self.project_inputs(buffers, W, b, Ga)
        for t in steps.order:
            y_prev, c_prev = steps.prev_state("default", t), steps.prev_state("Ca", t)
            ga, gb, c = Ga[t], Gb[t], Ca[t]
            _h.dot_add_mm(y_prev, R, ga, transb=True)
            _h.mult_add_mv(c_prev, pi, ga[:, S : 2 * S])
            _h.mult_add_mv(c_prev, pf, ga[:, 2 * S : 3 * S])
            # sigmoid over the whole (contiguous) block is cheaper than over the
            # strided i and f columns; z and o are overwritten below
            _h.sigmoid(ga, gb)
            act(ga[:, :S], gb[:, :S])
            _h.mult_tt(gb[:, S : 2 * S], gb[:, :S], c)
            _h.mult_add_tt(gb[:, 2 * S : 3 * S], c_prev, c)
            _h.mult_add_mv(c, po, ga[:, 3 * S :])
            _h.sigmoid(ga[:, 3 * S :], gb[:, 3 * S :])
            act(c, Cb[t])
            _h.mult_tt(gb[:, 3 * S :], Cb[t], y[t])
            if clock is not None:
                clock.advance(t)
                keep = clock.keep_mask(t)
                _h.copy_to_if(c_prev, c, keep)
                _h.copy_to_if(y_prev, y[t], keep)
            steps.apply_mask(_h, t, c, y[t])
        steps.save_context(_h, ["default", *self.state_widths()])

    def backward_pass(self, buffers):
        _h, S = self.handler, self.size
        act_deriv = _h.act_func_deriv[self.activation]
        W, _, R, _ = self._fused(buffers.parameters)
        dW, dP, dR, db = self._fused(buffers.gradients)
        pi, pf, po = (buffers.parameters[n] for n in _PEEPHOLES)
        steps = Steps(self, buffers)
        T = steps.T
        Ga, Gb, Ca, Cb = (buffers.internals[n] for n in ("Ga", "Gb", "Ca", "Cb"))
        dGa, dgb, dCa, dY = (buffers.internals[n] for n in ("dGa", "dGb", "dCa", "dY"))
        clock = Clock(_h, steps, buffers.parameters.timing) if self.clockwork else None

        _h.copy_to(buffers.output_deltas.default[:T], dY)
        _h.fill(dCa, 0.0)
        for t in reversed(steps.order):
            before = steps.prev(t)
            c_prev = steps.prev_state("Ca", t)
            ga, gb, dga = Ga[t], Gb[t], dGa[t]
            dy, dc = dY[t], dCa[t]
            # dY[t] and dCa[t] hold the deltas of the stored (masked) y_t and c_t
            steps.apply_mask(_h, t, dy, dc)
            if clock is not None:
                keep = clock.keep_mask(t)
                if before is not None:  # cells that kept their values pass their deltas on
                    _h.add_into_if(dy, dY[before], keep)
                    _h.add_into_if(dc, dCa[before], keep)
                _h.fill_if(dy, 0.0, keep)
                _h.fill_if(dc, 0.0, keep)
            # output gate
            _h.mult_tt(dy, Cb[t], dgb[:, 3 * S :])
            _h.sigmoid_deriv(ga[:, 3 * S :], gb[:, 3 * S :], dgb[:, 3 * S :], dga[:, 3 * S :])
            # cell (dy is used up: it holds the deltas of Cb)
            _h.mult_tt(dy, gb[:, 3 * S :], dy)
            act_deriv(Ca[t], Cb[t], dy, dy)
            _h.add_tt(dc, dy, dc)
            _h.mult_add_mv(dga[:, 3 * S :], po, dc)
            # block input, input and forget gate
            _h.mult_tt(dc, gb[:, S : 2 * S], dgb[:, :S])
            _h.mult_tt(dc, gb[:, :S], dgb[:, S : 2 * S])
            _h.mult_tt(dc, c_prev, dgb[:, 2 * S : 3 * S])
            # the sigmoid derivative over the whole (contiguous) block is cheaper than
            # over the strided i and f columns (o comes out the same again, z is
            # overwritten)
            _h.sigmoid_deriv(ga, gb, dgb, dga)
            act_deriv(ga[:, :S], gb[:, :S], dgb[:, :S], dga[:, :S])
            if before is not None:  # deltas for the state this step started from
                _h.dot_add_mm(dga, R, dY[before])
                _h.mult_add_tt(dc, gb[:, 2 * S : 3 * S], dCa[before])
                _h.mult_add_mv(dga[:, S : 2 * S], pi, dCa[before])
                _h.mult_add_mv(dga[:, 2 * S : 3 * S], pf, dCa[before])

        self.project_inputs_backward(buffers, dGa, W, dW, db)
        steps.set_recurrent_gradient(_h, dGa, dR)
        # peepholes: dpi = sum dIa * c_prev, dpf = sum dFa * c_prev, dpo = sum dOa * c,
        # with dY (used up) as scratch space
        dpi, dpf, dpo = (dP[i * S : (i + 1) * S] for i in range(3))
        current, previous, first = steps.split()
        for gate, dp in ((1, dpi), (2, dpf)):
            deltas = dGa[:, :, gate * S : (gate + 1) * S]
            if current is not None:
                _h.mult_tt(deltas[current], Ca[previous], dY[current])
            _h.mult_tt(deltas[first], steps.context("Ca"), dY[first])
            _h.sum_t(flatten_time(dY), axis=0, out=dp)
        _h.mult_tt(dGa[:, :, 3 * S :], Ca[:T], dY)
        _h.sum_t(flatten_time(dY), axis=0, out=dpo)
