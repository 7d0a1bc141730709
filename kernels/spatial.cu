// Spatial ops on channels-last video (B, T, H, W, C) (references: src/UltraGen.Ops/Reference/{DepthwiseConv2d,
// DepthwiseConv3d,BilinearResize}.cs). One thread per output element with the channel fastest, so a warp touches 32
// consecutive channels of one pixel (coalesced). Input gradients are gathers (each dx element is written once by one
// thread: no atomics); weight/bias gradients are column sums per channel (partials + column_sum_f32, deterministic).
#include "common/abi.cuh"
#include "common/launch.cuh"

namespace {

__device__ __forceinline__ long long global_thread() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_threads() { return (long long)gridDim.x * blockDim.x; }

// torch's align_corners=False source position for output index o (BilinearResizeOp.SourceIndex), in float64 as the
// reference: src = max((o + 0.5)·in/out − 0.5, 0), i0 = min(⌊src⌋, in − 1), i1 = min(i0 + 1, in − 1), λ = src − i0.
struct Tap {
    int i0;
    int i1;
    float lambda;
};
__device__ __forceinline__ Tap source_tap(int o, int in, int out) {
    double src = (o + 0.5) * ((double)in / out) - 0.5;
    if (src < 0) src = 0;
    int i0 = (int)floor(src);
    if (i0 > in - 1) i0 = in - 1;
    Tap t;
    t.i0 = i0;
    t.i1 = i0 + 1 < in ? i0 + 1 : in - 1;
    t.lambda = (float)(src - i0);
    return t;
}

// Weight of input index i in output o along one axis: (1 − λ)[i == i0] + λ[i == i1] (both when i0 == i1).
__device__ __forceinline__ float tap_weight(const Tap& t, int i) {
    return (t.i0 == i ? 1.f - t.lambda : 0.f) + (t.i1 == i ? t.lambda : 0.f);
}

// Output indices that can read input index i: src ∈ [i − 1, i + 1) ⇒ o ∈ [(i − 0.5)·out/in − 0.5, (i + 1.5)·out/in − 0.5);
// widened by one on each side and clamped (tap_weight decides exactly, so a wide range is only slower, never wrong).
__device__ __forceinline__ int2 output_range(int i, int in, int out) {
    const double r = (double)out / in;
    int lo = (int)floor((i - 0.5) * r - 0.5) - 1;
    int hi = (int)ceil((i + 1.5) * r - 0.5) + 1;
    if (lo < 0) lo = 0;
    if (hi > out - 1) hi = out - 1;
    return make_int2(lo, hi);
}

constexpr int kConv2dMaxK = 4;  // the model uses k = 2 and 4; the host rejects larger kernels

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// depthwise_conv2d_fwd_f32(x, weight, bias, y, batch, T, H, W, C, kh, kw)
//   per frame, stride = kernel, no padding: y[f, oh, ow, c] = bias[c] + Σ_ij w[c,0,i,j]·x[f, oh·kh + i, ow·kw + j, c]
//   x (B,T,H,W,C), weight (C,1,kh,kw) torch layout, bias (C) or null, y (B,T,⌊H/kh⌋,⌊W/kw⌋,C); 1 ≤ kh, kw ≤ 4
// Launch: block 256, grid ug_ew_blocks(B·T·⌊H/kh⌋·⌊W/kw⌋·C)·(any; grid-stride), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
depthwise_conv2d_fwd_f32(const float* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
                         float* __restrict__ y, int batch, int T, int H, int W, int C, int kh, int kw) {
    const int ho = H / kh, wo = W / kw;
    const long long n = (long long)batch * T * ho * wo * C;
    for (long long idx = global_thread(); idx < n; idx += grid_threads()) {
        const int c = (int)(idx % C);
        long long rest = idx / C;
        const int ow = (int)(rest % wo);
        rest /= wo;
        const int oh = (int)(rest % ho);
        const long long f = rest / ho;
        float sum = bias != nullptr ? bias[c] : 0.f;
        const float* wc = weight + (long long)c * kh * kw;
#pragma unroll
        for (int i = 0; i < kConv2dMaxK; ++i) {
            if (i >= kh) break;
#pragma unroll
            for (int j = 0; j < kConv2dMaxK; ++j) {
                if (j >= kw) break;
                sum = fmaf(wc[i * kw + j], x[((f * H + oh * kh + i) * W + ow * kw + j) * C + c], sum);
            }
        }
        y[idx] = sum;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// depthwise_conv2d_bwd_input_f32(dy, weight, dx, batch, T, H, W, C, kh, kw)
//   dx[f, ih, iw, c] = dy[f, ih/kh, iw/kw, c]·w[c,0,ih%kh,iw%kw], 0 in the dropped bottom/right remainder.
// Launch: block 256, grid ug_ew_blocks(B·T·H·W·C), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
depthwise_conv2d_bwd_input_f32(const float* __restrict__ dy, const float* __restrict__ weight, float* __restrict__ dx,
                               int batch, int T, int H, int W, int C, int kh, int kw) {
    const int ho = H / kh, wo = W / kw;
    const long long n = (long long)batch * T * H * W * C;
    for (long long idx = global_thread(); idx < n; idx += grid_threads()) {
        const int c = (int)(idx % C);
        long long rest = idx / C;
        const int iw = (int)(rest % W);
        rest /= W;
        const int ih = (int)(rest % H);
        const long long f = rest / H;
        const int oh = ih / kh, ow = iw / kw;
        float g = 0.f;
        if (oh < ho && ow < wo)
            g = dy[((f * ho + oh) * wo + ow) * C + c] * weight[((long long)c * kh + (ih - oh * kh)) * kw + (iw - ow * kw)];
        dx[idx] = g;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// depthwise_conv2d_bwd_weight_f32(x, dy, partialWeight, partialBias, batch, T, H, W, C, kh, kw, splits)
//   over output positions p (rows = B·T·⌊H/kh⌋·⌊W/kw⌋) cut into `splits` chunks:
//   partialWeight[(s·C + c)·kh·kw + i·kw + j] = Σ_p dy[p, c]·x[tap (i, j) of p, c],  partialBias[s·C + c] = Σ_p dy[p, c]
//   (partialBias may be null). Then column_sum_f32(partialWeight, dWeight, splits, C·kh·kw, 1) and
//   column_sum_f32(partialBias, dBias, splits, C, 1): the weight partial's column order is the torch layout (C,1,kh,kw).
// Launch: block (32, 8), grid (⌈C/32⌉, splits), splits = ug_red_splits(rows); static smem 17·8·32·4 B.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_RED_TX* UG_RED_TY)
depthwise_conv2d_bwd_weight_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partialWeight,
                                float* __restrict__ partialBias, int batch, int T, int H, int W, int C, int kh, int kw,
                                int splits) {
    constexpr int MAXTAPS = kConv2dMaxK * kConv2dMaxK;
    __shared__ float red[MAXTAPS + 1][UG_RED_TY][UG_RED_TX];
    const int ho = H / kh, wo = W / kw;
    const long long rows = (long long)batch * T * ho * wo;
    const int c = blockIdx.x * UG_RED_TX + threadIdx.x;
    const long long begin = ug_red_split_begin(rows, splits, blockIdx.y), end = ug_red_split_begin(rows, splits, blockIdx.y + 1);
    float acc[MAXTAPS + 1];
#pragma unroll
    for (int k = 0; k <= MAXTAPS; ++k) acc[k] = 0.f;
    if (c < C)
        for (long long p = begin + threadIdx.y; p < end; p += UG_RED_TY) {
            const int ow = (int)(p % wo);
            const long long rest = p / wo;
            const int oh = (int)(rest % ho);
            const long long f = rest / ho;
            const float g = dy[p * C + c];
            acc[MAXTAPS] += g;
#pragma unroll
            for (int i = 0; i < kConv2dMaxK; ++i) {
                if (i >= kh) break;
#pragma unroll
                for (int j = 0; j < kConv2dMaxK; ++j) {
                    if (j >= kw) break;
                    acc[i * kConv2dMaxK + j] = fmaf(g, x[((f * H + oh * kh + i) * W + ow * kw + j) * C + c], acc[i * kConv2dMaxK + j]);
                }
            }
        }
#pragma unroll
    for (int k = 0; k <= MAXTAPS; ++k) red[k][threadIdx.y][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y != 0 || c >= C) return;
    for (int k = 0; k <= MAXTAPS; ++k) {
        const int i = k / kConv2dMaxK, j = k % kConv2dMaxK;
        if (k < MAXTAPS && (i >= kh || j >= kw)) continue;
        float t = 0.f;
#pragma unroll
        for (int y = 0; y < UG_RED_TY; ++y) t += red[k][y][threadIdx.x];
        if (k == MAXTAPS) {
            if (partialBias != nullptr) partialBias[(long long)blockIdx.y * C + c] = t;
        } else {
            partialWeight[((long long)blockIdx.y * C + c) * kh * kw + i * kw + j] = t;
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// depthwise_conv3d_fwd_f32(x, weight, bias, y, batch, T, H, W, C)
//   3×3×3 depthwise, stride 1, zero padding 1 (the model's upsample_conv; the host rejects other sizes):
//   y[b,t,h,w,c] = bias[c] + Σ_{dt,dh,dw ∈ 0..2} w[c,0,dt,dh,dw]·x[b, t+dt−1, h+dh−1, w+dw−1, c]
//   x, y (B,T,H,W,C); weight (C,1,3,3,3); bias (C) or null.
// Launch: block 256, grid ug_ew_blocks(B·T·H·W·C), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
depthwise_conv3d_fwd_f32(const float* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
                         float* __restrict__ y, int batch, int T, int H, int W, int C) {
    const long long n = (long long)batch * T * H * W * C;
    for (long long idx = global_thread(); idx < n; idx += grid_threads()) {
        const int c = (int)(idx % C);
        long long rest = idx / C;
        const int w = (int)(rest % W);
        rest /= W;
        const int h = (int)(rest % H);
        rest /= H;
        const int t = (int)(rest % T);
        const long long b = rest / T;
        const float* wc = weight + (long long)c * 27;
        float sum = bias != nullptr ? bias[c] : 0.f;
#pragma unroll
        for (int dt = 0; dt < 3; ++dt) {
            const int it = t + dt - 1;
            if (it < 0 || it >= T) continue;
#pragma unroll
            for (int dh = 0; dh < 3; ++dh) {
                const int ih = h + dh - 1;
                if (ih < 0 || ih >= H) continue;
#pragma unroll
                for (int dw = 0; dw < 3; ++dw) {
                    const int iw = w + dw - 1;
                    if (iw < 0 || iw >= W) continue;
                    sum = fmaf(wc[(dt * 3 + dh) * 3 + dw], x[(((b * T + it) * H + ih) * W + iw) * C + c], sum);
                }
            }
        }
        y[idx] = sum;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// depthwise_conv3d_bwd_input_f32(dy, weight, dx, batch, T, H, W, C)
//   gather: dx[b,t,h,w,c] = Σ_{dt,dh,dw} w[c,0,dt,dh,dw]·dy[b, t−dt+1, h−dh+1, w−dw+1, c] (in range only).
// Launch: block 256, grid ug_ew_blocks(B·T·H·W·C), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
depthwise_conv3d_bwd_input_f32(const float* __restrict__ dy, const float* __restrict__ weight, float* __restrict__ dx,
                               int batch, int T, int H, int W, int C) {
    const long long n = (long long)batch * T * H * W * C;
    for (long long idx = global_thread(); idx < n; idx += grid_threads()) {
        const int c = (int)(idx % C);
        long long rest = idx / C;
        const int w = (int)(rest % W);
        rest /= W;
        const int h = (int)(rest % H);
        rest /= H;
        const int t = (int)(rest % T);
        const long long b = rest / T;
        const float* wc = weight + (long long)c * 27;
        float sum = 0.f;
#pragma unroll
        for (int dt = 0; dt < 3; ++dt) {
            const int ot = t - dt + 1;
            if (ot < 0 || ot >= T) continue;
#pragma unroll
            for (int dh = 0; dh < 3; ++dh) {
                const int oh = h - dh + 1;
                if (oh < 0 || oh >= H) continue;
#pragma unroll
                for (int dw = 0; dw < 3; ++dw) {
                    const int ow = w - dw + 1;
                    if (ow < 0 || ow >= W) continue;
                    sum = fmaf(wc[(dt * 3 + dh) * 3 + dw], dy[(((b * T + ot) * H + oh) * W + ow) * C + c], sum);
                }
            }
        }
        dx[idx] = sum;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// depthwise_conv3d_bwd_weight_f32(x, dy, partialWeight, partialBias, batch, T, H, W, C, splits)
//   over output positions p (rows = B·T·H·W) cut into `splits` chunks:
//   partialWeight[(s·C + c)·27 + tap] = Σ_p dy[p, c]·x[p + tap − (1,1,1), c] (zero outside), partialBias[s·C + c] = Σ_p dy
//   (partialBias may be null). Then column_sum_f32(partialWeight, dWeight, splits, C·27, 1), column_sum_f32(partialBias, …, C, 1).
// Launch: block (32, 8), grid (⌈C/32⌉, splits), splits = ug_red_splits(rows); static smem 28·8·32·4 B.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_RED_TX* UG_RED_TY)
depthwise_conv3d_bwd_weight_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partialWeight,
                                float* __restrict__ partialBias, int batch, int T, int H, int W, int C, int splits) {
    __shared__ float red[28][UG_RED_TY][UG_RED_TX];
    const long long rows = (long long)batch * T * H * W;
    const int c = blockIdx.x * UG_RED_TX + threadIdx.x;
    const long long begin = ug_red_split_begin(rows, splits, blockIdx.y), end = ug_red_split_begin(rows, splits, blockIdx.y + 1);
    float acc[28];
#pragma unroll
    for (int k = 0; k < 28; ++k) acc[k] = 0.f;
    if (c < C)
        for (long long p = begin + threadIdx.y; p < end; p += UG_RED_TY) {
            const int w = (int)(p % W);
            long long rest = p / W;
            const int h = (int)(rest % H);
            rest /= H;
            const int t = (int)(rest % T);
            const long long b = rest / T;
            const float g = dy[p * C + c];
            acc[27] += g;
#pragma unroll
            for (int dt = 0; dt < 3; ++dt) {
                const int it = t + dt - 1;
                if (it < 0 || it >= T) continue;
#pragma unroll
                for (int dh = 0; dh < 3; ++dh) {
                    const int ih = h + dh - 1;
                    if (ih < 0 || ih >= H) continue;
#pragma unroll
                    for (int dw = 0; dw < 3; ++dw) {
                        const int iw = w + dw - 1;
                        if (iw < 0 || iw >= W) continue;
                        acc[(dt * 3 + dh) * 3 + dw] =
                            fmaf(g, x[(((b * T + it) * H + ih) * W + iw) * C + c], acc[(dt * 3 + dh) * 3 + dw]);
                    }
                }
            }
        }
#pragma unroll
    for (int k = 0; k < 28; ++k) red[k][threadIdx.y][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y != 0 || c >= C) return;
    for (int k = 0; k < 28; ++k) {
        float t = 0.f;
#pragma unroll
        for (int y = 0; y < UG_RED_TY; ++y) t += red[k][y][threadIdx.x];
        if (k < 27)
            partialWeight[((long long)blockIdx.y * C + c) * 27 + k] = t;
        else if (partialBias != nullptr)
            partialBias[(long long)blockIdx.y * C + c] = t;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// bilinear_resize_fwd_f32(x, y, frames, inH, inW, outH, outW, C)
//   per frame, torch interpolate(mode='bilinear', align_corners=False, antialias=False):
//   y = (1−λh)((1−λw)x[h0,w0] + λw·x[h0,w1]) + λh((1−λw)x[h1,w0] + λw·x[h1,w1]); frames = B·T.
// Launch: block 256, grid ug_ew_blocks(frames·outH·outW·C), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
bilinear_resize_fwd_f32(const float* __restrict__ x, float* __restrict__ y, int frames, int inH, int inW, int outH, int outW,
                        int C) {
    const long long n = (long long)frames * outH * outW * C;
    for (long long idx = global_thread(); idx < n; idx += grid_threads()) {
        const int c = (int)(idx % C);
        long long rest = idx / C;
        const int ow = (int)(rest % outW);
        rest /= outW;
        const int oh = (int)(rest % outH);
        const long long f = rest / outH;
        const Tap th = source_tap(oh, inH, outH), tw = source_tap(ow, inW, outW);
        const float* xf = x + f * inH * inW * C + c;
        const float top = (1.f - tw.lambda) * xf[((long long)th.i0 * inW + tw.i0) * C] + tw.lambda * xf[((long long)th.i0 * inW + tw.i1) * C];
        const float bot = (1.f - tw.lambda) * xf[((long long)th.i1 * inW + tw.i0) * C] + tw.lambda * xf[((long long)th.i1 * inW + tw.i1) * C];
        y[idx] = (1.f - th.lambda) * top + th.lambda * bot;
    }
}

// ------------------------------------------------------------------------------------------------------------------
// bilinear_resize_bwd_f32(dy, dx, frames, inH, inW, outH, outW, C)
//   the transpose of the forward, as a gather: dx[f, ih, iw, c] = Σ_{oh, ow} wh(oh, ih)·ww(ow, iw)·dy[f, oh, ow, c] over
//   the few output rows/cols that read ih / iw (output_range); every dx element written once.
// Launch: block 256, grid ug_ew_blocks(frames·inH·inW·C), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
bilinear_resize_bwd_f32(const float* __restrict__ dy, float* __restrict__ dx, int frames, int inH, int inW, int outH, int outW,
                        int C) {
    const long long n = (long long)frames * inH * inW * C;
    for (long long idx = global_thread(); idx < n; idx += grid_threads()) {
        const int c = (int)(idx % C);
        long long rest = idx / C;
        const int iw = (int)(rest % inW);
        rest /= inW;
        const int ih = (int)(rest % inH);
        const long long f = rest / inH;
        const int2 rh = output_range(ih, inH, outH), rw = output_range(iw, inW, outW);
        const float* gf = dy + f * outH * outW * C + c;
        float sum = 0.f;
        for (int oh = rh.x; oh <= rh.y; ++oh) {
            const float wh = tap_weight(source_tap(oh, inH, outH), ih);
            if (wh == 0.f) continue;
            float row = 0.f;
            for (int ow = rw.x; ow <= rw.y; ++ow) {
                const float ww = tap_weight(source_tap(ow, inW, outW), iw);
                if (ww != 0.f) row = fmaf(ww, gf[((long long)oh * outW + ow) * C], row);
            }
            sum = fmaf(wh, row, sum);
        }
        dx[idx] = sum;
    }
}
