// Wan's 3-D RoPE split (spec §1.5; src/UltraGen.Ops/Reference/Rope3d.cs) for a head dim d (even, ≥ 6):
//   real dims: time dT = d − 4·⌊d/6⌋, height dH = 2·⌊d/6⌋, width dW = 2·⌊d/6⌋   (128 → 44/42/42, 64 → 24/20/20);
//   complex pair p = (x[2p], x[2p+1]); pairs [0, dT/2) rotate by time, the next dH/2 by row, the last dW/2 by col;
//   inside an axis of dA real dims, its j-th pair has ω_j = θ^(−2j/dA) and is multiplied by e^{i·pos·ω_j}.
// The kernels read cos/sin from the table of RopeParams (abi.cuh); these helpers define its layout and build it.
#pragma once
#include "abi.cuh"

#ifndef __CUDACC__
#include <cmath>
#endif

struct UgRopeSplit {
    int timeDims;
    int heightDims;
    int widthDims;
};

UG_HD UgRopeSplit ug_rope_split(int headDim) {
    const int spatial = 2 * (headDim / 6);
    UgRopeSplit s;
    s.timeDims = headDim - 2 * spatial;
    s.heightDims = spatial;
    s.widthDims = spatial;
    return s;
}

enum UgRopeAxis { UG_ROPE_TIME = 0, UG_ROPE_HEIGHT = 1, UG_ROPE_WIDTH = 2 };

// Axis of complex pair `pair` (0 ≤ pair < headDim/2).
UG_HD int ug_rope_axis(int pair, int headDim) {
    const UgRopeSplit s = ug_rope_split(headDim);
    if (pair < s.timeDims / 2) return UG_ROPE_TIME;
    if (pair < (s.timeDims + s.heightDims) / 2) return UG_ROPE_HEIGHT;
    return UG_ROPE_WIDTH;
}

// Index j of `pair` inside its axis (the exponent of ω_j).
UG_HD int ug_rope_pair_in_axis(int pair, int headDim) {
    const UgRopeSplit s = ug_rope_split(headDim);
    if (pair < s.timeDims / 2) return pair;
    if (pair < (s.timeDims + s.heightDims) / 2) return pair - s.timeDims / 2;
    return pair - (s.timeDims + s.heightDims) / 2;
}

// Real dims of the axis of `pair`.
UG_HD int ug_rope_axis_dims(int pair, int headDim) {
    const UgRopeSplit s = ug_rope_split(headDim);
    const int axis = ug_rope_axis(pair, headDim);
    return axis == UG_ROPE_TIME ? s.timeDims : (axis == UG_ROPE_HEIGHT ? s.heightDims : s.widthDims);
}

// The coordinate that rotates `pair`: t, the window-local row or the window-local col.
UG_HD int ug_rope_position(int pair, int headDim, int t, int row, int col) {
    const int axis = ug_rope_axis(pair, headDim);
    return axis == UG_ROPE_TIME ? t : (axis == UG_ROPE_HEIGHT ? row : col);
}

// ω of `pair` in float64, as Wan computes it: 1 / θ^(2j/dA).
UG_HD double ug_rope_inv_freq(int pair, int headDim, double theta) {
    const int j = ug_rope_pair_in_axis(pair, headDim);
    const int dims = ug_rope_axis_dims(pair, headDim);
    return 1.0 / pow(theta, (double)(2 * j) / dims);
}

// Table entries needed so every window-local coordinate has a row: max(T, ⌈H/n⌉, ⌈W/n⌉).
UG_HD int ug_rope_min_positions(const WindowLayoutParams& l) {
    const int rows = (l.H + l.windowsPerSide - 1) / l.windowsPerSide;
    const int cols = (l.W + l.windowsPerSide - 1) / l.windowsPerSide;
    int m = l.T > rows ? l.T : rows;
    return m > cols ? m : cols;
}

// Offset (in floats) of the (cos, sin) entry for (pos, pair) in RopeParams::cosSin.
UG_HD long long ug_rope_table_offset(int pos, int pair, int headDim) {
    return 2 * ((long long)pos * (headDim / 2) + pair);
}

// (y0 + i·y1) = (x0 + i·x1)·(cos + i·sin): the forward rotation. The inverse (for gradients) passes −sin.
UG_HD void ug_rope_rotate(float x0, float x1, float c, float s, float& y0, float& y1) {
    y0 = x0 * c - x1 * s;
    y1 = x0 * s + x1 * c;
}
