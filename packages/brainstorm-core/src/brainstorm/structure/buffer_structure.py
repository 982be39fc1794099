"""Shapes of buffers: concrete structures and the templates layers expect.

A buffer is one of three kinds, told by the leading entries of its shape:

* ``(3,)`` constant size (type 0), e.g. parameters;
* ``('B', 3)`` batch sized (type 1), one entry per sequence;
* ``('T', 'B', 3)`` time sized (type 2), one entry per sequence and time step.

Only the feature part (after ``'T'``/``'B'``) is fixed when a network is built.
"""

from __future__ import annotations

from brainstorm.utils import StructureValidationError, product

__all__ = ["BufferStructure", "StructureTemplate", "combine_buffer_structures"]

_TYPE_PREFIX = {0: (), 1: ("B",), 2: ("T", "B")}


def _split_shape(shape):
    """Return (buffer_type, feature part) of a shape template."""
    shape = tuple(shape)
    if shape[:2] == ("T", "B"):
        return 2, shape[2:]
    if shape[:1] == ("B",):
        return 1, shape[1:]
    return 0, shape


class BufferStructure:
    """The structure of one buffer: its kind and its feature shape.

    Args:
        *shape: a shape template such as ``'T', 'B', 10`` or ``5, 4``; the
            feature entries must be positive ints.
        context_size: extra time steps appended to a time-sized buffer (the
            recurrent context, reachable as index ``-1``).
        is_backward_only: the buffer is needed only during the backward pass.

    Example:
        >>> BufferStructure('T', 'B', 3).get_shape(time_size=5, batch_size=2)
        (5, 2, 3)
    """

    def __init__(self, *shape, context_size=0, is_backward_only=False):
        self.buffer_type, features = _split_shape(shape)
        for f in features:
            if isinstance(f, bool) or not isinstance(f, int) or f < 1:
                raise StructureValidationError(
                    f"Invalid buffer shape {shape}: feature dimensions must be positive "
                    f"ints, got {f!r}"
                )
        if context_size and self.buffer_type != 2:
            raise StructureValidationError(
                f"Only time-sized buffers can have a context (shape {shape})"
            )
        self.feature_shape = tuple(features)
        self.context_size = int(context_size)
        self.is_backward_only = bool(is_backward_only)

    @classmethod
    def from_tuple(cls, shape, **kwargs):
        """Build a structure from a template tuple such as ``('T', 'B', 10)``."""
        return cls(*shape, **kwargs)

    @property
    def shape(self):
        """The shape template, e.g. ``('T', 'B', 10)``."""
        return _TYPE_PREFIX[self.buffer_type] + self.feature_shape

    @property
    def feature_size(self) -> int:
        """The number of features (product of the feature shape)."""
        return product(self.feature_shape)

    def get_shape(self, time_size=1, batch_size=1):
        """The concrete shape for the given time and batch size (context included)."""
        if self.buffer_type == 2:
            return (time_size + self.context_size, batch_size) + self.feature_shape
        if self.buffer_type == 1:
            return (batch_size,) + self.feature_shape
        return self.feature_shape

    def get_size(self, time_size=1, batch_size=1) -> int:
        """The number of entries for the given time and batch size."""
        return product(self.get_shape(time_size, batch_size))

    def to_json(self):
        """A JSON-friendly list of the shape template."""
        return list(self.shape)

    def __eq__(self, other):
        return (
            isinstance(other, BufferStructure)
            and self.shape == other.shape
            and self.context_size == other.context_size
            and self.is_backward_only == other.is_backward_only
        )

    def __hash__(self):
        return hash((self.shape, self.context_size, self.is_backward_only))

    def __repr__(self):
        extra = ""
        if self.context_size:
            extra += f", context_size={self.context_size}"
        if self.is_backward_only:
            extra += ", is_backward_only=True"
        return "BufferStructure(" + ", ".join(repr(s) for s in self.shape) + extra + ")"


class StructureTemplate:
    """A pattern of shapes a layer accepts for one of its inputs.

    Besides ``'T'``, ``'B'`` and ints it allows ``'F'`` (any positive int) and
    ``'...'`` (any number of feature dimensions, or any buffer kind when it is
    the whole template).

    Args:
        *shape: the pattern, e.g. ``'T', 'B', '...'`` or ``'T', 'B', 'F'``.
        is_optional: the input need not be connected.

    Example:
        >>> StructureTemplate('T', 'B', '...').matches(BufferStructure('T', 'B', 3, 4))
        True
    """

    def __init__(self, *shape, is_optional=False):
        shape = tuple(shape)
        if "..." in shape and shape.index("...") != len(shape) - 1:
            raise StructureValidationError(f"'...' must be last in template {shape}")
        for s in shape:
            valid = s in ("T", "B", "F", "...") or (
                isinstance(s, int) and not isinstance(s, bool) and s > 0
            )
            if not valid:
                raise StructureValidationError(f"Invalid entry {s!r} in template {shape}")
        if shape == ("...",):
            self.buffer_types = (0, 1, 2)
            self.feature_pattern = ("...",)
        else:
            buffer_type, features = _split_shape(shape)
            if "T" in features or "B" in features:
                raise StructureValidationError(f"Misplaced 'T' or 'B' in template {shape}")
            self.buffer_types = (buffer_type,)
            self.feature_pattern = tuple(features)
        self.shape = shape
        self.is_optional = is_optional

    def matches(self, structure: BufferStructure) -> bool:
        """True if ``structure`` fits this template."""
        if structure.buffer_type not in self.buffer_types:
            return False
        pattern, features = self.feature_pattern, structure.feature_shape
        if pattern and pattern[-1] == "...":
            fixed = pattern[:-1]
            if len(features) < len(fixed):
                return False
            features = features[: len(fixed)]
            pattern = fixed
        if len(pattern) != len(features):
            return False
        return all(p == "F" or p == f for p, f in zip(pattern, features))

    def __repr__(self):
        return "StructureTemplate(" + ", ".join(repr(s) for s in self.shape) + ")"


def combine_buffer_structures(structures):
    """The structure of several buffers concatenated along the last feature axis.

    All must have the same kind and agree on every feature dimension but the
    last. Context sizes combine to their maximum.

    Raises:
        StructureValidationError: naming the mismatching shapes.
    """
    structures = list(structures)
    if not structures:
        raise StructureValidationError("Nothing to combine")
    first = structures[0]
    if len(structures) == 1:
        return BufferStructure(*first.shape, context_size=first.context_size)
    for s in structures[1:]:
        if (
            s.buffer_type != first.buffer_type
            or s.feature_shape[:-1] != first.feature_shape[:-1]
            or not s.feature_shape
        ):
            raise StructureValidationError(
                "Cannot concatenate buffers of shapes "
                + ", ".join(str(x.shape) for x in structures)
                + ": they must be of the same kind and agree on all but the last dimension"
            )
    last = sum(s.feature_shape[-1] for s in structures)
    shape = _TYPE_PREFIX[first.buffer_type] + first.feature_shape[:-1] + (last,)
    return BufferStructure(*shape, context_size=max(s.context_size for s in structures))
