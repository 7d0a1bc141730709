// Device-only tile machinery for the window-attention kernels: per-row token bookkeeping, window-gathered tile loads
// (plain f32 loads, or 16-byte cp.async for bf16) with zero-filled tails, RoPE applied in shared memory as tiles land,
// and the ldmatrix / mma.sync wrappers of the bf16 tensor-core path.
#pragma once
#include "abi.cuh"
#include "bf16.cuh"
#include "rope.cuh"
#include "window_layout.cuh"

#define UG_LOG2E 1.4426950408889634f
#define UG_LN2 0.6931471805599453f

// One row of a tile: where the token's head slice lives and where RoPE puts it.
//   offset: element offset of (batch, token, head, 0) in a (B, T·H·W, heads·headDim) tensor; −1 for tail rows
//   stat:   index of (batch, head, token) in the (B, heads, T·H·W) LSE / delta vectors; −1 for tail rows
//   t, row, col: window-local coordinates (the RoPE positions)
struct UgTileRow {
    long long offset;
    long long stat;
    int t;
    int row;
    int col;
    int pad_;
};

// Where one (batch, window, head) block reads: everything a tile fill needs.
struct UgAttnSlice {
    UgWindowBounds bounds;
    int tokens;              // tokens in this window
    long long sampleTokens;  // T·H·W
    long long channels;      // heads·headDim: the token stride
    int batch;
    int head;
    int heads;
    int headDim;
};

__device__ __forceinline__ UgAttnSlice ug_attn_slice(const WindowLayoutParams& l, int window, int batch, int head, int heads,
                                                     int headDim) {
    UgAttnSlice s;
    s.bounds = ug_window_bounds(l, window);
    s.tokens = ug_tokens_in_window(l, s.bounds);
    s.sampleTokens = ug_tokens_per_sample(l);
    s.channels = (long long)heads * headDim;
    s.batch = batch;
    s.head = head;
    s.heads = heads;
    s.headDim = headDim;
    return s;
}

// Threads 0..rows−1 fill rows[] for window tokens [tileStart, tileStart + rows); the caller syncs before use.
__device__ __forceinline__ void ug_fill_tile_rows(UgTileRow* rows, int count, const WindowLayoutParams& l,
                                                  const UgAttnSlice& s, int tileStart) {
    const int r = threadIdx.x;
    if (r >= count) return;
    UgTileRow out;
    const int i = tileStart + r;
    if (i < s.tokens) {
        const UgLocalCoord c = ug_local_coord(s.bounds, i);
        const long long token = ug_token_index(l, s.bounds, c);
        out.offset = ((long long)s.batch * s.sampleTokens + token) * s.channels + (long long)s.head * s.headDim;
        out.stat = ((long long)s.batch * s.heads + s.head) * s.sampleTokens + token;
        out.t = c.t;
        out.row = c.row;
        out.col = c.col;
    } else {
        out.offset = -1;
        out.stat = -1;
        out.t = out.row = out.col = 0;
    }
    out.pad_ = 0;
    rows[r] = out;
}

// (cos, sin) of complex pair `pair` for a token at `row` (forward rotation; negate sin for the inverse).
__device__ __forceinline__ float2 ug_rope_cs(const RopeParams& rope, int headDim, const UgTileRow& row, int pair) {
    const int pos = ug_rope_position(pair, headDim, row.t, row.row, row.col);
    return __ldg(reinterpret_cast<const float2*>(rope.cosSin + ug_rope_table_offset(pos, pair, headDim)));
}

