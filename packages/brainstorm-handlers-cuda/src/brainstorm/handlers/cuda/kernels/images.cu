// NHWC convolution helpers (im2col / col2im) and pooling.
//
// Images are (N, H, W, C) with element strides (s0, s1, s2, s3), outputs
// (N, Ho, Wo, *). A window of output (y, x) covers the input rows
// y * sh - pad .. y * sh - pad + kh - 1 and likewise for the columns; pixels
// outside the image are padding. Backward kernels gather (one thread per input
// pixel sums the outputs whose windows hold it), so they need no atomics and
// are deterministic.
#include "common.cuh"

// cols[(n, y, x), (i, j, c)] = padded input[n, y * sh - pad + i, x * sw - pad + j, c]:
// the (N * Ho * Wo) x (kh * kw * C) contiguous matrix of all windows of the batch.
extern "C" __global__ void im2col_nhwc(int n, int h, int w, int c, int kh, int kw, int pad,
                                       int sh, int sw, int ho, int wo,
                                       const float* in, int i0, int i1, int i2, int i3,
                                       float* cols) {
    long long width = (long long)kh * kw * c;
    long long total = (long long)n * ho * wo * width;
    BS_GRID_LOOP(flat, total) {
        long long q = flat % width, p = flat / width;
        int ch = (int)(q % c), j = (int)((q / c) % kw), i = (int)(q / c / kw);
        int x = (int)(p % wo), y = (int)((p / wo) % ho), b = (int)(p / wo / ho);
        int r = bs_window_input(y, i, sh, pad, h), col = bs_window_input(x, j, sw, pad, w);
        bool inside = r >= 0 && col >= 0;
        cols[flat] = inside ? in[bs_at_nhwc(b, r, col, ch, i0, i1, i2, i3)] : 0.0f;
    }
}

// in_deltas[n, r, col, c] += sum of the cols entries that im2col_nhwc read from
// that pixel (the transpose of im2col, adding into strided in_deltas).
extern "C" __global__ void col2im_nhwc_add(int n, int h, int w, int c, int kh, int kw, int pad,
                                           int sh, int sw, int ho, int wo, const float* cols,
                                           float* in_deltas, int d0, int d1, int d2, int d3) {
    long long width = (long long)kh * kw * c;
    long long total = (long long)n * h * w * c;
    BS_GRID_LOOP(flat, total) {
        BsPixel p = bs_unravel_nhwc(flat, h, w, c);
        float sum = 0.0f;
        for (int i = 0; i < kh; ++i) {
            int y = bs_window_output(p.y, i, sh, pad, ho);
            if (y < 0) continue;
            for (int j = 0; j < kw; ++j) {
                int x = bs_window_output(p.x, j, sw, pad, wo);
                if (x < 0) continue;
                long long row = ((long long)p.n * ho + y) * wo + x;
                sum += cols[row * width + ((long long)i * kw + j) * c + p.c];
            }
        }
        in_deltas[bs_at_nhwc(p.n, p.y, p.x, p.c, d0, d1, d2, d3)] += sum;
    }
}

// Max pooling. argmax gets the in-image index (r * W + col) * C + c of the
// first maximum of each window (as a float), or -1 for a window without any
// real pixel (whose output is 0). The first real pixel always counts, so a
// window of -inf pixels outputs -inf (padding never wins).
extern "C" __global__ void maxpool_fwd(int n, int h, int w, int c, int kh, int kw, int pad,
                                       int sh, int sw, int ho, int wo,
                                       const float* in, int i0, int i1, int i2, int i3,
                                       float* out, int o0, int o1, int o2, int o3,
                                       float* argmax, int x0, int x1, int x2, int x3) {
    long long total = (long long)n * ho * wo * c;
    BS_GRID_LOOP(flat, total) {
        BsPixel p = bs_unravel_nhwc(flat, ho, wo, c);
        float best = -INFINITY;
        int best_index = -1;
        for (int i = 0; i < kh; ++i) {
            int r = bs_window_input(p.y, i, sh, pad, h);
            if (r < 0) continue;
            for (int j = 0; j < kw; ++j) {
                int col = bs_window_input(p.x, j, sw, pad, w);
                if (col < 0) continue;
                float value = in[bs_at_nhwc(p.n, r, col, p.c, i0, i1, i2, i3)];
                if (best_index < 0 || value > best) {  // strict: the first maximum wins
                    best = value;
                    best_index = (r * w + col) * c + p.c;
                }
            }
        }
        out[bs_at_nhwc(p.n, p.y, p.x, p.c, o0, o1, o2, o3)] = best_index >= 0 ? best : 0.0f;
        argmax[bs_at_nhwc(p.n, p.y, p.x, p.c, x0, x1, x2, x3)] = (float)best_index;
    }
}

