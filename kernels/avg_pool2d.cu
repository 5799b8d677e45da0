// Average pooling on the GPU: the CUDA twin of kernels/avg_pool2d.py.
//
// Output cell (i, j) averages the input window rows [h0[i], h1[i]), columns [w0[j], w1[j])
// and divides by dh[i] * dw[j]; the windows (adaptive, or k x k with stride, padding,
// count_include_pad and ceil_mode) are computed on the host by kernels/avg_pool2d.py and
// passed as int arrays.  Backward spreads dy[i, j] / (dh[i] * dw[j]) evenly over that
// window (windows may overlap: contributions add up).

template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, int N, int C, int H, int W, int OH, int OW,
                                const int* __restrict__ h0, const int* __restrict__ h1, const int* __restrict__ dh,
                                const int* __restrict__ w0, const int* __restrict__ w1, const int* __restrict__ dw,
                                T* __restrict__ y)
{
    // One thread per output cell; the sum in double, as on the CPU.
    const long long total = (long long)N * C * OH * OW;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int j = (int)(idx % OW);
        const int i = (int)((idx / OW) % OH);
        const long long nc = idx / ((long long)OW * OH);
        const T* plane = x + nc * H * W;
        double s = 0.0;
        for (int h = h0[i]; h < h1[i]; ++h)
            for (int w = w0[j]; w < w1[j]; ++w)
                s += (double)plane[h * W + w];
        y[idx] = (T)(s / (double)((long long)dh[i] * dw[j]));
    }
}

template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ dy, int N, int C, int H, int W, int OH, int OW,
                                 const int* __restrict__ h0, const int* __restrict__ h1, const int* __restrict__ dh,
                                 const int* __restrict__ w0, const int* __restrict__ w1, const int* __restrict__ dw,
                                 T* __restrict__ dx)
{
    // One thread per input pixel, gathering from the output cells whose window holds it,
    // in the CPU scatter's (i, j) order and with its rounding (each addition in double,
    // the running value stored as T).
    const long long total = (long long)N * C * H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int w = (int)(idx % W);
        const int h = (int)((idx / W) % H);
        const long long nc = idx / ((long long)W * H);
        T acc = T(0);
        for (int i = 0; i < OH; ++i) {
            if (h < h0[i] || h >= h1[i]) continue;
            for (int j = 0; j < OW; ++j) {
                if (w < w0[j] || w >= w1[j]) continue;
                const double g = (double)dy[(nc * OH + i) * OW + j] / (double)((long long)dh[i] * dw[j]);
                acc = (T)((double)acc + g);
            }
        }
        dx[idx] = acc;
    }
}
