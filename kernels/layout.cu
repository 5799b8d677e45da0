// Row layout <-> NCHW on the GPU, bias folded in: the CUDA twin of kernels/layout.py.
//
//     rows_to_nchw:  y[n, o, l] = rows[o, n*L + l] + b[o]      (forward: bias add)
//     nchw_to_rows:  rows[o, n*L + l] = dy[n, o, l]             (backward)
//     bias_grad:     db[o] = sum over n, l of dy[n, o, l]        (backward: bias reduction)
//
// For one image (N = 1) the layouts coincide and rows_to_nchw runs in place
// (rows and out are then the same buffer: no __restrict__ on them).

template <typename T>
__global__ void rows_to_nchw(const T* rows, const T* __restrict__ b, int has_bias,
                             int N, int O, long long L, T* out)
{
    const long long total = (long long)N * O * L;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long l = idx % L;
        const int o = (int)((idx / L) % O);
        const int n = (int)(idx / (L * O));
        const T v = rows[(long long)o * N * L + (long long)n * L + l];
        out[idx] = has_bias ? v + b[o] : v;
    }
}

template <typename T>
__global__ void nchw_to_rows(const T* __restrict__ dy, int N, int O, long long L, T* __restrict__ rows)
{
    // One thread per element of rows (coalesced writes; reads are contiguous runs of L).
    const long long total = (long long)N * O * L;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const int o = (int)(idx / ((long long)N * L));
        const long long q = idx - (long long)o * N * L;
        const int n = (int)(q / L);
        const long long l = q - (long long)n * L;
        rows[idx] = dy[((long long)n * O + o) * L + l];
    }
}

template <typename T>
__global__ void bias_grad(const T* __restrict__ dy, int N, int O, long long L, T* __restrict__ db)
{
    // One block per output channel o; each thread sums a strided share of the N*L
    // values (in double), then a tree reduction in shared memory.  blockDim.x must
    // be a power of two <= 1024.
    __shared__ double part[1024];
    const int o = blockIdx.x;
    const long long count = (long long)N * L;
    double acc = 0.0;
    for (long long k = threadIdx.x; k < count; k += blockDim.x) {
        const long long n = k / L, l = k - n * L;
        acc += (double)dy[(n * O + o) * L + l];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[o] = (T)part[0];
}
