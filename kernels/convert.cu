// Storage conversions: f32 ↔ bf16 / f16, round to nearest even, NaN kept (cvt.rn.*; see common/bf16.cuh, whose portable
// twin ug_f32_to_bf16_bits is checked on the host). Widening is exact.
// Launch (all four): block 256, grid ug_ew_blocks(n) (grid-stride loop, any grid covers n), no smem.
//   f32_to_bf16(const float* x, bf16* y, long long n)   f32_to_f16(const float* x, f16* y, long long n)
//   bf16_to_f32(const bf16* x, float* y, long long n)   f16_to_f32(const f16* x, float* y, long long n)
#include "common/abi.cuh"
#include "common/bf16.cuh"
#include "common/launch.cuh"

namespace {
template <typename Src, typename Dst>
__device__ __forceinline__ void convert(const Src* __restrict__ x, Dst* __restrict__ y, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = ug_from_f32<Dst>(ug_to_f32(x[i]));
}
}  // namespace

extern "C" __global__ void __launch_bounds__(UG_EW_THREADS) f32_to_bf16(const float* __restrict__ x, ug_bf16* __restrict__ y, long long n) {
    convert(x, y, n);
}
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS) bf16_to_f32(const ug_bf16* __restrict__ x, float* __restrict__ y, long long n) {
    convert(x, y, n);
}
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS) f32_to_f16(const float* __restrict__ x, ug_f16* __restrict__ y, long long n) {
    convert(x, y, n);
}
extern "C" __global__ void __launch_bounds__(UG_EW_THREADS) f16_to_f32(const ug_f16* __restrict__ x, float* __restrict__ y, long long n) {
    convert(x, y, n);
}
