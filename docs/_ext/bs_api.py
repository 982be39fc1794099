"""Generate parts of the documentation from the installed code, so they never go stale.

* ``.. bs-api:: MODULE DISTRIBUTION`` (the API reference) is replaced, before the
  page is parsed, by one section per module: ``MODULE`` itself and, for a
  package, every public submodule found in it, recursively and in alphabetical
  order (a third word, ``nosubmodules``, leaves them out). Each section holds an
  ``automodule`` directive: packages show their docstring, modules their members
  too. A module added to an installed distribution appears without editing the
  docs; a module whose distribution is not installed gets a note instead of an
  import error (the docs build with warnings as errors).
* ``.. bs-handler-ops::`` is replaced by the op table of ``Handler``, grouped as
  in its source.
* The guide's pages that list the public names of an entry-point group (layers,
  hooks, steppers, ...) are checked against the names that Brainstorm's own
  installed distributions register: a name missing from its page is a warning
  (an error with ``-W``), so a new layer or hook cannot go undocumented.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re

_MARKER = re.compile(r"^\.\. bs-api:: +(\S+)(?: +(\S+))?(?: +(nosubmodules))? *$", re.MULTILINE)


def _find_spec(name):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a missing parent package
        return None


def _section(title, body):
    heading = f"``{title}``"
    return f"{heading}\n{'-' * len(heading)}\n\n{body}\n"


def _package_path(name, spec):
    """The ``__path__`` of a package: merged over every distribution that adds to it.

    Only importing the package runs its ``pkgutil.extend_path``; the import is
    cheap (Brainstorm's packages resolve names lazily) and runs under the same
    mocks as autodoc. Should it fail anyway, autodoc reports the error.
    """
    from sphinx.ext.autodoc.mock import mock

    try:
        with mock(_MOCKED):
            return list(importlib.import_module(name).__path__)
    except Exception:
        return list(spec.submodule_search_locations)


def _module_sections(name, submodules=True):
    spec = _find_spec(name)
    if spec.submodule_search_locations is None:
        return [_section(name, f".. automodule:: {name}\n   :members:\n")]
    sections = [_section(name, f".. automodule:: {name}\n")]
    if not submodules:
        return sections
    for info in sorted(pkgutil.iter_modules(_package_path(name, spec)), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "tests":
            continue
        sections += _module_sections(f"{name}.{info.name}")
    return sections


def _expand(match):
    name, distribution, flag = match.groups()
    if _find_spec(name) is None:
        where = f"the distribution ``{distribution}``" if distribution else "a distribution"
        return _section(
            name,
            f".. note::\n\n   ``{name}`` is part of {where}, which was not installed when "
            f"this page was built.\n",
        )
    return "\n".join(_module_sections(name, submodules=flag is None))


_OPS_MARKER = re.compile(r"^\.\. bs-handler-ops:: *$", re.MULTILINE)
_SECTION_COMMENT = re.compile(r"^    # -+ (.+)$")
_METHOD = re.compile(r"^    def ([a-z][a-z0-9_]*)\(")


def _handler_ops_table(match):
    """A table of every public op of ``Handler``, grouped as in its source.

    An op is "required" if the base class only raises ``NotImplementedError``
    for it, "generic" if the base class implements it from other ops.
    """
    import inspect

    from brainstorm.handlers.base_handler import Handler

    rows, group = [], ""
    for line in inspect.getsource(Handler).splitlines():
        comment = _SECTION_COMMENT.match(line)
        if comment:
            group = comment.group(1).strip()
            continue
        method = _METHOD.match(line)
        if not method:
            continue
        name = method.group(1)
        function = getattr(Handler, name)
        if not callable(function):  # e.g. the ``rnd`` property: not an operation
            continue
        parameters = list(inspect.signature(function).parameters)[1:]
        summary = (inspect.getdoc(function) or "").split("\n\n")[0].replace("\n", " ")
        required = "_abstract(self" in inspect.getsource(function)
        rows.append((group, f"``{name}({', '.join(parameters)})``", summary, required))
    lines = []
    for group in dict.fromkeys(row[0] for row in rows):
        lines += [
            f".. rubric:: {group.capitalize()}",
            "",
            ".. list-table::",
            "   :widths: 35 55 10",
            "",
        ]
        for _, signature, summary, required in (row for row in rows if row[0] == group):
            lines += [
                f"   * - {signature}",
                f"     - {summary}",
                f"     - {'required' if required else 'generic'}",
            ]
        lines.append("")
    return "\n".join(lines) + "\n"


#: Page -> the entry-point group whose first-party names it must mention (as ````Name``).
LISTING_PAGES = {
    "layers": "brainstorm.layers",
    "hooks": "brainstorm.hooks",
    "training": "brainstorm.steppers",
    "scorers": "brainstorm.scorers",
    "initializers": "brainstorm.initializers",
    "value_modifiers": "brainstorm.value_modifiers",
    "data_iterators": "brainstorm.data_iterators",
    "handlers": "brainstorm.handlers",
}
FIRST_PARTY = {
    "brainstorm-core",
    "brainstorm-layers",
    "brainstorm-training",
    "brainstorm-tools",
    "brainstorm-handlers-cuda",
}


def _check_listing(docname, text):
    from importlib import metadata

    from sphinx.util import logging

    group = LISTING_PAGES[docname]
    names = {
        ep.name
        for ep in metadata.entry_points(group=group)
        if getattr(ep.dist, "name", None) in FIRST_PARTY
    }
    missing = sorted(name for name in names if f"``{name}" not in text)
    if missing:
        logging.getLogger(__name__).warning(
            f"{group} names not described on this page: {', '.join(missing)}",
            location=docname,
        )


_MOCKED = []  # autodoc_mock_imports, set when the build starts


def _on_builder_inited(app):
    _MOCKED[:] = app.config.autodoc_mock_imports


def _on_source_read(app, docname, source):
    if docname in LISTING_PAGES:
        _check_listing(docname, source[0])
    source[0] = _MARKER.sub(_expand, source[0])
    source[0] = _OPS_MARKER.sub(_handler_ops_table, source[0])


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    app.connect("source-read", _on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
