"""kernels/cpu_emulation.h itself: launch geometry, barriers, shared memory, atomics.

A small C++ program includes the header, runs test kernels and prints what
they computed; the cases that must abort (a barrier reached by part of a block,
__syncthreads in a launch declared without barriers) run in their own process.
"""

import shutil
import subprocess

import pytest

from brainstorm.handlers.cuda import _kernels

CXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="g++ is not on the PATH")

PROGRAM = r"""
#include <cstring>
#include <string>
#include "common.cuh"

// Every (block, thread) of a 3-D grid of 3-D blocks runs exactly once, with
// the right indices and dimensions.
__global__ void visit(int* hits) {
    if (gridDim.x != 3 || gridDim.y != 2 || gridDim.z != 2) return;
    if (blockDim.x != 4 || blockDim.y != 3 || blockDim.z != 2) return;
    unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    hits[block * 24 + thread] += 1;
}

// Each thread reads its neighbour's value from shared memory after a barrier:
// wrong unless every thread wrote before any read.
__global__ void rotate(const float* in, float* out) {
    __shared__ float values[BS_MAX_THREADS];
    unsigned t = threadIdx.x, n = blockDim.x;
    values[t] = in[blockIdx.x * n + t];
    __syncthreads();
    float next = values[(t + 1) % n];
    __syncthreads();
    values[t] = next * 10.0f;  // overwrite only after everybody read
    __syncthreads();
    out[blockIdx.x * n + t] = values[(t + n - 1) % n];
}

__global__ void divergent(float* out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

__global__ void accumulate(float* total) { atomicAdd(total, 1.0f); }

int main(int argc, char** argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "divergent") {
        float out[32] = {0};
        bs_emu::launch(dim3(1), dim3(32), true, [&] { divergent(out); });
        return 0;
    }
    if (mode == "undeclared") {
        float in[8] = {0}, out[8];
        bs_emu::launch(dim3(1), dim3(8), false, [&] { rotate(in, out); });
        return 0;
    }
    int hits[12 * 24] = {0};
    bs_emu::launch(dim3(3, 2, 2), dim3(4, 3, 2), false, [&] { visit(hits); });
    int ok = 1;
    for (int h : hits) ok &= h == 1;
    std::printf("visit %d\n", ok);

    float in[3 * 64], out[3 * 64];
    for (int i = 0; i < 3 * 64; ++i) in[i] = (float)i;
    bs_emu::launch(dim3(3), dim3(64), true, [&] { rotate(in, out); });
    ok = 1;
    for (int i = 0; i < 3 * 64; ++i) ok &= out[i] == in[i] * 10.0f;
    std::printf("rotate %d\n", ok);

    float total = 0.0f;
    bs_emu::launch(dim3(5), dim3(7), false, [&] { accumulate(&total); });
    std::printf("atomic %g\n", total);
    std::printf("umulhi %u\n", __umulhi(0xD2511F53u, 0xFFFFFFFFu));
    return 0;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emulation_header")
    source = folder / "check.cpp"
    source.write_text(PROGRAM)
    binary = folder / "check"
    command = [CXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-include"]
    command += ["cpu_emulation.h", "-I", str(_kernels.KERNEL_DIR), "-o", str(binary), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return binary


def _run(program, *args):
    return subprocess.run([str(program), *args], capture_output=True, text=True, timeout=60)


def test_launch_geometry_barriers_and_atomics(program):
    result = _run(program)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["visit"] == "1"
    assert lines["rotate"] == "1"
    assert lines["atomic"] == "35"
    assert int(lines["umulhi"]) == (0xD2511F53 * 0xFFFFFFFF) >> 32


def test_divergent_barrier_aborts(program):
    result = _run(program, "divergent")
    assert result.returncode != 0
    assert "divergent barrier" in result.stderr


def test_barrier_in_a_launch_without_barriers_aborts(program):
    result = _run(program, "undeclared")
    assert result.returncode != 0
    assert "without uses_barriers" in result.stderr
