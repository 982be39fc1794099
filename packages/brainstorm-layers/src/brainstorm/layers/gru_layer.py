"""The Gru layer: a gated recurrent unit layer (not in the reference).

Like every recurrent layer here it runs forward or, with ``reverse=True``,
backward in time, can continue from a context (``net.get_context()``), and
takes an optional ``mask`` input for sequences of unequal length; see
:mod:`brainstorm.layers._recurrent`. A bidirectional network is a forward and a
reverse layer fed from the same input and wired into the same next layer
(whose input then sees both outputs side by side), or one
:func:`~brainstorm.layers.bidirectional_layer.Bidirectional` layer::

    inp >> Gru(64, name='Fwd') >> out
    inp >> Gru(64, reverse=True, name='Bwd') >> out
    # or: inp >> Bidirectional(Gru(64)) >> out

Layout. The internals ``Ga`` and ``Gb`` ``('T', 'B', 3 * S)`` hold the
pre-activations and activations of the update gate ``z``, the reset gate
``r`` and the candidate ``h~`` side by side, in that order; ``Ra`` holds the
recurrent products ``[Rz h | Rr h | Rh h]`` of each step (one matrix product
with the stacked ``(3S, S)`` recurrent matrix).
"""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers._recurrent import (
    DeferredGradients,
    RecurrentLayerBase,
    Steps,
    check_recurrent_arguments,
    consecutive,
)
from brainstorm.structure.buffer_structure import BufferStructure
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["Gru", "GruLayerImpl"]


def Gru(size, activation="tanh", name=None, reverse=False):
    """Create a gated recurrent unit (GRU) layer.

    For every step (``*`` is elementwise, ``h_{-1}`` comes from the context)::

        z_t = sigmoid(Wz x_t + Rz h_{t-1} + bz)              update gate
        r_t = sigmoid(Wr x_t + Rr h_{t-1} + br)              reset gate
        c_t = act(Wh x_t + r_t * (Rh h_{t-1}) + bh)          candidate
        h_t = z_t * h_{t-1} + (1 - z_t) * c_t

    The reset gate is applied after the recurrent product (as in cuDNN and
    PyTorch, which however add a second bias inside ``r_t * (...)``), and
    ``z_t`` is the share of the *old* state kept (as in Cho et al. 2014 and
    PyTorch). Input features are flattened.

    Args:
        size: the number of units.
        activation: the candidate's activation: one of ``'tanh'``,
            ``'sigmoid'``, ``'rel'``, ``'linear'``, ``'el'``.
        name: the layer's name (default ``'Gru'``).
        reverse: process the sequence from the last time step to the first.

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``. Its
        optional input ``'mask'`` ``('T', 'B', 1)`` zeroes outputs and resets
        the state where the mask is 0.

    Example:
        >>> inp >> Gru(128) >> out
    """
    size = check_recurrent_arguments(size, activation, reverse, layer_label(name, "Gru"))
    return ConstructionWrapper.create(
        GruLayerImpl, name=name, size=size, activation=activation, reverse=reverse
    )


_WEIGHTS = ("Wz", "Wr", "Wh")
_RECURRENT = ("Rz", "Rr", "Rh")
_BIASES = ("bz", "br", "bh")


