"""Sphinx configuration of the Brainstorm user documentation.

Build with ``python -m nox -s docs`` (HTML in ``docs/_build/html``, warnings are
errors, and the code of every ``testcode`` block is run). The API reference is
generated from the docstrings of whatever Brainstorm distributions are installed
(see ``_ext/bs_api.py``); optional heavy dependencies are mocked.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys

sys.path.insert(0, os.path.abspath("_ext"))

# -- project -------------------------------------------------------------------------------
project = "Brainstorm"
author = "The Brainstorm developers"
copyright = (
    "2015-2016 IDSIA (the original Brainstorm); the Brainstorm developers (this re-creation)"
)
try:
    release = importlib.metadata.version("brainstorm-core")
except importlib.metadata.PackageNotFoundError:
    release = "unknown"
version = ".".join(release.split(".")[:2])

# -- general -------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "bs_api",
]
exclude_patterns = ["_build", "_ext"]
templates_path = []
default_role = "code"  # `x` renders as code, never as an unresolved reference
nitpicky = False  # other people's docstrings may name types Sphinx cannot resolve
highlight_language = "python3"
pygments_style = "sphinx"

# -- autodoc and napoleon (Google-style docstrings) ----------------------------------------
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # a subclass shows what it documents itself
autodoc_typehints = "description"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True  # show `dtype=np.float32`, not its repr

# Optional dependencies of some distributions. GPU libraries are always mocked (they
# may be installed but unusable without a device); the others only when missing.
_ALWAYS_MOCKED = ["pycuda", "nvmath"]
_MOCKED_IF_MISSING = ["bokeh", "pygraphviz", "tqdm", "sacred", "IPython"]
autodoc_mock_imports = _ALWAYS_MOCKED + [
    name for name in _MOCKED_IF_MISSING if importlib.util.find_spec(name) is None
]

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields: no clash with documented properties
napoleon_use_rtype = False

# -- doctest: the testcode blocks of the guide are run by `sphinx-build -b doctest` --------
doctest_test_doctest_blocks = ""  # docstring examples (>>>) are illustrations, not tests
doctest_global_setup = """
import importlib.util as _util
HAS_TRAINING = _util.find_spec("brainstorm.training") is not None
HAS_TOOLS = _util.find_spec("brainstorm.tools") is not None
import brainstorm.layers as _layers
HAS_RECURRENT = hasattr(_layers, "Lstm")  # a missing layer raises AttributeError
"""

# -- HTML ----------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"Brainstorm {release}"
html_static_path = []
html_theme_options = {
    "description": "Fast, flexible and fun neural networks",
    "fixed_sidebar": True,
    "show_relbars": True,
    "page_width": "1240px",  # room for the wide tables of layers and handler ops
    "body_max_width": "none",
}
