// Clip (ReLU6 = clip(x, 0, 6)) forward and backward on the GPU: the CUDA twin of kernels/clip.py.
//
// The ReLU rules act at the lower bound, the upper bound always gates like the gradient:
//     dx = g * [x > lo if mask_x] * [g > 0 if mask_g] * [x < hi]        (g = dL/dy)
//     backprop (mask_x), deconvnet (mask_g), guided (both) -- engine.RELU_MASKS
// The masks are read off the saved output y = clip(x).  NaN as in ReLU: clip(NaN) = NaN;
// a NaN x lets g through and a NaN g comes back as NaN.

template <typename T>
__global__ void clip_forward(const T* __restrict__ x, long long n, T lo, T hi, T* __restrict__ y)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T v = x[i];
        y[i] = v <= lo ? lo : (v >= hi ? hi : v);          // NaN is neither: it stays NaN
    }
}

template <typename T>
__global__ void clip_backward(const T* __restrict__ y, const T* __restrict__ g, long long n, T lo, T hi,
                              int mask_x, int mask_g, T* __restrict__ dx)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T gi = g[i];
        const T yi = y[i];
        const bool x_passes = (!mask_x || !(yi <= lo)) && !(yi >= hi);   // [x > lo] [x < hi], NaN passes
        const bool g_passes = !mask_g || !(gi <= T(0));                  // [g > 0], NaN passes
        dx[i] = (x_passes && g_passes) || gi != gi ? gi : T(0);
    }
}
