// window_attention forward: softmax(q̃·k̃ᵀ·scale)·v inside the windows of a WindowLayout (spec §1.3; reference:
// src/UltraGen.Ops/Reference/WindowAttention.cs), q̃, k̃ = q, k rotated by Wan's 3-D RoPE at window-local coordinates.
//
// The layout it walks (common/window_layout.cuh): a (T, H, W) token grid, n × n spatial windows that span all T frames,
// window g = windowRow·n + windowCol, i-th token of a window = (t, localRow, localCol) with localCol fastest. Tensors are
// channels-last (B, T, H, W, heads·headDim) = (B, N, C): the i-th token of window g lives at row
// ((t·H + rowStart + localRow)·W + colStart + localCol) of its sample. Tiles are gathered row by row from that index
// (no rearranged copy is ever made), RoPE is applied as q/k tiles land in shared memory, and tail tiles are masked
// (zero-filled rows; −∞ scores for keys past the window's end).
//
// One block = one query tile of one (batch, window, head); it streams the window's key/value tiles with an online
// softmax (running max m, running sum l, output rescaled by 2^(m_old − m_new)), all in f32; scores are kept in the
// log2 domain (s·scale·log2 e) so exp2 is one instruction. LSE, when requested, is stored in natural-log units:
// lse = ln Σ_j exp(s_ij·scale), at lse[(b·heads + head)·N + token].
//
// Two paths, one contract:
//   window_attention_fwd_f32   f32 storage, SIMT FMA, exact (the accuracy of f32 arithmetic; no tensor cores)
//   window_attention_fwd_bf16  bf16 storage, mma.sync m16n8k16 bf16 → f32 (sm_80+), ldmatrix fragments, cp.async
//                              double-buffered K/V tiles; 64 queries per block
//   window_attention_fwd_bf16_m128   the same with 128 queries per block (two m-tiles per warp, Q re-read from shared
//                              memory): fewer shared-memory bytes per mma; which is faster is for the GPU to say
//                              (bench/UltraGen.GpuBench times both)
#include "common/abi.cuh"
#include "common/bf16.cuh"
#include "common/launch.cuh"
#include "common/rope.cuh"
#include "common/tiles.cuh"
#include "common/window_layout.cuh"

namespace {

// ================================================================================================================
// f32 SIMT path. Block: 128 threads = 4 warps; query tile of 32 rows, warp w owns rows 8w..8w+7; key tiles of 32,
// lane j owns key j of the tile when scoring and output columns j, j+32, … when accumulating P·V.
// Shared: Q, K, V tiles (32 × (D+1) f32 each) + P (per warp 8 × 32).
// ================================================================================================================
template <int D>
__device__ __forceinline__ void attn_fwd_f32(const float* __restrict__ q, const float* __restrict__ k,
                                             const float* __restrict__ v, float* __restrict__ o, float* __restrict__ lse,
                                             const WindowLayoutParams& layout, const RopeParams& rope, int heads,
                                             float scale, UgTileRow* qRows, UgTileRow* kRows) {
    constexpr int BM = UG_ATTN_F32_BLOCK, BN = UG_ATTN_F32_BLOCK, RPW = UG_ATTN_F32_ROWS_PER_WARP;
    constexpr int LD = D + 1, CPL = D / 32, THREADS = UG_ATTN_THREADS;
    UG_DYNAMIC_SHARED(float4, smem4);
    float* sQ = reinterpret_cast<float*>(smem4);
    float* sK = sQ + BM * LD;
    float* sV = sK + BN * LD;
    float* sP = sV + BN * LD;

    const int window = blockIdx.y / heads, head = blockIdx.y - window * heads;
    const UgAttnSlice s = ug_attn_slice(layout, window, blockIdx.z, head, heads, D);
    const int qStart = blockIdx.x * BM;
    if (qStart >= s.tokens) return;  // this window is shorter than the largest one: block-uniform exit
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool rotate = rope.enabled != 0;
    const float sl2 = scale * UG_LOG2E;

    ug_fill_tile_rows(qRows, BM, layout, s, qStart);
    __syncthreads();
    ug_load_tile_f32<D, THREADS>(sQ, q, qRows, BM, rope, rotate);

    float acc[RPW][CPL];
    float m[RPW], l[RPW];
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int u = 0; u < CPL; ++u) acc[r][u] = 0.f;
    }
    float* myP = sP + warp * RPW * BN;
    const float* myQ = sQ + warp * RPW * LD;

    for (int kStart = 0; kStart < s.tokens; kStart += BN) {
        __syncthreads();  // everyone is done with the previous K/V tile and kRows (and sQ is complete)
        ug_fill_tile_rows(kRows, BN, layout, s, kStart);
        __syncthreads();
        ug_load_tile_f32<D, THREADS>(sK, k, kRows, BN, rope, rotate);
        ug_load_tile_f32<D, THREADS>(sV, v, kRows, BN, rope, false);
        __syncthreads();

        float sc[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) sc[r] = 0.f;
#pragma unroll 8
        for (int c = 0; c < D; ++c) {
            const float kc = sK[lane * LD + c];  // bank (lane + c) mod 32: conflict-free
#pragma unroll
            for (int r = 0; r < RPW; ++r) sc[r] = fmaf(myQ[r * LD + c], kc, sc[r]);  // broadcast
        }
        const bool keyValid = kStart + lane < s.tokens;
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
            const float x = keyValid ? sc[r] * sl2 : -INFINITY;
            const float mNew = fmaxf(m[r], ug_warp_max(x));  // finite: every tile holds at least one valid key
            const float p = exp2f(x - mNew);
            const float alpha = exp2f(m[r] - mNew);          // 0 on the first tile (m = −∞)
            l[r] = l[r] * alpha + ug_warp_sum(p);
            m[r] = mNew;
#pragma unroll
            for (int u = 0; u < CPL; ++u) acc[r][u] *= alpha;
            myP[r * BN + lane] = p;
        }
        __syncwarp();
