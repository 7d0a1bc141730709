// timestep_embedding (reference: src/UltraGen.Ops/Reference/TimestepEmbedding.cs): Wan's sinusoid, computed in float64
// like the reference (B·dim values: cost is nothing, precision is everything for t up to 1000).
//   half = dim/2, f_j = 10000^(−j/half):  y[b, j] = cos(t_b·f_j),  y[b, half + j] = sin(t_b·f_j)
#include "common/abi.cuh"
#include "common/tiles.cuh"  // ug_warp_sum

// ------------------------------------------------------------------------------------------------------------------
// timestep_embedding_fwd_f32(t, y, batch, dim): t (B), y (B, dim); dim even ≥ 2.
// Launch: block 256, grid ⌈B·dim/2 / 256⌉ (one thread per (b, j) writes the cos and the sin), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
timestep_embedding_fwd_f32(const float* __restrict__ t, float* __restrict__ y, int batch, int dim) {
    const int half = dim / 2;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * half) return;
    const int b = (int)(idx / half), j = (int)(idx - (long long)b * half);
    double s, c;
    sincos((double)t[b] * pow(10000.0, -(double)j / half), &s, &c);
    y[(long long)b * dim + j] = (float)c;
    y[(long long)b * dim + half + j] = (float)s;
}

// ------------------------------------------------------------------------------------------------------------------
// timestep_embedding_bwd_f32(t, dy, dt, batch, dim): dt_b = Σ_j f_j·(−dy[b, j]·sin(t_b f_j) + dy[b, half + j]·cos(t_b f_j))
// Launch: block 256 (8 warps, one sample each), grid ⌈B / 8⌉, no smem. Sum in float64 per lane, f32 shuffle at the end.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
timestep_embedding_bwd_f32(const float* __restrict__ t, const float* __restrict__ dy, float* __restrict__ dt, int batch,
                           int dim) {
    const int b = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (b >= batch) return;
    const int half = dim / 2;
    double sum = 0.0;
    for (int j = lane; j < half; j += 32) {
        const double f = pow(10000.0, -(double)j / half);
        double s, c;
        sincos((double)t[b] * f, &s, &c);
        sum += f * (-(double)dy[(long long)b * dim + j] * s + (double)dy[(long long)b * dim + half + j] * c);
    }
    const float total = ug_warp_sum((float)sum);
    if (lane == 0) dt[b] = total;
}
