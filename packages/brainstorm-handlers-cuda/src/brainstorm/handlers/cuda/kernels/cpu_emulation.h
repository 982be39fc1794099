// cpu_emulation.h: compile the CUDA C kernels of PyCudaHandler with a plain C++
// compiler and run them on the CPU, so their index arithmetic and reductions
// are tested on machines without a GPU.
//
//   g++ -std=c++17 -include cpu_emulation.h -x c++ kernels.cu
//
// What it provides: threadIdx / blockIdx / blockDim / gridDim, dim3, the
// __global__ / __device__ / __host__ / __forceinline__ / __shared__ qualifiers,
// __syncthreads(), atomicAdd(float*), __umulhi, __expf / __logf and the float
// maths of <cmath>, and bs_emu::launch(grid, block, uses_barriers, body), which
// runs body() once per thread of every block.
//
// How threads run: blocks run one after the other. In a block whose kernel has
// no __syncthreads, the threads run one after the other too. A kernel that
// synchronizes runs each of its threads as a fiber (ucontext) with its own
// stack: __syncthreads() switches back to the scheduler, which resumes every
// other thread of the block up to the same barrier before any goes on, which
// is exactly the guarantee of __syncthreads. A barrier reached by only part of
// the block (undefined behaviour on a GPU) aborts with a message, and so does a
// __syncthreads in a kernel launched without uses_barriers.
//
// __shared__ variables become function-local statics: one copy, shared by the
// threads of the running block (and uninitialised between blocks as far as the
// kernels may assume, like real shared memory). atomicAdd needs no atomics,
// since only one thread runs at a time.
#ifndef BRAINSTORM_CPU_EMULATION_H
#define BRAINSTORM_CPU_EMULATION_H

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

using std::isfinite;
using std::isinf;
using std::isnan;

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

struct uint3 {
    unsigned int x, y, z;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __launch_bounds__(...)

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline float atomicAdd(float* address, float value) {
    float old = *address;
    *address = old + value;
    return old;
}

namespace bs_emu {

inline uint3 thread_idx{0, 0, 0};
inline uint3 block_idx{0, 0, 0};
inline dim3 block_dim;
inline dim3 grid_dim;

[[noreturn]] inline void fail(const char* message) {
    std::fprintf(stderr, "cpu_emulation.h: %s\n", message);
    std::fflush(stderr);
    std::abort();
}

// Fiber stacks: the kernels use little stack, but unoptimised builds and the
// C library (printf, expf) need some room.
constexpr std::size_t kStackBytes = 128 * 1024;

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    uint3 index{0, 0, 0};
    bool finished = false;
};

inline ucontext_t scheduler;
inline Fiber* running = nullptr;
inline const std::function<void()>* fiber_body = nullptr;

inline void fiber_main() {
    (*fiber_body)();
    running->finished = true;
    // returning resumes uc_link, the scheduler
}

inline void syncthreads() {
    if (running == nullptr) {
        fail("__syncthreads() in a kernel launched without uses_barriers");
    }
    swapcontext(&running->context, &scheduler);
}

inline uint3 unravel(unsigned int flat, dim3 shape) {
    return uint3{flat % shape.x, (flat / shape.x) % shape.y, flat / shape.x / shape.y};
}

inline void run_block_as_fibers(const std::function<void()>& body, std::vector<Fiber>& fibers) {
    unsigned int count = block_dim.x * block_dim.y * block_dim.z;
    if (fibers.size() < count) fibers.resize(count);
    fiber_body = &body;
    for (unsigned int t = 0; t < count; ++t) {
        Fiber& fiber = fibers[t];
        if (fiber.stack.empty()) fiber.stack.resize(kStackBytes);
        fiber.index = unravel(t, block_dim);
        fiber.finished = false;
        if (getcontext(&fiber.context) != 0) fail("getcontext failed");
        fiber.context.uc_stack.ss_sp = fiber.stack.data();
        fiber.context.uc_stack.ss_size = fiber.stack.size();
        fiber.context.uc_link = &scheduler;
        makecontext(&fiber.context, fiber_main, 0);
    }
    // Each round resumes every thread once: all run to the next barrier (or to
    // their end), so no thread passes a barrier before all have reached it.
    for (;;) {
        unsigned int finished = 0;
        for (unsigned int t = 0; t < count; ++t) {
            Fiber& fiber = fibers[t];
            if (fiber.finished) {
                ++finished;
                continue;
            }
            thread_idx = fiber.index;
            running = &fiber;
            swapcontext(&scheduler, &fiber.context);
            running = nullptr;
            if (fiber.finished) ++finished;
        }
        if (finished == count) return;
        if (finished != 0) {
            fail("__syncthreads() reached by only part of a block (divergent barrier)");
        }
    }
}

// Run body() once for every thread of a grid x block launch.
inline void launch(dim3 grid, dim3 block, bool uses_barriers, const std::function<void()>& body) {
    static std::vector<Fiber> fibers;
    if (block.x * block.y * block.z == 0 || grid.x * grid.y * grid.z == 0) return;
    grid_dim = grid;
    block_dim = block;
    for (unsigned int bz = 0; bz < grid.z; ++bz) {
        for (unsigned int by = 0; by < grid.y; ++by) {
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                block_idx = uint3{bx, by, bz};
                if (uses_barriers) {
                    run_block_as_fibers(body, fibers);
                } else {
                    unsigned int count = block.x * block.y * block.z;
                    for (unsigned int t = 0; t < count; ++t) {
                        thread_idx = unravel(t, block);
                        body();
                    }
                }
            }
        }
    }
}

}  // namespace bs_emu

#define threadIdx (::bs_emu::thread_idx)
#define blockIdx (::bs_emu::block_idx)
#define blockDim (::bs_emu::block_dim)
#define gridDim (::bs_emu::grid_dim)
#define __syncthreads() ::bs_emu::syncthreads()

#endif  // BRAINSTORM_CPU_EMULATION_H
