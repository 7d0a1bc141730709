// Elementwise ops (references: src/UltraGen.Ops/Reference/{Add,GeluTanh,Activations,GateFusion,GatedResidual}.cs) and the column-sum
// that finishes every deterministic gradient reduction in this directory.
//
// 1-D kernels: grid-stride loops, 4 elements per thread per step as one float4 when every pointer is 16-byte aligned,
// scalar otherwise (and for the tail). Launch: block 256 (UG_EW_THREADS), grid ug_ew_blocks(n), no smem.
// Gate reductions: block (32, 8), grid (⌈D/32⌉, splits, B), writes partials that column_sum_f32 adds up.
// __launch_bounds__(256, 4) on the 1-D kernels: without the minimum-blocks hint ptxas (11.8) squeezed silu_bwd_f32 into
// 32 registers with a 4-byte spill; with it every kernel here compiles spill-free (sm_80 and sm_90).
#include "common/abi.cuh"
#include "common/launch.cuh"
#include <stdint.h>

namespace {

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Sigmoid with neither tail overflowing (expf(−|x|) ≤ 1), as Activations.Sigmoid.
__device__ __forceinline__ float sigmoid_f(float x) {
    const float e = expf(-fabsf(x));
    return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

constexpr float kGeluC = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluA = 0.044715f;

struct GeluTanhFwd {
    __device__ float operator()(float x) const { return 0.5f * x * (1.f + tanhf(kGeluC * fmaf(kGeluA * x * x, x, x))); }
};
struct GeluTanhBwd {  // dy·f'(x)
    __device__ float operator()(float x, float dy) const {
        const float th = tanhf(kGeluC * fmaf(kGeluA * x * x, x, x));
        const float d = 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * kGeluC * fmaf(3.f * kGeluA, x * x, 1.f);
        return dy * d;
    }
};
struct SiluFwd {
    __device__ float operator()(float x) const { return x * sigmoid_f(x); }
};
struct SiluBwd {
    __device__ float operator()(float x, float dy) const {
        const float s = sigmoid_f(x);
        return dy * s * (1.f + x * (1.f - s));
    }
};
struct SigmoidFwd {
    __device__ float operator()(float x) const { return sigmoid_f(x); }
};
struct SigmoidBwd {
    __device__ float operator()(float x, float dy) const {
        const float s = sigmoid_f(x);
        return dy * s * (1.f - s);
    }
};
struct Add {
    __device__ float operator()(float a, float b) const { return a + b; }
};

// y[i] = f(x[i]).
template <typename F>
__device__ __forceinline__ void map1(const float* __restrict__ x, float* __restrict__ y, long long n, F f) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long vecEnd = 0;
    if (aligned16(x) && aligned16(y)) {
        vecEnd = n / 4;
        for (long long i = i0; i < vecEnd; i += stride) {
            const float4 a = reinterpret_cast<const float4*>(x)[i];
            reinterpret_cast<float4*>(y)[i] = make_float4(f(a.x), f(a.y), f(a.z), f(a.w));
        }
        vecEnd *= 4;
    }
    for (long long i = vecEnd + i0; i < n; i += stride) y[i] = f(x[i]);
}

// y[i] = f(a[i], b[i]).
template <typename F>
__device__ __forceinline__ void map2(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y,
                                     long long n, F f) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long vecEnd = 0;
    if (aligned16(a) && aligned16(b) && aligned16(y)) {
        vecEnd = n / 4;
        for (long long i = i0; i < vecEnd; i += stride) {
            const float4 p = reinterpret_cast<const float4*>(a)[i];
            const float4 q = reinterpret_cast<const float4*>(b)[i];
            reinterpret_cast<float4*>(y)[i] = make_float4(f(p.x, q.x), f(p.y, q.y), f(p.z, q.z), f(p.w, q.w));
        }
        vecEnd *= 4;
    }
    for (long long i = vecEnd + i0; i < n; i += stride) y[i] = f(a[i], b[i]);
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// add_f32(a, b, y, n):                 y = a + b                     (y may alias a or b)
// gelu_tanh_fwd_f32(x, y, n):          y = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
// gelu_tanh_bwd_f32(x, dy, dx, n):     dx = dy·gelu'(x)
// silu_fwd_f32 / silu_bwd_f32, sigmoid_fwd_f32 / sigmoid_bwd_f32: same parameter lists
//   n: element count (64-bit). Launch: block 256, grid ug_ew_blocks(n), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4) add_f32(const float* a, const float* b, float* y, long long n) {
    map2(a, b, y, n, Add());
}
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
gelu_tanh_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long n) { map1(x, y, n, GeluTanhFwd()); }
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
gelu_tanh_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    map2(x, dy, dx, n, GeluTanhBwd());
}
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
silu_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long n) { map1(x, y, n, SiluFwd()); }
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
silu_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    map2(x, dy, dx, n, SiluBwd());
}
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
sigmoid_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long n) { map1(x, y, n, SigmoidFwd()); }
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
sigmoid_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    map2(x, dy, dx, n, SigmoidBwd());
}