// in_deltas[pixel] += the out_deltas of every window whose argmax is that pixel.
extern "C" __global__ void maxpool_bwd(int n, int h, int w, int c, int kh, int kw, int pad,
                                       int sh, int sw, int ho, int wo,
                                       const float* argmax, int x0, int x1, int x2, int x3,
                                       const float* out_deltas, int o0, int o1, int o2, int o3,
                                       float* in_deltas, int d0, int d1, int d2, int d3) {
    long long total = (long long)n * h * w * c;
    BS_GRID_LOOP(flat, total) {
        BsPixel p = bs_unravel_nhwc(flat, h, w, c);
        int own_index = (p.y * w + p.x) * c + p.c;
        float sum = 0.0f;
        for (int i = 0; i < kh; ++i) {
            int y = bs_window_output(p.y, i, sh, pad, ho);
            if (y < 0) continue;
            for (int j = 0; j < kw; ++j) {
                int x = bs_window_output(p.x, j, sw, pad, wo);
                if (x < 0) continue;
                if ((int)argmax[bs_at_nhwc(p.n, y, x, p.c, x0, x1, x2, x3)] == own_index) {
                    sum += out_deltas[bs_at_nhwc(p.n, y, x, p.c, o0, o1, o2, o3)];
                }
            }
        }
        in_deltas[bs_at_nhwc(p.n, p.y, p.x, p.c, d0, d1, d2, d3)] += sum;
    }
}

// Average pooling over the real (non-padding) pixels of each window; 0 for a
// window without any.
extern "C" __global__ void avgpool_fwd(int n, int h, int w, int c, int kh, int kw, int pad,
                                       int sh, int sw, int ho, int wo,
                                       const float* in, int i0, int i1, int i2, int i3,
                                       float* out, int o0, int o1, int o2, int o3) {
    long long total = (long long)n * ho * wo * c;
    BS_GRID_LOOP(flat, total) {
        BsPixel p = bs_unravel_nhwc(flat, ho, wo, c);
        float sum = 0.0f;
        for (int i = 0; i < kh; ++i) {
            int r = bs_window_input(p.y, i, sh, pad, h);
            if (r < 0) continue;
            for (int j = 0; j < kw; ++j) {
                int col = bs_window_input(p.x, j, sw, pad, w);
                if (col < 0) continue;
                sum += in[bs_at_nhwc(p.n, r, col, p.c, i0, i1, i2, i3)];
            }
        }
        int count = bs_inside(p.y, kh, sh, pad, h) * bs_inside(p.x, kw, sw, pad, w);
        out[bs_at_nhwc(p.n, p.y, p.x, p.c, o0, o1, o2, o3)] = count > 0 ? sum / count : 0.0f;
    }
}

// in_deltas[pixel] += out_deltas / count for every window holding the pixel.
extern "C" __global__ void avgpool_bwd(int n, int h, int w, int c, int kh, int kw, int pad,
                                       int sh, int sw, int ho, int wo,
                                       const float* out_deltas, int o0, int o1, int o2, int o3,
                                       float* in_deltas, int d0, int d1, int d2, int d3) {
    long long total = (long long)n * h * w * c;
    BS_GRID_LOOP(flat, total) {
        BsPixel p = bs_unravel_nhwc(flat, h, w, c);
        float sum = 0.0f;
        for (int i = 0; i < kh; ++i) {
            int y = bs_window_output(p.y, i, sh, pad, ho);
            if (y < 0) continue;
            for (int j = 0; j < kw; ++j) {
                int x = bs_window_output(p.x, j, sw, pad, wo);
                if (x < 0) continue;
                int count = bs_inside(y, kh, sh, pad, h) * bs_inside(x, kw, sw, pad, w);
                sum += out_deltas[bs_at_nhwc(p.n, y, x, p.c, o0, o1, o2, o3)] / count;
            }
        }
        in_deltas[bs_at_nhwc(p.n, p.y, p.x, p.c, d0, d1, d2, d3)] += sum;
    }
}
