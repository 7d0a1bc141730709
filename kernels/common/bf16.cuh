// bf16 / f16 load, store and conversion helpers. All float → half-width conversions round to nearest even and keep NaN
// (a NaN stays a NaN; its payload may become the canonical quiet NaN).
//  * ug_f32_to_bf16_bits / ug_bf16_bits_to_f32: portable bit-level versions (host tests check them; no CUDA needed).
//  * device: cvt.rn.bf16(x2).f32 / cvt.rn.f16.f32 through cuda_bf16.h / cuda_fp16.h (single instructions on sm_80+).
#pragma once
#include "abi.cuh"
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

UG_HD uint32_t ug_f32_bits(float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}

UG_HD float ug_bits_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

// Round to nearest even; NaN → quiet NaN with the sign kept (0x7FC0 | sign); ±inf and overflow to ±inf as IEEE does.
UG_HD uint16_t ug_f32_to_bf16_bits(float x) {
    const uint32_t u = ug_f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(((u >> 16) & 0x8000u) | 0x7FC0u);
    const uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(rounded >> 16);
}

UG_HD float ug_bf16_bits_to_f32(uint16_t b) { return ug_bits_f32((uint32_t)b << 16); }

#ifdef __CUDACC__
typedef __nv_bfloat16 ug_bf16;
typedef __nv_bfloat162 ug_bf16x2;
typedef __half ug_f16;

__device__ __forceinline__ float ug_to_f32(ug_bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ug_to_f32(ug_f16 x) { return __half2float(x); }
__device__ __forceinline__ float ug_to_f32(float x) { return x; }

__device__ __forceinline__ ug_bf16 ug_f32_to_bf16(float x) { return __float2bfloat16_rn(x); }
__device__ __forceinline__ ug_f16 ug_f32_to_f16(float x) { return __float2half_rn(x); }

// Two floats → one 32-bit register holding (lo, hi) as bf16, lo in the low half: the operand layout of mma.sync.
__device__ __forceinline__ uint32_t ug_pack_bf16x2(float lo, float hi) {
    const ug_bf16x2 v = __floats2bfloat162_rn(lo, hi);
    uint32_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

__device__ __forceinline__ float2 ug_unpack_bf16x2(uint32_t packed) {
    ug_bf16x2 v;
    memcpy(&v, &packed, sizeof v);
    return __bfloat1622float2(v);
}

// Storage conversion used by templated kernels: store a float as T.
template <typename T> __device__ __forceinline__ T ug_from_f32(float x);
template <> __device__ __forceinline__ float ug_from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ ug_bf16 ug_from_f32<ug_bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ ug_f16 ug_from_f32<ug_f16>(float x) { return __float2half_rn(x); }
#endif
