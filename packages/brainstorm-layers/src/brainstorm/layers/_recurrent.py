"""Machinery shared by the recurrent layers (Recurrent, Lstm, Clockwork, ClockworkLstm, Gru).

Every recurrent layer here has

* an input ``default`` ``('T', 'B', ...)`` (features flattened) and an
  optional input ``mask`` ``('T', 'B', 1)`` that gets no deltas;
* an output ``default`` ``('T', 'B', size)``;
* the arguments ``size``, ``activation`` and ``reverse``.

**Direction.** A layer processes the time steps in *processing order*:
``0, 1, ..., T-1``, or ``T-1, ..., 0`` with ``reverse=True``. The state before
the first processed step (the *context*) is read from a context slot: for a
forward layer the extra time slot of its state buffers (``y[-1]``, as in the
reference); a reverse layer stores its states in plain time order and keeps
its context in separate ``<state>carry`` internals, whose slot ``T - 1``
receives the state after the last processed step (time 0) so that
``net.get_context()`` hands it on (the network copies the *last* time slot of
every buffer with a context; a carry is a full time-sized buffer of which
only that slot and the context slot are used). Chaining passes of a reverse
layer with ``forward_pass(context=...)`` therefore continues a sequence
*backwards*: the later chunk is processed first. As in the reference, no
deltas flow into a context (truncated backpropagation through time), but the
gradients of a pass that started from a context are exact.

**Masks.** The mask holds 0 or 1 (as data iterators provide it for sequences
of unequal length). Where it is 0 the layer's outputs (and cell state) are set to
zero after the step is computed, so the next step in processing order starts
from a zero state, exactly like the first step of a fresh sequence. Padding
at the end of shorter sequences thus never leaks into a reverse layer's valid
steps, and the outputs at padded steps are 0.

**Speed.** The input projections of all time steps are one matrix product
``x (T*B, F) @ W^T (F, G*S)`` into the stacked gate pre-activations; each step
does one product with the stacked recurrent matrix ``(G*S, S)`` and
elementwise work on whole ``(B, G*S)`` blocks; the backward pass does one
product per step for the recurrent deltas, hands the gradients of ``W`` and
``R`` of every :data:`GRADIENT_BLOCK` finished steps to ``handler.defer``
(:class:`DeferredGradients`: on the NumpyHandler a helper thread computes them
during the rest of the recurrence), and computes the input deltas and the bias
gradients for all steps at once after the loop. The stacked matrices are views
over consecutive parameters (``Wz, Wi, Wf, Wo`` ...), so the reference's
parameter names are kept.

**Bidirectional networks** are two layers fed from the same input, one with
``reverse=True``, both wired into the next layer (an input connected to
several outputs sees their concatenation)::

    fwd = Lstm(100, name='Fwd')
    bwd = Lstm(100, reverse=True, name='Bwd')
    inp >> fwd >> out
    inp >> bwd >> out

or one :func:`~brainstorm.layers.bidirectional_layer.Bidirectional` layer.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

from brainstorm.layers._layer_checks import check_activation, check_positive_int, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.utils import (
    LayerValidationError,
    flatten_time,
    flatten_time_and_features,
    product,
)

__all__ = [
    "GRADIENT_BLOCK",
    "Clock",
    "ClockworkMixin",
    "DeferredGradients",
    "RecurrentLayerBase",
    "Steps",
    "carry_name",
    "check_recurrent_arguments",
    "check_reverse",
    "check_size",
    "consecutive",
]


def check_size(size, label):
    """Return ``size`` as an int if it is a positive integer (NumPy's too).

    Raises:
        LayerValidationError: naming the layer.
    """
    return check_positive_int(size, "size", label)


def check_reverse(reverse, label):
    """Return ``reverse`` if it is a bool.

    Raises:
        LayerValidationError: naming the layer.
    """
    if not isinstance(reverse, bool):
        raise LayerValidationError(f"Layer {label}: reverse must be True or False, got {reverse!r}")
    return reverse


def check_recurrent_arguments(size, activation, reverse, label):
    """Check the arguments every recurrent layer takes (see the check_* functions);
    return the size as an int."""
    check_activation(activation, label)
    check_reverse(reverse, label)
    return check_size(size, label)


def carry_name(state):
    """The internal holding a reverse layer's context of ``state``: ``Hcarry`` for the
    output, ``Ccarry`` for the LSTM cell state ``Ca``, ``<state>carry`` otherwise."""
    return {"default": "Hcarry", "Ca": "Ccarry"}.get(state, state + "carry")


def consecutive(view, names):
    """One flat array over consecutive parameters (or their gradients).

    Args:
        view: a layer's ``parameters`` or ``gradients`` BufferView (it must
            have a ``full_buffer``).
        names: names that follow each other in declaration order.

    Returns:
        The 1-D slice of ``view.full_buffer`` holding them, in that order;
        reshape it, e.g. to ``(4 * size, in_size)`` for ``Wz, Wi, Wf, Wo``.
    """
    keys = view.keys()
    start = keys.index(names[0])
    if keys[start : start + len(names)] != list(names):
        raise ValueError(f"Parameters {names} are not consecutive in {keys}")
    if view.full_buffer is None:
        raise ValueError("This BufferView has no full_buffer; recurrent layers need one")
    offset = sum(product(view[k].shape) for k in keys[:start])
    size = sum(product(view[k].shape) for k in names)
    return view.full_buffer[offset : offset + size]


class RecurrentLayerBase(Layer):
    """Common setup of the recurrent layers (see the module docstring).

    Subclasses define ``parameter_shapes_for``, ``internal_shapes_for`` and
    ``state_widths`` (the internals that, with the output, carry state from
    one step to the next).
    """

    expected_inputs = {
        "default": StructureTemplate("T", "B", "..."),
        "mask": StructureTemplate("T", "B", 1, is_optional=True),
    }
    expected_kwargs = {"size", "activation", "reverse"}
    computes_no_input_deltas_for = ("mask",)

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        self.size = check_size(kwargs.get("size"), label)
        self.activation = check_activation(kwargs.get("activation", "tanh"), label)
        self.reverse = check_reverse(kwargs.get("reverse", False), label)
        self.in_size = in_shapes["default"].feature_size
        size, ctx = self.size, 0 if self.reverse else 1

        outputs = OrderedDict(default=BufferStructure("T", "B", size, context_size=ctx))
        parameters = self.parameter_shapes_for(size, self.in_size)
        internals = OrderedDict()
        state_widths = self.state_widths()
        for name, width in state_widths.items():
            internals[name] = BufferStructure("T", "B", width, context_size=ctx)
        internals.update(self.internal_shapes_for(size))
        if self.reverse:
            internals[carry_name("default")] = BufferStructure("T", "B", size, context_size=1)
            for name, width in state_widths.items():
                internals[carry_name(name)] = BufferStructure("T", "B", width, context_size=1)
        return outputs, parameters, internals

    @property
    def context_order(self):
        """``'reverse'`` for a layer that runs backwards in time, else ``'forward'``
        (see :attr:`brainstorm.layers.base_layer.Layer.context_order`)."""
        return "reverse" if self.reverse else "forward"

    def state_widths(self):
        """OrderedDict name -> feature width of the internals that carry state."""
        return OrderedDict()

    def project_inputs(self, buffers, W, b, G):
        """``G[t] = x[t] @ W^T + b`` for all time steps at once.

        Args:
            buffers: the layer's BufferView (``x`` is its input ``default``).
            W: ``(G*S, F)`` stacked input weights.
            b: ``(G*S,)`` stacked biases.
            G: time-ordered ``(T, B, G*S)`` pre-activations (written).
        """
        _h, flat_G = self.handler, flatten_time(G)
        # the biases first, the product added onto them: no extra pass over G
        _h.broadcast_t(b.reshape((1, W.shape[0])), 0, flat_G)
        _h.dot_add_mm(flatten_time_and_features(buffers.inputs.default), W, flat_G, transb=True)

    def project_inputs_into_blocks(self, buffers, W, biases, blocks, time=None, prepared=None):
        """``blocks[j][t] = x[t] @ W_j^T + biases[j]`` for all time steps, in one product.

        One product with the stacked weights instead of one per block: the
        input is packed once (about 0.9 of the time of four products for the
        LSTM's four gates, measured at ``(5000, 205) @ (205, 512)`` each).

        Args:
            buffers: the layer's BufferView (``x`` is its input ``default``).
            W: ``(sum S_j, F)`` the stacked input weights ``W_j`` (e.g. consecutive
                parameters).
            biases: the ``(S_j,)`` biases, one per block.
            blocks: time-ordered ``(T, B, S_j)`` pre-activations (written).
            time: a slice of the time steps to project (default: all).
            prepared: ``W`` prepared by ``handler.prepare_matrix(W, transpose=True)``,
                to be reused for several slices of time (default: prepared here).
        """
        _h = self.handler
        time = slice(None) if time is None else time
        outs = [flatten_time(block[time]) for block in blocks]
        for out, bias in zip(outs, biases):
            _h.broadcast_t(bias.reshape((1, out.shape[1])), 0, out)
        if prepared is None:
            prepared = _h.prepare_matrix(W, transpose=True)
        x = flatten_time_and_features(buffers.inputs.default[time])
        _h.dot_add_blocks([x], prepared, outs)

    def input_deltas_and_biases(self, buffers, dG, W, db):
        """The input deltas (unless ``default`` is among the layer's
        ``inputs_without_deltas``) and the bias gradient of :meth:`project_inputs`.

        Adds ``dG @ W`` to the input deltas and overwrites ``db``.

        Args:
            buffers: the layer's BufferView.
            dG: time-ordered ``(T, B, G*S)`` deltas of the pre-activations, or a
                list of such blocks side by side (one product with the stacked
                weights for all of them).
            W: ``(G*S, F)`` stacked input weights.
            db: ``(G*S,)`` gradient of the biases (written), or a list of the
                blocks' bias gradients.
        """
        _h = self.handler
        blocks = dG if isinstance(dG, (list, tuple)) else [dG]
        gradients = db if isinstance(db, (list, tuple)) else [db]
        if "default" not in self.inputs_without_deltas:  # nobody reads the data's deltas
            dx = flatten_time_and_features(buffers.input_deltas.default)
            if len(blocks) == 1:
                _h.dot_add_mm(flatten_time(blocks[0]), W, dx)
            else:
                _h.dot_add_blocks([flatten_time(d) for d in blocks], _h.prepare_matrix(W), [dx])
        for delta, gradient in zip(blocks, gradients):
            _h.sum_t(flatten_time(delta), axis=0, out=gradient)

    def parameter_shapes_for(self, size, in_size):
        """OrderedDict of the parameters' BufferStructures."""
        raise NotImplementedError

    def internal_shapes_for(self, size):
        """OrderedDict of the other internals' BufferStructures."""
        raise NotImplementedError


class Steps:
    """Time bookkeeping of one pass of a recurrent layer.

    Args:
        layer: the layer (a :class:`RecurrentLayerBase`).
        buffers: its BufferView.

    Attributes:
        T: the number of time steps.
        order: the time indices in processing order.
        mask: the ``mask`` input or None.
    """

    def __init__(self, layer, buffers):
        self.layer = layer
        self.buffers = buffers
        self.T = buffers.inputs.default.shape[0]
        self.reverse = layer.reverse
        self.order = range(self.T - 1, -1, -1) if self.reverse else range(self.T)
        self.mask = buffers.inputs["mask"] if "mask" in buffers.inputs else None

    def prev(self, t):
        """The time index processed just before ``t``, or None for the first step."""
        p = t + 1 if self.reverse else t - 1
        return p if 0 <= p < self.T else None

    def state(self, name):
        """The time-ordered buffer of a state (``'default'`` is the output)."""
        if name == "default":
            return self.buffers.outputs.default
        return self.buffers.internals[name]

    def context(self, name):
        """The ``(B, width)`` view holding the state before the first processed step."""
        if self.reverse:
            return self.buffers.internals[carry_name(name)][self.T]
        return self.state(name)[self.T]

    def prev_state(self, name, t):
        """The state the step ``t`` starts from."""
        p = self.prev(t)
        return self.context(name) if p is None else self.state(name)[p]

    def save_context(self, handler, names):
        """For a reverse layer: copy the final states (time 0) to the carries' slot ``T-1``."""
        if not self.reverse:
            return
        for name in names:
            carry = self.buffers.internals[carry_name(name)]
            handler.copy_to(self.state(name)[0], carry[self.T - 1])

    def apply_mask(self, handler, t, *arrays):
        """Multiply ``(B, n)`` arrays by the mask of step ``t`` (if there is a mask)."""
        if self.mask is None:
            return
        m = self.mask[t]
        for a in arrays:
            handler.mult_mv(a, m, a)

    def split(self):
        """How the steps pair with their predecessors, for all-time products.

        Returns:
            ``(current, previous, first)``: slices such that step ``current[i]``
            starts from the state at time ``previous[i]`` (None if ``T == 1``),
            and the index of the first processed step (which starts from the
            context).
        """
        T = self.T
        if T == 1:
            return None, None, 0
        if self.reverse:
            return slice(0, T - 1), slice(1, T), T - 1
        return slice(1, T), slice(0, T - 1), 0

    def add_recurrent_gradient(self, handler, deltas, dR, lo, hi, overwrite=False, name="default"):
        """``dR += sum_t deltas[t]^T @ state_before(t)`` over the steps ``lo <= t < hi``.

        Args:
            handler: the handler.
            deltas: time-ordered ``(T, B, G*S)`` deltas of the recurrent products.
            dR: ``(G*S, S)`` gradient (added to; ``overwrite``: written).
            lo, hi: the steps, in time order.
            overwrite: write ``dR`` instead of adding to it.
            name: the state the products were taken of.
        """
        state = self.state(name)
        if self.reverse:  # step t starts from t + 1, the last step from the context
            inner = slice(lo, min(hi, self.T - 1))
            before = slice(lo + 1, inner.stop + 1)
            edge = self.T - 1 if hi == self.T else None
        else:
            inner = slice(max(lo, 1), hi)
            before = slice(inner.start - 1, hi - 1)
            edge = 0 if lo == 0 else None
        product = handler.dot_mm if overwrite else handler.dot_add_mm
        if inner.stop > inner.start:
            product(flatten_time(deltas[inner]), flatten_time(state[before]), dR, transa=True)
            product = handler.dot_add_mm
        if edge is not None:
            product(deltas[edge], self.context(name), dR, transa=True)


#: Time steps of weight and recurrent gradients per deferred job (see
#: :class:`DeferredGradients`); 0: all steps in one job at the end.
GRADIENT_BLOCK = 10


class DeferredGradients:
    """The weight and recurrent gradients of a backward pass, handed to
    :meth:`~brainstorm.handlers.base_handler.Handler.defer` block by block.

    The deltas of a step are final once the backward recurrence has passed it,
    so the products of a block of finished steps can run alongside the rest
    of the recurrence (the NumpyHandler runs them on a helper thread that
    would otherwise wait while the layer does a step's elementwise work).
    Every part ``(deltas, dW, recurrent_deltas, dR)`` is written as
    ``dW = sum_t deltas[t]^T @ x[t]`` and ``dR = sum_t recurrent_deltas[t]^T @
    state_before(t)``, in its own lane (one job at a time, in order). Call
    :meth:`done` after each step, :meth:`close` after the last, and
    ``handler.finish_deferred()`` before reading the gradients.

    Args:
        layer: the recurrent layer.
        steps: the :class:`Steps` of the pass.
        parts: list of ``(deltas, dW, recurrent_deltas, dR)``: time-ordered
            ``(T, B, n)`` deltas and their ``(n, F)`` and ``(n, S)`` gradients.
        block: steps per job (default :data:`GRADIENT_BLOCK`; 0: one job).
    """

    def __init__(self, layer, steps, parts, block=None):
        self.handler = layer.handler
        self.steps = steps
        self.x = steps.buffers.inputs.default
        self.parts = parts
        self.block = GRADIENT_BLOCK if block is None else block
        self.lanes = [(id(layer), i) for i in range(len(parts))]
        self.finished = []  # steps finished since the last job
        self.started = False  # whether the gradients hold a first part

    def done(self, t):
        """Step ``t``'s deltas are final."""
        self.finished.append(t)
        if self.block and len(self.finished) == self.block:
            self._hand_over()

    def close(self):
        """Hand over what is left (every step must be done)."""
        if self.finished or not self.started:
            self._hand_over()

    def _hand_over(self):
        if self.finished:
            lo, hi = min(self.finished), max(self.finished) + 1
        else:  # (no steps: the gradients are zero)
            lo = hi = 0
        first, self.started, self.finished = not self.started, True, []
        for lane, part in zip(self.lanes, self.parts):
            self.handler.defer(functools.partial(self._part, part, lo, hi, first), lane=lane)

    def _part(self, part, lo, hi, first):
        deltas, dW, recurrent_deltas, dR = part
        _h = self.handler
        if hi == lo:
            _h.fill(dW, 0.0)
            _h.fill(dR, 0.0)
            return
        product = _h.dot_mm if first else _h.dot_add_mm
        x = flatten_time_and_features(self.x[lo:hi])
        product(flatten_time(deltas[lo:hi]), x, dW, transa=True)
        self.steps.add_recurrent_gradient(_h, recurrent_deltas, dR, lo, hi, overwrite=first)


class Clock:
    """Which units of a clockwork layer update at each step.

    The internal ``Tau`` ``('T', 'B', 1)`` counts the steps since the start of
    the sequence (1 at the first step), continues across passes chained by
    context, and restarts after a masked step. Unit ``k`` computes a new value
    at a step with ``tau = Tau - 1`` only if ``fmod(tau, timing[k]) == 0``
    (so every unit updates at the first step); otherwise it keeps the value of
    the previous step.

    Args:
        handler: the handler.
        steps: the :class:`Steps` of the pass.
        timing: the ``(S,)`` timing parameter (positive integers as floats).
    """

    def __init__(self, handler, steps, timing):
        self.handler = handler
        self.steps = steps
        self.tau = steps.state("Tau")
        batch, size = self.tau.shape[1], timing.shape[0]
        self.timing = handler.allocate((batch, size))
        handler.broadcast_t(timing.reshape((1, size)), 0, self.timing)
        self.phase = handler.allocate((batch, 1))
        self.keep = handler.allocate((batch, size))

    def advance(self, t):
        """Forward pass: set ``Tau[t]`` from the previous step (and the mask)."""
        self.handler.add_st(1.0, self.steps.prev_state("Tau", t), self.tau[t])
        self.steps.apply_mask(self.handler, t, self.tau[t])

    def keep_mask(self, t):
        """``(B, S)``, non-zero for the units that keep their previous value at step ``t``."""
        _h = self.handler
        _h.add_st(-1.0, self.tau[t], self.phase)
        _h.broadcast_t(self.phase, 1, self.keep)
        _h.modulo_tt(self.keep, self.timing, self.keep)
        return self.keep


class ClockworkMixin:
    """Makes a recurrent layer implementation its clockwork variant.

    Put it first among the bases (``class ClockworkLayerImpl(ClockworkMixin,
    RecurrentLayerImpl)``). It adds the parameter ``timing (S,)``, which gets
    no gradient, and the state ``Tau ('T', 'B', 1)``, and turns the
    :class:`Clock` of the passes on.
    """

    clockwork = True
    computes_no_gradients_for = ("timing",)

    def parameter_shapes_for(self, size, in_size):
        parameters = super().parameter_shapes_for(size, in_size)
        parameters["timing"] = BufferStructure(size)
        return parameters

    def state_widths(self):
        widths = super().state_widths()
        widths["Tau"] = 1
        return widths
