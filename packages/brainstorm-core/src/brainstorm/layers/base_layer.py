"""The base class of every layer implementation.

A layer type is a construction function (``FullyConnected(...)``) plus a class
named ``<Type>LayerImpl`` derived from :class:`Layer`. The class declares what
it expects and what memory it needs; it owns no memory. The network lays out
all buffers and passes each layer a view of its own (``buffers.inputs``,
``.outputs``, ``.parameters``, ``.internals``, ``.states``, ``.input_deltas``,
``.output_deltas``, ``.gradients``).

Rules for implementations:

* ``setup(kwargs, in_shapes)`` returns three ``OrderedDict`` of
  :class:`~brainstorm.structure.buffer_structure.BufferStructure`: outputs,
  parameters and internals (internals marked ``is_backward_only`` live with the
  deltas).
* ``forward_pass`` and ``backward_pass`` use only ``self.handler`` operations.
* ``backward_pass`` must ADD into input deltas (several layers can feed one
  delta buffer); gradient buffers are zeroed before each backward pass, unless
  the layer sets ``overwrites_gradients = True`` (it then WRITES every one of
  its gradients, and the network skips zeroing them). Backward-only internals
  are zeroed too, except those named in ``overwrites_backward_internals``.
* Optional non-trainable state (e.g. running statistics) is declared by
  ``setup_states`` and given initial values by ``initialize_states``; it is
  saved with the network but never touched by steppers, initializers or
  modifiers.
"""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.utils import LayerValidationError

__all__ = ["Layer"]


class Layer:
    """Base class of layer implementations (see the module docstring).

    Args:
        name: the layer's name in the network.
        in_shapes: input name -> :class:`BufferStructure` of what is connected.
        incoming_connections: connections ending at this layer.
        outgoing_connections: connections starting at this layer.
        **kwargs: the layer's arguments (validated against ``expected_kwargs``).
    """

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = set()
    #: Inputs whose deltas nobody needs (set by the network when
    #: ``net.compute_data_deltas`` is False: inputs fed only by the Input layer).
    #: A layer may skip computing deltas for these; it is never required to.
    inputs_without_deltas = frozenset()
    computes_no_input_deltas_for = ()
    #: True if ``backward_pass`` writes (not adds) every gradient of the layer, so
    #: the network need not zero them before each backward pass (checked by the
    #: ``garbage`` check of :func:`brainstorm.testing.check_layer`).
    overwrites_gradients = False
    #: Names of backward-only internals that ``backward_pass`` writes completely
    #: before it reads them, so the network need not zero them before each
    #: backward pass (checked by the ``garbage`` check of
    #: :func:`brainstorm.testing.check_layer`, which fills them with noise).
    #: Other names (e.g. of internals a layer has only with some arguments)
    #: change nothing, and internals of constant size (no time or batch axis)
    #: are zeroed all the same.
    overwrites_backward_internals = ()
    computes_no_gradients_for = ()
    takes_no_output_deltas_from = ()
    #: Old output names the layer still answers to, old name -> current name (in
    #: wiring and in ``net.get`` paths), e.g. ``{'probabilities': 'predictions'}``.
    output_aliases = {}
    #: How passes chained by context (``net.get_context()`` /
    #: ``forward_pass(context=...)``) make up a sequence: ``'forward'`` (the
    #: later chunk continues the earlier one), ``'reverse'`` (a layer that runs
    #: backwards in time: the earlier chunk continues the later one) or ``None``
    #: (chained passes never equal one pass, e.g. a bidirectional layer). The
    #: ``context`` check of :func:`brainstorm.testing.check_layer` chains its
    #: passes in this order, and skips that comparison for ``None``.
    context_order = "forward"

    def __init__(self, name, in_shapes, incoming_connections=(), outgoing_connections=(), **kwargs):
        self.name = name
        self.kwargs = kwargs
        self.incoming = tuple(incoming_connections)
        self.outgoing = tuple(outgoing_connections)
        self.handler = None
        unexpected = set(kwargs) - set(self.expected_kwargs)
        if unexpected:
            raise LayerValidationError(
                f"Layer {name!r} ({self.type_name}) got unexpected arguments "
                f"{sorted(unexpected)}; accepted: {sorted(self.expected_kwargs)}"
            )
        self.in_shapes = self._validate_in_shapes(in_shapes)
        outputs, parameters, internals = self.setup(kwargs, self.in_shapes)
        self.out_shapes = OrderedDict(outputs)
        self.parameter_shapes = OrderedDict(parameters)
        self.internal_shapes = OrderedDict(internals)
        self.state_shapes = OrderedDict(self.setup_states(kwargs, self.in_shapes))
        for category in ("out_shapes", "parameter_shapes", "internal_shapes", "state_shapes"):
            for key, value in getattr(self, category).items():
                if not isinstance(value, BufferStructure):
                    raise LayerValidationError(
                        f"Layer {name!r}: {category}[{key!r}] must be a BufferStructure, "
                        f"got {value!r}"
                    )
        for conn in self.outgoing:
            if conn.output_name not in self.out_shapes:
                raise LayerValidationError(
                    f"Layer {name!r} ({self.type_name}) has no output {conn.output_name!r} "
                    f"(connected to {conn.end_layer}.{conn.input_name}); outputs: "
                    f"{list(self.out_shapes)}"
                )

    @property
    def type_name(self):
        """The type name used in architectures (class name without ``LayerImpl``)."""
        name = type(self).__name__
        return name[: -len("LayerImpl")] if name.endswith("LayerImpl") else name

    def _validate_in_shapes(self, in_shapes):
        in_shapes = dict(in_shapes)
        for input_name in in_shapes:
            if input_name not in self.expected_inputs:
                raise LayerValidationError(
                    f"Layer {self.name!r} ({self.type_name}) has no input {input_name!r}; "
                    f"inputs: {list(self.expected_inputs)}"
                )
        for input_name, template in self.expected_inputs.items():
            if input_name not in in_shapes:
                if getattr(template, "is_optional", False):
                    continue
                raise LayerValidationError(
                    f"Layer {self.name!r} ({self.type_name}): input {input_name!r} is not connected"
                )
            if not template.matches(in_shapes[input_name]):
                raise LayerValidationError(
                    f"Layer {self.name!r} ({self.type_name}): input {input_name!r} has shape "
                    f"{in_shapes[input_name].shape}, which does not match {template.shape}"
                )
        return in_shapes

    def setup(self, kwargs, in_shapes):
        """Return ``(outputs, parameters, internals)``, three OrderedDicts of BufferStructure."""
        raise NotImplementedError(f"{type(self).__name__} must implement setup()")

    def setup_states(self, kwargs, in_shapes):
        """Return an OrderedDict of constant-size non-trainable state buffers (default none)."""
        return OrderedDict()

    def initialize_states(self, states):
        """Give the state buffers their initial values (``states`` is a BufferView)."""

    def set_handler(self, handler):
        """Use ``handler`` for all operations of this layer."""
        self.handler = handler

    def forward_pass(self, buffers, training_pass=True):
        """Compute the outputs (and internals) from the inputs and parameters."""
        raise NotImplementedError

    def backward_pass(self, buffers):
        """Add input deltas and compute gradients from the output deltas."""
        raise NotImplementedError

    def get_shape(self, path):
        """The shape template of ``'outputs.default'``, ``'parameters.W'``, ...."""
        category, _, name = path.partition(".")
        table = {
            "inputs": self.in_shapes,
            "outputs": self.out_shapes,
            "parameters": self.parameter_shapes,
            "internals": self.internal_shapes,
            "states": self.state_shapes,
        }
        return table[category][name].shape

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"
