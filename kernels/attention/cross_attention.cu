// cross_attention: the DiT's text cross-attention core, o = softmax(q·kᵀ·scale)·v of N queries over L keys per (batch,
// head), no mask, no RoPE (reference: src/UltraGen.Ops/Reference/CrossAttention.cs). q, o, dO, dq are (B, N, heads·headDim),
// k, v, dk, dv are (B, L, heads·headDim), f32, contiguous; N (video tokens, up to ~10^5) and L (text, 8…512) independent.
//
// The f32 SIMT scheme of window_attention.cu / window_attention_bwd.cu on plain rows: one block = one 32-row tile of one
// (batch, head), 4 warps × 8 rows, lanes over the 32 rows of the other tile; tiles land in shared memory through the same
// UgTileRow bookkeeping and ug_load_tile_f32 (RoPE disabled), tail rows are zero-filled and tail keys masked to −∞.
// Scores stay in the log2 domain (exp2f); lse is stored in natural-log units at lse[(b·heads + head)·N + i], the layout
// window_attention_bwd_preprocess_f32 writes δ in, so the backward reuses that kernel for δ = rowsum(dO∘O).
//
//   cross_attention_fwd_f32       per query tile, online softmax over the L keys                  (o, optional lse)
//   cross_attention_bwd_dkdv_f32  per (key tile, split): dV = Σ_i P_ij·dO_i, dK = scale·Σ_i dS_ij·q_i over the split's
//                                 query chunk; split s writes at offset s·B·L·C (partials, summed by column_sum_f32
//                                 when splits > 1; the gradients themselves when splits = 1)
//   cross_attention_bwd_dq_f32    per query tile: dQ = scale·Σ_j dS_ij·k_j,  dS = P∘(dO·vᵀ − δ)
// No atomics: every output element is written by exactly one block, partials are added in a fixed order.
// __launch_bounds__(128, 2): without the minimum-blocks hint ptxas (11.8) capped dq at 96 and dkdv at 128 registers with
// small spills; with it all three compile spill-free (sm_80 and sm_90).
#include "common/abi.cuh"
#include "common/launch.cuh"
#include "common/tiles.cuh"

