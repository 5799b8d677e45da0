// Adaptive average pooling on the GPU: the CUDA twin of kernels/avgpool.py.
//
// Output cell (i, j) averages the input window
//     rows [floor(i*H/OH), ceil((i+1)*H/OH)),  cols [floor(j*W/OW), ceil((j+1)*W/OW))
// Backward spreads dy[i, j] / (window area) evenly over that window (windows may
// overlap when H is not a multiple of OH: contributions add up).

__device__ __forceinline__ int win_lo(int i, int n, int out) { return (i * n) / out; }
__device__ __forceinline__ int win_hi(int i, int n, int out) { return ((i + 1) * n + out - 1) / out; }

template <typename T>
__global__ void avgpool_forward(const T* __restrict__ x, int N, int C, int H, int W, int OH, int OW,
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
        const int h0 = win_lo(i, H, OH), h1 = win_hi(i, H, OH);
        const int w0 = win_lo(j, W, OW), w1 = win_hi(j, W, OW);
        double s = 0.0;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w)
                s += (double)plane[h * W + w];
        y[idx] = (T)(s / (double)((h1 - h0) * (w1 - w0)));
    }
}

template <typename T>
__global__ void avgpool_backward(const T* __restrict__ dy, int N, int C, int H, int W, int OH, int OW,
                                 T* __restrict__ dx)
{
    // One thread per input pixel, gathering from the (few) output cells whose window
    // holds it, in the CPU scatter's (i, j) order and with its rounding
    // (each addition in double, the running value stored as T).
    const long long total = (long long)N * C * H * W;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int w = (int)(idx % W);
        const int h = (int)((idx / W) % H);
        const long long nc = idx / ((long long)W * H);
        T acc = T(0);
        for (int i = 0; i < OH; ++i) {
            const int h0 = win_lo(i, H, OH), h1 = win_hi(i, H, OH);
            if (h < h0 || h >= h1) continue;
            for (int j = 0; j < OW; ++j) {
                const int w0 = win_lo(j, W, OW), w1 = win_hi(j, W, OW);
                if (w < w0 || w >= w1) continue;
                const double g = (double)dy[(nc * OH + i) * OW + j] / (double)((h1 - h0) * (w1 - w0));
                acc = (T)((double)acc + g);
            }
        }
        dx[idx] = acc;
    }
}
