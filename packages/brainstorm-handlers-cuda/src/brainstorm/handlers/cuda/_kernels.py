"""The CUDA C kernels of the handler: where they are and what they look like.

The kernels live in ``kernels/*.cu`` next to this module. Their signatures are
read from the sources themselves (every ``extern "C" __global__ void`` function),
so the Python side never repeats them: the GPU device prepares pycuda calls
from them and the CPU emulation generates its C++ launch wrappers from them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KERNEL_DIR", "EMULATION_HEADER", "Kernel", "kernel_files", "kernels", "op_codes"]

#: Folder of the ``.cu`` sources and headers (shipped inside the wheel).
KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
#: The header that lets g++ compile the kernels for the CPU.
EMULATION_HEADER = KERNEL_DIR / "cpu_emulation.h"

#: C parameter type -> (pycuda struct format character, ctypes type name).
PARAMETER_TYPES = {
    "float*": ("P", "c_void_p"),
    "int": ("i", "c_int"),
    "long long": ("q", "c_longlong"),
    "float": ("f", "c_float"),
    "unsigned int": ("I", "c_uint"),
}

_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_OP = re.compile(r"\b(BS_[A-Z_]+)\s*=\s*(\d+)")


@dataclass(frozen=True)
class Kernel:
    """One ``__global__`` function.

    Attributes:
        name: the function name.
        path: the ``.cu`` file defining it.
        parameters: ``(C type, name)`` pairs, C types normalized (``'float*'``,
            ``'int'``, ``'float'``, ``'unsigned int'``).
        uses_barriers: the file uses ``__syncthreads`` (the CPU emulation then
            runs each thread of a block as a fiber).
    """

    name: str
    path: Path
    parameters: tuple
    uses_barriers: bool

    @property
    def arg_format(self):
        """The argument format for pycuda's ``Function.prepare``."""
        return "".join(PARAMETER_TYPES[ctype][0] for ctype, _ in self.parameters)


def kernel_files():
    """The ``.cu`` files, sorted by name."""
    return sorted(KERNEL_DIR.glob("*.cu"))


def _parameter(text, kernel):
    words = text.replace("*", " * ").split()
    name = words[-1]
    ctype = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__"))
    ctype = ctype.replace(" *", "*")
    if ctype not in PARAMETER_TYPES:
        raise ValueError(f"kernel {kernel}: unsupported parameter type {ctype!r} of {name!r}")
    return ctype, name


def parse_kernels(path):
    """The kernels defined in one ``.cu`` file."""
    source = _COMMENTS.sub("", Path(path).read_text())
    uses_barriers = "__syncthreads" in source
    found = []
    for match in _KERNEL.finditer(source):
        name, params = match.group(1), match.group(2)
        parameters = tuple(_parameter(p, name) for p in params.split(",") if p.strip())
        found.append(Kernel(name, Path(path), parameters, uses_barriers))
    return found


@functools.cache
def kernels():
    """Every kernel by name.

    Raises:
        ValueError: two files define the same kernel name.
    """
    result = {}
    for path in kernel_files():
        for kernel in parse_kernels(path):
            if kernel.name in result:
                raise ValueError(f"kernel {kernel.name} is defined twice")
            result[kernel.name] = kernel
    return result


@functools.cache
def op_codes():
    """Name -> code of the operations of the ``ew_map`` kernel (``'COPY'`` -> 0, ...)."""
    source = _COMMENTS.sub("", (KERNEL_DIR / "elementwise.cu").read_text())
    return {name[len("BS_") :]: int(code) for name, code in _OP.findall(source)}
