"""Memory layout and the BufferManager.

All buffers of a network live in two allocations made by the handler:

* a *constant* one, made once: the flat ``parameters`` vector, the flat
  ``states`` vector, constant-size outputs and internals, the flat
  ``gradients`` vector and constant-size backward buffers;
* a *variable* one for batch- and time-sized buffers, re-carved whenever the
  time or batch size changes (and re-allocated only when it must grow).

Within each, forward buffers come first and backward buffers (deltas,
gradients, backward-only internals) last, so clearing the backward buffers is
two ``fill`` calls.

Outputs are grouped into *hubs*: a hub holds the outputs (sources) that feed a
common input (sink) side by side along the last feature axis, so every input is
a zero-copy view of its producers' outputs, and an input wired to several
outputs sees their concatenation. Each forward hub has a twin backward hub of
the same shape for the deltas, so the input deltas of a consumer are views of
the output deltas of its producers.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from brainstorm.structure.buffer_views import BufferView
from brainstorm.utils import NetworkValidationError, product

__all__ = ["BufferManager", "LAYER_CATEGORIES"]

LAYER_CATEGORIES = (
    "inputs",
    "outputs",
    "parameters",
    "internals",
    "input_deltas",
    "output_deltas",
    "gradients",
    "states",
)

_MAX_PERMUTED_SOURCES = 8


class _Hub:
    """A block of memory shared by some buffers along the last feature axis."""

    def __init__(self, buffer_type, prefix, backward, zeroed=True):
        self.buffer_type = buffer_type
        self.prefix = tuple(prefix)
        self.backward = backward
        #: (backward hubs) zeroed before each backward pass
        self.zeroed = zeroed
        self.last = 0
        self.context = 0
        self.views = []  # (layer, category, name, start, stop, context_size)

    def add(self, layer, category, name, width, context_size=0, offset=None):
        start = self.last if offset is None else offset
        self.views.append((layer, category, name, start, start + width, context_size))
        self.last = max(self.last, start + width)
        self.context = max(self.context, context_size)
        return start

    @property
    def is_constant(self):
        return self.buffer_type == 0

    def shape(self, time_size, batch_size):
        lead = {0: (), 1: (batch_size,), 2: (time_size + self.context, batch_size)}
        return lead[self.buffer_type] + self.prefix + (self.last,)

    def size(self, time_size, batch_size):
        return product(self.shape(time_size, batch_size))


def _order_sources(sources, sinks):
    """Order ``sources`` so each sink's sources are contiguous (or raise)."""

    def contiguous(order):
        position = {s: i for i, s in enumerate(order)}
        for members in sinks:
            idx = sorted(position[m] for m in members)
            if idx[-1] - idx[0] != len(idx) - 1:
                return False
        return True

    if contiguous(sources):
        return list(sources)
    if len(sources) <= _MAX_PERMUTED_SOURCES:
        for order in itertools.permutations(sources):
            if contiguous(order):
                return list(order)
    names = ", ".join(f"{layer}.outputs.{name}" for layer, name in sources)
    raise NetworkValidationError(
        f"Cannot lay out the outputs {names} so that every input wired to several of them "
        f"sees them side by side; insert a Merge layer to concatenate explicitly"
    )


