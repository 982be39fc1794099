// Helpers shared by the kernels of PyCudaHandler.
//
// Every kernel here is plain CUDA C: nvcc compiles it for the GPU, and g++
// compiles the very same source for the CPU through cpu_emulation.h (the
// tests do that to check index arithmetic and reductions without a GPU). So
// use only what cpu_emulation.h provides: threadIdx/blockIdx/blockDim/gridDim,
// __syncthreads, __shared__ arrays of fixed size, atomicAdd on float, __umulhi
// and the float maths of <math.h>. No warp intrinsics, no dynamic shared memory.
//
// Array arguments are a pointer plus element strides, so every kernel works on
// strided (non-contiguous) views; the Python side collapses the axes first.
#ifndef BRAINSTORM_COMMON_CUH
#define BRAINSTORM_COMMON_CUH

// Threads per block of the reduction kernels: the size of their __shared__
// scratch arrays. They are launched with a power of two <= this many threads.
#define BS_MAX_THREADS 256

// Grid-stride loop: correct for any number of elements and any launch size.
#define BS_GRID_LOOP(i, n)                                                        \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;          \
         i < (long long)(n); i += (long long)blockDim.x * gridDim.x)

// The position of a flat (C order) index in a 3-D iteration space.
struct BsIndex3 {
    long long i0, i1, i2;
};

__device__ __forceinline__ BsIndex3 bs_unravel3(long long flat, long long n1, long long n2) {
    BsIndex3 index;
    index.i2 = flat % n2;
    flat /= n2;
    index.i1 = flat % n1;
    index.i0 = flat / n1;
    return index;
}

// Element offset of a position for an operand with element strides s0, s1, s2.
__device__ __forceinline__ long long bs_at3(BsIndex3 index, long long s0, long long s1,
                                               long long s2) {
    return index.i0 * s0 + index.i1 * s1 + index.i2 * s2;
}

// NHWC image position (n, y, x, c) of a flat index over (N, H, W, C).
struct BsPixel {
    int n, y, x, c;
};

__device__ __forceinline__ BsPixel bs_unravel_nhwc(long long flat, int h, int w, int c) {
    BsPixel p;
    p.c = (int)(flat % c);
    flat /= c;
    p.x = (int)(flat % w);
    flat /= w;
    p.y = (int)(flat % h);
    p.n = (int)(flat / h);
    return p;
}

__device__ __forceinline__ long long bs_at_nhwc(int n, int y, int x, int c, int s0, int s1, int s2,
                                                int s3) {
    return (long long)n * s0 + (long long)y * s1 + (long long)x * s2 + (long long)c * s3;
}

// The window of output row `out` (or column) covers input rows
// [out * stride - pad, out * stride - pad + k).

// Input row (or column) at offset `i` of the window of output row `out`, or -1
// where that is padding (outside [0, size)).
__device__ __forceinline__ int bs_window_input(int out, int i, int stride, int pad, int size) {
    int pos = out * stride - pad + i;
    return pos >= 0 && pos < size ? pos : -1;
}

// The inverse: the output row (or column) whose window holds input row `pos`
// at offset `i`, or -1 if there is none among the out_size outputs.
__device__ __forceinline__ int bs_window_output(int pos, int i, int stride, int pad,
                                                int out_size) {
    int scaled = pos + pad - i;
    if (scaled < 0 || scaled % stride != 0 || scaled / stride >= out_size) return -1;
    return scaled / stride;
}

// The number of input rows of the window of output row `out` inside [0, size).
__device__ __forceinline__ int bs_inside(int out, int k, int stride, int pad, int size) {
    int start = out * stride - pad;
    int stop = start + k;
    if (start < 0) start = 0;
    if (stop > size) stop = size;
    return stop > start ? stop - start : 0;
}

#endif  // BRAINSTORM_COMMON_CUH
