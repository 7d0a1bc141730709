// Plain-old-data structs passed by value from the C# host to the kernels. Layouts must match the
// [StructLayout(LayoutKind.Sequential)] mirrors in src/UltraGen.Cuda/Launchers/Abi.cs field for field.
#pragma once

#ifdef __CUDACC__
#define UG_HD __host__ __device__ __forceinline__
#else
#define UG_HD inline
#endif

// A token grid (T, H, W) split into windowsPerSide × windowsPerSide spatial windows that span all T frames.
// Window row r covers rows [floor(r·H/n), floor((r+1)·H/n)) — the same formula for divisible and ragged layouts
// (src/UltraGen.Core/Layout/WindowLayout.cs).
struct WindowLayoutParams {
    int T;
    int H;
    int W;
    int windowsPerSide;
};

// Window-local 3-D RoPE (Wan's split): enabled != 0 applies it; invFreq points to headDim/2 floats, entry j being the
// inverse frequency of complex pair j (time pairs first, then height, then width); the axis of pair j is derived from
// headDim by ug_rope_axis().
struct RopeParams {
    int enabled;
    const float* invFreq;
};
