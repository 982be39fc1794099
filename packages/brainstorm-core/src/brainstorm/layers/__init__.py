"""Layers: construction functions such as ``FullyConnected(100)``.

brainstorm-core ships the ``Layer`` base class and ``Input``; the layer
library (brainstorm-layers) and third-party plug-ins register their layers in
the ``brainstorm.layers`` entry-point group, so ``bs.layers.Lstm`` works for any
installed layer. A missing layer raises ``AttributeError`` naming the
distribution to install.
"""

__path__ = __import__("pkgutil").extend_path(__path__, __name__)


def __getattr__(name):
    if name == "__all__":  # (``from brainstorm.layers import *``: every installed layer)
        from brainstorm import registry

        return ["Layer", *registry.available("brainstorm.layers")]
    if name == "Layer":
        from brainstorm.layers.base_layer import Layer as value
    elif name.startswith("_"):
        raise AttributeError(name)
    else:
        from brainstorm import registry

        value = registry.load("brainstorm.layers", name)
    globals()[name] = value
    return value


def __dir__():
    from brainstorm import registry

    return sorted(set(globals()) | set(registry.available("brainstorm.layers")))
