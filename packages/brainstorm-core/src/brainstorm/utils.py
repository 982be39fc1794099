"""Exceptions and small helpers shared by every part of brainstorm."""

from __future__ import annotations

import keyword
import re

import numpy as np

__all__ = [
    "ValidationError",
    "NetworkValidationError",
    "LayerValidationError",
    "IteratorValidationError",
    "StructureValidationError",
    "InitializationError",
    "StridedViewError",
    "is_valid_layer_name",
    "get_by_path",
    "reshape_view",
    "flatten_time",
    "flatten_time_and_features",
    "flatten_features",
    "flatten_all_but_last",
    "product",
    "get_brainstorm_info",
    "given",
]


class ValidationError(Exception):
    """Base class of every error raised when validating user input."""


class NetworkValidationError(ValidationError):
    """An architecture, initialization or modifier specification is invalid."""


class LayerValidationError(ValidationError):
    """A layer received invalid keyword arguments, inputs or connections."""


class IteratorValidationError(ValidationError):
    """A data iterator received data of the wrong kind or shape."""


class StructureValidationError(ValidationError):
    """A shape template or buffer structure is invalid."""


class StridedViewError(ValueError):
    """A strided buffer view cannot be reshaped without copying it."""


class InitializationError(Exception):
    """An initializer cannot produce values for the requested shape."""


_IDENTIFIER = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")


def is_valid_layer_name(name) -> bool:
    """Return True if ``name`` may be used as a layer (or buffer) name.

    Valid names are Python identifiers that are not keywords and not one of the
    reserved words ``default`` and ``fallback``.
    """
    return (
        isinstance(name, str)
        and bool(_IDENTIFIER.match(name))
        and not keyword.iskeyword(name)
        and name not in ("default", "fallback")
    )


def get_by_path(mapping, path: str):
    """Follow a dotted ``path`` through nested mappings.

    Raises:
        KeyError: naming the part of the path that was not found and the keys
            that exist at that level.
    """
    current = mapping
    walked = []
    for part in path.split("."):
        try:
            current = current[part]
        except (KeyError, TypeError, IndexError):
            try:
                children = sorted(current.keys())
            except AttributeError:
                children = []
            where = ".".join(walked) or "<root>"
            raise KeyError(
                f"{path!r}: no entry {part!r} under {where!r}; available: {children}"
            ) from None
        walked.append(part)
    return current


def product(values) -> int:
    """The product of an iterable of integers (1 for an empty iterable)."""
    result = 1
    for v in values:
        result *= int(v)
    return result


def reshape_view(array, shape):
    """Reshape without copying, so that writes reach the original memory.

    NumPy's ``reshape`` silently copies arrays whose strides do not allow the new
    shape; a layer writing into such a copy would lose its results. For NumPy
    arrays this raises instead; other array types reshape as they do.

    Raises:
        ValueError: if the shape cannot be had without a copy.
    """
    if isinstance(array, np.ndarray):
        shape = tuple(shape)
        if _RESHAPE_TAKES_COPY:
            try:
                return np.reshape(array, shape, copy=False)
            except ValueError:
                pass
        else:  # (NumPy < 2.1: reshape, and refuse what came back as a copy)
            view = array.reshape(shape)
            if view.size == 0 or np.may_share_memory(view, array):
                return view
        raise StridedViewError(
            f"Cannot view an array of shape {array.shape} with strides {array.strides} "
            f"as shape {shape} without copying"
        )
    return array.reshape(tuple(shape))


#: Whether ``np.reshape`` takes ``copy`` (NumPy 2.1 and later).
_RESHAPE_TAKES_COPY = np.lib.NumpyVersion(np.__version__) >= "2.1.0"


def flatten_time(array):
    """Merge the first two axes (time and batch): ``(T, B, ...) -> (T*B, ...)``."""
    return reshape_view(array, (array.shape[0] * array.shape[1],) + tuple(array.shape[2:]))


def flatten_time_and_features(array):
    """``(T, B, f1, f2, ...) -> (T*B, f1*f2*...)``."""
    return reshape_view(array, (array.shape[0] * array.shape[1], product(array.shape[2:])))


def flatten_features(array, start_idx: int = 2):
    """Merge every axis from ``start_idx`` on into one."""
    return reshape_view(array, tuple(array.shape[:start_idx]) + (product(array.shape[start_idx:]),))


def flatten_all_but_last(array):
    """``(..., F) -> (N, F)``."""
    return reshape_view(array, (product(array.shape[:-1]), array.shape[-1]))


def get_brainstorm_info() -> bytes:
    """A short byte string naming the brainstorm version, stored in files we write."""
    from brainstorm import __version__

    return f"Created with brainstorm {__version__}".encode()


def as_float_scalar(value) -> float:
    """Convert a 0-d or single-element array (or a number) to a Python float."""
    return float(np.asarray(value).reshape(-1)[0])


def given(value):
    """How an error message names a wrong argument: ``'the class X'`` for a class
    (the usual mistake: ``SgdStepper`` instead of ``SgdStepper()``), else its repr."""
    return f"the class {value.__name__}" if isinstance(value, type) else repr(value)
