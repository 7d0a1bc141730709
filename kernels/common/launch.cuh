// Launch geometry shared by the kernels, the C# launchers (which mirror these functions) and the host tests.
// Attention kernels: one block per (query or key tile, window·heads + head, batch):
//   grid.x = tiles over the LARGEST window (ragged windows differ by at most one row/col, so the few blocks whose tile
//            starts past their own window's end return at once), grid.y = windowCount·heads, grid.z = batch.
// Memory-bound kernels: 1-D grids of 256-thread blocks, or (32 × 8)-thread blocks for column reductions.
#pragma once
#include "abi.cuh"
#include "window_layout.cuh"

struct UgGrid {
    unsigned x;
    unsigned y;
    unsigned z;
};

UG_HD long long ug_cdiv(long long a, long long b) { return (a + b - 1) / b; }

// ---- attention tile configuration ("traits"): one place for every tile size -----------------------------------
// f32 SIMT path: 4 warps; each warp owns 8 rows of the block's 32-row tile; lanes walk the 32 columns of the other tile.
enum {
    UG_ATTN_THREADS = 128,
    UG_ATTN_F32_BLOCK = 32,      // query tile (fwd, dq) and key tile (dkdv), and the inner tile they loop over
    UG_ATTN_F32_ROWS_PER_WARP = 8,
    UG_ATTN_BF16_BLOCK_M = 64,   // fwd and dq: query rows per block (16 per warp); fwd_bf16_m128: twice that
    UG_ATTN_BF16_BLOCK_N = 64,   // fwd and dq: keys per inner tile; dkdv: keys per block (16 per warp)
    UG_ATTN_BF16_PAD = 8,        // bf16 elements of padding per shared-memory row (16 B: ldmatrix rows hit distinct banks)
};

// dkdv bf16: queries per inner tile (fewer for d = 128 to keep dK, dV, S and dP accumulators in registers).
UG_HD int ug_attn_bf16_dkdv_block_q(int headDim) { return headDim == 128 ? 32 : 64; }

UG_HD bool ug_attn_head_dim_supported(int headDim) { return headDim == 32 || headDim == 64 || headDim == 128; }

// Tiles over the largest window: grid.x of every attention kernel (block = rows per tile of that kernel).
UG_HD long long ug_attn_tiles(const WindowLayoutParams& l, int block) {
    return ug_cdiv(ug_max_tokens_in_window(l), block);
}

// Tiles a window of `tokens` tokens needs; the last one is masked when block does not divide tokens.
UG_HD int ug_tiles_in_window(int tokens, int block) { return (tokens + block - 1) / block; }

// Valid rows of tile `tile` of a window with `tokens` tokens (block for full tiles, the remainder for the tail).
UG_HD int ug_tile_rows(int tokens, int block, int tile) {
    const int rest = tokens - tile * block;
    return rest < 0 ? 0 : (rest < block ? rest : block);
}

UG_HD UgGrid ug_attn_grid(const WindowLayoutParams& l, int heads, int batch, int block) {
    UgGrid g;
    g.x = (unsigned)ug_attn_tiles(l, block);
    g.y = (unsigned)(ug_window_count(l) * heads);
    g.z = (unsigned)batch;
    return g;
}

// Dynamic shared memory (bytes) of each attention kernel. The host sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
// to at least this before the first launch (values above 48 KiB need it).
UG_HD int ug_attn_f32_fwd_smem(int headDim) {
    return (3 * UG_ATTN_F32_BLOCK * (headDim + 1) + (UG_ATTN_THREADS / 32) * UG_ATTN_F32_ROWS_PER_WARP * UG_ATTN_F32_BLOCK) * 4;
}
UG_HD int ug_attn_f32_dkdv_smem(int headDim) {
    return (4 * UG_ATTN_F32_BLOCK * (headDim + 1) + 2 * (UG_ATTN_THREADS / 32) * UG_ATTN_F32_ROWS_PER_WARP * UG_ATTN_F32_BLOCK) * 4;
}
UG_HD int ug_attn_f32_dq_smem(int headDim) {
    return (4 * UG_ATTN_F32_BLOCK * (headDim + 1) + (UG_ATTN_THREADS / 32) * UG_ATTN_F32_ROWS_PER_WARP * UG_ATTN_F32_BLOCK) * 4;
}
UG_HD int ug_attn_bf16_fwd_smem(int headDim) {  // Q + two stages of K and V
    return (UG_ATTN_BF16_BLOCK_M + 4 * UG_ATTN_BF16_BLOCK_N) * (headDim + UG_ATTN_BF16_PAD) * 2;
}
UG_HD int ug_attn_bf16_fwd_m128_smem(int headDim) {  // the 128-query variant: Q of two m-tiles per warp + two K/V stages
    return (2 * UG_ATTN_BF16_BLOCK_M + 4 * UG_ATTN_BF16_BLOCK_N) * (headDim + UG_ATTN_BF16_PAD) * 2;
}
UG_HD int ug_attn_bf16_dkdv_smem(int headDim) {  // K, V of the block + two stages of the inner tile's Q, dO
    return (2 * UG_ATTN_BF16_BLOCK_N + 4 * ug_attn_bf16_dkdv_block_q(headDim)) * (headDim + UG_ATTN_BF16_PAD) * 2;
}
UG_HD int ug_attn_bf16_dq_smem(int headDim) {  // Q, dO of the block + two stages of the inner tile's K, V
    return (2 * UG_ATTN_BF16_BLOCK_M + 4 * UG_ATTN_BF16_BLOCK_N) * (headDim + UG_ATTN_BF16_PAD) * 2;
}