class _Layout:
    """Where every buffer of a network lives (independent of T, B and handler)."""

    def __init__(self, layers):
        self.layers = layers
        self.param_slices = OrderedDict()  # (layer, name) -> (start, stop, shape)
        self.state_slices = OrderedDict()
        self.hubs = []
        self._lay_out_flat("parameters", self.param_slices)
        self._lay_out_flat("states", self.state_slices)
        self.num_parameters = sum(b - a for a, b, _ in self.param_slices.values())
        self.num_states = sum(b - a for a, b, _ in self.state_slices.values())
        self._lay_out_outputs()
        self._lay_out_internals()

    def _lay_out_flat(self, kind, table):
        position = 0
        for layer_name, layer in self.layers.items():
            shapes = layer.parameter_shapes if kind == "parameters" else layer.state_shapes
            for name, structure in shapes.items():
                if structure.buffer_type != 0:
                    raise NetworkValidationError(
                        f"Layer {layer_name!r}: {kind} {name!r} must be constant-size, got "
                        f"{structure.shape}"
                    )
                size = structure.feature_size
                table[(layer_name, name)] = (position, position + size, structure.feature_shape)
                position += size

    def _lay_out_outputs(self):
        sources = [(ln, on) for ln, layer in self.layers.items() for on in layer.out_shapes]
        rank = {s: i for i, s in enumerate(sources)}
        parent = {s: s for s in sources}

        def find(s):
            while parent[s] != s:
                parent[s] = parent[parent[s]]
                s = parent[s]
            return s

        sinks = OrderedDict()  # (layer, input) -> list of sources
        for layer_name, layer in self.layers.items():
            for conn in layer.incoming:
                sinks.setdefault((layer_name, conn.input_name), []).append(
                    (conn.start_layer, conn.output_name)
                )
        for members in sinks.values():
            for other in members[1:]:
                parent[find(other)] = find(members[0])
        groups = OrderedDict()
        for s in sources:
            groups.setdefault(find(s), []).append(s)
        sinks_of_group = {}
        for key, srcs in sinks.items():
            sinks_of_group.setdefault(find(srcs[0]), []).append((key, srcs))
        for root, members in groups.items():
            members.sort(key=rank.get)
            group_sinks = sinks_of_group.get(root, [])
            order = _order_sources(members, [srcs for _, srcs in group_sinks])
            first = self.layers[order[0][0]].out_shapes[order[0][1]]
            fwd = _Hub(first.buffer_type, first.feature_shape[:-1], backward=False)
            bwd = _Hub(first.buffer_type, first.feature_shape[:-1], backward=True)
            offsets = {}
            for layer_name, out_name in order:
                structure = self.layers[layer_name].out_shapes[out_name]
                width = structure.feature_shape[-1]
                ctx = structure.context_size
                offsets[(layer_name, out_name)] = fwd.add(
                    layer_name, "outputs", out_name, width, ctx
                )
                bwd.add(layer_name, "output_deltas", out_name, width, ctx)
            for (layer_name, in_name), srcs in group_sinks:
                start = min(offsets[s] for s in srcs)
                width = sum(self.layers[s[0]].out_shapes[s[1]].feature_shape[-1] for s in srcs)
                fwd.add(layer_name, "inputs", in_name, width, 0, offset=start)
                bwd.add(layer_name, "input_deltas", in_name, width, 0, offset=start)
            self.hubs.extend([fwd, bwd])

    def _lay_out_internals(self):
        for layer_name, layer in self.layers.items():
            # (names of internals the layer does not have, e.g. only with some
            # activations, change nothing: those are zeroed as always)
            overwritten = set(getattr(layer, "overwrites_backward_internals", ()))
            for name, structure in layer.internal_shapes.items():
                if not structure.feature_shape:
                    raise NetworkValidationError(
                        f"Layer {layer_name!r}: internal {name!r} needs a feature shape"
                    )
                hub = _Hub(
                    structure.buffer_type,
                    structure.feature_shape[:-1],
                    backward=structure.is_backward_only,
                    # (only variable-size hubs are left out of the zeroing)
                    zeroed=not (
                        name in overwritten
                        and structure.is_backward_only
                        and structure.buffer_type != 0
                    ),
                )
                hub.add(
                    layer_name,
                    "internals",
                    name,
                    structure.feature_shape[-1],
                    structure.context_size,
                )
                self.hubs.append(hub)


