// Kernels for the emulator's own tests (test_emulator.cpp), compiled like kernels/**/*.cu (cuda_emu.h force-included).
// Each exercises one emulated operation through the same wrappers the project's kernels use (common/tiles.cuh), or one
// rule the emulator must enforce.
#include <stdint.h>

#include "common/tiles.cuh"
#include "register.h"

namespace {
__device__ __forceinline__ uint32_t pack(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }
}  // namespace

// D = A·B + C for one m16n8k16 tile; fragments gathered straight from global memory by the PTX ISA's layout
// (g = lane / 4, q = lane % 4). a: 16×16 row-major bf16 bits, b: 16×8 row-major (k, n), c, d: 16×8 row-major f32.
extern "C" __global__ void emu_test_mma(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
    const int lane = threadIdx.x, g = lane >> 2, q = lane & 3;
    const uint32_t af[4] = {pack(a[g * 16 + 2 * q], a[g * 16 + 2 * q + 1]), pack(a[(g + 8) * 16 + 2 * q], a[(g + 8) * 16 + 2 * q + 1]),
                            pack(a[g * 16 + 2 * q + 8], a[g * 16 + 2 * q + 9]),
                            pack(a[(g + 8) * 16 + 2 * q + 8], a[(g + 8) * 16 + 2 * q + 9])};
    const uint32_t b0 = pack(b[(2 * q) * 8 + g], b[(2 * q + 1) * 8 + g]);
    const uint32_t b1 = pack(b[(2 * q + 8) * 8 + g], b[(2 * q + 9) * 8 + g]);
    float acc[4] = {c[g * 8 + 2 * q], c[g * 8 + 2 * q + 1], c[(g + 8) * 8 + 2 * q], c[(g + 8) * 8 + 2 * q + 1]};
    ug_mma_bf16(acc, af, b0, b1);
    d[g * 8 + 2 * q] = acc[0];
    d[g * 8 + 2 * q + 1] = acc[1];
    d[(g + 8) * 8 + 2 * q] = acc[2];
    d[(g + 8) * 8 + 2 * q + 1] = acc[3];
}

// Four 8×8 b16 matrices (row-major, matrix i at m + 64 i) through shared memory and ldmatrix.x4, plain and .trans:
// lane l gives row l % 8 of matrix l / 8. out, outT: 32 lanes × 4 registers.
extern "C" __global__ void emu_test_ldmatrix(const uint16_t* m, uint32_t* out, uint32_t* outT) {
    UG_DYNAMIC_SHARED(uint16_t, s);
    const int lane = threadIdx.x;
    for (int i = lane; i < 256; i += 32) s[i] = m[i];
    __syncwarp();
    const ug_bf16* row = reinterpret_cast<const ug_bf16*>(s + (lane / 8) * 64 + (lane % 8) * 8);
    uint32_t r[4], t[4];
    ug_ldmatrix_x4(r, row);
    ug_ldmatrix_x4_trans(t, row);
    for (int i = 0; i < 4; ++i) {
        out[lane * 4 + i] = r[i];
        outT[lane * 4 + i] = t[i];
    }
}

// out[3·lane + j] = the value of lane (lane ^ mask_j) for masks 1, 2, 16, and a warp sum.
extern "C" __global__ void emu_test_shuffle(int* out, float* sums) {
    const int lane = threadIdx.x & 31;
    const int value = 1000 * (int)(threadIdx.x / 32) + lane;
    out[3 * threadIdx.x + 0] = __shfl_xor_sync(0xffffffffu, value, 1);
    out[3 * threadIdx.x + 1] = __shfl_xor_sync(0xffffffffu, value, 2);
    out[3 * threadIdx.x + 2] = __shfl_xor_sync(0xffffffffu, value, 16);
    sums[threadIdx.x] = ug_warp_sum((float)lane);
}

// Each thread writes its slot, then (after the barrier) reads its neighbour's: needs __syncthreads across warps.
extern "C" __global__ void emu_test_barrier(int* out) {
    UG_DYNAMIC_SHARED(int, s);
    const int t = threadIdx.x, n = blockDim.x;
    s[t] = 7 * t + (int)blockIdx.x;
    __syncthreads();
    out[blockIdx.x * n + t] = s[(t + 1) % n];
}

