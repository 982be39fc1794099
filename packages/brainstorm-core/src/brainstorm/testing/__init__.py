"""Test helpers for layer and handler authors (ours and plug-ins').

* :func:`check_layer` runs the generic layer checks (finite-difference deltas
  and gradients in float64, adding into deltas, context continuation,
  description round trip) on any layer.
* :mod:`brainstorm.testing.handler_conformance` checks every handler operation
  against a float64 NumPy reference.
"""

from brainstorm.testing.layer_checks import ALL_CHECKS, check_layer, get_test_configurations

__all__ = ["ALL_CHECKS", "check_layer", "get_test_configurations"]
