"""Run PyCudaHandler on the CPU: the same ``.cu`` kernels, compiled by g++.

A testing aid for machines without a GPU (CI, laptops). :func:`build_library`
compiles every kernel of ``kernels/*.cu`` into one shared library against
``kernels/cpu_emulation.h``, with a generated C++ launch wrapper per kernel;
:class:`CpuEmulatedDevice` stands in for the GPU: host memory, those kernels
through ctypes, and an ``sgemm`` with cuBLAS's column-major semantics and
argument checks (written with NumPy). :func:`emulated_handler` returns a
:class:`~brainstorm.handlers.cuda.PyCudaHandler` computing on it, so the
handler's own code (strides, launch arguments, the cuBLAS mapping) runs
unchanged; only pycuda and cuBLAS themselves are replaced.

The device also catches mistakes a GPU would hide: every allocation has guard
zones of NaN on both sides, checked after every launch (a kernel writing out of
bounds fails loudly, one reading out of bounds gets NaN), and copies and sgemm
calls must stay inside a live allocation.

Example:
    >>> from brainstorm.handlers.cuda.emulation import emulated_handler
    >>> h = emulated_handler()  # needs g++  # doctest: +SKIP
    >>> from brainstorm.testing.handler_conformance import check_handler
    >>> check_handler(h)                  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import weakref
from math import prod
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from brainstorm.handlers.cuda import _kernels
from brainstorm.handlers.cuda._layout import OP_N, OP_T
from brainstorm.handlers.cuda._views import StridedViews

__all__ = [
    "EmulationError",
    "HostArray",
    "CpuEmulatedDevice",
    "build_library",
    "emulated_handler",
    "wrapper_source",
]

_GUARD = 32  # floats of NaN before and after every allocation
_GUARD_BITS = np.uint32(0x7FC0DEAD)  # a quiet NaN with a recognisable payload


class EmulationError(RuntimeError):
    """The CPU emulation cannot be built, or a kernel misbehaved in it."""


# ------------------------------------------------------------------- building


def wrapper_source(sources=None):
    """The C++ translation unit: the emulation header, the kernels, one wrapper per kernel.

    Args:
        sources: ``.cu`` files to include (default: every kernel of the handler).

    Each ``extern "C" void bs_launch_<kernel>(gx, gy, gz, bx, by, bz, <kernel
    arguments>)`` runs the kernel on a gx*gy*gz x bx*by*bz launch.
    """
    sources = [Path(p) for p in (sources or _kernels.kernel_files())]
    lines = ['#include "cpu_emulation.h"']
    lines += [f'#include "{path.resolve()}"' for path in sources]
    for path in sources:
        for kernel in _kernels.parse_kernels(path):
            params = ", ".join(f"{ctype} {name}" for ctype, name in kernel.parameters)
            names = ", ".join(name for _, name in kernel.parameters)
            barriers = "true" if kernel.uses_barriers else "false"
            lines += [
                f'extern "C" void bs_launch_{kernel.name}(unsigned int gx, unsigned int gy, '
                f"unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz"
                + (f", {params}" if params else "")
                + ") {",
                f"    bs_emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), {barriers}, "
                f"[&] {{ {kernel.name}({names}); }});",
                "}",
            ]
    return "\n".join(lines) + "\n"


def build_library(build_dir=None, sources=None, compiler=None):
    """Compile the kernels for the CPU into a shared library (cached by content).

    Args:
        build_dir: where to build (default: a folder in the system's temp dir).
        sources: ``.cu`` files (default: every kernel of the handler).
        compiler: the C++ compiler (default: ``$CXX``, else ``g++``).

    Returns:
        The path of the shared library.

    Raises:
        EmulationError: no compiler, or the kernels do not compile (the message
            holds the compiler's output).
    """
    compiler = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise EmulationError(
            f"the CPU emulation of the CUDA kernels needs a C++ compiler ({compiler!r} not found)"
        )
    source = wrapper_source(sources)
    command = [
        compiler,
        "-std=c++17",
        "-O1",
        "-fPIC",
        "-shared",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-I",
        str(_kernels.KERNEL_DIR),
    ]
    digest = hashlib.sha256(source.encode())
    for path in [_kernels.EMULATION_HEADER, *_kernels.KERNEL_DIR.glob("*.cuh")]:
        digest.update(path.read_bytes())
    for path in sources or _kernels.kernel_files():
        digest.update(Path(path).read_bytes())
    digest.update(" ".join(command).encode())
    build_dir = Path(build_dir or Path(tempfile.gettempdir()) / "brainstorm-cuda-emulation")
    build_dir.mkdir(parents=True, exist_ok=True)
    library = build_dir / f"kernels-{digest.hexdigest()[:16]}.so"
    if library.exists():
        return library
    cpp = library.with_suffix(".cpp")
    cpp.write_text(source)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run(
        [*command, "-o", str(partial), str(cpp)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise EmulationError(f"compiling the kernels for the CPU failed:\n{result.stderr}")
    os.replace(partial, library)
    return library


# --------------------------------------------------------------------- memory


class _Allocation:
    """Host memory for one device allocation, with guard zones on both sides."""

    def __init__(self, size):
        self.buffer = np.zeros(size + 2 * _GUARD, dtype=np.float32)
        self.bits = self.buffer.view(np.uint32)
        self.bits[:_GUARD] = _GUARD_BITS
        self.bits[_GUARD + size :] = _GUARD_BITS
        self.size = size
        self.start = self.buffer.ctypes.data + 4 * _GUARD
        self.stop = self.start + 4 * size

    def guards_intact(self):
        return bool(
            np.all(self.bits[:_GUARD] == _GUARD_BITS)
            and np.all(self.bits[_GUARD + self.size :] == _GUARD_BITS)
        )


class HostArray(StridedViews):
    """An array of the emulated device: host memory seen through shape and byte strides."""

    dtype = np.dtype(np.float32)

    def __init__(self, shape, strides, allocation, offset=0):
        self.shape = tuple(int(n) for n in shape)
        self.strides = tuple(int(s) for s in strides)
        self.size = prod(self.shape)
        self._allocation = allocation
        self._offset = offset

    @property
    def ptr(self):
        """The host address of the first element (0 for an empty array)."""
        if self._allocation is None or self.size == 0:
            return 0
        return self._allocation.start + self._offset

    def _view(self, shape, strides, offset):
        return HostArray(shape, strides, self._allocation, self._offset + offset)

    def __repr__(self):
        return f"HostArray(shape={self.shape}, strides={self.strides})"


_CTYPES = {name: getattr(ctypes, ctype) for name, (_, ctype) in _kernels.PARAMETER_TYPES.items()}


class CpuEmulatedDevice:
    """The handler's device interface, on the CPU (see the module docstring).

    Args:
        library: path of a library made by :func:`build_library` (default: build one).

    Attributes:
        launches: ``collections.Counter`` of kernel name -> number of launches.
        gemms: number of sgemm calls.
    """

    array_type = HostArray
    name = "emulated on the CPU"

    def __init__(self, library=None):
        self._library = ctypes.CDLL(str(library or build_library()))
        self._functions = {}
        for kernel in _kernels.kernels().values():
            function = getattr(self._library, f"bs_launch_{kernel.name}")
            function.argtypes = [ctypes.c_uint] * 6 + [_CTYPES[t] for t, _ in kernel.parameters]
            function.restype = None
            self._functions[kernel.name] = function
        self._allocations = weakref.WeakSet()
        self.launches = collections.Counter()
        self.gemms = 0

    def allocate(self, shape):
        shape = tuple(int(n) for n in shape)
        strides, step = [], 4
        for n in reversed(shape):
            strides.append(step)
            step *= max(n, 1)
        size = prod(shape)
        allocation = _Allocation(size) if size else None
        if allocation is not None:
            self._allocations.add(allocation)
        return HostArray(shape, tuple(reversed(strides)), allocation)

    def _memory(self, ptr, nbytes, what):
        """A writable byte view of [ptr, ptr + nbytes), which must lie in one live allocation."""
        for allocation in list(self._allocations):
            if allocation.start <= ptr and ptr + nbytes <= allocation.stop:
                start = ptr - allocation.start + 4 * _GUARD
                return allocation.buffer.view(np.uint8)[start : start + nbytes]
        raise EmulationError(f"{what}: [{ptr:#x}, +{nbytes}) is not inside a live allocation")

    def upload(self, ptr, host):
        self._memory(ptr, host.nbytes, "upload")[...] = np.frombuffer(host.tobytes(), np.uint8)

    def download(self, host, ptr):
        # (at least 1-d first: a 0-d array has no byte view)
        np.atleast_1d(host).view(np.uint8).reshape(-1)[...] = self._memory(
            ptr, host.nbytes, "download"
        )

    def launch(self, name, grid, block, args):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        self._functions[name](*grid, *block, *args)
        self.launches[name] += 1
        for allocation in list(self._allocations):
            if not allocation.guards_intact():
                raise EmulationError(f"kernel {name} wrote outside an allocation")

    def _matrix(self, ptr, rows, cols, ld, what):
        """The column-major ``rows x cols`` matrix at ``ptr`` with leading dimension ``ld``."""
        if rows == 0 or cols == 0:
            return np.zeros((rows, cols), dtype=np.float32)
        extent = 4 * ((cols - 1) * ld + rows)
        memory = self._memory(ptr, extent, f"sgemm {what}").view(np.float32)
        return as_strided(memory, shape=(rows, cols), strides=(4, 4 * ld))

    def sgemm(self, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """``C = alpha op(A) op(B) + beta C``, column-major, checking arguments as cuBLAS does.

        Raises:
            EmulationError: what cuBLAS reports as ``CUBLAS_STATUS_INVALID_VALUE``
                (bad op, negative size, leading dimension too small).
        """
        a_rows, a_cols = (m, k) if transa == OP_N else (k, m)
        b_rows, b_cols = (k, n) if transb == OP_N else (n, k)
        problems = []
        if transa not in (OP_N, OP_T) or transb not in (OP_N, OP_T):
            problems.append(f"transa={transa}, transb={transb}")
        if min(m, n, k) < 0:
            problems.append(f"negative size m={m}, n={n}, k={k}")
        for label, ld, rows in (("lda", lda, a_rows), ("ldb", ldb, b_rows), ("ldc", ldc, m)):
            if ld < max(1, rows):
                problems.append(f"{label}={ld} < max(1, {rows})")
        if problems:
            raise EmulationError("sgemm: invalid value: " + "; ".join(problems))
        self.gemms += 1
        if m == 0 or n == 0:
            return
        op_a = self._matrix(a, a_rows, a_cols, lda, "A").astype(np.float64)
        op_b = self._matrix(b, b_rows, b_cols, ldb, "B").astype(np.float64)
        op_a = op_a.T if transa == OP_T else op_a
        op_b = op_b.T if transb == OP_T else op_b
        target = self._matrix(c, m, n, ldc, "C")
        result = alpha * (op_a @ op_b)
        if beta != 0:  # like cuBLAS, beta == 0 never reads C (it may hold NaN)
            result += beta * target
        target[...] = result


def emulated_handler(build_dir=None, seed=None):
    """A :class:`~brainstorm.handlers.cuda.PyCudaHandler` that runs on :class:`CpuEmulatedDevice`.

    Args:
        build_dir: where to compile the kernels (see :func:`build_library`).
        seed: as for ``PyCudaHandler``.

    Raises:
        EmulationError: no C++ compiler, or the kernels do not compile.
    """
    from brainstorm.handlers.cuda.handler import PyCudaHandler

    return PyCudaHandler._on_device(CpuEmulatedDevice(build_library(build_dir)), seed=seed)
