// ReLU forward and backward on the GPU: the CUDA twin of kernels/relu.py.
//
// The backward rules are one table, tinygrad_explain.core.engine.RELU_MASKS:
// rule name -> (mask_x, mask_g), read as
//     dx = g * [x > 0 if mask_x] * [g > 0 if mask_g]        (g = dL/dy)
//     backprop (mask_x), deconvnet (mask_g), guided (both)
// [x > 0] is read off the saved output: y > 0 exactly where x > 0.
// NaN is never turned into a number: relu(NaN) = NaN; a mask blocks only values
// known to be <= 0, so a NaN x lets g through and a NaN g comes back as NaN.

template <typename T>
__global__ void relu_forward(const T* __restrict__ x, long long n, T* __restrict__ y)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T v = x[i];
        y[i] = v <= T(0) ? T(0) : v;                // NaN is not <= 0: it stays NaN
    }
}

template <typename T>
__global__ void relu_backward(const T* __restrict__ y, const T* __restrict__ g, long long n,
                              int mask_x, int mask_g, T* __restrict__ dx)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T gi = g[i];
        const bool x_passes = !mask_x || !(y[i] <= T(0));   // [x > 0], a NaN x passes
        const bool g_passes = !mask_g || !(gi <= T(0));     // [g > 0], a NaN g passes
        dx[i] = (x_passes && g_passes) || gi != gi ? gi : T(0);
    }
}
