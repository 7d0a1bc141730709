// Row normalisations over the last dim D (references: src/UltraGen.Ops/Reference/{RmsNorm,LayerNorm,Modulate}.cs).
// Row kernels: one warp per row, 8 rows per 256-thread block, lanes stride the row (coalesced), warp-shuffle sums; the
// row is re-read from L1/L2 instead of being held in registers, so any D works. Statistics are f32.
// Parameter gradients (weight, bias, shift, scale) are column sums over rows: each (32 × 8)-thread block sums a chunk of
// rows for 32 columns into partial[(b·splits + s)·D + c]; elementwise.cu's column_sum_f32 adds the partials in a fixed
// order (deterministic, no atomics).
#include "common/abi.cuh"
#include "common/launch.cuh"
#include "common/tiles.cuh"  // ug_warp_sum

namespace {

__device__ __forceinline__ long long row_of_warp() {
    return (long long)blockIdx.x * (UG_ROW_THREADS / 32) + (threadIdx.x >> 5);
}

__device__ __forceinline__ float rms_rstd(const float* xr, int dim, float eps, int lane) {
    float ss = 0.f;
    for (int c = lane; c < dim; c += 32) ss = fmaf(xr[c], xr[c], ss);
    return rsqrtf(ug_warp_sum(ss) / dim + eps);
}

// Biased mean/variance by two passes (the second over x − mean, so no cancellation).
__device__ __forceinline__ float2 ln_stats(const float* xr, int dim, float eps, int lane) {
    float s = 0.f;
    for (int c = lane; c < dim; c += 32) s += xr[c];
    const float mean = ug_warp_sum(s) / dim;
    float v = 0.f;
    for (int c = lane; c < dim; c += 32) {
        const float d = xr[c] - mean;
        v = fmaf(d, d, v);
    }
    return make_float2(mean, rsqrtf(ug_warp_sum(v) / dim + eps));
}

// Shared tail of every column reduction: sum the 8 row lanes of the block and write this split's partial(s).
template <int N>
__device__ __forceinline__ void finish_columns(float (&acc)[N], float* const (&partial)[N], long long outIndex, bool valid) {
    __shared__ float red[N][UG_RED_TY][UG_RED_TX];
#pragma unroll
    for (int k = 0; k < N; ++k) red[k][threadIdx.y][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && valid) {
#pragma unroll
        for (int k = 0; k < N; ++k) {
            float t = 0.f;
#pragma unroll
            for (int y = 0; y < UG_RED_TY; ++y) t += red[k][y][threadIdx.x];
            partial[k][outIndex] = t;
        }
    }
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// rms_norm_fwd_f32(x, weight, y, rstdOut, rows, dim, eps): y = x·rstd·weight, rstd = 1/√(mean(x²) + eps)
//   x, y: (rows, D); weight: (D); rstdOut: (rows) or null
// rms_norm_bwd_f32(x, weight, dy, dx, rstdOut, rows, dim, eps): dx = rstd·dy·w − rstd³·x·Σ(dy·w·x)/D;
//   rstdOut (rows) or null: written for rms_norm_bwd_weight_f32
// Launch (both): block 256 (8 rows), grid ug_row_blocks(rows), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ROW_THREADS)
rms_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ weight, float* __restrict__ y,
                 float* __restrict__ rstdOut, long long rows, int dim, float eps) {
    const long long row = row_of_warp();
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + row * dim;
    float* yr = y + row * dim;
    const float r = rms_rstd(xr, dim, eps, lane);
    for (int c = lane; c < dim; c += 32) yr[c] = xr[c] * r * weight[c];
    if (rstdOut != nullptr && lane == 0) rstdOut[row] = r;
}

extern "C" __global__ void __launch_bounds__(UG_ROW_THREADS)
rms_norm_bwd_f32(const float* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ dy,
                 float* __restrict__ dx, float* __restrict__ rstdOut, long long rows, int dim, float eps) {
    const long long row = row_of_warp();
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + row * dim;
    const float* gr = dy + row * dim;
    float* dr = dx + row * dim;
    const float r = rms_rstd(xr, dim, eps, lane);
    float gx = 0.f;
    for (int c = lane; c < dim; c += 32) gx = fmaf(gr[c] * weight[c], xr[c], gx);
    const float correction = r * r * r * ug_warp_sum(gx) / dim;
    for (int c = lane; c < dim; c += 32) dr[c] = r * gr[c] * weight[c] - correction * xr[c];
    if (rstdOut != nullptr && lane == 0) rstdOut[row] = r;
}

// ------------------------------------------------------------------------------------------------------------------
// rms_norm_bwd_weight_f32(x, dy, rstd, partialWeight, rows, dim, splits):
//   partialWeight[s·D + c] = Σ_{rows of split s} dy·x·rstd; rstd from rms_norm_fwd_f32 / rms_norm_bwd_f32.
//   Then column_sum_f32(partialWeight, dWeight, splits, D, 1).
// Launch: block (32, 8), grid (⌈D/32⌉, splits), splits = ug_red_splits(rows).
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_RED_TX* UG_RED_TY)
rms_norm_bwd_weight_f32(const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ rstd,
                        float* __restrict__ partialWeight, long long rows, int dim, int splits) {
    const int c = blockIdx.x * UG_RED_TX + threadIdx.x;
    const long long begin = ug_red_split_begin(rows, splits, blockIdx.y), end = ug_red_split_begin(rows, splits, blockIdx.y + 1);
    float acc[1] = {0.f};
    if (c < dim)
        for (long long r = begin + threadIdx.y; r < end; r += UG_RED_TY)
            acc[0] = fmaf(dy[r * dim + c] * x[r * dim + c], rstd[r], acc[0]);
    float* const out[1] = {partialWeight};
    finish_columns<1>(acc, out, (long long)blockIdx.y * dim + c, c < dim);
}

