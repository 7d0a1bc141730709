// Index math of patchify / unpatchify (src/UltraGen.Ops/Reference/PatchLayout.cs, TokenElementIndex): a video
// (B, C, T·pt, H·ph, W·pw) cut into the T·H·W tokens of the grid (frame-major), each of C·pt·ph·pw features in
// (c, p, q, r) order (c slowest) or, with channelsLast, (p, q, r, c) order (c fastest). Both maps are 64-bit.
// Compiles as plain C++ too (kernels/tests/test_patch_layout.cpp).
#pragma once
#include "abi.cuh"

// Not an ABI struct: the kernels take the fields as plain ints and build this locally.
struct UgPatch {
    int batch;
    int channels;
    int T, H, W;        // token grid
    int pt, ph, pw;     // patch
    int channelsLast;   // 0: features (c, p, q, r); 1: (p, q, r, c)
};

UG_HD int ug_patch_volume(const UgPatch& l) { return l.pt * l.ph * l.pw; }

UG_HD long long ug_patch_features(const UgPatch& l) { return (long long)l.channels * ug_patch_volume(l); }

// Elements of either tensor: B·T·H·W·C·pt·ph·pw.
UG_HD long long ug_patch_elements(const UgPatch& l) {
    return (long long)l.batch * l.T * l.H * l.W * ug_patch_features(l);
}

// Token-tensor index of video element v (row-major (B, C, T·pt, H·ph, W·pw)).
UG_HD long long ug_patch_token_index(const UgPatch& l, long long v) {
    const int width = l.W * l.pw, height = l.H * l.ph, depth = l.T * l.pt;
    const int x = (int)(v % width);
    long long rest = v / width;
    const int y = (int)(rest % height);
    rest /= height;
    const int z = (int)(rest % depth);
    rest /= depth;
    const int c = (int)(rest % l.channels);
    const long long b = rest / l.channels;
    const long long token = ((b * l.T + z / l.pt) * l.H + y / l.ph) * l.W + x / l.pw;
    const int offset = ((z % l.pt) * l.ph + y % l.ph) * l.pw + x % l.pw;
    const long long feature = l.channelsLast ? (long long)offset * l.channels + c : (long long)c * ug_patch_volume(l) + offset;
    return token * ug_patch_features(l) + feature;
}

// Video index of token-tensor element i (row-major (B, T·H·W, C·pt·ph·pw)): the inverse of ug_patch_token_index.
UG_HD long long ug_patch_video_index(const UgPatch& l, long long i) {
    const long long features = ug_patch_features(l);
    const long long token = i / features;
    const int feature = (int)(i % features), volume = ug_patch_volume(l);
    const int c = l.channelsLast ? feature % l.channels : feature / volume;
    const int offset = l.channelsLast ? feature / l.channels : feature % volume;
    const int r = offset % l.pw, q = offset / l.pw % l.ph, p = offset / l.pw / l.ph;
    const int w = (int)(token % l.W), h = (int)(token / l.W % l.H), f = (int)(token / l.W / l.H % l.T);
    const long long b = token / l.W / l.H / l.T;
    return (((b * l.channels + c) * (l.T * l.pt) + f * l.pt + p) * (l.H * l.ph) + h * l.ph + q) * (long long)(l.W * l.pw) + w * l.pw + r;
}
