"""Check which files the Brainstorm wheels ship (run by ``nox -s wheels``).

The ``brainstorm`` import package is shared by several distributions (see the
namespace mechanics in DESIGN.md, section 2). That only works if

* no file path is shipped by two wheels;
* only brainstorm-core ships ``brainstorm/__init__.py``,
  ``brainstorm/layers/__init__.py`` and ``brainstorm/handlers/__init__.py``, and each
  of them starts with ``__path__ = __import__("pkgutil").extend_path(...)``;
* first-party wheels ship nothing outside ``brainstorm/`` (besides their dist-info),
  and plug-ins ship nothing under ``brainstorm/`` (they use their own top-level package);
* every distribution registers its public names in the expected entry-point groups,
  each pointing at a module the same wheel ships, and no name is registered twice.

Usage: ``python tools/check_wheels.py DIST/*.whl`` (or a folder holding the wheels).
Exits with status 1 and one line per problem if any check fails. Standard library only.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
import zipfile
from collections import defaultdict
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

CORE = "brainstorm-core"
#: First-party distributions and the entry-point groups each must register in.
FIRST_PARTY = {
    CORE: {
        "brainstorm.layers",  # Input
        "brainstorm.handlers",  # NumpyHandler, DebugHandler
        "brainstorm.initializers",
        "brainstorm.value_modifiers",
        "brainstorm.data_iterators",
    },
    "brainstorm-layers": {"brainstorm.layers"},
    "brainstorm-training": {"brainstorm.hooks", "brainstorm.steppers", "brainstorm.scorers"},
    "brainstorm-tools": set(),
    "brainstorm-handlers-cuda": {"brainstorm.handlers"},
}
#: Plug-ins in this repository and the groups they must register in.
PLUGINS = {"brainstorm-example-plugin": {"brainstorm.layers"}}
CORE_ONLY = (
    "brainstorm/__init__.py",
    "brainstorm/layers/__init__.py",
    "brainstorm/handlers/__init__.py",
)
EXTEND_PATH = '__path__ = __import__("pkgutil").extend_path(__path__, __name__)'


class Wheel:
    """The parts of a wheel that the checks look at."""

    def __init__(self, path: Path):
        self.path = path
        with zipfile.ZipFile(path) as archive:
            self.files = [name for name in archive.namelist() if not name.endswith("/")]
            dist_info = {name.split("/", 1)[0] for name in self.files}
            dist_info = [d for d in dist_info if d.endswith(".dist-info")]
            if len(dist_info) != 1:
                raise SystemExit(f"{path.name}: expected one .dist-info folder, got {dist_info}")
            self.dist_info = dist_info[0]
            metadata = HeaderParser().parsestr(archive.read(f"{self.dist_info}/METADATA").decode())
            self.name = canonical(metadata["Name"])
            self.requires = metadata.get_all("Requires-Dist") or []
            self.entry_points = configparser.ConfigParser(delimiters=("=",))
            self.entry_points.optionxform = str  # entry names are case-sensitive
            if f"{self.dist_info}/entry_points.txt" in self.files:
                self.entry_points.read_string(
                    archive.read(f"{self.dist_info}/entry_points.txt").decode()
                )
            self.sources = {
                name: archive.read(name).decode() for name in CORE_ONLY if name in self.files
            }

    @property
    def payload(self) -> list[str]:
        """Every shipped file except the wheel's own metadata."""
        return [name for name in self.files if not name.startswith(f"{self.dist_info}/")]

    def ships_module(self, module: str) -> bool:
        base = module.replace(".", "/")
        return any(
            name in (f"{base}.py", f"{base}/__init__.py")
            or (name.startswith(f"{base}.") and name.endswith((".so", ".pyd")))
            for name in self.files
        )


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check(wheels: list[Wheel]) -> list[str]:
    problems: list[str] = []
    names = [wheel.name for wheel in wheels]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: more than one wheel given")

    owners: dict[str, list[str]] = defaultdict(list)
    for wheel in wheels:
        for name in wheel.files:
            owners[name].append(wheel.path.name)
    for name, shipped_by in sorted(owners.items()):
        if len(shipped_by) > 1:
            problems.append(f"{name} is shipped by {len(shipped_by)} wheels: {shipped_by}")

    for wheel in wheels:
        problems += [f"{wheel.path.name}: {problem}" for problem in check_one(wheel)]

    registered: dict[tuple[str, str], list[str]] = defaultdict(list)
    for wheel in wheels:
        for group in wheel.entry_points.sections():
            for entry in wheel.entry_points[group]:
                registered[group, entry].append(wheel.name)
    for (group, entry), dists in sorted(registered.items()):
        if len(dists) > 1:
            problems.append(f"{group}: {entry!r} is registered by {dists}")
    return problems


def check_one(wheel: Wheel) -> list[str]:
    problems: list[str] = []
    first_party = wheel.name in FIRST_PARTY
    for name in wheel.payload:
        path = PurePosixPath(name)
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            problems.append(f"ships compiled bytecode {name}")
        elif path.parts[0] in ("tests", "test"):
            problems.append(f"ships a top-level test package: {name}")
        elif first_party and path.parts[0] != "brainstorm":
            problems.append(f"ships {name} outside brainstorm/")
        elif not first_party and path.parts[0] == "brainstorm":
            problems.append(
                f"ships {name} under brainstorm/: a plug-in uses its own top-level package"
            )

    if wheel.name == CORE:
        for name in CORE_ONLY:
            if name not in wheel.files:
                problems.append(f"does not ship {name}")
            elif not starts_with_extend_path(wheel.sources[name]):
                problems.append(f"{name} does not start with {EXTEND_PATH}")
    else:
        for name in CORE_ONLY:
            if name in wheel.files:
                problems.append(f"ships {name}, which only {CORE} may ship")
        for requirement in wheel.requires:
            if canonical(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]) == CORE and (
                "<" not in requirement
            ):
                problems.append(f"requires {requirement!r}: pin core with a range (>=0.6,<0.7)")

    expected = FIRST_PARTY.get(wheel.name, PLUGINS.get(wheel.name, set()))
    for group in sorted(expected - set(wheel.entry_points.sections())):
        problems.append(f"registers no entry points in {group}")
    for group in wheel.entry_points.sections():
        if not group.startswith("brainstorm."):
            continue
        for entry, target in wheel.entry_points[group].items():
            module = target.split(":", 1)[0].strip()
            if not wheel.ships_module(module):
                problems.append(f"entry point {group}:{entry} = {target}: module not in wheel")
    return problems


def starts_with_extend_path(source: str) -> bool:
    """Whether the first statement after the docstring is the extend_path line."""
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    while body and isinstance(body[0], ast.ImportFrom) and body[0].module == "__future__":
        body = body[1:]
    return bool(body) and ast.unparse(body[0]) == ast.unparse(ast.parse(EXTEND_PATH).body[0])


def main(argv: list[str]) -> int:
    paths: list[Path] = []
    for arg in argv:
        path = Path(arg)
        paths += sorted(path.glob("*.whl")) if path.is_dir() else [path]
    if not paths:
        print("check_wheels: no wheels given", file=sys.stderr)
        return 1
    wheels = [Wheel(path) for path in paths]
    for wheel in wheels:
        groups = ", ".join(wheel.entry_points.sections()) or "none"
        print(f"{wheel.path.name}: {len(wheel.payload)} files, entry points: {groups}")
    problems = check(wheels)
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_wheels: {len(wheels)} wheels OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