// A race: every thread writes s[0] in the same barrier interval; which value survives depends on the schedule.
extern "C" __global__ void emu_test_race(int* out) {
    UG_DYNAMIC_SHARED(int, s);
    s[0] = threadIdx.x;
    __syncthreads();
    if (threadIdx.x == 0) out[0] = s[0];
}

// A race between warps that round-robin scheduling hides: warp 0 overwrites s[0] after one warp-wide step, warp 1 reads
// it after three, with no barrier between. Resumed once per round, warp 0's write always comes first (reads 2); a GPU
// may run warp 1 ahead (reads 1), which the greedy-reverse schedule does.
extern "C" __global__ void emu_test_warp_skew(int* out) {
    UG_DYNAMIC_SHARED(int, s);
    if (threadIdx.x == 0) s[0] = 1;
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int x = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    if (warp == 0) {
        if (lane == 0) s[0] = 2 + 0 * x;
    } else {
        x = __shfl_xor_sync(0xffffffffu, x, 1);
        x = __shfl_xor_sync(0xffffffffu, x, 1);
        if (lane == 0) out[0] = s[0] + 0 * x;
    }
}

// cp.async of 16 bytes; the shared words read before cp.async.wait_group (poisoned) and after it (the data).
extern "C" __global__ void emu_test_cp_async(const float* src, float* before, float* after, int zeroFill) {
    UG_DYNAMIC_SHARED(float, s);
    ug_cp_async16(s, src, zeroFill == 0);
    ug_cp_async_commit();
    for (int i = 0; i < 4; ++i) before[i] = s[i];
    ug_cp_async_wait<0>();
    for (int i = 0; i < 4; ++i) after[i] = s[i];
}

// Faults the emulator must report as launch failures.
extern "C" __global__ void emu_test_misaligned_ldmatrix() {
    UG_DYNAMIC_SHARED(uint16_t, s);
    uint32_t r[4];
    ug_ldmatrix_x4(r, reinterpret_cast<const ug_bf16*>(s + 1 + 8 * (threadIdx.x % 8)));
}
extern "C" __global__ void emu_test_ldmatrix_outside_shared() {
    UG_DYNAMIC_SHARED(uint16_t, s);
    uint32_t r[4];
    ug_ldmatrix_x4(r, reinterpret_cast<const ug_bf16*>(s + 8 * (threadIdx.x % 8) + 64));  // 128 bytes given, rows past 64
}
extern "C" __global__ void emu_test_deadlock() {
    if (threadIdx.x == 0)
        __syncwarp();
    else
        __syncthreads();
}
extern "C" __global__ void emu_test_cp_async_bad_source(const float* src) {
    UG_DYNAMIC_SHARED(float, s);
    ug_cp_async16(s, src + 4, true);  // src is a 16-byte allocation: 16 bytes past its end
    ug_cp_async_commit();
    ug_cp_async_wait<0>();
}

// Writes one element past the end of a buffer of n floats (the emulator's guard page must stop it).
extern "C" __global__ void emu_test_overrun(float* p, int n) {
    if (threadIdx.x == 0) p[n] = 1.f;
}

UG_EMU_REGISTER(emu_test_overrun)
UG_EMU_REGISTER(emu_test_mma)
UG_EMU_REGISTER(emu_test_ldmatrix)
UG_EMU_REGISTER(emu_test_shuffle)
UG_EMU_REGISTER(emu_test_barrier)
UG_EMU_REGISTER(emu_test_race)
UG_EMU_REGISTER(emu_test_warp_skew)
UG_EMU_REGISTER(emu_test_cp_async)
UG_EMU_REGISTER(emu_test_misaligned_ldmatrix)
UG_EMU_REGISTER(emu_test_ldmatrix_outside_shared)
UG_EMU_REGISTER(emu_test_deadlock)
UG_EMU_REGISTER(emu_test_cp_async_bad_source)