// ------------------------------------------------------------------------------------------------------------------
// layer_norm_fwd_f32(x, weight, bias, y, meanOut, rstdOut, rows, dim, eps)
//   y = (x − mean)·rstd·weight + bias (torch.nn.LayerNorm, biased variance); weight/bias may be null (no affine);
//   meanOut/rstdOut (rows) or null.
// layer_norm_modulate_fwd_f32(x, weight, bias, shift, scale, y, meanOut, rstdOut, batch, tokens, dim, eps)
//   the fused adaLN pass: y = LN(x)·(1 + scale[b]) + shift[b]; x, y (B, N, D), shift/scale (B, D); one read, one write.
//   (Backward: modulate_bwd_f32 then layer_norm_bwd_f32; modulate_bwd_params_f32 needs LN(x), which the host
//   recomputes with layer_norm_fwd_f32 or keeps.)
// Launch: block 256 (8 rows), grid ug_row_blocks(rows) (rows = B·N for the fused one), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ROW_THREADS)
layer_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
                   float* __restrict__ y, float* __restrict__ meanOut, float* __restrict__ rstdOut, long long rows, int dim,
                   float eps) {
    const long long row = row_of_warp();
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + row * dim;
    float* yr = y + row * dim;
    const float2 st = ln_stats(xr, dim, eps, lane);
    for (int c = lane; c < dim; c += 32) {
        float value = (xr[c] - st.x) * st.y;
        if (weight != nullptr) value *= weight[c];
        if (bias != nullptr) value += bias[c];
        yr[c] = value;
    }
    if (lane == 0) {
        if (meanOut != nullptr) meanOut[row] = st.x;
        if (rstdOut != nullptr) rstdOut[row] = st.y;
    }
}