class BufferManager:
    """Allocates a network's memory and carves it into named views.

    Args:
        layers: OrderedDict name -> Layer (canonical order).
        handler: the handler that allocates and operates on the memory.

    Attributes:
        views: the root :class:`BufferView` (``parameters``, ``gradients``,
            ``states``, then one view per layer).
        time_size, batch_size: the sizes the views are currently carved for.
    """

    def __init__(self, layers, handler):
        self.layers = layers
        self.layout = _Layout(layers)
        self.handler = handler
        self.time_size = None
        self.batch_size = None
        self._var_memory = None
        self._var_capacity = 0
        self._allocate_constant()
        self.resize(1, 1)

    # -- allocation -----------------------------------------------------------------
    def _constant_hubs(self, backward):
        return [h for h in self.layout.hubs if h.is_constant and h.backward == backward]

    def _variable_hubs(self, backward):
        return [h for h in self.layout.hubs if not h.is_constant and h.backward == backward]

    def _allocate_constant(self):
        n_params, n_states = self.layout.num_parameters, self.layout.num_states
        fwd = sum(h.size(1, 1) for h in self._constant_hubs(False))
        bwd = sum(h.size(1, 1) for h in self._constant_hubs(True))
        total = 2 * n_params + n_states + fwd + bwd
        self._const_memory = self.handler.allocate((max(total, 1),))
        mem = self._const_memory
        self.parameters = mem[0:n_params]
        self.states = mem[n_params : n_params + n_states]
        position = n_params + n_states
        self._const_hub_arrays = {}
        for hub in self._constant_hubs(False):
            position = self._carve_hub(mem, position, hub, self._const_hub_arrays, 1, 1)
        self._const_backward_start = position
        self.gradients = mem[position : position + n_params]
        position += n_params
        for hub in self._constant_hubs(True):
            position = self._carve_hub(mem, position, hub, self._const_hub_arrays, 1, 1)
        self._const_backward_stop = position
        self._const_backward_ranges = self._zeroed_ranges()

    def _zeroed_ranges(self):
        """``(start, stop)`` ranges of constant backward memory to zero before each
        backward pass: all of it but the gradients of layers that overwrite them."""
        offset = self._const_backward_start
        skipped = sorted(
            (offset + start, offset + stop)
            for (layer_name, _), (start, stop, _) in self.layout.param_slices.items()
            if getattr(self.layers[layer_name], "overwrites_gradients", False)
        )
        ranges, position = [], offset
        for start, stop in skipped:
            if start > position:
                ranges.append((position, start))
            position = max(position, stop)
        if self._const_backward_stop > position:
            ranges.append((position, self._const_backward_stop))
        return ranges

    def _carve_hub(self, memory, position, hub, table, time_size, batch_size):
        size = hub.size(time_size, batch_size)
        table[id(hub)] = memory[position : position + size].reshape(
            hub.shape(time_size, batch_size)
        )
        return position + size

    def resize(self, time_size, batch_size):
        """Carve the views for ``time_size`` steps and ``batch_size`` sequences (lazy)."""
        if (time_size, batch_size) == (self.time_size, self.batch_size):
            return
        if time_size < 1 or batch_size < 1:
            raise ValueError(f"Time and batch size must be positive, got {time_size}, {batch_size}")
        fwd_hubs, bwd_hubs = self._variable_hubs(False), self._variable_hubs(True)
        # the hubs zeroed before each backward pass first, in one range; then the
        # internals their layers overwrite anyway (``overwrites_backward_internals``)
        bwd_hubs = [h for h in bwd_hubs if h.zeroed] + [h for h in bwd_hubs if not h.zeroed]
        zeroed = sum(h.size(time_size, batch_size) for h in bwd_hubs if h.zeroed)
        fwd = sum(h.size(time_size, batch_size) for h in fwd_hubs)
        bwd = sum(h.size(time_size, batch_size) for h in bwd_hubs)
        if fwd + bwd > self._var_capacity or self._var_memory is None:
            self._var_capacity = max(fwd + bwd, 1)
            self._var_memory = self.handler.allocate((self._var_capacity,))
        arrays = dict(self._const_hub_arrays)
        position = 0
        for hub in fwd_hubs:
            position = self._carve_hub(
                self._var_memory, position, hub, arrays, time_size, batch_size
            )
        self._var_backward = (position, position + zeroed)
        for hub in bwd_hubs:
            position = self._carve_hub(
                self._var_memory, position, hub, arrays, time_size, batch_size
            )
        self.time_size, self.batch_size = time_size, batch_size
        self._build_views(arrays)

    # -- views ------------------------------------------------------------------------
    def _view_of(self, hub, array, start, stop, context_size):
        if hub.buffer_type == 2:
            time_slice = slice(0, self.time_size + context_size)
        else:
            time_slice = None
        if start == 0 and stop == hub.last:
            view = array
        else:
            index = (slice(None),) * (array_ndim(array) - 1) + (slice(start, stop),)
            view = array[index]
        if time_slice is not None and context_size != hub.context:
            view = view[time_slice]
        return view

    def _build_views(self, hub_arrays):
        per_layer = {
            name: {category: OrderedDict() for category in LAYER_CATEGORIES} for name in self.layers
        }
        self.context_views = []  # (path, view, context_size) of forward buffers
        for hub in self.layout.hubs:
            array = hub_arrays[id(hub)]
            for layer, category, name, start, stop, ctx in hub.views:
                view = self._view_of(hub, array, start, stop, ctx)
                per_layer[layer][category][name] = view
                if ctx and not hub.backward:
                    self.context_views.append((f"{layer}.{category}.{name}", view, ctx))
        self.context_hubs = [
            hub_arrays[id(h)] for h in self.layout.hubs if h.context and h.buffer_type == 2
        ]
        for flat, category, table in (
            (self.parameters, "parameters", self.layout.param_slices),
            (self.gradients, "gradients", self.layout.param_slices),
            (self.states, "states", self.layout.state_slices),
        ):
            for (layer, name), (start, stop, shape) in table.items():
                per_layer[layer][category][name] = flat[start:stop].reshape(shape)
        full = self._flat_layer_buffers()
        layer_views = []
        for name in self.layers:
            categories = [
                BufferView(
                    list(per_layer[name][c]),
                    list(per_layer[name][c].values()),
                    full_buffer=full.get((name, c)),
                )
                for c in LAYER_CATEGORIES
            ]
            layer_views.append(BufferView(LAYER_CATEGORIES, categories))
        self.views = BufferView(
            ["parameters", "gradients", *self.layers, "states"],
            [self.parameters, self.gradients, *layer_views, self.states],
        )

    def _flat_layer_buffers(self):
        """(layer, category) -> the 1-D slice holding all parameters (gradients,
        states) of that layer, in declaration order."""
        full = {}
        for flat, category, table in (
            (self.parameters, "parameters", self.layout.param_slices),
            (self.gradients, "gradients", self.layout.param_slices),
            (self.states, "states", self.layout.state_slices),
        ):
            bounds = {}
            for (layer, _), (start, stop, _) in table.items():
                lo, hi = bounds.get(layer, (start, stop))
                bounds[layer] = (min(lo, start), max(hi, stop))
            for layer, (start, stop) in bounds.items():
                full[(layer, category)] = flat[start:stop]
        return full

    # -- operations -----------------------------------------------------------------------
    def clear_backward_buffers(self):
        """Zero every delta, gradient and backward-only internal (except the
        gradients of layers with ``overwrites_gradients``, which write them all,
        and the internals named in a layer's ``overwrites_backward_internals``)."""
        for start, stop in self._const_backward_ranges:
            self.handler.fill(self._const_memory[start:stop], 0.0)
        start, stop = self._var_backward
        if stop > start:
            self.handler.fill(self._var_memory[start:stop], 0.0)

    def get_context(self):
        """dict path -> handler-array copy of the last time step(s) of each context buffer."""
        context = {}
        t = self.time_size
        for path, view, ctx in self.context_views:
            copy = self.handler.allocate(tuple(array_shape(view[t - ctx : t])))
            self.handler.copy_to(view[t - ctx : t], copy)
            context[path] = copy
        return context

    def apply_context(self, context):
        """Copy a context (from :meth:`get_context`) into the context slots."""
        t = self.time_size
        unknown = set(context) - {path for path, _, _ in self.context_views}
        if unknown:
            raise KeyError(f"Unknown context entries {sorted(unknown)}")
        for path, view, ctx in self.context_views:
            slot = view[t : t + ctx]
            if path not in context or context[path] is None:
                self.handler.fill(slot, 0.0)
                continue
            value = context[path]
            got, expected = tuple(array_shape(value)), tuple(array_shape(slot))
            if got != expected:
                hint = (
                    "was the batch size changed?"
                    if got[:1] + got[2:] == expected[:1] + expected[2:]
                    else "is it the context of another network?"
                )
                raise ValueError(
                    f"Context entry {path!r} has shape {got}, expected {expected} ({hint})"
                )
            if isinstance(value, self.handler.array_type):
                self.handler.copy_to(value, slot)
            else:
                self.handler.set_from_numpy(slot, value)

    def clear_context(self):
        """Zero the context slots (the state before the first time step)."""
        t = self.time_size
        for hub_array in self.context_hubs:
            self.handler.fill(hub_array[t:], 0.0)


def array_shape(array):
    """The shape of a handler array as a tuple."""
    return tuple(array.shape)


def array_ndim(array):
    """The number of dimensions of a handler array."""
    return len(array.shape)
