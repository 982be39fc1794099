"""A readable summary of a network: layers, shapes and parameter counts."""

from __future__ import annotations

from brainstorm.utils import product

__all__ = ["get_network_info", "print_network_info"]

_RULE = "-" * 80


def _shapes(structures):
    if not structures:
        return ["    (none)"]
    return [f"    {name}: {tuple(s.feature_shape)}" for name, s in structures.items()]


def get_network_info(network):
    """Return detailed information about the network as a string.

    For the whole network: the total number of parameters. For every layer
    (in the order they are computed): its name and type, each parameter with
    its shape, the number of parameters, and the feature shapes of its inputs
    and outputs (without the time and batch axes).

    Example:
        >>> print(get_network_info(net))  # doctest: +SKIP
        total number of parameters: 7850
        --------------------------------------------------------------------------------
        Input (Input)
        ...

    Args:
        network (brainstorm.structure.Network): a network for which the
            details are returned.

    Returns:
        str: the description, one item per line.
    """
    total = sum(
        product(s.feature_shape)
        for layer in network.layers.values()
        for s in layer.parameter_shapes.values()
    )
    lines = [f"total number of parameters: {total}", _RULE]
    for name, layer in network.layers.items():
        lines.append(f"{name} ({layer.type_name})")
        lines.append("  parameters:")
        if layer.parameter_shapes:
            for param, s in layer.parameter_shapes.items():
                lines.append(f"    {param}: {tuple(s.feature_shape)}")
        else:
            lines.append("    (none)")
        count = sum(product(s.feature_shape) for s in layer.parameter_shapes.values())
        lines.append(f"  number of parameters: {count}")
        lines.append("  input shapes:")
        lines.extend(_shapes(layer.in_shapes))
        lines.append("  output shapes:")
        lines.extend(_shapes(layer.out_shapes))
        lines.append(_RULE)
    return "\n".join(lines) + "\n"


def print_network_info(network):
    """Print detailed information about the network.

    This tool prints the input, output and parameter shapes for all the
    layers. It also prints the total number of parameters in each layer and
    in the full network (see :func:`get_network_info`).

    Args:
        network (brainstorm.structure.Network): a network for which the
            details are printed.
    """
    print("=" * 30, "Network information", "=" * 30)
    print(get_network_info(network), end="")
