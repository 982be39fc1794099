"""JSON-serialisable descriptions of objects.

A *description* is a plain dict (nested lists, dicts, numbers, strings, bools and
``None``) with an ``'@type'`` key naming the class. ``get_description`` turns a
:class:`Describable` into one; ``create_from_description`` turns it back into an
object. Types are resolved only through :mod:`brainstorm.registry` (classes already
imported, then installed entry points): a description never names a module to
import, so loading one from an untrusted file can at worst fail.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Describable", "get_description", "create_from_description"]


class Describable:
    """Base class for everything that can be described and rebuilt.

    Class attributes:
        __undescribed__: names of attributes left out of the description. A set,
            or a dict mapping the name to the value it gets when the object is
            rebuilt (a set entry gets ``None``). Merged along the MRO.
        __default_values__: attributes left out of the description while they
            equal this value; rebuilt with that value. Merged along the MRO.
    """

    __undescribed__ = set()
    __default_values__ = {}

    @classmethod
    def _merged_attr(cls, attr):
        merged = {}
        for klass in reversed(cls.__mro__):
            value = klass.__dict__.get(attr)
            if value is None:
                continue
            if isinstance(value, dict):
                merged.update(value)
            else:
                merged.update({name: None for name in value})
        return merged

    def __describe__(self):
        """Return the description of this object (a JSON-serialisable dict).

        Subclasses with members that are not describable override this.
        """
        undescribed = self._merged_attr("__undescribed__")
        defaults = self._merged_attr("__default_values__")
        description = {"@type": type(self).__name__}
        for key, value in self.__dict__.items():
            if key in undescribed:
                continue
            if key in defaults and _equal(value, defaults[key]):
                continue
            description[key] = _describe(value, f"{type(self).__name__}.{key}")
        return description

    @classmethod
    def __new_from_description__(cls, description):
        """Create an instance from ``description`` without calling ``__init__``."""
        instance = cls.__new__(cls)
        for key, value in cls._merged_attr("__undescribed__").items():
            setattr(instance, key, _copy_default(value))
        for key, value in cls._merged_attr("__default_values__").items():
            setattr(instance, key, _copy_default(value))
        for key, value in description.items():
            if key == "@type":
                continue
            setattr(instance, key, create_from_description(value))
        instance.__init_from_description__(description)
        return instance

    def __init_from_description__(self, description):
        """Hook run after an instance was created from ``description``."""


def _copy_default(value):
    if isinstance(value, (dict, list, set)):
        return type(value)(value)
    return value


def _equal(a, b):
    try:
        result = a == b
        if isinstance(result, np.ndarray):
            return bool(result.all()) and np.shape(a) == np.shape(b)
        return bool(result)
    except Exception:
        return False


def _describe(value, path):
    if isinstance(value, Describable):
        return value.__describe__()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_describe(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"Cannot describe {path}: dict key {k!r} is not a string")
            result[k] = _describe(v, f"{path}.{k}")
        return result
    if isinstance(value, type) or callable(value):
        raise TypeError(
            f"Cannot describe {path}: {value!r} is not describable "
            "(functions and classes cannot be stored in descriptions)"
        )
    raise TypeError(f"Cannot describe {path}: object of type {type(value).__name__}")


def get_description(this):
    """Return a JSON-serialisable description of ``this``.

    Describables are described by their ``__describe__`` method; lists and
    tuples become lists, arrays become nested lists, dicts are described
    recursively.

    Raises:
        TypeError: if some part cannot be described (the message names it).
    """
    return _describe(this, type(this).__name__)


def create_from_description(description):
    """Rebuild an object (or nested structure) from its description.

    Dicts with an ``'@type'`` entry become instances of the named
    :class:`Describable` class, found through :mod:`brainstorm.registry`.

    Raises:
        brainstorm.registry.UnknownNameError: if no installed class has that name.
    """
    if isinstance(description, dict):
        if "@type" in description:
            from brainstorm.registry import find_describable

            cls = find_describable(description["@type"])
            return cls.__new_from_description__(description)
        return {k: create_from_description(v) for k, v in description.items()}
    if isinstance(description, list):
        return [create_from_description(v) for v in description]
    return description
