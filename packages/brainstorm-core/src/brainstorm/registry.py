"""Find layers, handlers, hooks and the rest by their public name.

Every distribution, ours and third-party plug-ins alike, registers its public
classes and functions in entry-point groups (``brainstorm.layers``,
``brainstorm.handlers``, ...); the entry name is the public name. A name is
resolved first among classes that are already imported (so a layer defined in a
user's script just works), then through the installed entry points.

Nothing here imports a module named by a file or a description: only modules
that an installed distribution registered can be loaded.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from importlib import metadata

__all__ = [
    "GROUPS",
    "UnknownNameError",
    "available",
    "load",
    "find_layer_impl",
    "find_describable",
    "KNOWN_PROVIDERS",
]

GROUPS = (
    "brainstorm.layers",
    "brainstorm.handlers",
    "brainstorm.hooks",
    "brainstorm.steppers",
    "brainstorm.scorers",
    "brainstorm.initializers",
    "brainstorm.value_modifiers",
    "brainstorm.data_iterators",
)

_LAYERS = (
    "FullyConnected Elementwise Dropout BatchNorm Highway Merge Mask NoOp "
    "DeltasScaling Loss SoftmaxCE SigmoidCE SquaredError SquaredDifference "
    "BinomialCrossEntropy L1Decay L2Decay Convolution2D Pooling2D Recurrent Lstm "
    "Clockwork ClockworkLstm Gru Bidirectional Embedding"
).split()
_TRAINING = {
    "brainstorm.hooks": (
        "SaveBestNetwork SaveLogs SaveNetwork MonitorLayerDeltas MonitorLayerGradients "
        "MonitorLayerInOuts MonitorLayerParameters MonitorLoss MonitorScores EarlyStopper "
        "StopAfterEpoch StopAfterThresholdReached StopOnNan StopOnSigQuit ProgressBar "
        "InfoUpdater BokehVisualizer ModifyStepperAttribute"
    ).split(),
    "brainstorm.steppers": (
        "SgdStepper MomentumStepper NesterovStepper AdamStepper RMSPropStepper AdaDeltaStepper "
        "ForwardStepper"
    ).split(),
    "brainstorm.scorers": "Accuracy Hamming MeanSquaredError".split(),
}

_FIRST_PARTY_MODULES = (
    "brainstorm.structure.network",
    "brainstorm.handlers.numpy_handler",
    "brainstorm.handlers.debug_handler",
    "brainstorm.initializers",
    "brainstorm.value_modifiers",
    "brainstorm.data_iterators",
    "brainstorm.training",
    "brainstorm.hooks",
    "brainstorm.scorers",
)

#: Names our first-party distributions provide, used in the hint of a missing name.
KNOWN_PROVIDERS = {
    "brainstorm.layers": {name: "brainstorm-layers" for name in _LAYERS},
    "brainstorm.handlers": {"PyCudaHandler": "brainstorm-handlers-cuda"},
    **{
        group: {name: "brainstorm-training" for name in names} for group, names in _TRAINING.items()
    },
}


class UnknownNameError(KeyError, AttributeError):
    """A name is registered by no installed distribution.

    Subclasses both ``KeyError`` and ``AttributeError`` so that ``hasattr`` and
    dictionary-style look-ups both behave.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


@functools.cache
def _entry_points(group):
    """name -> list of (EntryPoint, distribution name) for ``group``, cached."""
    found = {}
    for ep in metadata.entry_points(group=group):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "<unknown distribution>"
        found.setdefault(ep.name, [])
        if all(ep.value != other.value for other, _ in found[ep.name]):
            found[ep.name].append((ep, dist))
    for name, candidates in found.items():
        if len(candidates) > 1:
            dists = ", ".join(f"{d} ({ep.value})" for ep, d in candidates)
            warnings.warn(
                f"{group} name {name!r} is registered more than once: {dists}; using the first",
                RuntimeWarning,
                stacklevel=2,
            )
    return found


def refresh():
    """Forget the cached entry points (after installing a plug-in at run time)."""
    _entry_points.cache_clear()


def available(group):
    """Sorted public names registered in ``group`` whose plug-in imports cleanly."""
    names = []
    for name, candidates in _entry_points(group).items():
        try:
            candidates[0][0].load()
        except Exception:  # a broken plug-in must not break listing
            continue
        names.append(name)
    return sorted(names)


def _missing_message(group, name):
    kind = group.split(".")[-1].replace("_", " ")
    kind = kind[:-1] if kind.endswith("s") else kind  # (one of them)
    installed = sorted(_entry_points(group))
    msg = f"Unknown {kind} {name!r}. Installed: {', '.join(installed) or 'none'}."
    provider = KNOWN_PROVIDERS.get(group, {}).get(name)
    return msg + _install_hint(name, [provider] if provider else [], " ")


def _install_hint(name, providers, separator):
    """Which distribution to install for ``name`` ('' if ``providers`` is empty)."""
    if not providers:
        return ""
    return f"{separator}{name!r} is provided by {providers[0]}: pip install {providers[0]}"


def load(group, name):
    """Load the object registered as ``name`` in entry-point ``group``.

    Raises:
        UnknownNameError: if no installed distribution registers it; the message
            lists what is installed and which distribution would provide it.
        Exception: whatever the plug-in raised while importing.
    """
    candidates = _entry_points(group).get(name)
    if not candidates:
        raise UnknownNameError(_missing_message(group, name))
    return candidates[0][0].load()


def _all_subclasses(cls):
    seen = []
    stack = [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def _find_subclass(base, class_name):
    matches = [c for c in _all_subclasses(base) if c.__name__ == class_name]
    return matches[-1] if matches else None


def find_layer_impl(type_name):
    """The ``Layer`` implementation class for an architecture ``'@type'``.

    ``'FullyConnected'`` resolves to ``FullyConnectedLayerImpl`` among imported
    classes, else through the ``brainstorm.layers`` entry point of that name.
    """
    from brainstorm.layers.base_layer import Layer

    if not isinstance(type_name, str):
        raise UnknownNameError(f"Layer type must be a string, got {type_name!r}")
    cls = _find_subclass(Layer, type_name + "LayerImpl")
    if cls is None:
        load("brainstorm.layers", type_name)
        cls = _find_subclass(Layer, type_name + "LayerImpl")
    if cls is None:
        raise UnknownNameError(
            f"The brainstorm.layers entry point {type_name!r} loaded, but defines no "
            f"class {type_name}LayerImpl"
        )
    return cls


def find_describable(type_name):
    """The :class:`~brainstorm.describable.Describable` class named ``type_name``."""
    from brainstorm.describable import Describable

    if not isinstance(type_name, str):
        raise UnknownNameError(f"'@type' must be a string, got {type_name!r}")
    cls = _find_subclass(Describable, type_name)
    if cls is not None:
        return cls
    for group in GROUPS:
        if type_name in _entry_points(group):
            load(group, type_name)
            cls = _find_subclass(Describable, type_name)
            if cls is not None:
                return cls
    # Classes that are not entry points themselves (Trainer, schedules) live in
    # first-party modules; this list is fixed here, never read from a file.
    for module_name in _FIRST_PARTY_MODULES:
        try:
            importlib.import_module(module_name)
        except ImportError:
            continue
        cls = _find_subclass(Describable, type_name)
        if cls is not None:
            return cls
    message = (
        f"Unknown type {type_name!r}: no imported class and no installed entry point has that name"
    )
    providers = sorted(
        p for names in KNOWN_PROVIDERS.values() for n, p in names.items() if n == type_name
    )
    raise UnknownNameError(message + _install_hint(type_name, providers[:1], "; "))
