"""The distribution as a user meets it: cheap import, one clear error, entry point, files."""

import json
import subprocess
import sys

import pytest

import brainstorm.handlers.cuda as cuda
from brainstorm.describable import get_description
from brainstorm.handlers.base_handler import Handler
from brainstorm.handlers.cuda import CudaUnavailableError, PyCudaHandler, _kernels
from brainstorm.testing.handler_conformance import CONFORMANCE_CASES, handler_ops


def test_import_does_not_import_pycuda_or_nvmath():
    code = (
        "import sys, json\n"
        "import brainstorm.handlers.cuda, brainstorm.handlers.cuda.emulation\n"
        "from brainstorm.handlers import PyCudaHandler\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pycuda', 'nvmath', 'cuda'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_entry_point_resolves_to_the_class():
    from brainstorm.handlers import PyCudaHandler as from_registry

    assert from_registry is PyCudaHandler
    assert cuda.PyCudaHandler is PyCudaHandler


def test_construction_without_gpu_raises_one_clear_error():
    try:
        handler = PyCudaHandler()
    except CudaUnavailableError as error:
        message = str(error)
        assert isinstance(error, ImportError) and isinstance(error, RuntimeError)
        assert "pip install brainstorm-handlers-cuda" in message
        assert "CUDA toolkit" in message
        missing = ("pycuda is not installed", "libcuda", "driver", "nvmath", "cuBLAS", "nvcc")
        assert any(m in message for m in missing), message
    else:  # a machine with a GPU
        assert get_description(handler) == {"@type": "PyCudaHandler"}


def test_description_is_just_the_type(emulated):
    assert get_description(emulated) == {"@type": "PyCudaHandler"}


def test_every_op_of_the_table_is_implemented_here():
    # The base class raises NotImplementedError for the abstract ops and has
    # generic fallbacks for others; PyCudaHandler overrides every one of them.
    for op in handler_ops():
        assert getattr(PyCudaHandler, op) is not getattr(Handler, op), op
    for extra in ("index_rows_mv", "scatter_add_rows_mv"):
        assert callable(getattr(PyCudaHandler, extra))


def test_every_op_has_a_conformance_case():
    ops = set(handler_ops())
    covered = {case.op for case in CONFORMANCE_CASES}
    assert ops - covered <= {"index_rows_mv", "scatter_add_rows_mv"}  # tested in this package


def test_kernel_sources_are_found_and_parsed():
    names = set(_kernels.kernels())
    assert len(names) >= 18
    assert {"ew_map", "softmax_rows", "sum_reduce", "im2col_nhwc", "random_mask"} <= names
    assert _kernels.EMULATION_HEADER.is_file()
    for kernel in _kernels.kernels().values():
        assert set(kernel.arg_format) <= set("PifIq")


def test_op_codes_are_unique_and_cover_the_handler():
    codes = _kernels.op_codes()
    assert len(set(codes.values())) == len(codes)
    source = (_kernels.KERNEL_DIR.parent / "handler.py").read_text()
    for name in codes:
        assert f'"{name}"' in source, f"op {name} of ew_map is unused"


def test_unsupported_parameter_type_is_reported(tmp_path):
    path = tmp_path / "bad.cu"
    path.write_text('extern "C" __global__ void k(double* x) {}\n')
    with pytest.raises(ValueError, match="unsupported parameter type 'double\\*'"):
        _kernels.parse_kernels(path)
