"""Resolve ``{layer_pattern: {view_pattern: value}}`` specifications.

Used by ``Network.initialize``, ``set_weight_modifiers`` and
``set_gradient_modifiers``. Patterns may contain ``*`` (any run of identifier
characters) anywhere; ``default`` applies to whatever no other key matched at
its level and is inherited by sub-dicts without their own; ``fallback`` (where
allowed) is inherited the same way.
"""

from __future__ import annotations

import re

from brainstorm.utils import NetworkValidationError, is_valid_layer_name

__all__ = ["resolve_references"]

_SPECIAL = ("default", "fallback")


def _compile(pattern):
    if not isinstance(pattern, str):
        raise NetworkValidationError(f"Patterns must be strings, got {pattern!r}")
    if "*" not in pattern and not is_valid_layer_name(pattern):
        raise NetworkValidationError(f"Invalid pattern {pattern!r}: not a valid name")
    if "*" in pattern and not re.fullmatch(r"[_a-zA-Z0-9*]+", pattern):
        raise NetworkValidationError(f"Invalid pattern {pattern!r}")
    return re.compile("^" + pattern.replace("*", "[_a-zA-Z0-9]*") + "$")


def _match(pattern, names, where):
    regex = _compile(pattern)
    matched = [n for n in names if regex.match(n)]
    if not matched:
        raise NetworkValidationError(
            f"Pattern {pattern!r} {where} matches nothing; available: {sorted(names)}"
        )
    return matched


def resolve_references(structure, spec, allow_fallback=True):
    """Resolve ``spec`` against ``structure``.

    Args:
        structure: dict layer name -> list of view names (e.g. parameter names).
        spec: the user's dict (layer patterns -> value or dict of view patterns).
        allow_fallback: whether ``fallback`` keys are accepted.

    Returns:
        (values, fallbacks): dicts (layer, view) -> list of the values that apply
        (in the order of the keys that matched), for every view of ``structure``.

    Raises:
        NetworkValidationError: for invalid or unmatched patterns, or a
            ``fallback`` where none is allowed.
    """
    if not isinstance(spec, dict):
        raise NetworkValidationError(f"Expected a dict of patterns, got {type(spec).__name__}")
    if "fallback" in spec and not allow_fallback:
        raise NetworkValidationError("'fallback' is not allowed here")
    values = {(layer, view): [] for layer, views in structure.items() for view in views}
    fallbacks = {key: [] for key in values}
    top_default = spec.get("default")
    top_fallback = spec.get("fallback")
    matched_layers = set()
    for pattern, value in spec.items():
        if pattern in _SPECIAL:
            continue
        for layer in _match(pattern, list(structure), "(layer pattern)"):
            matched_layers.add(layer)
            if isinstance(value, dict):
                _resolve_views(
                    layer,
                    structure[layer],
                    value,
                    top_default,
                    top_fallback,
                    values,
                    fallbacks,
                    allow_fallback,
                )
            else:
                for view in structure[layer]:
                    values[(layer, view)].append(value)
                    if top_fallback is not None:
                        fallbacks[(layer, view)].append(top_fallback)
    for layer, views in structure.items():
        if layer in matched_layers:
            continue
        for view in views:
            if "default" in spec:
                values[(layer, view)].append(top_default)
            if top_fallback is not None:
                fallbacks[(layer, view)].append(top_fallback)
    return values, fallbacks


def _resolve_views(layer, views, sub, top_default, top_fallback, values, fallbacks, allow_fallback):
    if "fallback" in sub and not allow_fallback:
        raise NetworkValidationError("'fallback' is not allowed here")
    default_given = "default" in sub
    default = sub["default"] if default_given else top_default
    fallback = sub.get("fallback", top_fallback)
    matched = set()
    for pattern, value in sub.items():
        if pattern in _SPECIAL:
            continue
        for view in _match(pattern, views, f"(in layer {layer!r})"):
            matched.add(view)
            values[(layer, view)].append(value)
    for view in views:
        if view not in matched and (default_given or top_default is not None):
            values[(layer, view)].append(default)
        if fallback is not None:
            fallbacks[(layer, view)].append(fallback)
