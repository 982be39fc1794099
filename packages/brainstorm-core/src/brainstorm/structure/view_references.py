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

    A view gets the values of every key that explicitly matches it; only a view
    that no explicit key matched gets the applicable ``default`` (the sub-dict's
    own, else the top-level one).

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
    _check_fallback(spec, allow_fallback)
    keys = [(layer, view) for layer, views in structure.items() for view in views]
    explicit = {key: [] for key in keys}
    defaults = {key: [] for key in keys}
    fallbacks = {key: [] for key in keys}
    top = {name: [spec[name]] for name in _SPECIAL if name in spec}
    matched_layers = set()
    for pattern, value in spec.items():
        if pattern in _SPECIAL:
            continue
        for layer in _match(pattern, list(structure), "(layer pattern)"):
            matched_layers.add(layer)
            views = structure[layer]
            if not isinstance(value, dict):
                for view in views:
                    explicit[(layer, view)].append(value)
                    fallbacks[(layer, view)].extend(top.get("fallback", []))
                continue
            _check_fallback(value, allow_fallback)
            sub_default = [value["default"]] if "default" in value else top.get("default", [])
            sub_fallback = [value["fallback"]] if "fallback" in value else top.get("fallback", [])
            for view_pattern, view_value in value.items():
                if view_pattern in _SPECIAL:
                    continue
                for view in _match(view_pattern, views, f"(in layer {layer!r})"):
                    explicit[(layer, view)].append(view_value)
            for view in views:
                defaults[(layer, view)].extend(sub_default)
                fallbacks[(layer, view)].extend(sub_fallback)
    for layer in set(structure) - matched_layers:
        for view in structure[layer]:
            defaults[(layer, view)].extend(top.get("default", []))
            fallbacks[(layer, view)].extend(top.get("fallback", []))
    values = {key: explicit[key] or defaults[key] for key in keys}
    return values, fallbacks


def _check_fallback(spec, allow_fallback):
    if "fallback" in spec and not allow_fallback:
        raise NetworkValidationError("'fallback' is not allowed here")