class GruLayerImpl(RecurrentLayerBase):
    """Implementation of :func:`Gru` (layout in the module docstring).

    Parameters ``Wz, Wr, Wh (S, F)``, ``Rz, Rr, Rh (S, S)``, ``bz, br, bh (S,)``.
    Internals ``Ga``, ``Gb``, ``Ra`` and the backward-only ``dGa``, ``dGb``,
    ``dRa`` (deltas of the recurrent products) and ``dY`` (deltas of the
    outputs including the recurrent part).
    """

    #: written in every step; dY copied from the output deltas
    overwrites_backward_internals = ("dGa", "dGb", "dRa", "dY")

    def parameter_shapes_for(self, size, in_size):
        parameters = OrderedDict()
        for name in _WEIGHTS:
            parameters[name] = BufferStructure(size, in_size)
        for name in _RECURRENT:
            parameters[name] = BufferStructure(size, size)
        for name in _BIASES:
            parameters[name] = BufferStructure(size)
        return parameters

    def internal_shapes_for(self, size):
        internals = OrderedDict()
        for name in ("Ga", "Gb", "Ra"):
            internals[name] = BufferStructure("T", "B", 3 * size)
        for name, width in (("dGa", 3), ("dGb", 3), ("dRa", 3), ("dY", 1)):
            internals[name] = BufferStructure("T", "B", width * size, is_backward_only=True)
        return internals

    def _fused(self, view):
        """(W (3S, F), R (3S, S), b (3S,)) over parameters or gradients."""
        S = self.size
        W = consecutive(view, _WEIGHTS).reshape((3 * S, self.in_size))
        R = consecutive(view, _RECURRENT).reshape((3 * S, S))
        return W, R, consecutive(view, _BIASES)

    def forward_pass(self, buffers, training_pass=True):
        _h, S = self.handler, self.size
        W, R, b = self._fused(buffers.parameters)
        steps = Steps(self, buffers)
        Ga, Gb, Ra = buffers.internals.Ga, buffers.internals.Gb, buffers.internals.Ra
        y = buffers.outputs.default

        self.project_inputs(buffers, W, b, Ga)
        for t in steps.order:
            h_prev = steps.prev_state("default", t)
            ga, gb, ra = Ga[t], Gb[t], Ra[t]
            _h.dot_mm(h_prev, R, ra, transb=True)
            _h.add_tt(ga[:, : 2 * S], ra[:, : 2 * S], ga[:, : 2 * S])
            _h.sigmoid(ga[:, : 2 * S], gb[:, : 2 * S])  # z and r together
            _h.mult_add_tt(gb[:, S : 2 * S], ra[:, 2 * S :], ga[:, 2 * S :])
            _h.act_func[self.activation](ga[:, 2 * S :], gb[:, 2 * S :])
            # h = c + z * (h_prev - c)
            _h.subtract_tt(h_prev, gb[:, 2 * S :], y[t])
            _h.mult_tt(gb[:, :S], y[t], y[t])
            _h.add_tt(y[t], gb[:, 2 * S :], y[t])
            steps.apply_mask(_h, t, y[t])
        steps.save_context(_h, ["default"])

    def backward_pass(self, buffers):
        _h, S = self.handler, self.size
        W, R, _ = self._fused(buffers.parameters)
        dW, dR, db = self._fused(buffers.gradients)
        steps = Steps(self, buffers)
        T = steps.T
        Ga, Gb, Ra = buffers.internals.Ga, buffers.internals.Gb, buffers.internals.Ra
        dGa, dGb, dRa, dY = (buffers.internals[n] for n in ("dGa", "dGb", "dRa", "dY"))

        _h.copy_to(buffers.output_deltas.default[:T], dY)
        # weight and recurrent gradients of every few finished steps: see Handler.defer
        gradients = DeferredGradients(self, steps, [(dGa, dW, dRa, dR)])
        for t in reversed(steps.order):
            before = steps.prev(t)
            h_prev = steps.prev_state("default", t)
            ga, gb, ra, dga, dgb, dra, dy = Ga[t], Gb[t], Ra[t], dGa[t], dGb[t], dRa[t], dY[t]
            steps.apply_mask(_h, t, dy)
            # update gate: dz = dy * (h_prev - c); candidate: dc = dy - dy * z
            _h.subtract_tt(h_prev, gb[:, 2 * S :], dgb[:, :S])
            _h.mult_tt(dy, dgb[:, :S], dgb[:, :S])
            _h.mult_tt(dy, gb[:, :S], dgb[:, 2 * S :])
            _h.subtract_tt(dy, dgb[:, 2 * S :], dgb[:, 2 * S :])
            _h.act_func_deriv[self.activation](
                ga[:, 2 * S :], gb[:, 2 * S :], dgb[:, 2 * S :], dga[:, 2 * S :]
            )
            # reset gate: dr = dc_a * (Rh h); recurrent product: d(Rh h) = dc_a * r
            _h.mult_tt(dga[:, 2 * S :], ra[:, 2 * S :], dgb[:, S : 2 * S])
            _h.mult_tt(dga[:, 2 * S :], gb[:, S : 2 * S], dra[:, 2 * S :])
            _h.sigmoid_deriv(ga[:, : 2 * S], gb[:, : 2 * S], dgb[:, : 2 * S], dga[:, : 2 * S])
            _h.copy_to(dga[:, : 2 * S], dra[:, : 2 * S])
            if before is not None:  # deltas for the state this step started from
                _h.mult_add_tt(dy, gb[:, :S], dY[before])
                _h.dot_add_mm(dra, R, dY[before])
            gradients.done(t)
        gradients.close()
        self.input_deltas_and_biases(buffers, dGa, W, db)
        _h.finish_deferred()