namespace {

// Threads 0..count−1 fill rows[] for rows [tileStart, tileStart + count) of one (batch, head) slice of a (B, rowsPerSample,
// heads·headDim) tensor; rows at or past `end` are tails (offset −1). stat = (batch·heads + head)·rowsPerSample + row.
// The caller syncs before use.
__device__ __forceinline__ void ug_fill_plain_rows(UgTileRow* rows, int count, int batch, int head, int heads, int headDim,
                                                   int rowsPerSample, int tileStart, int end) {
    const int r = threadIdx.x;
    if (r >= count) return;
    UgTileRow out;
    const int i = tileStart + r;
    if (i < end) {
        out.offset = ((long long)batch * rowsPerSample + i) * ((long long)heads * headDim) + (long long)head * headDim;
        out.stat = ((long long)batch * heads + head) * rowsPerSample + i;
    } else {
        out.offset = -1;
        out.stat = -1;
    }
    out.t = out.row = out.col = 0;
    out.pad_ = 0;
    rows[r] = out;
}

// The tile loader's RoPE argument; never read (rotate = false).
__constant__ RopeParams ug_no_rope = {0, 0, nullptr};

// Forward for one query tile (32 queries; warp w owns 8w..8w+7). Shared: Q, K, V (32 × (D+1)) + P (per warp 8 × 32).
template <int D>
__device__ __forceinline__ void cross_fwd_f32(const float* __restrict__ q, const float* __restrict__ k,
                                              const float* __restrict__ v, float* __restrict__ o, float* __restrict__ lse,
                                              int queries, int keys, int heads, float scale, UgTileRow* qRows,
                                              UgTileRow* kRows) {
    constexpr int BM = UG_ATTN_F32_BLOCK, BN = UG_ATTN_F32_BLOCK, RPW = UG_ATTN_F32_ROWS_PER_WARP;
    constexpr int LD = D + 1, CPL = D / 32, THREADS = UG_ATTN_THREADS;
    UG_DYNAMIC_SHARED(float4, smem4);
    float* sQ = reinterpret_cast<float*>(smem4);
    float* sK = sQ + BM * LD;
    float* sV = sK + BN * LD;
    float* sP = sV + BN * LD;

    const int head = blockIdx.y, batch = blockIdx.z;
    const int qStart = blockIdx.x * BM;
    if (qStart >= queries) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float sl2 = scale * UG_LOG2E;
    const RopeParams& rope = ug_no_rope;

    ug_fill_plain_rows(qRows, BM, batch, head, heads, D, queries, qStart, queries);
    __syncthreads();
    ug_load_tile_f32<D, THREADS>(sQ, q, qRows, BM, rope, false);

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

    for (int kStart = 0; kStart < keys; kStart += BN) {
        __syncthreads();  // everyone is done with the previous K/V tile and kRows (and sQ is complete)
        ug_fill_plain_rows(kRows, BN, batch, head, heads, D, keys, kStart, keys);
        __syncthreads();
        ug_load_tile_f32<D, THREADS>(sK, k, kRows, BN, rope, false);
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
        const bool keyValid = kStart + lane < keys;
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
                const float vj = sV[j * LD + lane + 32 * u];
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

// dK, dV of one key tile (32 keys; warp w owns keys 8w..8w+7) over the query chunk of split `split`. Per query tile: lane i
// takes query i, sᵀ = k·qᵀ, pᵀ, dpᵀ = v·dOᵀ, dsᵀ; then dV += pᵀ·dO and dK += dsᵀ·q with lanes over columns.
// Shared: K, V, Q, dO (32 × (D+1)) + P, dS (per warp 8 × 32).
template <int D>
__device__ __forceinline__ void cross_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k,
                                                   const float* __restrict__ v, const float* __restrict__ dO,
                                                   const float* __restrict__ lse, const float* __restrict__ delta,
                                                   float* __restrict__ dk, float* __restrict__ dv, int batchCount,
                                                   int queries, int keys, int heads, float scale, int splits,
                                                   UgTileRow* kRows, UgTileRow* qRows, float* sLse2, float* sDelta) {
    constexpr int BK = UG_ATTN_F32_BLOCK, BQ = UG_ATTN_F32_BLOCK, RPW = UG_ATTN_F32_ROWS_PER_WARP;
    constexpr int LD = D + 1, CPL = D / 32, THREADS = UG_ATTN_THREADS;
    UG_DYNAMIC_SHARED(float4, smem4);
    float* sK = reinterpret_cast<float*>(smem4);
    float* sV = sK + BK * LD;
    float* sQ = sV + BK * LD;
    float* sdO = sQ + BQ * LD;
    float* sP = sdO + BQ * LD;
    float* sdS = sP + (THREADS / 32) * RPW * BQ;

    const int head = blockIdx.y, batch = blockIdx.z;
    const int keyTile = blockIdx.x / splits, split = blockIdx.x - keyTile * splits;
    const int kStart = keyTile * BK;
    if (kStart >= keys) return;
    const long long queryTiles = ug_cdiv(queries, BQ);
    const int qBegin = (int)(split * queryTiles / splits) * BQ;
    const int qEndTile = (int)((split + 1) * queryTiles / splits) * BQ;
    const int qEnd = qEndTile < queries ? qEndTile : queries;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float sl2 = scale * UG_LOG2E;
    const RopeParams& rope = ug_no_rope;

    ug_fill_plain_rows(kRows, BK, batch, head, heads, D, keys, kStart, keys);
    __syncthreads();
    ug_load_tile_f32<D, THREADS>(sK, k, kRows, BK, rope, false);
    ug_load_tile_f32<D, THREADS>(sV, v, kRows, BK, rope, false);

    float accK[RPW][CPL], accV[RPW][CPL];
#pragma unroll
    for (int r = 0; r < RPW; ++r)
#pragma unroll
        for (int u = 0; u < CPL; ++u) accK[r][u] = accV[r][u] = 0.f;
    const float* myK = sK + warp * RPW * LD;
    const float* myV = sV + warp * RPW * LD;
    float* myP = sP + warp * RPW * BQ;
    float* mydS = sdS + warp * RPW * BQ;

    for (int qStart = qBegin; qStart < qEnd; qStart += BQ) {
        __syncthreads();  // previous Q/dO tile, qRows and statistics no longer read
        ug_fill_plain_rows(qRows, BQ, batch, head, heads, D, queries, qStart, qEnd);
        __syncthreads();
        if (threadIdx.x < BQ) {
            const long long st = qRows[threadIdx.x].stat;
            // Tail queries: lse = +∞ makes p = 0 exactly, δ = 0 keeps ds finite.
            sLse2[threadIdx.x] = st >= 0 ? lse[st] * UG_LOG2E : INFINITY;
            sDelta[threadIdx.x] = st >= 0 ? delta[st] : 0.f;
        }
        ug_load_tile_f32<D, THREADS>(sQ, q, qRows, BQ, rope, false);
        ug_load_tile_f32<D, THREADS>(sdO, dO, qRows, BQ, rope, false);
        __syncthreads();

        float st[RPW], dpt[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) st[r] = dpt[r] = 0.f;
#pragma unroll 4
        for (int c = 0; c < D; ++c) {
            const float qc = sQ[lane * LD + c], dc = sdO[lane * LD + c];
#pragma unroll
            for (int r = 0; r < RPW; ++r) {
                st[r] = fmaf(myK[r * LD + c], qc, st[r]);
                dpt[r] = fmaf(myV[r * LD + c], dc, dpt[r]);
            }
        }
        const float lse2 = sLse2[lane], dl = sDelta[lane];
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
            const float p = exp2f(st[r] * sl2 - lse2);
            myP[r * BQ + lane] = p;
            mydS[r * BQ + lane] = p * (dpt[r] - dl);
        }
        __syncwarp();
#pragma unroll 4
        for (int i = 0; i < BQ; ++i) {
#pragma unroll
            for (int u = 0; u < CPL; ++u) {
                const float dOi = sdO[i * LD + lane + 32 * u], qi = sQ[i * LD + lane + 32 * u];
#pragma unroll
                for (int r = 0; r < RPW; ++r) {
                    accV[r][u] = fmaf(myP[r * BQ + i], dOi, accV[r][u]);
                    accK[r][u] = fmaf(mydS[r * BQ + i], qi, accK[r][u]);
                }
            }
        }
    }

    const long long partial = (long long)split * batchCount * keys * heads * D;
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        const UgTileRow row = kRows[warp * RPW + r];
        if (row.offset < 0) continue;
#pragma unroll
        for (int u = 0; u < CPL; ++u) {
            dk[partial + row.offset + lane + 32 * u] = accK[r][u] * scale;
            dv[partial + row.offset + lane + 32 * u] = accV[r][u];
        }
    }
}

