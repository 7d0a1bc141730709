// Window math of src/UltraGen.Core/Layout/WindowLayout.cs, line for line, for kernels and host tests.
//   window g = windowRow·n + windowCol (row slower);
//   window row r spans grid rows [⌊r·H/n⌋, ⌊(r+1)·H/n⌋), window col c spans cols [⌊c·W/n⌋, ⌊(c+1)·W/n⌋);
//   i-th token of a window: i = (t·rowCount + localRow)·colCount + localCol (localCol fastest);
//   global token index = (t·H + rowStart + localRow)·W + colStart + localCol   (frame-major (t, row, col)).
// Products that can exceed int (k·size, the global token index, the element offset) are 64-bit.
// No argument checking here: the host validates layouts (WindowLayout.Ragged/Divisible) before launching.
#pragma once
#include "abi.cuh"

struct UgRange {
    int start;
    int length;
};

struct UgWindowBounds {
    int rowStart;
    int rowCount;
    int colStart;
    int colCount;
};

struct UgLocalCoord {
    int t;
    int row;
    int col;
};

// [⌊k·size/n⌋, ⌊(k+1)·size/n⌋) as (start, length).
UG_HD UgRange ug_split(int size, int n, int k) {
    const int start = (int)((long long)k * size / n);
    const int end = (int)((long long)(k + 1) * size / n);
    UgRange r;
    r.start = start;
    r.length = end - start;
    return r;
}

// The multiple of n nearest to x, the lower one on a tie, n where that would be 0 (WindowLayout.ClosestDivisible; the
// reference's closest_divisible): the resized side of the checkpoint-compatible mode (68 → 70 for n = 5).
UG_HD int ug_closest_divisible(int x, int n) {
    const int lower = x / n * n;
    const int below = x - lower, above = n - below;
    const long long result = below <= above ? lower : (long long)lower + n;
    return result == 0 ? n : (int)result;
}

UG_HD int ug_window_count(const WindowLayoutParams& l) { return l.windowsPerSide * l.windowsPerSide; }

UG_HD int ug_max_window_rows(const WindowLayoutParams& l) { return (l.H + l.windowsPerSide - 1) / l.windowsPerSide; }

UG_HD int ug_max_window_cols(const WindowLayoutParams& l) { return (l.W + l.windowsPerSide - 1) / l.windowsPerSide; }

// T·⌈H/n⌉·⌈W/n⌉; the host checks it fits an int (WindowLayout's constructor does).
UG_HD long long ug_max_tokens_in_window(const WindowLayoutParams& l) {
    return (long long)l.T * ug_max_window_rows(l) * ug_max_window_cols(l);
}

// T·H·W: tokens per sample.
UG_HD long long ug_tokens_per_sample(const WindowLayoutParams& l) { return (long long)l.T * l.H * l.W; }

UG_HD UgWindowBounds ug_window_bounds(const WindowLayoutParams& l, int window) {
    const int windowRow = window / l.windowsPerSide;
    const int windowCol = window - windowRow * l.windowsPerSide;
    const UgRange rows = ug_split(l.H, l.windowsPerSide, windowRow);
    const UgRange cols = ug_split(l.W, l.windowsPerSide, windowCol);
    UgWindowBounds b;
    b.rowStart = rows.start;
    b.rowCount = rows.length;
    b.colStart = cols.start;
    b.colCount = cols.length;
    return b;
}

UG_HD int ug_tokens_in_window(const WindowLayoutParams& l, const UgWindowBounds& b) {
    return l.T * b.rowCount * b.colCount;
}

UG_HD int ug_tokens_in_window(const WindowLayoutParams& l, int window) {
    return ug_tokens_in_window(l, ug_window_bounds(l, window));
}

// Window-local (t, row, col) of the i-th token: the RoPE coordinates (every window starts at (0, 0, 0)).
UG_HD UgLocalCoord ug_local_coord(const UgWindowBounds& b, int i) {
    const int frameTokens = b.rowCount * b.colCount;
    const int t = i / frameTokens;
    const int inFrame = i - t * frameTokens;
    const int localRow = inFrame / b.colCount;
    UgLocalCoord c;
    c.t = t;
    c.row = localRow;
    c.col = inFrame - localRow * b.colCount;
    return c;
}

// Global frame-major token index of the token at window-local coordinate c.
UG_HD long long ug_token_index(const WindowLayoutParams& l, const UgWindowBounds& b, const UgLocalCoord& c) {
    return ((long long)c.t * l.H + b.rowStart + c.row) * l.W + b.colStart + c.col;
}

// Global frame-major token index of the i-th token of the window with bounds b.
UG_HD long long ug_token_index(const WindowLayoutParams& l, const UgWindowBounds& b, int i) {
    return ug_token_index(l, b, ug_local_coord(b, i));
}

// Inverse map, for tests and scatter kernels: which window holds global token `token`, and its index inside it.
// The window row of grid row y is the largest r with ⌊r·H/n⌋ ≤ y. The estimate k = ⌊y·n/H⌋ satisfies ⌊k·H/n⌋ ≤ y (it is
// never too large); the loops step it to the exact answer (at most one step up in practice).
UG_HD int ug_window_of_coordinate(int size, int n, int y) {
    int k = (int)((long long)y * n / size);
    if (k > n - 1) k = n - 1;
    while (k > 0 && ug_split(size, n, k).start > y) --k;
    while (k < n - 1 && ug_split(size, n, k + 1).start <= y) ++k;
    return k;
}

struct UgWindowToken {
    int window;
    int i;
};

UG_HD UgWindowToken ug_window_token_of(const WindowLayoutParams& l, long long token) {
    const long long frame = (long long)l.H * l.W;
    const int t = (int)(token / frame);
    const int inFrame = (int)(token - t * frame);
    const int y = inFrame / l.W;
    const int x = inFrame - y * l.W;
    const int wr = ug_window_of_coordinate(l.H, l.windowsPerSide, y);
    const int wc = ug_window_of_coordinate(l.W, l.windowsPerSide, x);
    const int window = wr * l.windowsPerSide + wc;
    const UgWindowBounds b = ug_window_bounds(l, window);
    UgWindowToken r;
    r.window = window;
    r.i = (t * b.rowCount + (y - b.rowStart)) * b.colCount + (x - b.colStart);
    return r;
}
