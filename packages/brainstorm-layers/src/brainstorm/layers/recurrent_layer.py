"""The Recurrent layer: a simple (Elman) recurrent layer.

Like every recurrent layer here it runs forward or, with ``reverse=True``,
backward in time, can continue from a context (``net.get_context()``), and
takes an optional ``mask`` input for sequences of unequal length; see
:mod:`brainstorm.layers._recurrent`. A bidirectional network is a forward and a
reverse layer fed from the same input and wired into the same next layer
(whose input then sees both outputs side by side), or one
:func:`~brainstorm.layers.bidirectional_layer.Bidirectional` layer::

    inp >> Recurrent(64, name='Fwd') >> out
    inp >> Recurrent(64, reverse=True, name='Bwd') >> out
    # or: inp >> Bidirectional(Recurrent(64)) >> out
"""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import layer_label
from brainstorm.layers._recurrent import (
    Clock,
    DeferredGradients,
    RecurrentLayerBase,
    Steps,
    check_recurrent_arguments,
)
from brainstorm.structure.buffer_structure import BufferStructure
from brainstorm.structure.construction import ConstructionWrapper

__all__ = ["Recurrent", "RecurrentLayerImpl"]


def Recurrent(size, activation="tanh", name=None, reverse=False):
    """Create a simple recurrent layer: ``h_t = act(W x_t + R h_{t-1} + bias)``.

    ``h_{-1}`` is the context (zeros unless ``forward_pass(context=...)``
    continues an earlier pass). Input features are flattened.

    Args:
        size: the number of units.
        activation: one of ``'tanh'``, ``'sigmoid'``, ``'rel'``, ``'linear'``,
            ``'el'``.
        name: the layer's name (default ``'Recurrent'``).
        reverse: process the sequence from the last time step to the first
            (``h_{t+1}`` feeds step ``t``); combine a forward and a reverse
            layer for a bidirectional network.

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``. Its
        optional input ``'mask'`` ``('T', 'B', 1)`` zeroes outputs and resets
        the state where the mask is 0.

    Example:
        >>> inp >> Recurrent(50) >> out
        >>> inp - 'mask' >> 'mask' - rnn      # sequences of unequal length
    """
    size = check_recurrent_arguments(size, activation, reverse, layer_label(name, "Recurrent"))
    return ConstructionWrapper.create(
        RecurrentLayerImpl, name=name, size=size, activation=activation, reverse=reverse
    )


class RecurrentLayerImpl(RecurrentLayerBase):
    """Implementation of :func:`Recurrent`.

    Parameters ``W (S, F)``, ``R (S, S)``, ``bias (S,)``; internals ``Ha``
    (pre-activations) and the backward-only ``dHa`` and ``dHb`` (deltas of the
    pre-activations and of the outputs including the recurrent part).
    """

    #: dHb is copied from the output deltas, dHa written in every step
    overwrites_backward_internals = ("dHa", "dHb")

    #: Clockwork layers keep some units' values from step to step.
    clockwork = False

    def parameter_shapes_for(self, size, in_size):
        parameters = OrderedDict()
        parameters["W"] = BufferStructure(size, in_size)
        parameters["R"] = BufferStructure(size, size)
        parameters["bias"] = BufferStructure(size)
        return parameters

    def internal_shapes_for(self, size):
        internals = OrderedDict()
        internals["Ha"] = BufferStructure("T", "B", size)
        internals["dHa"] = BufferStructure("T", "B", size, is_backward_only=True)
        internals["dHb"] = BufferStructure("T", "B", size, is_backward_only=True)
        return internals

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        p = buffers.parameters
        steps = Steps(self, buffers)
        Ha, y = buffers.internals.Ha, buffers.outputs.default
        clock = Clock(_h, steps, p.timing) if self.clockwork else None

        self.project_inputs(buffers, p.W, p.bias, Ha)
        for t in steps.order:
            h_prev = steps.prev_state("default", t)
            _h.dot_add_mm(h_prev, p.R, Ha[t], transb=True)
            _h.act_func[self.activation](Ha[t], y[t])
            if clock is not None:
                clock.advance(t)
                _h.copy_to_if(h_prev, y[t], clock.keep_mask(t))
            steps.apply_mask(_h, t, y[t])
        steps.save_context(_h, ["default", *self.state_widths()])

    def backward_pass(self, buffers):
        _h = self.handler
        p, g = buffers.parameters, buffers.gradients
        steps = Steps(self, buffers)
        T = steps.T
        Ha, y = buffers.internals.Ha, buffers.outputs.default
        dHa, dHb = buffers.internals.dHa, buffers.internals.dHb
        clock = Clock(_h, steps, p.timing) if self.clockwork else None

        _h.copy_to(buffers.output_deltas.default[:T], dHb)
        # weight and recurrent gradients of every few finished steps: see Handler.defer
        gradients = DeferredGradients(self, steps, [(dHa, g.W, dHa, g.R)])
        for t in reversed(steps.order):
            before = steps.prev(t)
            dh = dHb[t]
            steps.apply_mask(_h, t, dh)
            if clock is not None:
                keep = clock.keep_mask(t)
                if before is not None:  # units that kept their value pass their deltas on
                    _h.add_into_if(dh, dHb[before], keep)
                _h.fill_if(dh, 0.0, keep)
            _h.act_func_deriv[self.activation](Ha[t], y[t], dh, dHa[t])
            if before is not None:
                _h.dot_add_mm(dHa[t], p.R, dHb[before])
            gradients.done(t)
        gradients.close()
        self.input_deltas_and_biases(buffers, dHa, p.W, g.bias)
        _h.finish_deferred()