// ---- f32 tiles: rows × D floats in shared memory with a row stride of D + 1 (conflict-free column walks) -----------
// Each thread moves whole complex pairs (8-byte loads), so RoPE is applied on the way in. Tail rows are zero.
template <int D, int THREADS>
__device__ __forceinline__ void ug_load_tile_f32(float* tile, const float* __restrict__ src, const UgTileRow* rows, int count,
                                                 const RopeParams& rope, bool rotate) {
    constexpr int PAIRS = D / 2;
    constexpr int LD = D + 1;
    for (int idx = threadIdx.x; idx < count * PAIRS; idx += THREADS) {
        const int r = idx / PAIRS;
        const int pair = idx - r * PAIRS;
        const UgTileRow row = rows[r];
        float2 x = make_float2(0.f, 0.f);
        if (row.offset >= 0) {
            x = __ldg(reinterpret_cast<const float2*>(src + row.offset) + pair);
            if (rotate) {
                const float2 cs = ug_rope_cs(rope, D, row, pair);
                float y0, y1;
                ug_rope_rotate(x.x, x.y, cs.x, cs.y, y0, y1);
                x = make_float2(y0, y1);
            }
        }
        tile[r * LD + 2 * pair] = x.x;
        tile[r * LD + 2 * pair + 1] = x.y;
    }
}