// ------------------------------------------------------------------------------------------------------------------
// gate_fusion_fwd_f32(local, hier, glob, alpha, beta, z, batch, tokens, dim)
//   z = α⊙(β⊙local + (1−β)⊙hier) + (1−α)⊙glob;  local/hier/glob/z (B, N, D), alpha/beta (B, D)
//   batch = B, tokens = N (64-bit), dim = D. Launch: block 256, grid ug_ew_blocks(B·N·D).
// gate_fusion_bwd_f32(alpha, beta, dz, dlocal, dhier, dglob, batch, tokens, dim)
//   dlocal = dz·α·β, dhier = dz·α·(1−β), dglob = dz·(1−α); any output may be null (skipped). Same launch.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
gate_fusion_fwd_f32(const float* __restrict__ local, const float* __restrict__ hier, const float* __restrict__ glob,
                    const float* __restrict__ alpha, const float* __restrict__ beta, float* __restrict__ z, int batch,
                    long long tokens, int dim) {
    const long long n = (long long)batch * tokens * dim, plane = tokens * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long b = i / plane;
        const int c = (int)(i % dim);
        const float a = alpha[b * dim + c], be = beta[b * dim + c];
        z[i] = a * fmaf(be, local[i] - hier[i], hier[i]) + (1.f - a) * glob[i];
    }
}

extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
gate_fusion_bwd_f32(const float* __restrict__ alpha, const float* __restrict__ beta, const float* __restrict__ dz,
                    float* __restrict__ dlocal, float* __restrict__ dhier, float* __restrict__ dglob, int batch,
                    long long tokens, int dim) {
    const long long n = (long long)batch * tokens * dim, plane = tokens * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long b = i / plane;
        const int c = (int)(i % dim);
        const float a = alpha[b * dim + c], be = beta[b * dim + c], g = dz[i];
        if (dlocal) dlocal[i] = g * a * be;
        if (dhier) dhier[i] = g * a * (1.f - be);
        if (dglob) dglob[i] = g * (1.f - a);
    }
}

