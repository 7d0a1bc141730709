// patchify / unpatchify (references: src/UltraGen.Ops/Reference/{Patchify,Unpatchify,PatchLayout}.cs): pure permutations
// between a video (B, C, T·pt, H·ph, W·pw) and its tokens (B, T·H·W, C·pt·ph·pw), index math in common/patch_layout.cuh.
// Each thread owns destination elements (grid-stride; consecutive threads write consecutive addresses) and gathers its
// source through the inverse map; the reads are strided by at most pw (or C in channels-last order), so they stay in a
// few cache lines per warp. Each op is the other's backward.
// Launch: block 256 (UG_EW_THREADS), grid ug_ew_blocks(n) with n = B·T·H·W·C·pt·ph·pw, no smem.
#include "common/abi.cuh"
#include "common/launch.cuh"
#include "common/patch_layout.cuh"

namespace {

__device__ __forceinline__ UgPatch make_patch(int batch, int channels, int T, int H, int W, int pt, int ph, int pw, int channelsLast) {
    UgPatch l;
    l.batch = batch;
    l.channels = channels;
    l.T = T;
    l.H = H;
    l.W = W;
    l.pt = pt;
    l.ph = ph;
    l.pw = pw;
    l.channelsLast = channelsLast;
    return l;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// patchify_f32(video, tokens, batch, channels, T, H, W, pt, ph, pw, channelsLast)
//   tokens[i] = video[ug_patch_video_index(i)]; (T, H, W) is the token grid (the video is T·pt × H·ph × W·pw).
// unpatchify_f32(tokens, video, batch, channels, T, H, W, pt, ph, pw, channelsLast)
//   video[v] = tokens[ug_patch_token_index(v)].
// channelsLast: 0 = features (c, p, q, r), 1 = (p, q, r, c). Launch: block 256, grid ug_ew_blocks(n), no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS)
patchify_f32(const float* __restrict__ video, float* __restrict__ tokens, int batch, int channels, int T, int H, int W,
             int pt, int ph, int pw, int channelsLast) {
    const UgPatch l = make_patch(batch, channels, T, H, W, pt, ph, pw, channelsLast);
    const long long n = ug_patch_elements(l);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        tokens[i] = video[ug_patch_video_index(l, i)];
}

extern "C" __global__ void __launch_bounds__(UG_EW_THREADS)
unpatchify_f32(const float* __restrict__ tokens, float* __restrict__ video, int batch, int channels, int T, int H, int W,
               int pt, int ph, int pw, int channelsLast) {
    const UgPatch l = make_patch(batch, channels, T, H, W, pt, ph, pw, channelsLast);
    const long long n = ug_patch_elements(l);
    for (long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x; v < n; v += (long long)gridDim.x * blockDim.x)
        video[v] = tokens[ug_patch_token_index(l, v)];
}
