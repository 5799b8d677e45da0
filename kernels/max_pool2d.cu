// Max-pooling with recorded switches on the GPU: the CUDA twin of kernels/max_pool2d.py.
//
// Forward:   y[n, c, i, j] = max over the window of x[n, c, i*s - p + a, j*s - p + b]
//            switch[n, c, i, j] = flat index h*W + w of that maximum (first one on ties)
// Backward:  dx[n, c, switch[n, c, i, j]] += dy[n, c, i, j]
//            (overlapping windows may route several gradients to one pixel: they add up)
// Padding positions count as -inf; floor output size.

template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, int N, int C, int H, int W, int k, int s, int p,
                                int oh, int ow, T* __restrict__ y, int* __restrict__ sw)
{
    // One thread per output cell, the CPU loop body verbatim.
    const long long total = (long long)N * C * oh * ow;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int j = (int)(idx % ow);
        const int i = (int)((idx / ow) % oh);
        const long long nc = idx / ((long long)ow * oh);
        const T* plane = x + nc * H * W;
        const int h0 = max(i * s - p, 0), h1 = min(i * s - p + k, H);
        const int w0 = max(j * s - p, 0), w1 = min(j * s - p + k, W);
        T best = plane[h0 * W + w0];
        int arg = h0 * W + w0;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) {
                const T v = plane[h * W + w];
                if (v > best) { best = v; arg = h * W + w; }
            }
        y[idx] = best;
        sw[idx] = arg;
    }
}

template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ dy, const int* __restrict__ sw, int N, int C,
                                 int H, int W, int k, int s, int p, int oh, int ow, T* __restrict__ dx)
{
    // One thread per input pixel, gathering dy from every window that contains it and
    // whose switch points at it -- in the CPU scatter's (i, j) order, so the sums are
    // the same, and without atomics.
    const long long total = (long long)N * C * H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int w = (int)(idx % W);
        const int h = (int)((idx / W) % H);
        const long long nc = idx / ((long long)W * H);
        const int me = h * W + w;
        // windows i with i*s - p <= h < i*s - p + k
        const int ilo = (h + p - k + 1 <= 0) ? 0 : (h + p - k + 1 + s - 1) / s;
        const int ihi = min((h + p) / s, oh - 1);
        const int jlo = (w + p - k + 1 <= 0) ? 0 : (w + p - k + 1 + s - 1) / s;
        const int jhi = min((w + p) / s, ow - 1);
        T acc = T(0);
        for (int i = ilo; i <= ihi; ++i)
            for (int j = jlo; j <= jhi; ++j) {
                const long long o = (nc * oh + i) * ow + j;
                if (sw[o] == me) acc += dy[o];
            }
        dx[idx] = acc;
    }
}
