"""Fixtures of the brainstorm-handlers-cuda tests.

* ``emulation_library``: the handler's kernels compiled by g++ for the CPU
  (once per session, into a temporary folder); skips without a compiler.
* ``emulated``: a PyCudaHandler running on the CPU emulation (fresh device per test).
* ``gpu_handler``: the real PyCudaHandler; skips with the reason when there is no
  usable GPU, or fails instead when ``BRAINSTORM_REQUIRE_GPU=1`` (``nox -s gpu``).
"""

import os
import sys

import pytest

from brainstorm.handlers.cuda import CudaUnavailableError, PyCudaHandler
from brainstorm.handlers.cuda.emulation import CpuEmulatedDevice, EmulationError, build_library

# Tests run with --import-mode=importlib; make the helper module cuda_test_layers importable.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def emulation_library(tmp_path_factory):
    try:
        return build_library(tmp_path_factory.mktemp("emulation"))
    except EmulationError as error:
        if "not found" in str(error):
            pytest.skip(f"CPU emulation needs a C++ compiler: {error}")
        raise


@pytest.fixture
def emulated(emulation_library):
    return PyCudaHandler._on_device(CpuEmulatedDevice(emulation_library), seed=1234)


@pytest.fixture(scope="session")
def gpu_handler():
    try:
        return PyCudaHandler(seed=1234)
    except CudaUnavailableError as error:
        if os.environ.get("BRAINSTORM_REQUIRE_GPU") == "1":
            pytest.fail(f"BRAINSTORM_REQUIRE_GPU=1 but PyCudaHandler() failed: {error}")
        pytest.skip(f"no usable GPU: {error}")