#pragma unroll 4
        for (int j = 0; j < BN; ++j) {
#pragma unroll
            for (int u = 0; u < CPL; ++u) {
                const float vj = sV[j * LD + lane + 32 * u];  // bank (j + lane) mod 32: conflict-free
#pragma unroll
                for (int r = 0; r < RPW; ++r) acc[r][u] = fmaf(myP[r * BN + j], vj, acc[r][u]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        const UgTileRow row = qRows[warp * RPW + r];
        if (row.offset < 0) continue;
        const float inv = 1.f / l[r];
#pragma unroll
        for (int u = 0; u < CPL; ++u) o[row.offset + lane + 32 * u] = acc[r][u] * inv;
        if (lse != nullptr && lane == 0) lse[row.stat] = m[r] * UG_LN2 + logf(l[r]);
    }
}

// ================================================================================================================
// bf16 tensor-core path. Block: 128 threads = 4 warps; each warp owns MT m-tiles of 16 query rows (rows
// 16·MT·w … 16·MT·w + 16·MT − 1 of the block's 64·MT-row tile); key tiles of 64 stream through two shared-memory
// stages (cp.async prefetch of tile j+1 overlaps the math on tile j). Per key tile and m-tile: S = Q·Kᵀ (16 × 64, 8
// n-blocks of m16n8k16), online softmax on the accumulators, P (bf16, reused in place as A fragments) · V into a 16 × D
// f32 accumulator.
//   MT = 1 (window_attention_fwd_bf16, 64 queries): the warp keeps its Q fragments in registers; every K/V fragment
//          loaded from shared memory feeds 2 mma.
//   MT = 2 (window_attention_fwd_bf16_m128, 128 queries): Q fragments are re-read from shared memory each key tile (the
//          registers go to the second accumulator), and every K/V fragment feeds 4 mma: about 40 % fewer shared-memory
//          bytes per mma (ldmatrix 80 × 512 B per 256 mma instead of 64 × 512 B per 128), and each K/V tile brought in
//          serves twice the queries.
// Shared: Q (64·MT × (D+8)) + 2 × [K, V] (64 × (D+8)) bf16 = (64·MT + 256)·(D+8)·2 bytes.
// ================================================================================================================
template <int D, int MT>
__device__ __forceinline__ void attn_fwd_bf16(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                                              const ug_bf16* __restrict__ v, ug_bf16* __restrict__ o,
                                              float* __restrict__ lse, const WindowLayoutParams& layout,
                                              const RopeParams& rope, int heads, float scale, UgTileRow* qRows,
                                              UgTileRow (*kRows)[UG_ATTN_BF16_BLOCK_N]) {
    constexpr int BM = UG_ATTN_BF16_BLOCK_M * MT, BN = UG_ATTN_BF16_BLOCK_N, LD = D + UG_ATTN_BF16_PAD;
    constexpr int THREADS = UG_ATTN_THREADS, KSTEPS = D / 16, NBS = BN / 8, NBO = D / 8;
    constexpr bool Q_IN_REGISTERS = MT == 1;
    UG_DYNAMIC_SHARED(float4, smem4);
    ug_bf16* sQ = reinterpret_cast<ug_bf16*>(smem4);
    // Stage st (0 or 1): K at sQ + (BM + st·BN)·LD, V at sQ + (BM + (2 + st)·BN)·LD (arithmetic, not a pointer array
    // indexed at run time, which would live in local memory).
    auto sK = [&](int st) { return sQ + (BM + st * BN) * LD; };
    auto sV = [&](int st) { return sQ + (BM + (2 + st) * BN) * LD; };

    const int window = blockIdx.y / heads, head = blockIdx.y - window * heads;
    const UgAttnSlice s = ug_attn_slice(layout, window, blockIdx.z, head, heads, D);
    const int qStart = blockIdx.x * BM;
    if (qStart >= s.tokens) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tq = lane & 3;
    const int warpRow0 = warp * 16 * MT;  // first of this warp's rows in the block's query tile
    const bool rotate = rope.enabled != 0;
    const float sl2 = scale * UG_LOG2E;
    const int nTiles = ug_tiles_in_window(s.tokens, BN);

    // Prologue: Q tile (group 0) and K/V tile 0 (group 1) in flight; rotate Q once it has landed.
    ug_fill_tile_rows(qRows, BM, layout, s, qStart);
    ug_fill_tile_rows(kRows[0], BN, layout, s, 0);
    __syncthreads();
    ug_issue_tile_bf16<D, THREADS>(sQ, q, qRows, BM);
    ug_cp_async_commit();
    ug_issue_tile_bf16<D, THREADS>(sK(0), k, kRows[0], BN);
    ug_issue_tile_bf16<D, THREADS>(sV(0), v, kRows[0], BN);
    ug_cp_async_commit();
    ug_cp_async_wait<1>();
    if (rotate) ug_rotate_tile_bf16<D, THREADS>(sQ, qRows, BM, rope);
    __syncthreads();

    // MT = 1 only (the array is unused, and removed by the compiler, for MT = 2).
    uint32_t qf[Q_IN_REGISTERS ? KSTEPS : 1][4];
    if constexpr (Q_IN_REGISTERS) {
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) ug_ldmatrix_x4(qf[ks], ug_frag_a_addr(sQ, LD, warpRow0, ks * 16, lane));
    }

    float acc[MT][NBO][4];
    float mLo[MT], mHi[MT], lLo[MT], lHi[MT];  // rows g and g+8 of each m-tile; l is this thread's partial sum
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nb = 0; nb < NBO; ++nb) acc[mt][nb][0] = acc[mt][nb][1] = acc[mt][nb][2] = acc[mt][nb][3] = 0.f;
        mLo[mt] = mHi[mt] = -INFINITY;
        lLo[mt] = lHi[mt] = 0.f;
    }

    for (int j = 0; j < nTiles; ++j) {
        const int buf = j & 1;
        const int kStart = j * BN;
        ug_stream_pair_step<D, THREADS>(j, nTiles, kRows[buf ^ 1], BN, layout, s, kStart + BN, sK(buf ^ 1), k, sV(buf ^ 1), v, [] {});
        if (rotate) ug_rotate_tile_bf16<D, THREADS>(sK(buf), kRows[buf], BN, rope);
        __syncthreads();  // tile j complete and rotated for every warp

        // S = Q·Kᵀ: 16·MT × 64 per warp; each K fragment serves the MT m-tiles.
        float sc[MT][NBS][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nb = 0; nb < NBS; ++nb) sc[mt][nb][0] = sc[mt][nb][1] = sc[mt][nb][2] = sc[mt][nb][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if constexpr (Q_IN_REGISTERS) {
#pragma unroll
                    for (int r = 0; r < 4; ++r) a[mt][r] = qf[ks][r];
                } else {
                    ug_ldmatrix_x4(a[mt], ug_frag_a_addr(sQ, LD, warpRow0 + 16 * mt, ks * 16, lane));
                }
            }
#pragma unroll
            for (int nb2 = 0; nb2 < NBS / 2; ++nb2) {
                uint32_t b[4];
                ug_ldmatrix_x4(b, ug_frag_bt_addr(sK(buf), LD, nb2 * 16, ks * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    ug_mma_bf16(sc[mt][2 * nb2], a[mt], b[0], b[1]);
                    ug_mma_bf16(sc[mt][2 * nb2 + 1], a[mt], b[2], b[3]);
                }
            }
        }

        // Online softmax on the fragments: this thread holds columns nb·8 + 2tq + {0,1} of rows g (c0, c1), g+8 (c2, c3)
        // of each m-tile.
        uint32_t pf[MT][NBS / 2][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float rowMaxLo = -INFINITY, rowMaxHi = -INFINITY;
#pragma unroll
            for (int nb = 0; nb < NBS; ++nb) {
                const int col = kStart + nb * 8 + 2 * tq;
                const bool v0 = col < s.tokens, v1 = col + 1 < s.tokens;
                sc[mt][nb][0] = v0 ? sc[mt][nb][0] * sl2 : -INFINITY;
                sc[mt][nb][1] = v1 ? sc[mt][nb][1] * sl2 : -INFINITY;
                sc[mt][nb][2] = v0 ? sc[mt][nb][2] * sl2 : -INFINITY;
                sc[mt][nb][3] = v1 ? sc[mt][nb][3] * sl2 : -INFINITY;
                rowMaxLo = fmaxf(rowMaxLo, fmaxf(sc[mt][nb][0], sc[mt][nb][1]));
                rowMaxHi = fmaxf(rowMaxHi, fmaxf(sc[mt][nb][2], sc[mt][nb][3]));
            }
            // The 4 threads of a quad (same g) share a row.
            rowMaxLo = fmaxf(rowMaxLo, __shfl_xor_sync(0xffffffffu, rowMaxLo, 1));
            rowMaxLo = fmaxf(rowMaxLo, __shfl_xor_sync(0xffffffffu, rowMaxLo, 2));
            rowMaxHi = fmaxf(rowMaxHi, __shfl_xor_sync(0xffffffffu, rowMaxHi, 1));
            rowMaxHi = fmaxf(rowMaxHi, __shfl_xor_sync(0xffffffffu, rowMaxHi, 2));
            // Finite: every tile holds at least one valid key.
            const float mNewLo = fmaxf(mLo[mt], rowMaxLo), mNewHi = fmaxf(mHi[mt], rowMaxHi);
            const float alphaLo = exp2f(mLo[mt] - mNewLo), alphaHi = exp2f(mHi[mt] - mNewHi);
            mLo[mt] = mNewLo;
            mHi[mt] = mNewHi;
            float sumLo = 0.f, sumHi = 0.f;
#pragma unroll
            for (int nb = 0; nb < NBS; ++nb) {
                sc[mt][nb][0] = exp2f(sc[mt][nb][0] - mNewLo);
                sc[mt][nb][1] = exp2f(sc[mt][nb][1] - mNewLo);
                sc[mt][nb][2] = exp2f(sc[mt][nb][2] - mNewHi);
                sc[mt][nb][3] = exp2f(sc[mt][nb][3] - mNewHi);
                sumLo += sc[mt][nb][0] + sc[mt][nb][1];
                sumHi += sc[mt][nb][2] + sc[mt][nb][3];
            }
            lLo[mt] = lLo[mt] * alphaLo + sumLo;
            lHi[mt] = lHi[mt] * alphaHi + sumHi;
#pragma unroll
            for (int nb = 0; nb < NBO; ++nb) {
                acc[mt][nb][0] *= alphaLo;
                acc[mt][nb][1] *= alphaLo;
                acc[mt][nb][2] *= alphaHi;
                acc[mt][nb][3] *= alphaHi;
            }
            // P's accumulators become A fragments (k = key).
            ug_c_to_a<NBS / 2>(pf[mt], sc[mt]);
        }

        // O += P·V: V fragments come from ldmatrix.trans, each serving the MT m-tiles.
#pragma unroll
        for (int kk = 0; kk < NBS / 2; ++kk) {
#pragma unroll
            for (int nd2 = 0; nd2 < NBO / 2; ++nd2) {
                uint32_t b[4];
                ug_ldmatrix_x4_trans(b, ug_frag_b_trans_addr(sV(buf), LD, kk * 16, nd2 * 16, lane));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    ug_mma_bf16(acc[mt][2 * nd2], pf[mt][kk], b[0], b[1]);
                    ug_mma_bf16(acc[mt][2 * nd2 + 1], pf[mt][kk], b[2], b[3]);
                }
            }
        }
    }

    // Epilogue, per m-tile: full row sums across the quad, normalise, store through this warp's own 16 rows of sQ (only
    // this warp ever read them), LSE by the quad leader.
    __syncwarp();  // MT = 2: every lane's last ldmatrix of these sQ rows is behind us before any lane overwrites them
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float sumLo = lLo[mt], sumHi = lHi[mt];
        sumLo += __shfl_xor_sync(0xffffffffu, sumLo, 1);
        sumLo += __shfl_xor_sync(0xffffffffu, sumLo, 2);
        sumHi += __shfl_xor_sync(0xffffffffu, sumHi, 1);
        sumHi += __shfl_xor_sync(0xffffffffu, sumHi, 2);
        const float invLo = 1.f / sumLo, invHi = 1.f / sumHi;
