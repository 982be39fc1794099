"""The namespace and the entry-point registry."""

import subprocess
import sys

import pytest

import brainstorm as bs
from brainstorm import registry


def test_core_names_resolve():
    assert bs.Network is bs.structure.Network
    assert callable(bs.layers.Input)
    assert bs.Gaussian is bs.initializers.Gaussian
    assert bs.ClipValues is bs.value_modifiers.ClipValues
    assert bs.Minibatches is bs.data_iterators.Minibatches
    assert bs.Online is bs.data_iterators.Online
    from brainstorm.handlers import DebugHandler, NumpyHandler

    assert NumpyHandler().dtype == "float32" or str(NumpyHandler().dtype) == "float32"
    assert DebugHandler is not None


def test_unknown_attribute_is_attribute_error():
    assert not hasattr(bs, "NoSuchThing")
    assert not hasattr(bs.layers, "NoSuchLayer")
    with pytest.raises(AttributeError, match="Unknown layer 'NoSuchLayer'"):
        bs.layers.NoSuchLayer  # noqa: B018


def test_star_import_of_layers_gives_every_installed_layer():
    from brainstorm import registry

    names = {}
    exec("from brainstorm.layers import *", names)  # (as reference scripts did)
    assert {"Layer", "Input", *registry.available("brainstorm.layers")} <= set(names)


def test_missing_distribution_hint():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'brainstorm.training':\n"
        "            raise ModuleNotFoundError(\"No module named 'brainstorm.training'\", name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import brainstorm as bs\n"
        "assert not hasattr(bs, 'Trainer')\n"
        "try:\n"
        "    bs.Trainer\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install brainstorm-training" in out.stdout


def test_import_is_light():
    code = (
        "import sys, brainstorm\n"
        "heavy = [m for m in ('pycuda', 'bokeh', 'pygraphviz', 'h5py', 'brainstorm.layers') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_lists_core_entries():
    assert "NumpyHandler" in registry.available("brainstorm.handlers")
    assert "Input" in registry.available("brainstorm.layers")
    assert "Gaussian" in registry.available("brainstorm.initializers")


def test_find_describable_unknown():
    with pytest.raises(registry.UnknownNameError, match="Unknown type 'os.system'"):
        registry.find_describable("os.system")


def test_find_describable_names_the_distribution_that_would_provide_a_type(monkeypatch):
    known = {**registry.KNOWN_PROVIDERS, "brainstorm.steppers": {"NotHereStepper": "brainstorm-x"}}
    monkeypatch.setattr(registry, "KNOWN_PROVIDERS", known)
    with pytest.raises(registry.UnknownNameError, match="provided by brainstorm-x: pip install"):
        registry.find_describable("NotHereStepper")
