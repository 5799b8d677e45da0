// im2col / col2im on the GPU: the CUDA twin of kernels/im2col.py (same layout, same formulas).
//
//     col[(c, ki, kj), (n, i, j)] = x[n, c, i*sh - ph + ki, j*sw - pw + kj]     (0 outside)
//     dx[n, c, h, w] = sum over (ki, kj, i, j) with i*sh - ph + ki = h, j*sw - pw + kj = w
//                      of dcol[(c, ki, kj), (n, i, j)]                           (col2im)
//
// x is (N, C, H, W) contiguous; col is (C*kh*kw, N*oh*ow) contiguous, rows ordered
// (c, ki, kj) like a weight (O, C, kh, kw) flattened to (O, C*kh*kw).
// Compiled by kernels/gpu.py with NVRTC for T = float and T = double.

template <typename T>
__global__ void im2col(const T* __restrict__ x, int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int oh, int ow, T* __restrict__ col)
{
    // One thread per element of col; the column index (n, i, j) varies fastest, so
    // neighbouring threads write neighbouring addresses.
    const long long L = (long long)oh * ow;
    const long long cols = (long long)N * L;
    const long long total = (long long)C * kh * kw * cols;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int r = (int)(idx / cols);
        const long long q = idx - (long long)r * cols;
        const int n = (int)(q / L);
        const int l = (int)(q - (long long)n * L);
        const int i = l / ow, j = l - (l / ow) * ow;
        const int c = r / (kh * kw), ki = (r / kw) % kh, kj = r % kw;
        const int h = i * sh - ph + ki, w = j * sw - pw + kj;
        col[idx] = (h >= 0 && h < H && w >= 0 && w < W)
                   ? x[(((long long)n * C + c) * H + h) * W + w] : T(0);
    }
}

template <typename T>
__global__ void col2im(const T* __restrict__ col, int N, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int ph, int pw, int oh, int ow, T* __restrict__ dx)
{
    // One thread per input pixel (n, c, h, w), *gathering* the col entries that were
    // copied from it (no atomics: deterministic).  It adds them into dx in the CPU
    // kernel's order (ki, then kj), so the float sums are the same.
    const long long L = (long long)oh * ow;
    const long long cols = (long long)N * L;
    const long long total = (long long)N * C * H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int w = (int)(idx % W);
        const int h = (int)((idx / W) % H);
        const int c = (int)((idx / ((long long)W * H)) % C);
        const int n = (int)(idx / ((long long)W * H * C));
        T acc = dx[idx];
        for (int ki = 0; ki < kh; ++ki) {
            const int hi = h + ph - ki;                 // = i * sh
            if (hi < 0 || hi % sh != 0) continue;
            const int i = hi / sh;
            if (i >= oh) continue;
            for (int kj = 0; kj < kw; ++kj) {
                const int wj = w + pw - kj;             // = j * sw
                if (wj < 0 || wj % sw != 0) continue;
                const int j = wj / sw;
                if (j >= ow) continue;
                const long long r = ((long long)c * kh + ki) * kw + kj;
                acc += col[r * cols + (long long)n * L + (long long)i * ow + j];
            }
        }
        dx[idx] = acc;
    }
}
