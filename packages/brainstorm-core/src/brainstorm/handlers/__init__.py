"""Handlers: where and how the arithmetic of a network runs.

``NumpyHandler`` (CPU, float32 by default) and ``DebugHandler`` ship with
brainstorm-core; other handlers (``PyCudaHandler`` from
brainstorm-handlers-cuda, or a plug-in's) are found through the
``brainstorm.handlers`` entry-point group, e.g.
``from brainstorm.handlers import PyCudaHandler``.
"""

__path__ = __import__("pkgutil").extend_path(__path__, __name__)

_CORE = {
    "Handler": "brainstorm.handlers.base_handler",
    "NumpyHandler": "brainstorm.handlers.numpy_handler",
    "DebugHandler": "brainstorm.handlers.debug_handler",
    "DebugArray": "brainstorm.handlers.debug_handler",
}

__all__ = ["Handler", "NumpyHandler", "DebugHandler", "default_handler"]


def __getattr__(name):
    import importlib

    if name in _CORE:
        value = getattr(importlib.import_module(_CORE[name]), name)
    elif name == "default_handler":
        from brainstorm.handlers.numpy_handler import NumpyHandler

        value = NumpyHandler()
    elif name.startswith("_"):
        raise AttributeError(name)
    else:
        from brainstorm import registry

        value = registry.load("brainstorm.handlers", name)
    globals()[name] = value
    return value