// Backward preprocess (D = rowsum(dO∘O)): one warp per (batch, token, head) row, 8 rows per 256-thread block.
UG_HD UgGrid ug_attn_preprocess_grid(long long rows) {
    UgGrid g;
    g.x = (unsigned)ug_cdiv(rows, 8);
    g.y = 1;
    g.z = 1;
    return g;
}

// ---- cross-attention (N queries over L keys per (batch, head); the f32 attention tiles and shared-memory layouts above) --
// grid.x = query tiles (fwd, dq) or key tiles × splits (dkdv, split fastest), grid.y = heads, grid.z = batch.
enum {
    UG_CROSS_ATTN_MAX_SPLITS = 64,           // query chunks per dkdv key tile
    UG_CROSS_ATTN_MAX_PARTIAL = 1 << 25,     // floats of dK (and of dV) partials at most: splits·B·L·C
};

UG_HD UgGrid ug_cross_attn_grid(long long rows, int heads, int batch, int block, int splits) {
    UgGrid g;
    g.x = (unsigned)(ug_cdiv(rows, block) * splits);
    g.y = (unsigned)heads;
    g.z = (unsigned)batch;
    return g;
}

// dkdv splits: L is short and N long, so one block per key tile walking all N queries would leave the GPU idle. Each key
// tile's query tiles are cut into `splits` chunks (split s: tiles [s·T/splits, (s+1)·T/splits) of T = ⌈N/32⌉), enough for
// about targetBlocks blocks, at most one per query tile, UG_CROSS_ATTN_MAX_SPLITS, and UG_CROSS_ATTN_MAX_PARTIAL floats.
UG_HD int ug_cross_attn_splits(int batch, long long queries, long long keys, int heads, int headDim, int targetBlocks) {
    const long long kvBlocks = ug_cdiv(keys, UG_ATTN_F32_BLOCK) * heads * batch;
    long long s = ug_cdiv(targetBlocks, kvBlocks < 1 ? 1 : kvBlocks);
    const long long queryTiles = ug_cdiv(queries, UG_ATTN_F32_BLOCK);
    long long byMemory = (long long)UG_CROSS_ATTN_MAX_PARTIAL / ((long long)batch * keys * heads * headDim);
    if (s > queryTiles) s = queryTiles;
    if (s > UG_CROSS_ATTN_MAX_SPLITS) s = UG_CROSS_ATTN_MAX_SPLITS;
    if (s > byMemory) s = byMemory;
    return (int)(s < 1 ? 1 : s);
}

// ---- memory-bound kernels -----------------------------------------------------------------------------------------
enum {
    UG_EW_THREADS = 256,        // 1-D elementwise kernels
    UG_EW_ITEMS = 4,            // elements per thread per grid-stride step (one float4)
    UG_ROW_THREADS = 256,       // row kernels (norms): one warp per row, 8 rows per block
    UG_RED_TX = 32,             // column reductions: 32 columns × 8 row lanes per block
    UG_RED_TY = 8,
    UG_RED_MAX_SPLITS = 1024,   // partial sums per column (grid.y of a reduction)
};

// 1-D elementwise grid: ceil(n / (256·4)) blocks, capped (grid-stride loops cover the rest).
UG_HD unsigned ug_ew_blocks(long long n) {
    long long b = ug_cdiv(n, (long long)UG_EW_THREADS * UG_EW_ITEMS);
    if (b < 1) b = 1;
    return (unsigned)(b > 65535LL * 32 ? 65535LL * 32 : b);
}

// Row kernels: 8 rows (one warp each) per 256-thread block.
UG_HD unsigned ug_row_blocks(long long rows) { return (unsigned)ug_cdiv(rows, UG_ROW_THREADS / 32); }

// Column reductions (weight/param gradients): rows are split into `splits` contiguous chunks; block (32, 8);
// grid (ceil(cols/32), splits, batches). Each block writes partial[(b·splits + s)·cols + c]; column_sum_f32 (elementwise)
// adds the partials in a fixed order, so results are deterministic. ~256 rows per split, at most UG_RED_MAX_SPLITS.
UG_HD int ug_red_splits(long long rows) {
    long long s = ug_cdiv(rows, 256);
    if (s < 1) s = 1;
    const long long maxSplits = UG_RED_MAX_SPLITS;
    return (int)(s > maxSplits ? maxSplits : s);
}

// Rows [begin, end) of split s when `rows` rows are cut into `splits` chunks.
UG_HD long long ug_red_split_begin(long long rows, int splits, int s) { return rows * s / splits; }
