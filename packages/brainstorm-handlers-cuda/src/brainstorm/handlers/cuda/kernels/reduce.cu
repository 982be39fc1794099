// Reductions with one block per output and a shared-memory tree: sums and the
// row-wise softmax. Launched with a power of two <= BS_MAX_THREADS threads.
#include "common.cuh"

// Tree reduction of scratch[0 .. blockDim.x) into scratch[0], sum or max.
// Every thread of the block must call it (it synchronizes).
__device__ __forceinline__ void bs_block_reduce(float* scratch, bool take_max) {
    __syncthreads();
    for (unsigned int width = blockDim.x / 2; width > 0; width /= 2) {
        if (threadIdx.x < width) {
            float other = scratch[threadIdx.x + width];
            float mine = scratch[threadIdx.x];
            scratch[threadIdx.x] = take_max ? fmaxf(mine, other) : mine + other;
        }
        __syncthreads();
    }
}

// out[o0, o1] = sum over (r0, r1) of a[o0, r0, r1, o1] for an (n_out0 x n_out1)
// grid of outputs, each reducing an (n_red0 x n_red1) block; a's element
// strides are ao0/ao1 along the outputs and ar0/ar1 along the reduced axes.
extern "C" __global__ void sum_reduce(long long n_out0, long long n_out1, long long n_red0, long long n_red1,
                                      const float* a, long long ao0, long long ao1, long long ar0, long long ar1,
                                      float* out, long long oo0, long long oo1) {
    __shared__ float scratch[BS_MAX_THREADS];
    long long n_out = (long long)n_out0 * n_out1;
    long long n_red = (long long)n_red0 * n_red1;
    for (long long o = blockIdx.x; o < n_out; o += gridDim.x) {
        long long i0 = o / n_out1, i1 = o % n_out1;
        const float* base = a + i0 * ao0 + i1 * ao1;
        float sum = 0.0f;
        for (long long r = threadIdx.x; r < n_red; r += blockDim.x) {
            sum += base[(r / n_red1) * ar0 + (r % n_red1) * ar1];
        }
        scratch[threadIdx.x] = sum;
        bs_block_reduce(scratch, false);
        if (threadIdx.x == 0) out[i0 * oo0 + i1 * oo1] = scratch[0];
        __syncthreads();  // scratch[0] is read before the next output reuses it
    }
}

// Row-wise softmax of a (rows x cols) matrix, computed from m - max(m) per row.
// out may be m itself: each thread rewrites only the elements it read itself,
// after the whole block has read the row for its maximum.
extern "C" __global__ void softmax_rows(int rows, int cols, const float* m, int m0, int m1,
                                        float* out, int o0, int o1) {
    __shared__ float scratch[BS_MAX_THREADS];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = m + (long long)r * m0;
        float* dest = out + (long long)r * o0;
        float best = -INFINITY;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) best = fmaxf(best, row[(long long)j * m1]);
        scratch[threadIdx.x] = best;
        bs_block_reduce(scratch, true);
        float row_max = scratch[0];
        __syncthreads();  // everybody has row_max before scratch is reused
        float sum = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            float e = expf(row[(long long)j * m1] - row_max);
            dest[(long long)j * o1] = e;
            sum += e;
        }
        scratch[threadIdx.x] = sum;
        bs_block_reduce(scratch, false);
        float total = scratch[0];
        for (int j = threadIdx.x; j < cols; j += blockDim.x) dest[(long long)j * o1] /= total;
        __syncthreads();  // scratch[0] is read before the next row reuses it
    }
}
