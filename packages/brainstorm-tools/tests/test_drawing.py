"""draw_network: PNG and SVG diagrams, and the message when pygraphviz is missing."""

import builtins
import os

import pytest

from brainstorm.tools import create_net_from_spec, draw_network


@pytest.fixture
def net():
    return create_net_from_spec("classification", 4, 3, "F5 D", mask_name="mask")


def test_missing_pygraphviz_names_the_install_command(net, monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_pygraphviz(name, *args, **kwargs):
        if name == "pygraphviz" or name.startswith("pygraphviz."):
            raise ImportError("No module named 'pygraphviz'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pygraphviz)
    with pytest.raises(ImportError, match=r"pip install brainstorm-tools\[draw_net\]"):
        draw_network(net, str(tmp_path / "net.png"))
    assert not os.listdir(tmp_path)


def test_only_png_and_svg(net, tmp_path):
    with pytest.raises(ValueError, match="PNG or SVG"):
        draw_network(net, str(tmp_path / "net.pdf"))


def test_importing_tools_does_not_import_pygraphviz():
    import subprocess
    import sys

    code = "import sys, brainstorm.tools; print('pygraphviz' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_svg(net, tmp_path):
    pytest.importorskip("pygraphviz")
    target = tmp_path / "net.svg"
    draw_network(net, str(target))
    svg = target.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in ("Input", "FullyConnected", "Dropout", "Output_projection", "Output", "Mask"):
        assert f">{name}<" in svg
    assert "(SoftmaxCE)" in svg
    assert "targets &gt; targets" in svg  # a labelled edge for a named connection
    assert "mask &gt; mask" in svg


def test_png_is_the_default(net, tmp_path, monkeypatch):
    pytest.importorskip("pygraphviz")
    monkeypatch.chdir(tmp_path)
    draw_network(net)
    assert (tmp_path / "network.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_drawing_leaves_an_existing_file_alone(net, tmp_path, monkeypatch):
    pygraphviz = pytest.importorskip("pygraphviz")
    target = tmp_path / "net.png"
    target.write_bytes(b"previous diagram")

    def fail(self, path=None, format=None, prog=None, args=""):
        with open(path, "wb") as f:  # as pygraphviz does: opens the file, then renders
            f.write(b"half a diagram")
        raise OSError("render failed")

    monkeypatch.setattr(pygraphviz.AGraph, "draw", fail)
    with pytest.raises(OSError, match="render failed"):
        draw_network(net, str(target))
    assert target.read_bytes() == b"previous diagram"
    assert os.listdir(tmp_path) == ["net.png"]


def test_returns_an_image_for_notebooks(net, tmp_path):
    pytest.importorskip("pygraphviz")
    display = pytest.importorskip("IPython.display")
    assert isinstance(draw_network(net, str(tmp_path / "net.png")), display.Image)
    assert isinstance(draw_network(net, str(tmp_path / "net.svg")), display.SVG)


def test_graph_structure(net):
    pytest.importorskip("pygraphviz")
    from brainstorm.tools.drawing import network_graph

    graph = network_graph(net)
    assert set(graph.nodes()) == set(net.layers)
    edges = {(a, b) for a, b in graph.edges()}
    assert ("Input", "FullyConnected") in edges
    assert ("Input", "Output") in edges
    assert ("Input", "Mask") in edges
    assert ("Output", "Mask") in edges
    assert ("Mask", "Loss") in edges
    assert len(graph.edges()) == 8