// dQ for one query tile (32 queries; warp w owns 8w..8w+7). Per key tile: lane j takes key j, s = q·kᵀ, p, dp = dO·vᵀ, ds;
// then dQ += ds·k with lanes over columns. Shared: Q, dO, K, V (32 × (D+1)) + dS (per warp 8 × 32).
template <int D>
__device__ __forceinline__ void cross_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k,
                                                 const float* __restrict__ v, const float* __restrict__ dO,
                                                 const float* __restrict__ lse, const float* __restrict__ delta,
                                                 float* __restrict__ dq, int queries, int keys, int heads, float scale,
                                                 UgTileRow* qRows, UgTileRow* kRows) {
    constexpr int BQ = UG_ATTN_F32_BLOCK, BK = UG_ATTN_F32_BLOCK, RPW = UG_ATTN_F32_ROWS_PER_WARP;
    constexpr int LD = D + 1, CPL = D / 32, THREADS = UG_ATTN_THREADS;
    UG_DYNAMIC_SHARED(float4, smem4);
    float* sQ = reinterpret_cast<float*>(smem4);
    float* sdO = sQ + BQ * LD;
    float* sK = sdO + BQ * LD;
    float* sV = sK + BK * LD;
    float* sdS = sV + BK * LD;

    const int head = blockIdx.y, batch = blockIdx.z;
    const int qStart = blockIdx.x * BQ;
    if (qStart >= queries) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float sl2 = scale * UG_LOG2E;
    const RopeParams& rope = ug_no_rope;

    ug_fill_plain_rows(qRows, BQ, batch, head, heads, D, queries, qStart, queries);
    __syncthreads();
    ug_load_tile_f32<D, THREADS>(sQ, q, qRows, BQ, rope, false);
    ug_load_tile_f32<D, THREADS>(sdO, dO, qRows, BQ, rope, false);
    float lse2[RPW], dl[RPW];
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        const long long st = qRows[warp * RPW + r].stat;
        lse2[r] = st >= 0 ? lse[st] * UG_LOG2E : INFINITY;
        dl[r] = st >= 0 ? delta[st] : 0.f;
    }

    float acc[RPW][CPL];
