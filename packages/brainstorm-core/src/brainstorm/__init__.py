"""Brainstorm: fast, flexible and fun neural networks.

This package is shared by several distributions: ``brainstorm-core`` ships this
file; ``brainstorm-layers``, ``brainstorm-training``, ``brainstorm-tools`` and
``brainstorm-handlers-cuda`` add modules to it. Names are resolved lazily, so
``import brainstorm`` stays light, and a name whose distribution is missing
raises ``AttributeError`` with the command that installs it.
"""

__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.6.0"

# public name -> (module, attribute or None for the module itself, distribution)
_LAZY = {
    "describable": ("brainstorm.describable", None, "brainstorm-core"),
    "get_description": ("brainstorm.describable", "get_description", "brainstorm-core"),
    "create_from_description": (
        "brainstorm.describable",
        "create_from_description",
        "brainstorm-core",
    ),
    "randomness": ("brainstorm.randomness", None, "brainstorm-core"),
    "global_rnd": ("brainstorm.randomness", "global_rnd", "brainstorm-core"),
    "registry": ("brainstorm.registry", None, "brainstorm-core"),
    "structure": ("brainstorm.structure", None, "brainstorm-core"),
    "Network": ("brainstorm.structure.network", "Network", "brainstorm-core"),
    "generate_architecture": (
        "brainstorm.structure.architecture",
        "generate_architecture",
        "brainstorm-core",
    ),
    "layers": ("brainstorm.layers", None, "brainstorm-core"),
    "handlers": ("brainstorm.handlers", None, "brainstorm-core"),
    "initializers": ("brainstorm.initializers", None, "brainstorm-core"),
    "value_modifiers": ("brainstorm.value_modifiers", None, "brainstorm-core"),
    "data_iterators": ("brainstorm.data_iterators", None, "brainstorm-core"),
    "testing": ("brainstorm.testing", None, "brainstorm-core"),
    "utils": ("brainstorm.utils", None, "brainstorm-core"),
    "training": ("brainstorm.training", None, "brainstorm-training"),
    "Trainer": ("brainstorm.training", "Trainer", "brainstorm-training"),
    "hooks": ("brainstorm.hooks", None, "brainstorm-training"),
    "scorers": ("brainstorm.scorers", None, "brainstorm-training"),
    "tools": ("brainstorm.tools", None, "brainstorm-tools"),
}

_SHORTCUT_MODULES = (
    ("brainstorm.initializers", "brainstorm-core"),
    ("brainstorm.value_modifiers", "brainstorm-core"),
    ("brainstorm.data_iterators", "brainstorm-core"),
)


def __getattr__(name):
    import importlib

    if name in _LAZY:
        module_name, attr, dist = _LAZY[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and not module_name.startswith(err.name):
                raise
            raise AttributeError(
                f"brainstorm.{name} is provided by {dist}, which is not installed: "
                f"pip install {dist}"
            ) from None
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    if name.startswith("_"):  # probes such as _ipython_display_ must stay cheap
        raise AttributeError(f"module 'brainstorm' has no attribute {name!r}")
    # Shortcuts such as bs.Gaussian, bs.ClipValues, bs.Minibatches
    for module_name, _ in _SHORTCUT_MODULES:
        module = importlib.import_module(module_name)
        if name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'brainstorm' has no attribute {name!r}")


def __dir__():
    names = set(globals()) | set(_LAZY)
    return sorted(names)
