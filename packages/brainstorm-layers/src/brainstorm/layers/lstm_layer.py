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

Layout. The internals are the reference's: ``Za``, ``Ia``, ``Fa``, ``Oa``
(pre-activations of the block input and the input, forget and output gates),
``Zb``, ``Ib``, ``Fb``, ``Ob`` (their activations), ``Ca`` (the cell state)
and ``Cb`` (the activated cell state), each ``('T', 'B', S)`` in a buffer of
its own, so that every step works on contiguous ``(B, S)`` blocks (NumPy
computes several times faster on those than on column blocks of a wider
matrix). The parameters keep the reference's names and order.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers._recurrent import (
    Clock,
    DeferredGradients,
    RecurrentLayerBase,
    Steps,
    check_recurrent_arguments,
    consecutive,
)
from brainstorm.structure.buffer_structure import BufferStructure
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_time

__all__ = ["Lstm", "LstmLayerImpl"]


def Lstm(size, activation="tanh", name=None, reverse=False):
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
        name: the layer's name (default ``'Lstm'``).
        reverse: process the sequence from the last time step to the first.

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``. Its
        optional input ``'mask'`` ``('T', 'B', 1)`` zeroes outputs and cell
        states where the mask is 0.

    Example:
        >>> inp >> Lstm(512) >> FullyConnected(205, activation='linear') >> out
    """
    size = check_recurrent_arguments(size, activation, reverse, layer_label(name, "Lstm"))
    return ConstructionWrapper.create(
        LstmLayerImpl, name=name, size=size, activation=activation, reverse=reverse
    )


_WEIGHTS = ("Wz", "Wi", "Wf", "Wo")
_PEEPHOLES = ("pi", "pf", "po")
_RECURRENT = ("Rz", "Ri", "Rf", "Ro")
_BIASES = ("bz", "bi", "bf", "bo")
#: The pre-activations of block input and gates, in the order of the parameters.
_GATES = ("Za", "Ia", "Fa", "Oa")


#: Time steps per deferred input projection in the forward pass; 0: all at the start.
_PROJECTION_BLOCK = 10


def _time_chunks(steps, size):
    """The steps in processing order in chunks of ``size``: ``(first step, time slice)``."""
    order = list(steps.order)
    chunks = []
    for start in range(0, len(order), size):
        part = order[start : start + size]
        chunks.append((part[0], slice(min(part), max(part) + 1)))
    return chunks


class LstmLayerImpl(RecurrentLayerBase):
    """Implementation of :func:`Lstm` (layout in the module docstring).

    Parameters ``Wz, Wi, Wf, Wo (S, F)``, ``pi, pf, po (1, S)``,
    ``Rz, Ri, Rf, Ro (S, S)``, ``bz, bi, bf, bo (S,)``. Internals ``Ca``
    (cell state), ``Za, Ia, Fa, Oa``, ``Zb, Ib, Fb, Ob``, ``Cb`` and the
    backward-only ``dZa, dIa, dFa, dOa`` (deltas of the pre-activations),
    ``dCa``, ``dY`` (deltas of the outputs including the recurrent part), and
    the scratch space of one step, ``dTmp`` (``('B', S)``). The recurrent
    products of a step add straight into the four pre-activations (and their
    deltas) with :meth:`~brainstorm.handlers.base_handler.Handler.dot_add_blocks`.
    """

    #: ClockworkLstm layers keep some cells' state and output from step to step.
    clockwork = False
    #: every step writes the gate deltas; dCa is zeroed and dY copied by the layer
    overwrites_backward_internals = ("dZa", "dIa", "dFa", "dOa", "dCa", "dY", "dTmp")

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
        for name in ("Za", "Zb", "Ia", "Ib", "Fa", "Fb", "Oa", "Ob", "Cb"):
            internals[name] = BufferStructure("T", "B", size)
        for name in ("dZa", "dIa", "dFa", "dOa", "dCa", "dY"):
            internals[name] = BufferStructure("T", "B", size, is_backward_only=True)
        # scratch space of one step
        internals["dTmp"] = BufferStructure("B", size, is_backward_only=True)
        return internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        act = _h.act_func[self.activation]
        p = buffers.parameters
        internals = buffers.internals
        steps = Steps(self, buffers)
        Za, Ia, Fa, Oa = (internals[n] for n in _GATES)
        Zb, Ib, Fb, Ob = (internals[n] for n in ("Zb", "Ib", "Fb", "Ob"))
        Ca, Cb = internals.Ca, internals.Cb
        y = buffers.outputs.default
        clock = Clock(_h, steps, p.timing) if self.clockwork else None
        S = self.size
        # all four recurrent products of a step in one (B, S) @ (S, 4S) product
        # with R^T = [Rz^T | Ri^T | Rf^T | Ro^T], prepared once for all steps
        R = _h.prepare_matrix(consecutive(p, _RECURRENT).reshape((4 * S, S)), transpose=True)

        W = consecutive(p, _WEIGHTS).reshape((4 * S, p.Wz.shape[1]))
        biases = [p[b] for b in _BIASES]
        if _PROJECTION_BLOCK > 0 and steps.T > _PROJECTION_BLOCK:
            # the input projections of the next block of steps are deferred (see
            # Handler.defer): a helper thread computes them during this block
            chunks = _time_chunks(steps, _PROJECTION_BLOCK)
            starts = {first: i for i, (first, _) in enumerate(chunks)}
            prepared = _h.prepare_matrix(W, transpose=True)
            project = functools.partial(
                self.project_inputs_into_blocks, buffers, W, biases, [Za, Ia, Fa, Oa]
            )
            project(time=chunks[0][1], prepared=prepared)
        else:
            starts = {}
            self.project_inputs_into_blocks(buffers, W, biases, [Za, Ia, Fa, Oa])
        for t in steps.order:
            if t in starts:
                _h.finish_deferred()  # this block's projections
                following = starts[t] + 1
                if following < len(chunks):
                    _h.defer(
                        functools.partial(project, time=chunks[following][1], prepared=prepared)
                    )
            y_prev, c_prev = steps.prev_state("default", t), steps.prev_state("Ca", t)
            c = Ca[t]
            _h.dot_add_blocks([y_prev], R, [Za[t], Ia[t], Fa[t], Oa[t]])
            _h.mult_add_mv(c_prev, p.pi, Ia[t])
            _h.mult_add_mv(c_prev, p.pf, Fa[t])
            _h.sigmoid(Ia[t], Ib[t])
            _h.sigmoid(Fa[t], Fb[t])
            act(Za[t], Zb[t])
            _h.mult_tt(Ib[t], Zb[t], c)
            _h.mult_add_tt(Fb[t], c_prev, c)
            _h.mult_add_mv(c, p.po, Oa[t])
            _h.sigmoid(Oa[t], Ob[t])
            act(c, Cb[t])
            _h.mult_tt(Ob[t], Cb[t], y[t])
            if clock is not None:
                clock.advance(t)
                keep = clock.keep_mask(t)
                _h.copy_to_if(c_prev, c, keep)
                _h.copy_to_if(y_prev, y[t], keep)
            steps.apply_mask(_h, t, c, y[t])
        steps.save_context(_h, ["default", *self.state_widths()])

    def backward_pass(self, buffers):
        _h = self.handler
        act_deriv = _h.act_func_deriv[self.activation]
        p, g = buffers.parameters, buffers.gradients
        internals = buffers.internals
        steps = Steps(self, buffers)
        T = steps.T
        Za, Ia, Fa, Oa = (internals[n] for n in _GATES)
        Zb, Ib, Fb, Ob = (internals[n] for n in ("Zb", "Ib", "Fb", "Ob"))
        Ca, Cb = internals.Ca, internals.Cb
        dZa, dIa, dFa, dOa = (internals["d" + n] for n in _GATES)
        dCa, dY, tmp = internals.dCa, internals.dY, internals.dTmp
        clock = Clock(_h, steps, p.timing) if self.clockwork else None
        S = self.size
        R = _h.prepare_matrix(consecutive(p, _RECURRENT).reshape((4 * S, S)))

        _h.copy_to(buffers.output_deltas.default[:T], dY)
        _h.fill(dCa, 0.0)
        deltas = [dZa, dIa, dFa, dOa]
        # the weight and recurrent gradients of every few finished steps, one job per
        # gate, run alongside the recurrence (see Handler.defer)
        parts = [(d, g[w], d, g[r]) for d, w, r in zip(deltas, _WEIGHTS, _RECURRENT)]
        gradients = DeferredGradients(self, steps, parts)
        for t in reversed(steps.order):
            before = steps.prev(t)
            c_prev = steps.prev_state("Ca", t)
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
            _h.mult_tt(dy, Cb[t], tmp)
            _h.sigmoid_deriv(Oa[t], Ob[t], tmp, dOa[t])
            # cell (dy is used up: it ends up holding the deltas of act(c))
            _h.mult_tt(dy, Ob[t], tmp)
            act_deriv(Ca[t], Cb[t], tmp, dy)
            _h.add_tt(dc, dy, dc)
            _h.mult_add_mv(dOa[t], p.po, dc)
            # block input, input and forget gate
            _h.mult_tt(dc, Ib[t], tmp)
            act_deriv(Za[t], Zb[t], tmp, dZa[t])
            _h.mult_tt(dc, Zb[t], tmp)
            _h.sigmoid_deriv(Ia[t], Ib[t], tmp, dIa[t])
            _h.mult_tt(dc, c_prev, tmp)
            _h.sigmoid_deriv(Fa[t], Fb[t], tmp, dFa[t])
            if before is not None:  # deltas for the state this step started from
                # the four recurrent products: [dZa | dIa | dFa | dOa] @ R
                _h.dot_add_blocks([dZa[t], dIa[t], dFa[t], dOa[t]], R, [dY[before]])
                _h.mult_add_tt(dc, Fb[t], dCa[before])
                _h.mult_add_mv(dIa[t], p.pi, dCa[before])
                _h.mult_add_mv(dFa[t], p.pf, dCa[before])
            gradients.done(t)
        gradients.close()

        W = consecutive(p, _WEIGHTS).reshape((4 * S, p.Wz.shape[1]))
        self.input_deltas_and_biases(buffers, deltas, W, [g[b] for b in _BIASES])
        # peepholes: dpi = sum dIa * c_prev, dpf = sum dFa * c_prev, dpo = sum dOa * c,
        # with dY (used up) as scratch space
        current, previous, first = steps.split()
        for delta, dp in ((dIa, g.pi), (dFa, g.pf)):
            if current is not None:
                _h.mult_tt(delta[current], Ca[previous], dY[current])
            _h.mult_tt(delta[first], steps.context("Ca"), dY[first])
            _h.sum_t(flatten_time(dY), axis=0, out=dp)
        _h.mult_tt(dOa, Ca[:T], dY)
        _h.sum_t(flatten_time(dY), axis=0, out=g.po)
        _h.finish_deferred()