extern "C" __global__ void __launch_bounds__(UG_ROW_THREADS)
layer_norm_modulate_fwd_f32(const float* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
                            const float* __restrict__ shift, const float* __restrict__ scale, float* __restrict__ y,
                            float* __restrict__ meanOut, float* __restrict__ rstdOut, int batch, long long tokens,
                            int dim, float eps) {
    const long long row = row_of_warp();
    const int lane = threadIdx.x & 31;
    if (row >= (long long)batch * tokens) return;
    const long long b = row / tokens;
    const float* xr = x + row * dim;
    const float* sh = shift + b * dim;
    const float* sc = scale + b * dim;
    float* yr = y + row * dim;
    const float2 st = ln_stats(xr, dim, eps, lane);
    for (int c = lane; c < dim; c += 32) {
        float value = (xr[c] - st.x) * st.y;
        if (weight != nullptr) value *= weight[c];
        if (bias != nullptr) value += bias[c];
        yr[c] = fmaf(value, 1.f + sc[c], sh[c]);
    }
    if (lane == 0) {
        if (meanOut != nullptr) meanOut[row] = st.x;
        if (rstdOut != nullptr) rstdOut[row] = st.y;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// layer_norm_bwd_f32(x, weight, dy, dx, meanOut, rstdOut, rows, dim, eps)
//   with g = dy·weight (dy when weight is null), x̂ = (x − mean)·rstd: dx = rstd·(g − mean(g) − x̂·mean(g·x̂));
//   meanOut/rstdOut (rows) or null: written for layer_norm_bwd_affine_f32.
// Launch: block 256 (8 rows), grid ug_row_blocks(rows), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ROW_THREADS)
layer_norm_bwd_f32(const float* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ dy,
                   float* __restrict__ dx, float* __restrict__ meanOut, float* __restrict__ rstdOut, long long rows, int dim,
                   float eps) {
    const long long row = row_of_warp();
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + row * dim;
    const float* gr = dy + row * dim;
    float* dr = dx + row * dim;
    const float2 st = ln_stats(xr, dim, eps, lane);
    float sg = 0.f, sgx = 0.f;
    for (int c = lane; c < dim; c += 32) {
        const float g = weight != nullptr ? gr[c] * weight[c] : gr[c];
        sg += g;
        sgx = fmaf(g, (xr[c] - st.x) * st.y, sgx);
    }
    const float meanG = ug_warp_sum(sg) / dim, meanGX = ug_warp_sum(sgx) / dim;
    for (int c = lane; c < dim; c += 32) {
        const float g = weight != nullptr ? gr[c] * weight[c] : gr[c];
        const float xhat = (xr[c] - st.x) * st.y;
        dr[c] = st.y * (g - meanG - xhat * meanGX);
    }
    if (lane == 0) {
        if (meanOut != nullptr) meanOut[row] = st.x;
        if (rstdOut != nullptr) rstdOut[row] = st.y;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// layer_norm_bwd_affine_f32(x, dy, mean, rstd, partialWeight, partialBias, rows, dim, splits)
//   partialWeight[s·D + c] = Σ dy·x̂, partialBias[s·D + c] = Σ dy over the rows of split s; then column_sum_f32 each.
// Launch: block (32, 8), grid (⌈D/32⌉, splits), splits = ug_red_splits(rows).
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_RED_TX* UG_RED_TY)
layer_norm_bwd_affine_f32(const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ mean,
                          const float* __restrict__ rstd, float* __restrict__ partialWeight, float* __restrict__ partialBias,
                          long long rows, int dim, int splits) {
    const int c = blockIdx.x * UG_RED_TX + threadIdx.x;
    const long long begin = ug_red_split_begin(rows, splits, blockIdx.y), end = ug_red_split_begin(rows, splits, blockIdx.y + 1);
    float acc[2] = {0.f, 0.f};
    if (c < dim)
        for (long long r = begin + threadIdx.y; r < end; r += UG_RED_TY) {
            const float g = dy[r * dim + c];
            acc[0] = fmaf(g, (x[r * dim + c] - mean[r]) * rstd[r], acc[0]);
            acc[1] += g;
        }
    float* const out[2] = {partialWeight, partialBias};
    finish_columns<2>(acc, out, (long long)blockIdx.y * dim + c, c < dim);
}

// ------------------------------------------------------------------------------------------------------------------
// modulate_fwd_f32(x, shift, scale, y, batch, tokens, dim): y = x·(1 + scale[b]) + shift[b]
// modulate_bwd_f32(scale, dy, dx, batch, tokens, dim):        dx = dy·(1 + scale[b])
//   x, y, dy, dx (B, N, D); shift, scale (B, D). Launch: block 256, grid ug_ew_blocks(B·N·D), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS)
modulate_fwd_f32(const float* __restrict__ x, const float* __restrict__ shift, const float* __restrict__ scale,
                 float* __restrict__ y, int batch, long long tokens, int dim) {
    const long long n = (long long)batch * tokens * dim, plane = tokens * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long p = (i / plane) * dim + i % dim;
        y[i] = fmaf(x[i], 1.f + scale[p], shift[p]);
    }
}

extern "C" __global__ void __launch_bounds__(UG_EW_THREADS)
modulate_bwd_f32(const float* __restrict__ scale, const float* __restrict__ dy, float* __restrict__ dx, int batch,
                 long long tokens, int dim) {
    const long long n = (long long)batch * tokens * dim, plane = tokens * dim;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long p = (i / plane) * dim + i % dim;
        dx[i] = dy[i] * (1.f + scale[p]);
    }
}

// ------------------------------------------------------------------------------------------------------------------
// modulate_bwd_params_f32(x, dy, partialShift, partialScale, batch, tokens, dim, splits)
//   partialShift[(b·splits + s)·D + c] = Σ dy, partialScale[...] = Σ dy·x over the tokens of split s of sample b;
//   then column_sum_f32(partial, dShift, splits, D, B) and the same for scale.
// Launch: block (32, 8), grid (⌈D/32⌉, splits, B), splits = ug_red_splits(N).
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_RED_TX* UG_RED_TY)
modulate_bwd_params_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partialShift,
                        float* __restrict__ partialScale, int batch, long long tokens, int dim, int splits) {
    (void)batch;
    const int c = blockIdx.x * UG_RED_TX + threadIdx.x;
    const int b = blockIdx.z;
    const long long begin = ug_red_split_begin(tokens, splits, blockIdx.y), end = ug_red_split_begin(tokens, splits, blockIdx.y + 1);
    float acc[2] = {0.f, 0.f};
    if (c < dim)
        for (long long t = begin + threadIdx.y; t < end; t += UG_RED_TY) {
            const long long i = ((long long)b * tokens + t) * dim + c;
            const float g = dy[i];
            acc[0] += g;
            acc[1] = fmaf(g, x[i], acc[1]);
        }
    float* const out[2] = {partialShift, partialScale};
    finish_columns<2>(acc, out, ((long long)b * splits + blockIdx.y) * dim + c, c < dim);
}
