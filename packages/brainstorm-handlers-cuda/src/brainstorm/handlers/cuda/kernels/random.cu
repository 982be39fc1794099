// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011). Element k of an array gets the
// counter (k, 0, 0, 0) under the call's 64-bit key, so the numbers depend only
// on the key and the element's (C order) position, not on the launch size or
// the array's strides. The handler draws a fresh key from its RandomState
// (seeded from brainstorm's global_rnd) for every call.
#include "common.cuh"

__device__ __forceinline__ void bs_philox4x32_10(unsigned int ctr[4], unsigned int k0,
                                                 unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        unsigned int hi0 = __umulhi(0xD2511F53u, ctr[0]), lo0 = 0xD2511F53u * ctr[0];
        unsigned int hi1 = __umulhi(0xCD9E8D57u, ctr[2]), lo1 = 0xCD9E8D57u * ctr[2];
        unsigned int next0 = hi1 ^ ctr[1] ^ k0, next2 = hi0 ^ ctr[3] ^ k1;
        ctr[0] = next0;
        ctr[1] = lo1;
        ctr[2] = next2;
        ctr[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

__device__ __forceinline__ void bs_random_words(long long flat, unsigned int k0, unsigned int k1,
                                                unsigned int words[4]) {
    words[0] = (unsigned int)flat;
    words[1] = (unsigned int)(flat >> 32);
    words[2] = 0u;
    words[3] = 0u;
    bs_philox4x32_10(words, k0, k1);
}

// The top 24 bits of a word as a float in [0, 1).
__device__ __forceinline__ float bs_uniform(unsigned int word) {
    return (float)(word >> 8) * (1.0f / 16777216.0f);
}

// out = 1 where a uniform number in [0, 1) is < p, else 0.
extern "C" __global__ void random_mask(float p, unsigned int k0, unsigned int k1, long long n0, long long n1,
                                       long long n2, float* out, long long o0, long long o1, long long o2) {
    long long n = (long long)n0 * n1 * n2;
    BS_GRID_LOOP(flat, n) {
        unsigned int words[4];
        bs_random_words(flat, k0, k1, words);
        out[bs_at3(bs_unravel3(flat, n1, n2), o0, o1, o2)] = bs_uniform(words[0]) < p ? 1.0f : 0.0f;
    }
}

// out = mean + std * z with z standard normal (Box-Muller on two uniforms).
extern "C" __global__ void random_normal(float mean, float std, unsigned int k0, unsigned int k1,
                                         long long n0, long long n1, long long n2, float* out, long long o0, long long o1,
                                         long long o2) {
    long long n = (long long)n0 * n1 * n2;
    BS_GRID_LOOP(flat, n) {
        unsigned int words[4];
        bs_random_words(flat, k0, k1, words);
        float u1 = ((float)(words[0] >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]: log is finite
        float u2 = bs_uniform(words[1]);
        float z = sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795865f * u2);
        out[bs_at3(bs_unravel3(flat, n1, n2), o0, o1, o2)] = mean + std * z;
    }
}
