// Plain-old-data structs passed by value from the C# host to the kernels. Layouts must match the
// [StructLayout(LayoutKind.Sequential)] mirrors in src/UltraGen.Cuda/Launchers/Abi.cs field for field.
// Every header under kernels/common/ also compiles as plain C++ (g++, no CUDA): UG_HD is then `inline` and the
// host tests in kernels/tests/ exercise the same index math the kernels run.
#pragma once

#ifdef __CUDACC__
#define UG_HD __host__ __device__ __forceinline__
#else
#define UG_HD inline
#endif

// The block's dynamic shared memory as `type name[]` (the emulator build has no extern __shared__; it hands out the
// block's buffer instead).
#ifdef UG_CUDA_EMULATOR
#define UG_DYNAMIC_SHARED(type, name) type* const name = static_cast<type*>(ug_emu::dynamic_shared())
#else
#define UG_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

// A token grid (T, H, W) split into windowsPerSide × windowsPerSide spatial windows that span all T frames.
// Window row r covers rows [floor(r·H/n), floor((r+1)·H/n)) — the same formula for divisible and ragged layouts
// (src/UltraGen.Core/Layout/WindowLayout.cs). n = 1 is full attention over the grid.
// C# mirror: struct { int T; int H; int W; int WindowsPerSide; }   (16 bytes, no padding)
struct WindowLayoutParams {
    int T;
    int H;
    int W;
    int windowsPerSide;
};

// Window-local 3-D RoPE (Wan's split, spec §1.5) as a cos/sin table built once per (headDim, theta, positions):
//   cosSin[2·(pos·(headDim/2) + pair) + 0] = cos(pos·ω_pair),  [... + 1] = sin(pos·ω_pair)
// for pos in [0, positions) and pair in [0, headDim/2), ω_pair = θ^(−2j/d_axis) with j the pair's index inside its axis
// (rope.cuh: ug_rope_axis / ug_rope_pair_in_axis). The host computes it in float64 and rounds to float (the reference
// rotates in float64; the only deviation is that rounding), or launches window_attention_rope_table.
// positions must be ≥ max(T, ⌈H/n⌉, ⌈W/n⌉) (ug_rope_min_positions); a kernel never reads past it for valid layouts.
// enabled == 0: no rotation, cosSin may be null.
// C# mirror: struct { int Enabled; int Positions; IntPtr CosSin; }   (16 bytes, pointer at offset 8, no padding)
struct RopeParams {
    int enabled;
    int positions;
    const float* cosSin;
};
