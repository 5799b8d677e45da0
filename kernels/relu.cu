// ReLU forward and its three backward rules on the GPU: the CUDA twin of kernels/relu.py.
//
// Forward:    y = max(x, 0)
// Backward, with g = dL/dy:
//     rule 0 "backprop"   dx = g * [x > 0]              (the true gradient)
//     rule 1 "deconvnet"  dx = g * [g > 0]              (Zeiler & Fergus 2014)
//     rule 2 "guided"     dx = g * [x > 0] * [g > 0]    (Springenberg et al. 2015)
// [x > 0] is read off the saved output: y > 0 exactly where x > 0.

template <typename T>
__global__ void relu_forward(const T* __restrict__ x, long long n, T* __restrict__ y)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T v = x[i];
        y[i] = v > T(0) ? v : T(0);                 // NaN -> 0, as on the CPU
    }
}

template <typename T>
__global__ void relu_backward(const T* __restrict__ y, const T* __restrict__ g, long long n,
                              int rule, T* __restrict__ dx)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T gi = g[i];
        bool keep = true;
        if (rule != 1 && !(y[i] > T(0))) keep = false;
        if (rule != 0 && !(gi > T(0))) keep = false;
        dx[i] = keep ? gi : T(0);
    }
}
