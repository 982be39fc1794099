"""Diagrams of networks (needs pygraphviz: ``pip install brainstorm-tools[draw_net]``)."""

from __future__ import annotations

import os

from brainstorm.structure.network_file import atomic_write

__all__ = ["draw_network", "network_graph"]

INSTALL_HINT = "pip install brainstorm-tools[draw_net]"
_FORMATS = {".png": "png", ".svg": "svg"}


def _import_pygraphviz():
    try:
        import pygraphviz
    except ImportError as err:
        raise ImportError(
            f"draw_network needs pygraphviz (and Graphviz), which could not be imported "
            f"({err}); install it with: {INSTALL_HINT}"
        ) from err
    return pygraphviz


def network_graph(network):
    """A ``pygraphviz.AGraph`` of the network: one node per layer, one edge per connection.

    Nodes are labelled with the layer's name and type; edges with the output
    and input they connect where these are not ``default``.

    Raises:
        ImportError: if pygraphviz can not be imported (naming the install command).
    """
    pgv = _import_pygraphviz()
    graph = pgv.AGraph(directed=True, strict=False, rankdir="TB")
    graph.node_attr["shape"] = "box"
    for name, layer in network.layers.items():
        graph.add_node(name, label=f"{name}\n({layer.type_name})")
    for name, description in network.architecture.items():
        outgoing = description.get("@outgoing_connections", {})
        if isinstance(outgoing, list):
            outgoing = {"default": outgoing}
        for output_name, targets in outgoing.items():
            for target in targets:
                target_layer, _, input_name = target.partition(".")
                input_name = input_name or "default"
                label = (
                    ""
                    if (output_name, input_name) == ("default", "default")
                    else (f"{output_name} > {input_name}")
                )
                graph.add_edge(name, target_layer, label=label)
    return graph


def draw_network(network, file_name="network.png"):
    """Write a diagram for a network to a file.

    The format follows the file extension: ``.png`` or ``.svg``. The layout
    is made by Graphviz's ``dot``. The diagram is drawn into a temporary file
    next to ``file_name`` and then renamed, so a failed drawing leaves an
    existing file as it was.

    Note:
        This tool requires the pygraphviz library (and Graphviz) to be
        installed: ``pip install brainstorm-tools[draw_net]``.

    Example:
        >>> draw_network(net, 'mnist_net.svg')

    Args:
        network (brainstorm.structure.Network): network to be drawn.
        file_name (Optional[str]): defaults to 'network.png'.

    Returns:
        ``IPython.display.Image`` (``SVG`` for an .svg file) of the file when
        IPython is installed, so a notebook shows the diagram (as in the
        reference); else None.

    Raises:
        ImportError: if pygraphviz can not be imported.
        ValueError: for a file extension other than .png and .svg.
    """
    file_name = os.fspath(file_name)
    extension = os.path.splitext(file_name)[1].lower()
    if extension not in _FORMATS:
        raise ValueError(
            f"draw_network writes PNG or SVG files; {file_name!r} has neither extension "
            f"(.png, .svg)"
        )
    graph = network_graph(network)
    graph.layout(prog="dot")
    atomic_write(file_name, lambda path: graph.draw(path, format=_FORMATS[extension]), extension)
    try:
        from IPython.display import SVG, Image
    except ImportError:
        return None
    return SVG(filename=file_name) if extension == ".svg" else Image(filename=file_name)
