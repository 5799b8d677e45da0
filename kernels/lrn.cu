// Local response normalisation across channels on the GPU: the CUDA twin of kernels/lrn.py.
//
// With window w(c) = [c - size//2, c + (size-1)//2] (clipped to [0, C)):
//     scale[c] = k + alpha/size * sum_{c' in w(c)} x[c']^2
//     y[c]     = x[c] * scale[c]^(-beta)
// Backward (c' such that c is in w(c'), i.e. c' in [c - (size-1)//2, c + size//2]):
//     dx[c] = dy[c] * scale[c]^(-beta)
//             - (2 * alpha * beta / size) * x[c] * sum_{c'} dy[c'] * y[c'] / scale[c']
// All per pixel (n, h, w); x, y, scale, spow are (N, C, L) contiguous, L = H*W.  The sums
// run in double and in the CPU kernel's order; beta = 0.75 takes the CPU's fast path
// s^(-3/4) = r * sqrt(r), r = 1/sqrt(s).  The backward computes each t = dy*y/scale
// term on the fly (the CPU precomputes them in one pass: same values).

template <typename T>
__global__ void lrn_forward(const T* __restrict__ x, int N, int C, long long L, int size,
                            double alpha, double beta, double k,
                            T* __restrict__ y, T* __restrict__ scale, T* __restrict__ spow)
{
    const int lo_off = size / 2, hi_off = (size - 1) / 2;
    const double a = alpha / size;
    const bool fast = beta == 0.75;
    const long long total = (long long)N * C * L;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long l = idx % L;
        const int c = (int)((idx / L) % C);
        const long long n = idx / (L * C);
        double acc = 0.0;
        const int c0 = max(0, c - lo_off), c1 = min(C - 1, c + hi_off);
        for (int cc = c0; cc <= c1; ++cc) {
            const T v = x[(n * C + cc) * L + l];
            acc += (double)(v * v);
        }
        const double sc = k + a * acc;
        double pw;
        if (fast) {
            const double r = 1.0 / sqrt(sc);
            pw = r * sqrt(r);
        } else {
            pw = pow(sc, -beta);
        }
        scale[idx] = (T)sc;
        spow[idx] = (T)pw;
        y[idx] = (T)((double)x[idx] * pw);
    }
}

template <typename T>
__global__ void lrn_backward(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ scale,
                             const T* __restrict__ spow, const T* __restrict__ dy, int N, int C, long long L,
                             int size, double alpha, double beta, T* __restrict__ dx)
{
    const int lo_off = (size - 1) / 2, hi_off = size / 2;
    const double coef = 2.0 * alpha * beta / size;
    const long long total = (long long)N * C * L;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long l = idx % L;
        const int c = (int)((idx / L) % C);
        const long long n = idx / (L * C);
        double acc = 0.0;
        const int c0 = max(0, c - lo_off), c1 = min(C - 1, c + hi_off);
        for (int cc = c0; cc <= c1; ++cc) {
            const long long q = (n * C + cc) * L + l;
            const T t = dy[q] * y[q] / scale[q];
            acc += (double)t;
        }
        dx[idx] = (T)((double)(dy[idx] * spow[idx]) - coef * (double)x[idx] * acc);
    }
}
