// Inference batch normalisation on the GPU: the CUDA twin of kernels/batch_norm.py.
//
// x (N, C, L); per channel c: mean[c], scale[c] = weight[c] / sqrt(var[c] + eps), inv[c] = 1 / sqrt(var[c] + eps):
//     y[n, c, l]  = (x[n, c, l] - mean[c]) * scale[c] + bias[c]
//     dx[n, c, l] = g[n, c, l] * scale[c]
//     dweight[c]  = sum_{n, l} g * ((x - mean[c]) * inv[c]),   dbias[c] = sum_{n, l} g
// Each element in T, the two sums in double in (n, l) order (one thread per channel), as on the CPU.

template <typename T>
__global__ void batch_norm_forward(const T* __restrict__ x, const T* __restrict__ mean, const T* __restrict__ scale,
                                  const T* __restrict__ bias, int N, int C, long long L, T* __restrict__ y)
{
    const long long total = (long long)N * C * L;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int c = (int)((idx / L) % C);
        y[idx] = (x[idx] - mean[c]) * scale[c] + bias[c];
    }
}

template <typename T>
__global__ void batch_norm_backward_input(const T* __restrict__ g, const T* __restrict__ scale, int N, int C,
                                         long long L, T* __restrict__ dx)
{
    const long long total = (long long)N * C * L;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        dx[idx] = g[idx] * scale[(int)((idx / L) % C)];
    }
}

template <typename T>
__global__ void batch_norm_backward_params(const T* __restrict__ g, const T* __restrict__ x,
                                          const T* __restrict__ mean, const T* __restrict__ inv, int N, int C,
                                          long long L, T* __restrict__ dw, T* __restrict__ db)
{
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < C;
         c += (long long)blockDim.x * gridDim.x) {
        const T m = mean[c], iv = inv[c];
        double sw = 0.0, sb = 0.0;
        for (long long n = 0; n < N; ++n) {
            const long long base = (n * C + c) * L;
            for (long long q = 0; q < L; ++q) {
                const T gv = g[base + q];
                sw += (double)(gv * ((x[base + q] - m) * iv));
                sb += (double)gv;
            }
        }
        dw[c] = (T)sw;
        db[c] = (T)sb;
    }
}
