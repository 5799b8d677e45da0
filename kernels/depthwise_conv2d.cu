// Depthwise convolution on the GPU: the CUDA twin of kernels/depthwise_conv2d.py.
//
// x (N, C, H, W), w (m*C, 1, kh, kw), output channel o reads input channel c = o / m:
//     y[n, o, i, j]  = b[o] + sum_{a, d} w[o, a, d] * x[n, c, i*sh - ph + a, j*sw - pw + d]   (0 outside)
//     dx[n, c, h, v] = sum_{o of c, (i, a), (j, d) hitting (h, v)} g[n, o, i, j] * w[o, a, d]
//     dw[o, a, d]    = sum_{n, i, j} g[n, o, i, j] * x[n, c, i*sh - ph + a, j*sw - pw + d]
// Each thread computes one output in the CPU loops' order of additions (bias, then the taps
// row-major; dx: o, i, d ascending; dw: n, i, j, each product in T summed in double), so the
// results are the CPU bits.

template <typename T>
__global__ void depthwise_conv2d_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                  int N, int C, int H, int W, int O, int kh, int kw, int sh, int sw,
                                  int ph, int pw, int oh, int ow, T* __restrict__ y)
{
    const long long total = (long long)N * O * oh * ow;
    const int m = O / C;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int j = (int)(idx % ow);
        const int i = (int)((idx / ow) % oh);
        const int o = (int)((idx / ((long long)ow * oh)) % O);
        const long long n = idx / ((long long)ow * oh * O);
        const T* plane = x + (n * C + o / m) * (long long)H * W;
        const T* wo = w + (long long)o * kh * kw;
        T acc = b[o];
        for (int a = 0; a < kh; ++a) {
            const int h = i * sh - ph + a;
            if (h < 0 || h >= H) continue;
            for (int d = 0; d < kw; ++d) {
                const int v = j * sw - pw + d;
                if (v < 0 || v >= W) continue;
                acc += wo[a * kw + d] * plane[h * W + v];
            }
        }
        y[idx] = acc;
    }
}

template <typename T>
__global__ void depthwise_conv2d_backward_input(const T* __restrict__ g, const T* __restrict__ w, int N, int C, int H,
                                         int W, int O, int kh, int kw, int sh, int sw, int ph, int pw,
                                         int oh, int ow, T* __restrict__ dx)
{
    const long long total = (long long)N * C * H * W;
    const int m = O / C;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int v = (int)(idx % W);
        const int h = (int)((idx / W) % H);
        const int c = (int)((idx / ((long long)W * H)) % C);
        const long long n = idx / ((long long)W * H * C);
        T acc = T(0);
        for (int o = c * m; o < (c + 1) * m; ++o) {
            const T* go = g + (n * O + o) * (long long)oh * ow;
            const T* wo = w + (long long)o * kh * kw;
            for (int i = 0; i < oh; ++i) {
                const int a = h + ph - i * sh;
                if (a < 0 || a >= kh) continue;
                for (int d = 0; d < kw; ++d) {
                    const int t = v + pw - d;              // = j * sw
                    if (t < 0 || t % sw != 0 || t / sw >= ow) continue;
                    acc += wo[a * kw + d] * go[i * ow + t / sw];
                }
            }
        }
        dx[idx] = acc;
    }
}

template <typename T>
__global__ void depthwise_conv2d_backward_weight(const T* __restrict__ g, const T* __restrict__ x, int N, int C, int H,
                                          int W, int O, int kh, int kw, int sh, int sw, int ph, int pw,
                                          int oh, int ow, T* __restrict__ dw)
{
    const long long total = (long long)O * kh * kw;
    const int m = O / C;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int d = (int)(idx % kw);
        const int a = (int)((idx / kw) % kh);
        const int o = (int)(idx / ((long long)kw * kh));
        double s = 0.0;
        for (long long n = 0; n < N; ++n) {
            const T* plane = x + (n * C + o / m) * (long long)H * W;
            const T* go = g + (n * O + o) * (long long)oh * ow;
            for (int i = 0; i < oh; ++i) {
                const int h = i * sh - ph + a;
                if (h < 0 || h >= H) continue;
                for (int j = 0; j < ow; ++j) {
                    const int v = j * sw - pw + d;
                    if (v < 0 || v >= W) continue;
                    s += (double)(go[i * ow + j] * plane[h * W + v]);
                }
            }
        }
        dw[idx] = (T)s;
    }
}