#pragma unroll
        for (int nb = 0; nb < NBO; ++nb) {
            acc[mt][nb][0] *= invLo;
            acc[mt][nb][1] *= invLo;
            acc[mt][nb][2] *= invHi;
            acc[mt][nb][3] *= invHi;
        }
        const int row0 = warpRow0 + 16 * mt;
        const UgTileRow* myRows = qRows + row0;
        ug_store_warp_rows_bf16<D>(sQ + row0 * LD, acc[mt], myRows, o, lane);
        if (lse != nullptr && tq == 0) {
            if (myRows[g].stat >= 0) lse[myRows[g].stat] = mLo[mt] * UG_LN2 + logf(sumLo);
            if (myRows[g + 8].stat >= 0) lse[myRows[g + 8].stat] = mHi[mt] * UG_LN2 + logf(sumHi);
        }
    }
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// window_attention_fwd_f32 / window_attention_fwd_bf16 / window_attention_fwd_bf16_m128_d{32,64,128}
//   q, k, v, o : (B, T, H, W, heads·headDim), f32 resp. bf16, contiguous; base pointers 16-byte aligned
//   lse        : f32 (B, heads, T·H·W) natural-log row log-sum-exp, or null (not written)
//   layout     : the grid and windows per side (every window non-empty: n ≤ H, n ≤ W)
//   rope       : cos/sin table (abi.cuh) or enabled = 0
//   batch      : B
//   heads      : heads
//   headDim    : 32, 64 or 128 (anything else returns without writing; the host rejects it first); the _m128_dD
//                entries take only D
//   scale      : softmax scale, 1/√headDim for the model
// Launch: block 128 threads;
//   f32 : grid ug_attn_grid(layout, heads, batch, 32), dynamic smem ug_attn_f32_fwd_smem(headDim)
//         (d=64: 29,056 B, d=128: 53,632 B)
//   bf16: grid ug_attn_grid(layout, heads, batch, 64), dynamic smem ug_attn_bf16_fwd_smem(headDim)
//         (d=64: 46,080 B, d=128: 87,040 B); sm_80+
//   bf16_m128: grid ug_attn_grid(layout, heads, batch, 128), dynamic smem ug_attn_bf16_fwd_m128_smem(headDim)
//         (d=64: 55,296 B, d=128: 104,448 B); sm_80+
//   i.e. grid = (⌈T·⌈H/n⌉·⌈W/n⌉ / tile⌉, n²·heads, B); blockIdx.y = window·heads + head.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         float* __restrict__ o, float* __restrict__ lse, WindowLayoutParams layout, RopeParams rope,
                         int batch, int heads, int headDim, float scale) {
    (void)batch;  // grid.z
    __shared__ UgTileRow qRows[UG_ATTN_F32_BLOCK];
    __shared__ UgTileRow kRows[UG_ATTN_F32_BLOCK];
    if (headDim == 32)
        attn_fwd_f32<32>(q, k, v, o, lse, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 64)
        attn_fwd_f32<64>(q, k, v, o, lse, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 128)
        attn_fwd_f32<128>(q, k, v, o, lse, layout, rope, heads, scale, qRows, kRows);
}

extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_fwd_bf16(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k, const ug_bf16* __restrict__ v,
                          ug_bf16* __restrict__ o, float* __restrict__ lse, WindowLayoutParams layout, RopeParams rope,
                          int batch, int heads, int headDim, float scale) {
    (void)batch;
    __shared__ UgTileRow qRows[UG_ATTN_BF16_BLOCK_M];
    __shared__ UgTileRow kRows[2][UG_ATTN_BF16_BLOCK_N];
    if (headDim == 32)
        attn_fwd_bf16<32, 1>(q, k, v, o, lse, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 64)
        attn_fwd_bf16<64, 1>(q, k, v, o, lse, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 128)
        attn_fwd_bf16<128, 1>(q, k, v, o, lse, layout, rope, heads, scale, qRows, kRows);
}

// One entry point per head dim: ptxas then allocates registers for one body. In one kernel with a headDim switch, as the
// 64-query kernel has, the d = 128 body spilled (104 B, sm_90, nvcc 11.8); alone it fits 255 registers without spills.
// (Written out, not generated by a macro: the emulator's build finds entry points by their declarations.)
namespace {
template <int D>
__device__ __forceinline__ void attn_fwd_bf16_m128_entry(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                                                         const ug_bf16* __restrict__ v, ug_bf16* __restrict__ o,
                                                         float* __restrict__ lse, const WindowLayoutParams& layout,
                                                         const RopeParams& rope, int heads, int headDim, float scale) {
    __shared__ UgTileRow qRows[2 * UG_ATTN_BF16_BLOCK_M];
    __shared__ UgTileRow kRows[2][UG_ATTN_BF16_BLOCK_N];
    if (headDim == D) attn_fwd_bf16<D, 2>(q, k, v, o, lse, layout, rope, heads, scale, qRows, kRows);
}
}  // namespace

extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_fwd_bf16_m128_d32(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                                   const ug_bf16* __restrict__ v, ug_bf16* __restrict__ o, float* __restrict__ lse,
                                   WindowLayoutParams layout, RopeParams rope, int batch, int heads, int headDim,
                                   float scale) {
    (void)batch;
    attn_fwd_bf16_m128_entry<32>(q, k, v, o, lse, layout, rope, heads, headDim, scale);
}

extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_fwd_bf16_m128_d64(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                                   const ug_bf16* __restrict__ v, ug_bf16* __restrict__ o, float* __restrict__ lse,
                                   WindowLayoutParams layout, RopeParams rope, int batch, int heads, int headDim,
                                   float scale) {
    (void)batch;
    attn_fwd_bf16_m128_entry<64>(q, k, v, o, lse, layout, rope, heads, headDim, scale);
}

extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_fwd_bf16_m128_d128(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                                    const ug_bf16* __restrict__ v, ug_bf16* __restrict__ o, float* __restrict__ lse,
                                    WindowLayoutParams layout, RopeParams rope, int batch, int heads, int headDim,
                                    float scale) {
    (void)batch;
    attn_fwd_bf16_m128_entry<128>(q, k, v, o, lse, layout, rope, heads, headDim, scale);
}

// ------------------------------------------------------------------------------------------------------------------
// window_attention_rope_table: builds RopeParams::cosSin on the device, in float64 rounded to float (abi.cuh layout).
//   cosSin    : f32 [positions · headDim/2 · 2]
//   headDim   : even, ≥ 6
//   positions : ≥ ug_rope_min_positions(layout)
//   theta     : RoPE base (Wan: 10000)
// Launch: block 256, grid ⌈positions·headDim/2 / 256⌉.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
window_attention_rope_table(float* __restrict__ cosSin, int headDim, int positions, double theta) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int pairs = headDim / 2;
    if (idx >= (long long)positions * pairs) return;
    const int pos = (int)(idx / pairs);
    const int pair = (int)(idx - (long long)pos * pairs);
    double sn, cs;
    sincos((double)pos * ug_rope_inv_freq(pair, headDim, theta), &sn, &cs);
    cosSin[2 * idx] = (float)cs;
    cosSin[2 * idx + 1] = (float)sn;
}