#pragma unroll
    for (int r = 0; r < RPW; ++r)
#pragma unroll
        for (int u = 0; u < CPL; ++u) acc[r][u] = 0.f;
    const float* myQ = sQ + warp * RPW * LD;
    const float* mydO = sdO + warp * RPW * LD;
    float* mydS = sdS + warp * RPW * BK;

    for (int kStart = 0; kStart < keys; kStart += BK) {
        __syncthreads();
        ug_fill_plain_rows(kRows, BK, batch, head, heads, D, keys, kStart, keys);
        __syncthreads();
        ug_load_tile_f32<D, THREADS>(sK, k, kRows, BK, rope, false);
        ug_load_tile_f32<D, THREADS>(sV, v, kRows, BK, rope, false);
        __syncthreads();

        float sc[RPW], dp[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) sc[r] = dp[r] = 0.f;
#pragma unroll 4
        for (int c = 0; c < D; ++c) {
            const float kc = sK[lane * LD + c], vc = sV[lane * LD + c];
#pragma unroll
            for (int r = 0; r < RPW; ++r) {
                sc[r] = fmaf(myQ[r * LD + c], kc, sc[r]);
                dp[r] = fmaf(mydO[r * LD + c], vc, dp[r]);
            }
        }
        const bool keyValid = kStart + lane < keys;
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
            const float p = keyValid ? exp2f(sc[r] * sl2 - lse2[r]) : 0.f;
            mydS[r * BK + lane] = p * (dp[r] - dl[r]);
        }
        __syncwarp();
#pragma unroll 4
        for (int j = 0; j < BK; ++j) {
#pragma unroll
            for (int u = 0; u < CPL; ++u) {
                const float kj = sK[j * LD + lane + 32 * u];
#pragma unroll
                for (int r = 0; r < RPW; ++r) acc[r][u] = fmaf(mydS[r * BK + j], kj, acc[r][u]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        const UgTileRow row = qRows[warp * RPW + r];
        if (row.offset < 0) continue;
#pragma unroll
        for (int u = 0; u < CPL; ++u) dq[row.offset + lane + 32 * u] = acc[r][u] * scale;
    }
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// cross_attention_fwd_f32
//   q, o    : (B, N, heads·headDim) f32;  k, v: (B, L, heads·headDim) f32; contiguous, base pointers 16-byte aligned
//   lse     : f32 (B, heads, N) natural-log row log-sum-exp, or null (not written)
//   batch, queries (N), keys (L ≥ 1), heads, headDim (64 | 128; others return without writing), scale (1/√headDim)
// Launch: block 128, grid ug_cross_attn_grid(N, heads, B, 32, 1) = (⌈N/32⌉, heads, B),
//         smem ug_attn_f32_fwd_smem(headDim) (d=64: 29,056 B, d=128: 53,632 B).
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS, 2)
cross_attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                        float* __restrict__ o, float* __restrict__ lse, int batch, int queries, int keys, int heads,
                        int headDim, float scale) {
    (void)batch;
    __shared__ UgTileRow qRows[UG_ATTN_F32_BLOCK];
    __shared__ UgTileRow kRows[UG_ATTN_F32_BLOCK];
    if (headDim == 32)
        cross_fwd_f32<32>(q, k, v, o, lse, queries, keys, heads, scale, qRows, kRows);
    else if (headDim == 64)
        cross_fwd_f32<64>(q, k, v, o, lse, queries, keys, heads, scale, qRows, kRows);
    else if (headDim == 128)
        cross_fwd_f32<128>(q, k, v, o, lse, queries, keys, heads, scale, qRows, kRows);
}

