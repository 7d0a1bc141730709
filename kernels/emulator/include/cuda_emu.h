// The CUDA dialect the kernels use, for a host C++ compiler: force-included (-include cuda_emu.h) when kernels/**/*.cu
// are compiled into the emulated driver (kernels/emulator/README.md). Every CUDA thread of a block runs as a fiber on one
// host thread; __syncthreads, __syncwarp, shuffles, ldmatrix, mma.sync and cp.async are implemented by the runtime
// (runtime.cpp) with the semantics of the PTX ISA, and check what the hardware requires (alignment, shared-memory bounds,
// every lane of the warp present). Nothing here is used by the nvcc build.
#pragma once
#define __CUDACC__ 1
#define __CUDA_ARCH__ 800
#define UG_CUDA_EMULATOR 1

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __constant__ static
#define __launch_bounds__(...)
// One instance per host thread = per block being run (the fibers of a block share their host thread).
#define __shared__ static thread_local

struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };

inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

namespace ug_emu {
// What a fiber (one CUDA thread) sees of itself and its block.
struct ThreadView {
    uint3 threadIndex;
    uint3 blockIndex;
    dim3 blockSize;
    dim3 gridSize;
};
extern thread_local ThreadView* t_view;

void syncthreads();
void syncwarp(unsigned mask);
// Exchanges 8 bytes with lane (own lane ^ laneMask) of the same warp; every lane of the warp must take part.
uint64_t shfl_xor64(unsigned mask, uint64_t value, int laneMask, int width);
void ldmatrix_x4(uint32_t (&r)[4], const void* rowAddress, bool transpose);
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
void cp_async16(void* sharedDst, const void* globalSrc, bool valid);
void cp_async_commit();
void cp_async_wait(int pendingGroups);
void* dynamic_shared();
}  // namespace ug_emu

#define threadIdx (ug_emu::t_view->threadIndex)
#define blockIdx (ug_emu::t_view->blockIndex)
#define blockDim (ug_emu::t_view->blockSize)
#define gridDim (ug_emu::t_view->gridSize)

inline void __syncthreads() { ug_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ug_emu::syncwarp(mask); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int laneMask, int width = 32) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    bits = ug_emu::shfl_xor64(mask, bits, laneMask, width);
    T result;
    std::memcpy(&result, &bits, sizeof(T));
    return result;
}

template <typename T> inline T __ldg(const T* p) { return *p; }

inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