// ---- cp.async (sm_80+) ---------------------------------------------------------------------------------------------
// 16-byte global → shared copy; when !valid the 16 bytes are zero-filled (src-size 0: nothing is read from gsrc).
// (UG_CUDA_EMULATOR: the host build of kernels/emulator runs the same instructions through its runtime.)
__device__ __forceinline__ void ug_cp_async16(void* sdst, const void* gsrc, bool valid) {
#ifdef UG_CUDA_EMULATOR
    ug_emu::cp_async16(sdst, gsrc, valid);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(sdst);
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gsrc), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void ug_cp_async_commit() {
#ifdef UG_CUDA_EMULATOR
    ug_emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N> __device__ __forceinline__ void ug_cp_async_wait() {
#ifdef UG_CUDA_EMULATOR
    ug_emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// ---- bf16 tiles: rows × D bf16 with a row stride of D + 8 (16-byte pad: the 8 rows of an ldmatrix hit 8 bank groups) --
// Thread `tid` owns the 16-byte chunks tid, tid + THREADS, …; the same thread later rotates exactly the chunks it copied,
// so after cp.async.wait_group its own data is visible to it without a barrier.
template <int D, int THREADS>
__device__ __forceinline__ void ug_issue_tile_bf16(ug_bf16* tile, const ug_bf16* __restrict__ src, const UgTileRow* rows,
                                                   int count) {
    constexpr int CHUNKS = D / 8;
    constexpr int LD = D + 8;
    for (int idx = threadIdx.x; idx < count * CHUNKS; idx += THREADS) {
        const int r = idx / CHUNKS;
        const int c = idx - r * CHUNKS;
        const long long offset = rows[r].offset;
        const bool valid = offset >= 0;
        ug_cp_async16(tile + r * LD + c * 8, valid ? src + offset + c * 8 : src, valid);
    }
}

// One step of a double-buffered stream of paired tiles (K/V or Q/dO), tile j of nTiles in stage j & 1. When tile j+1
// exists: fills its rows into nextRows, barriers (its stage was last read in iteration j−1; the barrier also publishes
// nextRows and anything the block wrote before it), issues both its tiles as one cp.async group, runs afterIssue (work
// that overlaps the copies), and waits until this thread's copies of tile j have landed. On the last tile it only waits.
// The caller barriers after its own post-processing (RoPE) of tile j, before any warp reads it.
template <int D, int THREADS, typename AfterIssue>
__device__ __forceinline__ void ug_stream_pair_step(int j, int nTiles, UgTileRow* nextRows, int count, const WindowLayoutParams& l,
                                                    const UgAttnSlice& s, int nextStart, ug_bf16* nextA,
                                                    const ug_bf16* __restrict__ srcA, ug_bf16* nextB,
                                                    const ug_bf16* __restrict__ srcB, AfterIssue afterIssue) {
    if (j + 1 < nTiles) {
        ug_fill_tile_rows(nextRows, count, l, s, nextStart);
        __syncthreads();
        ug_issue_tile_bf16<D, THREADS>(nextA, srcA, nextRows, count);
        ug_issue_tile_bf16<D, THREADS>(nextB, srcB, nextRows, count);
        ug_cp_async_commit();
        afterIssue();
        ug_cp_async_wait<1>();
    } else {
        ug_cp_async_wait<0>();
    }
}

// Rotates, in place, the chunks this thread copied with ug_issue_tile_bf16 (same idx walk): 4 complex pairs per chunk,
// rotated in f32 and rounded back to bf16 (RNE). Tail rows (offset < 0) are zeros and stay zeros.
template <int D, int THREADS>
__device__ __forceinline__ void ug_rotate_tile_bf16(ug_bf16* tile, const UgTileRow* rows, int count, const RopeParams& rope) {
    constexpr int CHUNKS = D / 8;
    constexpr int LD = D + 8;
    for (int idx = threadIdx.x; idx < count * CHUNKS; idx += THREADS) {
        const int r = idx / CHUNKS;
        const int c = idx - r * CHUNKS;
        const UgTileRow row = rows[r];
        if (row.offset < 0) continue;
        uint4* p = reinterpret_cast<uint4*>(tile + r * LD + c * 8);
        uint4 v = *p;
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float2 x = ug_unpack_bf16x2(w[k]);
            const float2 cs = ug_rope_cs(rope, D, row, c * 4 + k);
            float y0, y1;
            ug_rope_rotate(x.x, x.y, cs.x, cs.y, y0, y1);
            w[k] = ug_pack_bf16x2(y0, y1);
        }
        *p = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// ---- tensor-core fragments (PTX ISA, "Matrix fragments for mma.m16n8k16", .bf16) -----------------------------------
// lane = 4·g + q (g = groupID = lane / 4, q = threadID_in_group = lane % 4). Each .b32 register holds two bf16, the lower
// column (or k) index in the low half.
//   A (16×16, row-major):  a0 = A[g][2q, 2q+1]      a1 = A[g+8][2q, 2q+1]
//                          a2 = A[g][2q+8, 2q+9]    a3 = A[g+8][2q+8, 2q+9]
//   B (16×8, "col"):       b0 = B[2q, 2q+1][g]      b1 = B[2q+8, 2q+9][g]          (k index first)
//   C/D (16×8, f32):       c0, c1 = C[g][2q, 2q+1]  c2, c3 = C[g+8][2q, 2q+1]
// Consequences used below:
//   * a C tile of two adjacent n-blocks (16×16) IS an A fragment after packing to bf16:
//     a0 = (c0, c1) of n-block 2k, a1 = (c2, c3) of n-block 2k, a2 = (c0, c1) of 2k+1, a3 = (c2, c3) of 2k+1;
//   * c0, c1 are the two halves of one complex pair (even column 2q first): RoPE acts on accumulators directly.
// ldmatrix.x4 loads four 8×8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i; register i of lane
// (4g + q) receives matrix i's row g, columns 2q, 2q+1 (with .trans: row 2q, 2q+1 of column g, i.e. the transpose).
//   * A 16×16 at (row0, k0) of a row-major tile:  lane → row row0 + (lane & 7) + 8·((lane >> 3) & 1), col k0 + 8·(lane >> 4)
//     gives a0..a3 in order.
//   * B = Xᵀ for X stored row-major [n][k] (K in Q·Kᵀ): lane → row n0 + (lane & 7) + 8·(lane >> 4), col k0 + 8·((lane >> 3) & 1)
//     gives (b0, b1) of n-block n0 and (b0, b1) of n-block n0 + 8.
//   * B = X for X stored row-major [k][n] (V in P·V), with .trans: lane → row k0 + (lane & 7) + 8·((lane >> 3) & 1),
//     col n0 + 8·(lane >> 4) gives (b0, b1) of n-block n0 and (b0, b1) of n-block n0 + 8.
__device__ __forceinline__ void ug_ldmatrix_x4(uint32_t (&r)[4], const ug_bf16* p) {
#ifdef UG_CUDA_EMULATOR
    ug_emu::ldmatrix_x4(r, p, false);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}
__device__ __forceinline__ void ug_ldmatrix_x4_trans(uint32_t (&r)[4], const ug_bf16* p) {
#ifdef UG_CUDA_EMULATOR
    ug_emu::ldmatrix_x4(r, p, true);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}

// d += a·b, m16n8k16, bf16 inputs, f32 accumulate.
__device__ __forceinline__ void ug_mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef UG_CUDA_EMULATOR
    ug_emu::mma_m16n8k16_bf16(d, a, b0, b1);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Lane address helpers for the three ldmatrix patterns above (element pointers into a tile with row stride ld).
__device__ __forceinline__ const ug_bf16* ug_frag_a_addr(const ug_bf16* tile, int ld, int row0, int k0, int lane) {
    return tile + (row0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + k0 + 8 * (lane >> 4);
}
__device__ __forceinline__ const ug_bf16* ug_frag_bt_addr(const ug_bf16* tile, int ld, int n0, int k0, int lane) {
    return tile + (n0 + (lane & 7) + 8 * (lane >> 4)) * ld + k0 + 8 * ((lane >> 3) & 1);
}
__device__ __forceinline__ const ug_bf16* ug_frag_b_trans_addr(const ug_bf16* tile, int ld, int k0, int n0, int lane) {
    return tile + (k0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * ld + n0 + 8 * (lane >> 4);
}

// C fragments of a 16-row × (2·NB·8)-column block → A fragments (bf16) of the same block, k = columns.
template <int NB>
__device__ __forceinline__ void ug_c_to_a(uint32_t (&a)[NB][4], const float (&c)[2 * NB][4]) {
#pragma unroll
    for (int k = 0; k < NB; ++k) {
        a[k][0] = ug_pack_bf16x2(c[2 * k][0], c[2 * k][1]);
        a[k][1] = ug_pack_bf16x2(c[2 * k][2], c[2 * k][3]);
        a[k][2] = ug_pack_bf16x2(c[2 * k + 1][0], c[2 * k + 1][1]);
        a[k][3] = ug_pack_bf16x2(c[2 * k + 1][2], c[2 * k + 1][3]);
    }
}

// A warp's 16 × D accumulator (C fragments, n-blocks of 8 columns) → bf16 rows in its own 16 rows of a shared tile
// (stride D + 8), then 16-byte stores to the global rows named by rows[] (tail rows skipped). The caller guarantees no
// other warp touches these 16 shared rows.
template <int D>
__device__ __forceinline__ void ug_store_warp_rows_bf16(ug_bf16* tile, const float (&acc)[D / 8][4], const UgTileRow* rows,
                                                        ug_bf16* __restrict__ dst, int lane) {
    constexpr int LD = D + 8;
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
        *reinterpret_cast<uint32_t*>(tile + g * LD + nb * 8 + 2 * q) = ug_pack_bf16x2(acc[nb][0], acc[nb][1]);
        *reinterpret_cast<uint32_t*>(tile + (g + 8) * LD + nb * 8 + 2 * q) = ug_pack_bf16x2(acc[nb][2], acc[nb][3]);
    }
    __syncwarp();
    constexpr int CHUNKS = D / 8;
    for (int idx = lane; idx < 16 * CHUNKS; idx += 32) {
        const int r = idx / CHUNKS;
        const int c = idx - r * CHUNKS;
        const long long offset = rows[r].offset;
        if (offset >= 0)
            *reinterpret_cast<uint4*>(dst + offset + c * 8) = *reinterpret_cast<const uint4*>(tile + r * LD + c * 8);
    }
}

// Inverse RoPE on a warp's 16 × D accumulator (rows g and g + 8 of the warp's tile rows): maps a gradient with respect
// to the rotated q̃ / k̃ to the gradient with respect to q / k.
template <int D>
__device__ __forceinline__ void ug_unrotate_acc(float (&acc)[D / 8][4], const RopeParams& rope, const UgTileRow& rowLo,
                                                const UgTileRow& rowHi, int lane) {
    const int q = lane & 3;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
        const int pair = nb * 4 + q;
        float y0, y1;
        const float2 lo = ug_rope_cs(rope, D, rowLo, pair);
        ug_rope_rotate(acc[nb][0], acc[nb][1], lo.x, -lo.y, y0, y1);
        acc[nb][0] = y0;
        acc[nb][1] = y1;
        const float2 hi = ug_rope_cs(rope, D, rowHi, pair);
        ug_rope_rotate(acc[nb][2], acc[nb][3], hi.x, -hi.y, y0, y1);
        acc[nb][2] = y0;
        acc[nb][3] = y1;
    }
}

__device__ __forceinline__ float ug_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float ug_warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
