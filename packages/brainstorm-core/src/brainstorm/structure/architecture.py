"""Architectures: JSON-serialisable dicts describing layers and their wiring.

An architecture maps each layer name to its properties::

    {'Hidden': {'@type': 'FullyConnected',
                '@outgoing_connections': {'default': ['Output']},
                'size': 100, 'activation': 'rel'}, ...}

``@outgoing_connections`` maps an output name to a list of ``'Layer.input'``
targets (``'Layer'`` alone means its ``default`` input); a plain list means
everything goes out of ``default``. Other keys are passed to the layer.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple

from brainstorm.structure.buffer_structure import combine_buffer_structures
from brainstorm.structure.construction import assign_names
from brainstorm.utils import (
    NetworkValidationError,
    StructureValidationError,
    is_valid_layer_name,
)

__all__ = [
    "Connection",
    "generate_architecture",
    "validate_architecture",
    "get_canonical_layer_order",
    "collect_connections",
    "instantiate_layers_from_architecture",
]

#: Names of the network's root buffers, which layers cannot have.
RESERVED_NAMES = ("parameters", "gradients", "states")

Connection = namedtuple("Connection", ["start_layer", "output_name", "end_layer", "input_name"])
Connection.__doc__ = (
    "A wire from ``start_layer.outputs.output_name`` to ``end_layer.inputs.input_name``."
)


def generate_architecture(some_layer):
    """The architecture dict of every layer connected to ``some_layer``.

    Args:
        some_layer: any :class:`~brainstorm.structure.construction.ConstructionWrapper`
            of the network.
    """
    names = assign_names(some_layer.layer.scope)
    architecture = {}
    for d in sorted(names, key=lambda d: d.order):
        outgoing = OrderedDict()
        for out_name, target, in_name in d.outgoing:
            entry = names[target] if in_name == "default" else f"{names[target]}.{in_name}"
            outgoing.setdefault(out_name, []).append(entry)
        layer = {"@type": d.layer_type, "@outgoing_connections": dict(outgoing)}
        layer.update(_jsonable(d.kwargs))
        architecture[names[d]] = layer
    return architecture


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def collect_connections(architecture):
    """All :class:`Connection` s of an architecture, sorted."""
    connections = []
    for name, layer in architecture.items():
        outgoing = layer.get("@outgoing_connections", {})
        if isinstance(outgoing, (list, tuple)):
            outgoing = {"default": list(outgoing)}
        if not isinstance(outgoing, dict):
            raise NetworkValidationError(
                f"Layer {name!r}: '@outgoing_connections' must be a dict or a list, got "
                f"{type(outgoing).__name__}"
            )
        for out_name, targets in outgoing.items():
            if isinstance(targets, str):
                targets = [targets]
            for target in targets:
                if not isinstance(target, str):
                    raise NetworkValidationError(
                        f"Layer {name!r}: connection target {target!r} is not a string"
                    )
                end_layer, _, in_name = target.partition(".")
                connections.append(Connection(name, out_name, end_layer, in_name or "default"))
    return sorted(set(connections))


def validate_architecture(architecture):
    """Check names, types, connections, the Input layer, cycles and connectivity.

    Returns:
        (connections, canonical layer order)

    Raises:
        NetworkValidationError: with a message naming the offending layer.
    """
    if not isinstance(architecture, dict) or not architecture:
        raise NetworkValidationError("An architecture must be a non-empty dict")
    for name, layer in architecture.items():
        if not isinstance(name, str) or not is_valid_layer_name(name):
            raise NetworkValidationError(
                f"Invalid layer name {name!r}: must be a Python identifier other than "
                f"'default' and 'fallback'"
            )
        if name in RESERVED_NAMES:
            raise NetworkValidationError(
                f"Layer name {name!r} is reserved (it names the network's flat buffers)"
            )
        if not isinstance(layer, dict) or "@type" not in layer:
            raise NetworkValidationError(f"Layer {name!r} has no '@type'")
        if not isinstance(layer["@type"], str):
            raise NetworkValidationError(f"Layer {name!r}: '@type' must be a string")
    if "Input" not in architecture or architecture["Input"]["@type"] != "Input":
        raise NetworkValidationError(
            "A network needs exactly one layer of type Input named 'Input'"
        )
    others = [n for n, lay in architecture.items() if lay["@type"] == "Input" and n != "Input"]
    if others:
        raise NetworkValidationError(
            f"Only one Input layer (named 'Input') is allowed; also found {others}"
        )
    connections = collect_connections(architecture)
    for c in connections:
        if c.end_layer not in architecture:
            raise NetworkValidationError(
                f"Layer {c.start_layer!r} connects to unknown layer {c.end_layer!r}"
            )
        if c.end_layer == "Input":
            raise NetworkValidationError(
                f"Layer {c.start_layer!r} connects into the Input layer, which takes no inputs"
            )
        if c.start_layer == c.end_layer:
            raise NetworkValidationError(f"Layer {c.start_layer!r} is connected to itself")
    order = _canonical_order(architecture, connections)  # raises on cycles
    reachable = {"Input"}
    position = {name: i for i, name in enumerate(order)}
    for c in sorted(connections, key=lambda c: position[c.start_layer]):
        if c.start_layer in reachable:
            reachable.add(c.end_layer)
    unreachable = sorted(set(architecture) - reachable)
    if unreachable:
        raise NetworkValidationError(f"Layers {unreachable} are not connected to the Input layer")
    return connections, order


def get_canonical_layer_order(architecture):
    """Layer names in topological order, ``Input`` first, ties broken by name.

    Raises:
        NetworkValidationError: if the connections form a cycle (naming its layers).
    """
    return _canonical_order(architecture, collect_connections(architecture))


def _canonical_order(architecture, connections):
    pending = {name: 0 for name in architecture}
    successors = {name: [] for name in architecture}
    for c in connections:
        if c.end_layer in pending:
            pending[c.end_layer] += 1
            successors[c.start_layer].append(c.end_layer)
    order = []
    ready = sorted(n for n, count in pending.items() if count == 0)
    while ready:
        if "Input" in ready:
            ready.remove("Input")
            ready.insert(0, "Input")
        order.extend(ready)
        wave = []
        for name in ready:
            for succ in successors[name]:
                pending[succ] -= 1
                if pending[succ] == 0:
                    wave.append(succ)
        ready = sorted(wave)
    if len(order) < len(architecture):
        remaining = sorted(set(architecture) - set(order))
        raise NetworkValidationError(f"The connections form a cycle among layers {remaining}")
    return order


def instantiate_layers_from_architecture(architecture):
    """Validate ``architecture`` and create its layer implementations.

    Returns:
        OrderedDict name -> Layer, in canonical (topological) order.
    """
    from brainstorm.registry import UnknownNameError, find_layer_impl

    connections, order = validate_architecture(architecture)
    classes = {}
    for name in order:
        try:
            classes[name] = find_layer_impl(architecture[name]["@type"])
        except UnknownNameError as err:
            raise UnknownNameError(f"Layer {name!r}: {err}") from None
    # an old output name a layer still answers to (SoftmaxCE's 'probabilities')
    # wires its output under the current name
    connections = [
        c._replace(
            output_name=getattr(classes[c.start_layer], "output_aliases", {}).get(
                c.output_name, c.output_name
            )
        )
        for c in connections
    ]
    incoming_of = {name: [] for name in architecture}
    outgoing_of = {name: [] for name in architecture}
    for c in connections:
        incoming_of[c.end_layer].append(c)
        outgoing_of[c.start_layer].append(c)
    layers = OrderedDict()
    for name in order:
        properties = architecture[name]
        cls = classes[name]
        incoming, outgoing = incoming_of[name], outgoing_of[name]
        in_shapes = {}
        for in_name in sorted({c.input_name for c in incoming}):
            sources = [c for c in incoming if c.input_name == in_name]
            structures = []
            for c in sources:
                out_shapes = layers[c.start_layer].out_shapes
                if c.output_name not in out_shapes:
                    raise NetworkValidationError(
                        f"Layer {c.start_layer!r} has no output {c.output_name!r} (wired to "
                        f"{name}.{in_name}); outputs: {list(out_shapes)}"
                    )
                structures.append(out_shapes[c.output_name])
            try:
                in_shapes[in_name] = combine_buffer_structures(structures)
            except StructureValidationError as err:
                raise NetworkValidationError(f"Layer {name!r}, input {in_name!r}: {err}") from None
        kwargs = {k: v for k, v in properties.items() if not k.startswith("@")}
        layers[name] = cls(name, in_shapes, incoming, outgoing, **kwargs)
    return layers
