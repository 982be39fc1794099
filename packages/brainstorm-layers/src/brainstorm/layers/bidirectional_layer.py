"""The Bidirectional layer: a forward and a reverse recurrent layer side by side (not in the reference).

The same network can be wired from two layers (see
:mod:`brainstorm.layers._recurrent`); this layer packs the pair into one node
of the architecture, so it can be used like any other layer::

    inp >> Bidirectional(Lstm(100), name='BiLstm') >> out
"""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_activation, layer_label
from brainstorm.layers._recurrent import RecurrentLayerBase, check_size
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure
from brainstorm.structure.buffer_views import BufferView
from brainstorm.structure.buffers import LAYER_CATEGORIES
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import LayerValidationError

__all__ = ["Bidirectional", "BidirectionalLayerImpl"]

#: Prefixes of the parameters and internals of the two directions.
DIRECTIONS = ("fwd", "rev")


def Bidirectional(layer, name=None):
    """Create a bidirectional recurrent layer from a recurrent layer.

    The output ``('T', 'B', 2 * size)`` is the output of the given layer
    running forward in time, followed (along the features) by the output of a
    copy running in reverse. Each direction has its own parameters, named
    with the prefixes ``fwd_`` and ``rev_`` (``fwd_Wz``, ``rev_Wz``, ...;
    patterns such as ``'rev_*'`` work in ``net.initialize``); the internals
    are prefixed the same way. The optional input ``'mask'`` goes to both.

    Passes should hold whole sequences: chaining passes with
    ``forward_pass(context=...)`` continues the forward direction, but the
    reverse direction would need the *later* chunk first; it starts afresh at
    the end of every pass (a state from the previous chunk is ignored).

    Args:
        layer: an unconnected recurrent layer as its construction function
            returns it, e.g. ``Lstm(100)`` (Recurrent, Lstm, Clockwork,
            ClockworkLstm, Gru or any plug-in layer built on the same base);
            its ``size`` and ``activation`` are used, its name is not.
        name: the layer's name (default ``'Bidirectional'``).

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> inp >> Bidirectional(Gru(64)) >> FullyConnected(10) >> out
    """
    label = layer_label(name, "Bidirectional")
    details = getattr(layer, "layer", None)
    if not isinstance(layer, ConstructionWrapper) or details is None:
        raise LayerValidationError(
            f"Layer {label}: expected a recurrent layer such as Lstm(100), got {layer!r}"
        )
    if details.incoming or details.outgoing:
        raise LayerValidationError(
            f"Layer {label}: the layer given to Bidirectional must not be connected"
        )
    kwargs = dict(details.kwargs)
    if kwargs.get("reverse"):
        raise LayerValidationError(
            f"Layer {label}: give the forward layer (reverse=False); the reverse copy is made"
        )
    _recurrent_class(details.layer_type, label)
    return ConstructionWrapper.create(
        BidirectionalLayerImpl,
        name=name,
        layer=details.layer_type,
        size=kwargs.get("size"),
        activation=kwargs.get("activation", "tanh"),
    )


def _recurrent_class(layer_type, label):
    from brainstorm.registry import find_layer_impl

    cls = find_layer_impl(layer_type)
    if not issubclass(cls, RecurrentLayerBase):
        raise LayerValidationError(
            f"Layer {label}: {layer_type} is not a recurrent layer (Recurrent, Lstm, "
            f"Clockwork, ClockworkLstm, Gru)"
        )
    return cls


class BidirectionalLayerImpl(Layer):
    """Implementation of :func:`Bidirectional`: runs two inner layer implementations
    on views of its own buffers."""

    #: the forward half continues the earlier chunk, the reverse half would need
    #: the later one first: chained passes never equal one pass
    context_order = None

    expected_inputs = RecurrentLayerBase.expected_inputs
    expected_kwargs = {"layer", "size", "activation"}
    computes_no_input_deltas_for = ("mask",)

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        cls = _recurrent_class(kwargs.get("layer"), label)
        self.size = check_size(kwargs.get("size"), label)
        activation = check_activation(kwargs.get("activation", "tanh"), label)
        self.inner = OrderedDict()
        for prefix in DIRECTIONS:
            self.inner[prefix] = cls(
                f"{self.name}.{prefix}",
                in_shapes,
                size=self.size,
                activation=activation,
                reverse=prefix == "rev",
            )
        outputs = OrderedDict(default=BufferStructure("T", "B", 2 * self.size, context_size=1))
        parameters, internals = OrderedDict(), OrderedDict()
        for prefix, layer in self.inner.items():
            for name, structure in layer.parameter_shapes.items():
                parameters[f"{prefix}_{name}"] = structure
            for name, structure in layer.internal_shapes.items():
                internals[f"{prefix}_{name}"] = structure
        self.computes_no_gradients_for = tuple(
            f"{prefix}_{name}"
            for prefix, layer in self.inner.items()
            for name in layer.computes_no_gradients_for
        )
        return outputs, parameters, internals

    def set_handler(self, handler):
        super().set_handler(handler)
        for layer in self.inner.values():
            layer.set_handler(handler)

    def _views(self, buffers, prefix):
        """The BufferView the inner layer ``prefix`` works on (views of ours)."""
        layer, S = self.inner[prefix], self.size
        T = buffers.inputs.default.shape[0]
        offset = 0
        for other, inner in self.inner.items():
            if other == prefix:
                break
            offset += sum(s.feature_size for s in inner.parameter_shapes.values())
        n_params = sum(s.feature_size for s in layer.parameter_shapes.values())

        def select(view, names, with_full=False):
            full = None
            if with_full and view.full_buffer is not None:
                full = view.full_buffer[offset : offset + n_params]
            return BufferView(names, [view[f"{prefix}_{n}"] for n in names], full_buffer=full)

        def half(array):
            return array[:, :, :S] if prefix == "fwd" else array[:T, :, S:]

        params = list(layer.parameter_shapes)
        categories = {
            "inputs": buffers.inputs,
            "outputs": BufferView(["default"], [half(buffers.outputs.default)]),
            "parameters": select(buffers.parameters, params, with_full=True),
            "internals": select(buffers.internals, list(layer.internal_shapes)),
            "states": BufferView([], []),
            "input_deltas": buffers.input_deltas,
            "output_deltas": BufferView(["default"], [half(buffers.output_deltas.default)]),
            "gradients": select(buffers.gradients, params, with_full=True),
        }
        return BufferView(LAYER_CATEGORIES, [categories[c] for c in LAYER_CATEGORIES])

    def forward_pass(self, buffers, training_pass=True):
        # the reverse direction starts afresh at the last step of every pass: a state
        # carried over from the previous chunk (its context slot, restored with the
        # network's context) lies in its past
        T = buffers.inputs.default.shape[0]
        for name, structure in self.inner["rev"].internal_shapes.items():
            if structure.context_size:
                self.handler.fill(buffers.internals[f"rev_{name}"][T:], 0.0)
        for prefix, layer in self.inner.items():
            layer.forward_pass(self._views(buffers, prefix), training_pass)

    def backward_pass(self, buffers):
        for prefix, layer in self.inner.items():
            layer.backward_pass(self._views(buffers, prefix))
