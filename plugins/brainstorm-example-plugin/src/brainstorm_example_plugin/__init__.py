"""An example Brainstorm plug-in: the ``Square`` layer.

Brainstorm finds the layer through the ``brainstorm.layers`` entry point declared
in ``pyproject.toml``, so after ``pip install brainstorm-example-plugin`` it is
available as ``bs.layers.Square`` and as ``'@type': 'Square'`` in descriptions,
without importing this package.
"""

from brainstorm_example_plugin.square_layer import Square, SquareLayerImpl

__all__ = ["Square", "SquareLayerImpl"]
