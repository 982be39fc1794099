"""Every kernel compiles with nvcc for the GPU generations we support (3a of issue 6).

Compiling proves the CUDA C is valid device code for sm_75 (Turing), sm_80
(Ampere) and sm_90 (Hopper), with warnings as errors. It does not run anything:
the CPU emulation tests check what the kernels compute.
"""

import concurrent.futures
import os
import shutil
import subprocess

import pytest

from brainstorm.handlers.cuda import _kernels

ARCHITECTURES = ("sm_75", "sm_80", "sm_90")
NVCC = shutil.which("nvcc")

pytestmark = pytest.mark.skipif(
    NVCC is None, reason="nvcc (CUDA toolkit) is not on the PATH: cannot compile the kernels"
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(file name, architecture) -> completed nvcc process, all compiled in parallel."""
    out = tmp_path_factory.mktemp("cubin")
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for path in _kernels.kernel_files():
            for arch in ARCHITECTURES:
                command = [
                    NVCC,
                    "-cubin",
                    f"-arch={arch}",
                    "--Werror",
                    "all-warnings",
                    "-I",
                    str(_kernels.KERNEL_DIR),
                    "-o",
                    str(out / f"{path.stem}.{arch}.cubin"),
                    str(path),
                ]
                jobs[(path.name, arch)] = pool.submit(
                    subprocess.run, command, capture_output=True, text=True
                )
        return {key: job.result() for key, job in jobs.items()}, out


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("source", [p.name for p in _kernels.kernel_files()])
def test_kernel_file_compiles(compiled, source, arch):
    results, out = compiled
    result = results[(source, arch)]
    assert result.returncode == 0, f"nvcc failed for {source} ({arch}):\n{result.stderr}"
    cubin = out / f"{source[:-3]}.{arch}.cubin"
    assert cubin.stat().st_size > 0
    for kernel in _kernels.parse_kernels(_kernels.KERNEL_DIR / source):
        assert kernel.name.encode() in cubin.read_bytes(), f"{kernel.name} missing from {cubin}"
