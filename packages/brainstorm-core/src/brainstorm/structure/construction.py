"""The wiring language: ``>>`` connects layers, ``-`` picks named inputs/outputs.

``a >> b`` connects the current output of ``a`` (``'default'`` unless chosen
with ``a - 'name'``) to the current input of ``b`` (``'default'`` unless chosen
with ``'name' - b``) and returns ``b``, so chains read left to right::

    inp - 'targets' >> 'targets' - out_layer
    out_layer - 'loss' >> Loss()

Layers connected to each other share a naming scope: a name (given, or the layer
type) that occurs once is kept; duplicates become ``Name_1``, ``Name_2``, ... in
creation order.
"""

from __future__ import annotations

import itertools

from brainstorm.utils import LayerValidationError, is_valid_layer_name

__all__ = ["ConstructionWrapper", "LayerDetails", "assign_names"]

_creation_counter = itertools.count()


class LayerDetails:
    """Everything the architecture needs to know about one constructed layer."""

    def __init__(self, layer_type, name=None, kwargs=None):
        if name is not None and (
            not is_valid_layer_name(name) or name in ("parameters", "gradients", "states")
        ):
            raise LayerValidationError(
                f"Invalid layer name {name!r}: names must be Python identifiers other "
                f"than 'default', 'fallback', 'parameters', 'gradients' and 'states'"
            )
        self.layer_type = layer_type
        self.basename = name if name is not None else layer_type
        self.kwargs = dict(kwargs or {})
        self.incoming = []  # (source LayerDetails, output name, input name)
        self.outgoing = []  # (output name, target LayerDetails, input name)
        self.order = next(_creation_counter)
        self.scope = {self}

    def connect_to(self, out_name, other, in_name):
        if other is self:
            raise LayerValidationError(f"Cannot connect layer {self.basename} to itself")
        connection = (out_name, other, in_name)
        if connection in self.outgoing:
            return
        self.outgoing.append(connection)
        other.incoming.append((self, out_name, in_name))
        if other.scope is not self.scope:
            merged = self.scope | other.scope
            for details in merged:
                details.scope = merged

    @property
    def name(self):
        """The unique name of this layer within its scope."""
        return assign_names(self.scope)[self]

    def __repr__(self):
        return f"<LayerDetails {self.layer_type} {self.basename!r}>"


def assign_names(scope):
    """Unique names of all layers in ``scope`` (LayerDetails -> name)."""
    ordered = sorted(scope, key=lambda d: d.order)
    counts = {}
    for d in ordered:
        counts[d.basename] = counts.get(d.basename, 0) + 1
    names = {}
    taken = {d.basename for d in ordered if counts[d.basename] == 1}
    next_index = {}
    for d in ordered:
        if counts[d.basename] == 1:
            names[d] = d.basename
            continue
        i = next_index.get(d.basename, 1)
        while f"{d.basename}_{i}" in taken:
            i += 1
        names[d] = f"{d.basename}_{i}"
        taken.add(names[d])
        next_index[d.basename] = i + 1
    return names


class ConstructionWrapper:
    """A handle on a constructed layer used for wiring with ``>>`` and ``-``.

    Layer factories return ``ConstructionWrapper.create(MyLayerImpl, name=name,
    **kwargs)``; the type name is the class name without its ``LayerImpl``
    suffix.
    """

    def __init__(self, layer_details, in_name="default", out_name="default"):
        self.layer = layer_details
        self.input_name = in_name
        self.output_name = out_name

    @classmethod
    def create(cls, layer_type, name=None, **kwargs):
        """Create a wrapper for a new layer.

        Args:
            layer_type: the layer implementation class (whose name ends in
                ``LayerImpl``) or the type name as a string.
            name: the layer's name; defaults to the type name.
            **kwargs: the layer's arguments, stored in the architecture.
        """
        if isinstance(layer_type, str):
            type_name = layer_type
        else:
            class_name = layer_type.__name__
            if not class_name.endswith("LayerImpl"):
                raise LayerValidationError(
                    f"Layer implementation classes must be named '<Type>LayerImpl', "
                    f"got {class_name!r}"
                )
            type_name = class_name[: -len("LayerImpl")]
            expected = getattr(layer_type, "expected_kwargs", None)
            if expected is not None:
                unexpected = set(kwargs) - set(expected)
                if unexpected:
                    raise LayerValidationError(
                        f"{type_name} got unexpected keyword arguments {sorted(unexpected)}; "
                        f"accepted: {sorted(expected)}"
                    )
        return cls(LayerDetails(type_name, name, kwargs))

    def __rshift__(self, other):
        if isinstance(other, str):
            raise LayerValidationError(
                f"Cannot connect {self.layer.basename} to the string {other!r}: pick a "
                f"named input with  'name' - layer"
            )
        if not isinstance(other, ConstructionWrapper):
            return NotImplemented
        self.layer.connect_to(self.output_name, other.layer, other.input_name)
        return other

    def __sub__(self, other):
        if not isinstance(other, str):
            return NotImplemented
        return ConstructionWrapper(self.layer, self.input_name, other)

    def __rsub__(self, other):
        if not isinstance(other, str):
            return NotImplemented
        return ConstructionWrapper(self.layer, other, self.output_name)

    def __repr__(self):
        return f"<{self.layer.layer_type} {self.layer.name!r}>"
