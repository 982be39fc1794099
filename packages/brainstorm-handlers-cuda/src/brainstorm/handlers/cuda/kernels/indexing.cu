// Concatenation along the last axis (merge / split) and the ops that index
// rows or columns by a column of (float) ids.
#include "common.cuh"

// The id in v as an int, or -1 unless it is a whole number in [0, n). Compared
// as a float first: casting NaN to int is undefined in C, and the GPU makes it 0
// (the CPU emulation INT_MIN), so a NaN id would read or write row 0 on the
// device; a fraction would be truncated.
static __device__ __forceinline__ int bs_id(float v, int n) {
    return (v >= 0.0f && v < (float)n && v == floorf(v)) ? (int)v : -1;
}

// out[..., :na] = a and out[..., na:] = b, over (n0 x n1) leading positions.
extern "C" __global__ void merge_last(long long n0, long long n1, long long na, long long nb,
                                      const float* a, long long a0, long long a1, long long ac,
                                      const float* b, long long b0, long long b1, long long bc,
                                      float* out, long long o0, long long o1, long long oc) {
    long long width = na + nb;
    long long n = (long long)n0 * n1 * width;
    BS_GRID_LOOP(flat, n) {
        BsIndex3 i = bs_unravel3(flat, n1, width);
        float value = i.i2 < na ? a[i.i0 * a0 + i.i1 * a1 + i.i2 * ac]
                                : b[i.i0 * b0 + i.i1 * b1 + (i.i2 - na) * bc];
        out[bs_at3(i, o0, o1, oc)] = value;
    }
}

// out_a += x[..., :na] and out_b += x[..., na:], over (n0 x n1) leading positions.
extern "C" __global__ void split_add_last(long long n0, long long n1, long long na, long long nb,
                                          const float* x, long long x0, long long x1, long long xc,
                                          float* out_a, long long a0, long long a1, long long ac,
                                          float* out_b, long long b0, long long b1, long long bc) {
    long long width = na + nb;
    long long n = (long long)n0 * n1 * width;
    BS_GRID_LOOP(flat, n) {
        BsIndex3 i = bs_unravel3(flat, n1, width);
        float value = x[bs_at3(i, x0, x1, xc)];
        if (i.i2 < na) {
            out_a[i.i0 * a0 + i.i1 * a1 + i.i2 * ac] += value;
        } else {
            out_b[i.i0 * b0 + i.i1 * b1 + (i.i2 - na) * bc] += value;
        }
    }
}

// One-hot rows: out[i, j] = (v[i] == j) for a (rows x k) out; a row of NaN for an
// id that is not a whole number in [0, k) (as index_m_by_v gives NaN for it).
extern "C" __global__ void binarize(int rows, int k, const float* v, int v0,
                                    float* out, int o0, int o1) {
    long long n = (long long)rows * k;
    BS_GRID_LOOP(flat, n) {
        long long i = flat / k, j = flat % k;
        int id = bs_id(v[i * v0], k);
        out[i * o0 + j * o1] = id < 0 ? nanf("") : (id == j ? 1.0f : 0.0f);
    }
}

// out[i] = m[i, int(v[i])] for a (rows x k) m; NaN for an id outside [0, k).
extern "C" __global__ void index_m_by_v(int rows, int k, const float* m, int m0, int m1,
                                        const float* v, int v0, float* out, int o0) {
    BS_GRID_LOOP(i, rows) {
        int j = bs_id(v[i * v0], k);
        out[i * o0] = j >= 0 ? m[i * m0 + (long long)j * m1] : nanf("");
    }
}

// out[i, :] = m[int(v[i]), :] for a (rows x cols) out and an (m_rows x cols) m;
// a row of NaN for an id outside [0, m_rows).
extern "C" __global__ void index_rows(int rows, int cols, int m_rows,
                                      const float* m, int m0, int m1,
                                      const float* v, int v0, float* out, int o0, int o1) {
    long long n = (long long)rows * cols;
    BS_GRID_LOOP(flat, n) {
        long long i = flat / cols, j = flat % cols;
        int r = bs_id(v[i * v0], m_rows);
        out[i * o0 + j * o1] = r >= 0 ? m[(long long)r * m0 + j * m1] : nanf("");
    }
}

// out[int(v[i]), :] += m[i, :] for a (rows x cols) m and an (out_rows x cols)
// out; rows with the same id accumulate (atomically); ids outside
// [0, out_rows) are skipped.
extern "C" __global__ void scatter_add_rows(int rows, int cols, int out_rows,
                                            const float* m, int m0, int m1,
                                            const float* v, int v0, float* out, int o0, int o1) {
    long long n = (long long)rows * cols;
    BS_GRID_LOOP(flat, n) {
        long long i = flat / cols, j = flat % cols;
        int r = bs_id(v[i * v0], out_rows);
        if (r >= 0) atomicAdd(&out[(long long)r * o0 + j * o1], m[i * m0 + j * m1]);
    }
}
