// Elementwise kernels: one kernel, ew_map, computes every elementwise op of the
// handler (selected by an operation code), over up to three collapsed axes with
// a stride per operand, so it covers contiguous arrays, strided views and
// broadcasting (stride 0) alike.
#include "common.cuh"

// Operation codes of ew_map. handler.py reads this enum, so the numbers live
// here only. In the formulas: a, b, c are the three inputs, s and t scalars.
enum BsOp {
    BS_COPY = 0,           // a
    BS_FILL = 1,           // s
    BS_ABS = 2,            // |a|
    BS_SIGN = 3,           // -1, 0 or 1
    BS_LOG = 4,            // ln a
    BS_SQRT = 5,           // sqrt a
    BS_CLIP = 6,           // a clipped to [s, t]
    BS_ADD = 7,            // a + b
    BS_SUBTRACT = 8,       // a - b
    BS_MULT = 9,           // a * b
    BS_MULT_ADD = 10,      // c + a * b
    BS_DIVIDE = 11,        // a / b
    BS_MODULO = 12,        // fmod(a, b)
    BS_ADD_SCALAR = 13,    // a + s
    BS_MULT_SCALAR = 14,   // a * s
    BS_MULT_ADD_SCALAR = 15,  // c + s * a
    BS_COPY_IF = 16,       // b != 0 ? a : c
    BS_FILL_IF = 17,       // a != 0 ? s : c
    BS_ADD_IF = 18,        // b != 0 ? c + a : c
    BS_SIGMOID = 19,       // 1 / (1 + exp(-a)), without overflow
    BS_SIGMOID_DERIV = 20,  // b * a * (1 - a)      (a = y, b = dy)
    BS_TANH = 21,          // tanh a
    BS_TANH_DERIV = 22,    // b * (1 - a * a)
    BS_REL = 23,           // max(a, 0)
    BS_REL_DERIV = 24,     // b * (a > 0)
    BS_EL = 25,            // a > 0 ? a : exp(a) - 1
    BS_EL_DERIV = 26       // b * min(a + 1, 1)
};

__device__ __forceinline__ float bs_apply(int op, float a, float b, float c, float s, float t) {
    switch (op) {
        case BS_COPY: return a;
        case BS_FILL: return s;
        case BS_ABS: return fabsf(a);
        case BS_SIGN: return a > 0.0f ? 1.0f : (a < 0.0f ? -1.0f : a);  // keeps 0 and NaN
        case BS_LOG: return logf(a);
        case BS_SQRT: return sqrtf(a);
        case BS_CLIP: return a < s ? s : (a > t ? t : a);  // NaN stays NaN
        case BS_ADD: return a + b;
        case BS_SUBTRACT: return a - b;
        case BS_MULT: return a * b;
        case BS_MULT_ADD: return c + a * b;
        case BS_DIVIDE: return a / b;
        case BS_MODULO: return fmodf(a, b);
        case BS_ADD_SCALAR: return a + s;
        case BS_MULT_SCALAR: return a * s;
        case BS_MULT_ADD_SCALAR: return c + s * a;
        case BS_COPY_IF: return b != 0.0f ? a : c;
        case BS_FILL_IF: return a != 0.0f ? s : c;
        case BS_ADD_IF: return b != 0.0f ? c + a : c;
        case BS_SIGMOID: {
            float e = expf(-fabsf(a));  // never overflows
            return a >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        }
        case BS_SIGMOID_DERIV: return b * (a * (1.0f - a));
        case BS_TANH: return tanhf(a);
        case BS_TANH_DERIV: return b * (1.0f - a * a);
        case BS_REL: return a < 0.0f ? 0.0f : a;
        case BS_REL_DERIV: return b * (a > 0.0f ? 1.0f : 0.0f);
        case BS_EL: return a > 0.0f ? a : expm1f(a);
        case BS_EL_DERIV: {  // b * min(y + 1, 1), keeping a NaN y (fminf would drop it)
            float f = a + 1.0f;
            return b * (f > 1.0f ? 1.0f : f);
        }
    }
    return nanf("");  // unknown code: make the mistake visible
}

// out = op(a, b, c, s, t) over an n0 x n1 x n2 iteration space. Inputs an op
// does not use are passed as `out` itself (any valid array of that shape).
// `c` is usually `out` too, for the ops that update out (c + a * b, ...):
// every element is read and written by the same thread, so in-place is safe.
extern "C" __global__ void ew_map(int op, float s, float t, long long n0, long long n1, long long n2,
                                  const float* a, long long a0, long long a1, long long a2,
                                  const float* b, long long b0, long long b1, long long b2,
                                  const float* c, long long c0, long long c1, long long c2,
                                  float* out, long long o0, long long o1, long long o2) {
    long long n = (long long)n0 * n1 * n2;
    BS_GRID_LOOP(flat, n) {
        BsIndex3 i = bs_unravel3(flat, n1, n2);
        out[bs_at3(i, o0, o1, o2)] = bs_apply(op, a[bs_at3(i, a0, a1, a2)], b[bs_at3(i, b0, b1, b2)],
                                              c[bs_at3(i, c0, c1, c2)], s, t);
    }
}

// flag[0] = 1 if any element of a is NaN or infinite (flag must start at 0).
extern "C" __global__ void ew_nonfinite(long long n0, long long n1, long long n2, const float* a, long long a0, long long a1,
                                        long long a2, float* flag) {
    long long n = (long long)n0 * n1 * n2;
    BS_GRID_LOOP(flat, n) {
        if (!isfinite(a[bs_at3(bs_unravel3(flat, n1, n2), a0, a1, a2)])) flag[0] = 1.0f;
    }
}