// ------------------------------------------------------------------------------------------------------------------
// cross_attention_bwd_dkdv_f32
//   q, dO      : (B, N, heads·headDim);  k, v: (B, L, heads·headDim)
//   lse, delta : f32 (B, heads, N) from the forward and window_attention_bwd_preprocess_f32 (tokens = N)
//   dk, dv     : splits = 1: the gradients, (B, L, heads·headDim), every element written (overwrite, not +=);
//                splits > 1: partials (splits, B, L, heads·headDim), finish with column_sum_f32(partial, out, splits,
//                B·L·heads·headDim, 1)
//   batch, queries, keys, heads, headDim (32 | 64 | 128), scale, splits = ug_cross_attn_splits(...)
// Launch: block 128, grid ug_cross_attn_grid(L, heads, B, 32, splits) = (⌈L/32⌉·splits, heads, B),
//         smem ug_attn_f32_dkdv_smem(headDim) (d=64: 41,472 B, d=128: 74,240 B).
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS, 2)
cross_attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                             const float* __restrict__ dO, const float* __restrict__ lse, const float* __restrict__ delta,
                             float* __restrict__ dk, float* __restrict__ dv, int batch, int queries, int keys, int heads,
                             int headDim, float scale, int splits) {
    __shared__ UgTileRow kRows[UG_ATTN_F32_BLOCK];
    __shared__ UgTileRow qRows[UG_ATTN_F32_BLOCK];
    __shared__ float sLse2[UG_ATTN_F32_BLOCK];
    __shared__ float sDelta[UG_ATTN_F32_BLOCK];
    if (headDim == 32)
        cross_bwd_dkdv_f32<32>(q, k, v, dO, lse, delta, dk, dv, batch, queries, keys, heads, scale, splits, kRows, qRows,
                               sLse2, sDelta);
    else if (headDim == 64)
        cross_bwd_dkdv_f32<64>(q, k, v, dO, lse, delta, dk, dv, batch, queries, keys, heads, scale, splits, kRows, qRows,
                               sLse2, sDelta);
    else if (headDim == 128)
        cross_bwd_dkdv_f32<128>(q, k, v, dO, lse, delta, dk, dv, batch, queries, keys, heads, scale, splits, kRows, qRows,
                                sLse2, sDelta);
}

// ------------------------------------------------------------------------------------------------------------------
// cross_attention_bwd_dq_f32
//   q, k, v, dO, lse, delta: as dkdv;  dq: output, (B, N, heads·headDim), overwritten
//   batch, queries, keys, heads, headDim (32 | 64 | 128), scale
// Launch: block 128, grid ug_cross_attn_grid(N, heads, B, 32, 1) = (⌈N/32⌉, heads, B),
//         smem ug_attn_f32_dq_smem(headDim) (d=64: 37,376 B, d=128: 70,144 B).
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS, 2)
cross_attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                           const float* __restrict__ dO, const float* __restrict__ lse, const float* __restrict__ delta,
                           float* __restrict__ dq, int batch, int queries, int keys, int heads, int headDim, float scale) {
    (void)batch;
    __shared__ UgTileRow qRows[UG_ATTN_F32_BLOCK];
    __shared__ UgTileRow kRows[UG_ATTN_F32_BLOCK];
    if (headDim == 32)
        cross_bwd_dq_f32<32>(q, k, v, dO, lse, delta, dq, queries, keys, heads, scale, qRows, kRows);
    else if (headDim == 64)
        cross_bwd_dq_f32<64>(q, k, v, dO, lse, delta, dq, queries, keys, heads, scale, qRows, kRows);
    else if (headDim == 128)
        cross_bwd_dq_f32<128>(q, k, v, dO, lse, delta, dq, queries, keys, heads, scale, qRows, kRows);
}