// ------------------------------------------------------------------------------------------------------------------
// gate_fusion_bwd_gates_f32(local, hier, glob, alpha, beta, dz, partialAlpha, partialBeta, batch, tokens, dim, splits)
//   partials of dα = Σ_N dz·(β·local + (1−β)·hier − glob) and dβ = Σ_N dz·α·(local − hier):
//   partialX[(b·splits + s)·D + c] = the sum over tokens of split s (rows [⌊N·s/splits⌋, ⌊N·(s+1)/splits⌋)).
//   Then column_sum_f32(partialAlpha, dAlpha, splits, D, B) (and the same for β).
// Launch: block (32, 8), grid (⌈D/32⌉, splits, B) with splits = ug_red_splits(N), no dynamic smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_RED_TX* UG_RED_TY)
gate_fusion_bwd_gates_f32(const float* __restrict__ local, const float* __restrict__ hier, const float* __restrict__ glob,
                          const float* __restrict__ alpha, const float* __restrict__ beta, const float* __restrict__ dz,
                          float* __restrict__ partialAlpha, float* __restrict__ partialBeta, int batch, long long tokens,
                          int dim, int splits) {
    (void)batch;
    __shared__ float redA[UG_RED_TY][UG_RED_TX];
    __shared__ float redB[UG_RED_TY][UG_RED_TX];
    const int c = blockIdx.x * UG_RED_TX + threadIdx.x;
    const int split = blockIdx.y, b = blockIdx.z;
    const long long begin = ug_red_split_begin(tokens, splits, split), end = ug_red_split_begin(tokens, splits, split + 1);
    float sa = 0.f, sb = 0.f;
    if (c < dim) {
        const float a = alpha[(long long)b * dim + c], be = beta[(long long)b * dim + c];
        for (long long t = begin + threadIdx.y; t < end; t += UG_RED_TY) {
            const long long i = ((long long)b * tokens + t) * dim + c;
            const float g = dz[i], l = local[i], h = hier[i];
            sa = fmaf(g, fmaf(be, l - h, h) - glob[i], sa);
            sb = fmaf(g * a, l - h, sb);
        }
    }
    redA[threadIdx.y][threadIdx.x] = sa;
    redB[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    if (threadIdx.y == 0 && c < dim) {
        float ta = 0.f, tb = 0.f;
#pragma unroll
        for (int y = 0; y < UG_RED_TY; ++y) {
            ta += redA[y][threadIdx.x];
            tb += redB[y][threadIdx.x];
        }
        const long long o = ((long long)b * splits + split) * dim + c;
        partialAlpha[o] = ta;
        partialBeta[o] = tb;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// gated_residual_fwd_f32(x, y, gate, out, batch, tokens, dim)
//   out = x + gate⊙y;  x/y/out (B, N, D), gate (B, D) broadcast over the N tokens (out may alias x).
//   batch = B, tokens = N (64-bit), dim = D. Launch: block 256, grid ug_ew_blocks(B·N·D).
// gated_residual_bwd_f32(gate, dout, dx, dy, batch, tokens, dim)
//   dx = dout, dy = gate⊙dout; either output may be null (skipped). Same launch.
// gated_residual_bwd_gate_f32(y, dout, partialGate, batch, tokens, dim, splits)
//   partials of dgate = Σ_N dout⊙y: partialGate[(b·splits + s)·D + c] = the sum over the tokens of split s.
//   Then column_sum_f32(partialGate, dGate, splits, D, B).
//   Launch: block (32, 8), grid (⌈D/32⌉, splits, B) with splits = ug_red_splits(N), no dynamic smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
gated_residual_fwd_f32(const float* x, const float* __restrict__ y, const float* __restrict__ gate, float* out, int batch,
                       long long tokens, int dim) {
    const long long n = (long long)batch * tokens * dim, plane = tokens * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long b = i / plane;
        const int c = (int)(i % dim);
        out[i] = fmaf(gate[b * dim + c], y[i], x[i]);
    }
}

extern "C" __global__ void __launch_bounds__(UG_EW_THREADS, 4)
gated_residual_bwd_f32(const float* __restrict__ gate, const float* __restrict__ dout, float* __restrict__ dx,
                       float* __restrict__ dy, int batch, long long tokens, int dim) {
    const long long n = (long long)batch * tokens * dim, plane = tokens * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float g = dout[i];
        if (dx) dx[i] = g;
        if (dy) dy[i] = g * gate[(i / plane) * dim + (int)(i % dim)];
    }
}

extern "C" __global__ void __launch_bounds__(UG_RED_TX* UG_RED_TY)
gated_residual_bwd_gate_f32(const float* __restrict__ y, const float* __restrict__ dout, float* __restrict__ partialGate,
                            int batch, long long tokens, int dim, int splits) {
    (void)batch;
    __shared__ float red[UG_RED_TY][UG_RED_TX];
    const int c = blockIdx.x * UG_RED_TX + threadIdx.x;
    const int split = blockIdx.y, b = blockIdx.z;
    const long long begin = ug_red_split_begin(tokens, splits, split), end = ug_red_split_begin(tokens, splits, split + 1);
    float sum = 0.f;
    if (c < dim) {
        for (long long t = begin + threadIdx.y; t < end; t += UG_RED_TY) {
            const long long i = ((long long)b * tokens + t) * dim + c;
            sum = fmaf(dout[i], y[i], sum);
        }
    }
    red[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < dim) {
        float total = 0.f;
#pragma unroll
        for (int r = 0; r < UG_RED_TY; ++r) total += red[r][threadIdx.x];
        partialGate[((long long)b * splits + split) * dim + c] = total;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// column_sum_f32(partial, out, splits, cols, batches): out[b·cols + c] = Σ_{s < splits} partial[(b·splits + s)·cols + c],
// summed in increasing s (deterministic). Finishes every *_bwd_{weight,affine,params,gates}_f32 reduction.
// Launch: block 256, grid (⌈cols/256⌉, batches), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
column_sum_f32(const float* __restrict__ partial, float* __restrict__ out, int splits, int cols, int batches) {
    (void)batches;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (c >= cols) return;
    const float* p = partial + (long long)b * splits * cols + c;
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += p[(long long)s * cols];
    out[(long long)b * cols + c] = sum;
}
