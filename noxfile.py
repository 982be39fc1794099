"""Nox sessions of the Brainstorm monorepo.

Run ``python -m nox`` for the default set (what CI runs), ``python -m nox -l`` to
list the sessions, ``python -m nox -s demo`` for the main job.

Default sessions:

* ``tests(<dist>)``: one per distribution (``tests(core)``, ``tests(handlers_cuda)``,
  ...). A fresh environment holds only that distribution and its first-party
  dependencies, installed from their folders as wheels (not editable, so the
  packaging is tested too), plus pytest and the distribution's ``tests`` extra.
* ``plugin``: installs the plug-in template next to core and layers and runs its tests.
* ``oldest``: core and layers with the oldest versions of NumPy and h5py they declare
  (``numpy>=1.24`` means NumPy 1.24.0), and their tests.
* ``wheels``: builds every distribution and checks file ownership
  (``tools/check_wheels.py``).
* ``lint``: ``ruff check`` and ``ruff format --check``.
* ``docs``: builds the Sphinx site in ``docs/`` with warnings as errors and runs its
  code samples.

On demand:

* ``demo``: trains a network on the handwritten digits of scikit-learn.
* ``bench``: train-step throughput of three reference networks (``benchmarks/``).
* ``gpu``: on a machine with an NVIDIA GPU, its driver and the CUDA toolkit:
  brainstorm-handlers-cuda with pycuda, all its tests with the GPU ones required.
* ``dev``: every distribution editable in one environment (``.nox/dev``), then all tests.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

nox.needs_version = ">=2025.10.14"  # the first release with download_python
nox.options.default_venv_backend = "uv"
nox.options.download_python = "never"  # sessions use the Python that runs nox
nox.options.error_on_external_run = True
nox.options.sessions = ["tests", "plugin", "oldest", "wheels", "lint", "docs"]

ROOT = Path(__file__).resolve().parent

#: Session id -> folder of every first-party distribution. Dependencies between
#: them are read from each folder's pyproject.toml, never listed here.
DISTRIBUTIONS = {
    "core": "packages/brainstorm-core",
    "layers": "packages/brainstorm-layers",
    "training": "packages/brainstorm-training",
    "tools": "packages/brainstorm-tools",
    "handlers_cuda": "packages/brainstorm-handlers-cuda",
}
PLUGIN = "plugins/brainstorm-example-plugin"

#: Third-party requirements that only build where the CUDA toolkit is installed
#: (pycuda ships no Linux wheels: its build compiles against the toolkit and links
#: the driver library libcuda). Without both ``nvcc`` and libcuda they are left
#: out, and the tests that need them skip one by one; some tests must still run,
#: since a module that skips as a whole leaves nothing collected (pytest exit code
#: 5 = failure).
NEEDS_CUDA_TOOLKIT = {"pycuda"}


def _can_build_cuda_requirements() -> bool:
    """True where pycuda builds: the CUDA toolkit (nvcc) and the NVIDIA driver (libcuda)."""
    return shutil.which("nvcc") is not None and ctypes.util.find_library("cuda") is not None


PYTEST = "pytest>=8"
RUFF = "ruff==0.17.6"  # pinned: a new ruff release must not break CI on its own
LINT_PATHS = ["packages", "plugins", "noxfile.py", "tools", "examples", "benchmarks"]
PYTEST_ARGS = ["-c", "pyproject.toml", "--rootdir", "."]


def _present(folder: str) -> bool:
    return (ROOT / folder / "pyproject.toml").is_file()


#: The distributions that exist so far (folders appear as they are written).
PRESENT = {key: folder for key, folder in DISTRIBUTIONS.items() if _present(folder)}


def _project(folder: str) -> dict:
    return nox.project.load_toml(ROOT / folder / "pyproject.toml")["project"]


def _name(folder: str) -> str:
    return canonicalize_name(_project(folder)["name"])


def _local_folders() -> dict[str, str]:
    """Canonical distribution name -> folder, for everything in the repository."""
    folders = list(PRESENT.values()) + ([PLUGIN] if _present(PLUGIN) else [])
    return {_name(folder): folder for folder in folders}


def _with_local_dependencies(session: nox.Session, *folders: str) -> list[str]:
    """The given folders and, recursively, the first-party folders they depend on.

    Dependencies come before their dependents. A first-party requirement whose
    folder does not exist is an error, not a silent download from the index.
    """
    local = _local_folders()
    # Every folder is named after its distribution, so absent ones are known too.
    first_party = {canonicalize_name(Path(f).name) for f in DISTRIBUTIONS.values()} | set(local)
    order: list[str] = []

    def visit(folder: str) -> None:
        if folder in order:
            return
        for spec in _project(folder).get("dependencies", []):
            name = canonicalize_name(Requirement(spec).name)
            if name in local:
                visit(local[name])
            elif name in first_party:
                session.error(f"{folder} depends on {name}, whose folder does not exist yet")
        order.append(folder)

    for folder in folders:
        visit(folder)
    return order


def _install_local(
    session: nox.Session,
    folders: list[str],
    *extra: str,
    tested: list[str] | tuple[str, ...] = (),
    editable: bool = False,
) -> None:
    """Install local folders and ``extra`` requirements in one resolver run.

    The folders in ``tested`` get their ``tests`` extra, if they declare one; their
    dependencies do not, so a test cannot lean on another distribution's extras.
    """
    args: list[str] = []
    for folder in folders:
        has_extra = "tests" in _project(folder).get("optional-dependencies", {})
        spec = f"./{folder}[tests]" if folder in tested and has_extra else f"./{folder}"
        args += ["-e", spec] if editable else [spec]
        # uv caches wheels built from a folder; always rebuild our own code.
        args += ["--reinstall-package", _name(folder)]
    if not _can_build_cuda_requirements():
        args += _without_cuda_toolkit(session, folders)
    session.install(*args, *extra)


def _without_cuda_toolkit(session: nox.Session, folders: list[str]) -> list[str]:
    """Arguments that keep CUDA-toolkit-only requirements out of the environment."""
    requirements = (
        Requirement(spec) for f in folders for spec in _project(f).get("dependencies", [])
    )
    skipped = {canonicalize_name(r.name) for r in requirements} & NEEDS_CUDA_TOOLKIT
    if not skipped:
        return []
    session.warn(
        "no CUDA toolkit (nvcc) with NVIDIA driver (libcuda) found: "
        f"not installing {', '.join(sorted(skipped))}"
    )
    excludes = Path(session.create_tmp()) / "no-cuda-toolkit.txt"
    excludes.write_text("\n".join(sorted(skipped)) + "\n")
    return ["--excludes", str(excludes)]


def _pytest(session: nox.Session, *test_dirs: str) -> None:
    # Exit code 5 (no tests collected) fails the session like any other non-zero code.
    session.run("pytest", *PYTEST_ARGS, *test_dirs, *session.posargs)


def _local_test_dependencies(session: nox.Session, folder: str) -> list[str]:
    """The first-party folders that the ``tests`` extra of ``folder`` requires."""
    local = _local_folders()
    first_party = {canonicalize_name(Path(f).name) for f in DISTRIBUTIONS.values()}
    found = []
    for spec in _project(folder).get("optional-dependencies", {}).get("tests", []):
        name = canonicalize_name(Requirement(spec).name)
        if name in local:
            found.append(local[name])
        elif name in first_party:
            session.error(f"the tests of {folder} need {name}, whose folder does not exist yet")
    return found


@nox.session
@nox.parametrize("dist", list(PRESENT), ids=list(PRESENT))
def tests(session: nox.Session, dist: str) -> None:
    """Test one distribution alone: only it and its declared dependencies installed."""
    folder = PRESENT[dist]
    folders = _with_local_dependencies(session, *_local_test_dependencies(session, folder), folder)
    _install_local(session, folders, PYTEST, tested=[folder])
    _pytest(session, f"{folder}/tests")


@nox.session
def plugin(session: nox.Session) -> None:
    """Install the plug-in template next to core and layers, run its tests."""
    wanted = [PRESENT[key] for key in ("core", "layers") if key in PRESENT] + [PLUGIN]
    _install_local(session, _with_local_dependencies(session, *wanted), PYTEST, tested=[PLUGIN])
    _pytest(session, f"{PLUGIN}/tests")


def _declared_floors(folders: list[str]) -> list[str]:
    """``name==X`` for every third-party requirement ``name>=X`` of ``folders``."""
    first_party = {canonicalize_name(Path(f).name) for f in DISTRIBUTIONS.values()}
    pins = {}
    for folder in folders:
        for spec in _project(folder).get("dependencies", []):
            requirement = Requirement(spec)
            name = canonicalize_name(requirement.name)
            if name in first_party:
                continue
            for clause in requirement.specifier:
                if clause.operator == ">=":
                    pins[name] = f"{name}=={clause.version}"
    return sorted(pins.values())


@nox.session
def oldest(session: nox.Session) -> None:
    """Core and layers with the oldest NumPy and h5py they declare, and their tests."""
    wanted = [PRESENT[key] for key in ("core", "layers") if key in PRESENT]
    folders = _with_local_dependencies(session, *wanted)
    _install_local(session, folders, PYTEST, *_declared_floors(folders), tested=wanted)
    session.run(
        "python",
        "-c",
        "import numpy, h5py; print('NumPy', numpy.__version__, 'h5py', h5py.__version__)",
    )
    _pytest(session, *(f"{folder}/tests" for folder in wanted))


@nox.session
def wheels(session: nox.Session) -> None:
    """Build every distribution (sdist, then the wheel from it) and check ownership."""
    out = Path(session.create_tmp()) / "dist"
    shutil.rmtree(out, ignore_errors=True)
    for folder in [*PRESENT.values(), PLUGIN]:
        session.run("uv", "build", "--no-python-downloads", "--out-dir", str(out), folder)
    session.run("python", "tools/check_wheels.py", *sorted(str(p) for p in out.glob("*.whl")))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over every Python file of the repository."""
    session.install(RUFF)
    paths = [path for path in LINT_PATHS if (ROOT / path).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", "--diff", *paths)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the user documentation with Sphinx (warnings are errors) and run its examples.

    Every distribution present is installed as a wheel, so the API reference shows the
    packaged code (brainstorm-handlers-cuda without pycuda and nvmath-python, which
    ``docs/conf.py`` mocks). The HTML goes to ``docs/_build/html``; the doctest builder
    then runs the code of the guide's ``testcode`` blocks.
    """
    gpu = [PRESENT[key] for key in ("handlers_cuda",) if key in PRESENT]
    cpu = [folder for folder in PRESENT.values() if folder not in gpu]
    _install_local(session, _with_local_dependencies(session, *cpu), "sphinx>=8,<9")
    for folder in gpu:  # without its GPU libraries (never built here): conf.py mocks them
        session.install("--no-deps", f"./{folder}", "--reinstall-package", _name(folder))
    out = ROOT / "docs" / "_build"
    common = ["-W", "--keep-going", "-d", str(out / "doctrees"), "docs"]
    session.run("sphinx-build", "-E", "-b", "html", *common, str(out / "html"))
    session.run("sphinx-build", "-b", "doctest", *common, str(out / "doctest"))


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: train a network on real handwritten digits (scikit-learn's)."""
    script = ROOT / "examples" / "digits_demo.py"
    if not script.is_file():
        session.error(f"{script.relative_to(ROOT)} does not exist yet")
    wanted = [PRESENT[key] for key in ("core", "layers", "training", "tools") if key in PRESENT]
    _install_local(session, _with_local_dependencies(session, *wanted), "scikit-learn")
    session.run("python", str(script.relative_to(ROOT)), *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Train-step throughput of the reference networks on the NumpyHandler (float32).

    Core and layers are installed as wheels, with threadpoolctl to report the BLAS
    kernel. Arguments after ``--`` go to the script (default: JSON results into the
    session's tmp folder); the BLAS environment (``OPENBLAS_CORETYPE``, ...) is passed on.
    """
    wanted = [PRESENT[key] for key in ("core", "layers")]
    _install_local(session, _with_local_dependencies(session, *wanted), "threadpoolctl")
    out = Path(session.create_tmp()) / "bench_train_step.json"
    args = session.posargs or ["--breakdown", "--out", str(out)]
    session.run("python", "benchmarks/bench_train_step.py", *args)


@nox.session
def gpu(session: nox.Session) -> None:
    """Everything GPU-related, on a machine with an NVIDIA GPU, its driver and the CUDA toolkit.

    Installs brainstorm-handlers-cuda with pycuda (built here) and nvmath-python, plus
    brainstorm-layers for the layer comparisons, and runs all the distribution's tests
    with ``BRAINSTORM_REQUIRE_GPU=1``: a GPU test that cannot run fails instead of
    skipping. Arguments after ``--`` go to pytest. Where nvmath-python finds no cuBLAS
    library, ``BRAINSTORM_NVMATH_EXTRA=cu12`` (or ``cu13``) installs it from wheels.
    """
    if not _can_build_cuda_requirements():
        session.error("needs the CUDA toolkit (nvcc on the PATH) and the NVIDIA driver (libcuda)")
    folder = PRESENT["handlers_cuda"]
    wanted = [folder] + ([PRESENT["layers"]] if "layers" in PRESENT else [])
    extra = os.environ.get("BRAINSTORM_NVMATH_EXTRA")
    cublas = [f"nvmath-python[{extra}]"] if extra else []
    folders = _with_local_dependencies(session, *wanted)
    _install_local(session, folders, PYTEST, *cublas, tested=[folder])
    session.env["BRAINSTORM_REQUIRE_GPU"] = "1"
    _pytest(session, f"{folder}/tests")


@nox.session
def dev(session: nox.Session) -> None:
    """Every distribution editable in one environment, then all tests.

    Activate ``.nox/dev`` afterwards to work with it (ruff included); pass pytest arguments after
    ``--`` (``python -m nox -s dev -- -x``).
    """
    folders = [*PRESENT.values(), PLUGIN]
    _install_local(session, folders, PYTEST, RUFF, tested=folders, editable=True)
    _pytest(session, *(f"{folder}/tests" for folder in folders))
