// window_attention backward, FlashAttention-2 style, on the same WindowLayout walk as the forward
// (window_attention.cu; reference: WindowAttentionOp.Backward in src/UltraGen.Ops/Reference/WindowAttention.cs).
// With q̃, k̃ the rotated q, k, P = softmax(q̃·k̃ᵀ·scale) recomputed from the forward's LSE (P_ij = exp(s_ij·scale − lse_i)):
//   preprocess : δ_i = Σ_c dO_ic·O_ic                                  (= Σ_j P_ij·dP_ij)
//   dkdv       : per key tile, over all query tiles of its window:  dV_j = Σ_i P_ij·dO_i,
//                dK̃_j = scale·Σ_i dS_ij·q̃_i,  dS_ij = P_ij·(dP_ij − δ_i), dP_ij = dO_i·v_j
//   dq         : per query tile, over all key tiles of its window:  dQ̃_i = scale·Σ_j dS_ij·k̃_j
// dQ̃ and dK̃ are rotated back (inverse RoPE, the transpose of the rotation) before they are stored, so dq, dk are the
// gradients with respect to the un-rotated q, k. Every output row is owned by exactly one block: no atomics, and the
// results are deterministic. Launch order: preprocess, then dkdv and dq (independent of each other).
#include "common/abi.cuh"
#include "common/bf16.cuh"
#include "common/launch.cuh"
#include "common/rope.cuh"
#include "common/tiles.cuh"
#include "common/window_layout.cuh"

namespace {

// δ for one (batch, token, head) row per warp; rows enumerate (b, token, head) with head fastest, so a warp reads
// D contiguous elements of O and dO.
template <typename T>
__device__ __forceinline__ void attn_bwd_preprocess(const T* __restrict__ o, const T* __restrict__ dO, float* __restrict__ delta,
                                                    int batch, long long tokens, int heads, int headDim) {
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (long long)batch * tokens * heads) return;
    const long long bt = row / heads;  // b·tokens + token
    const int head = (int)(row - bt * heads);
    const long long b = bt / tokens, token = bt - b * tokens;
    const T* po = o + row * headDim;
    const T* pd = dO + row * headDim;
    float sum = 0.f;
    for (int c = lane; c < headDim; c += 32) sum = fmaf(ug_to_f32(po[c]), ug_to_f32(pd[c]), sum);
    sum = ug_warp_sum(sum);
    if (lane == 0) delta[(b * heads + head) * tokens + token] = sum;
}

// ================================================================================================================
// f32 SIMT path (exact). 128 threads = 4 warps × 8 rows of a 32-row tile; lanes walk the 32 rows of the other tile.
// ================================================================================================================

// dK, dV for one key tile (32 keys; warp w owns keys 8w..8w+7). Per query tile: lane i takes query i,
// sᵀ = k·q̃ᵀ, pᵀ, dpᵀ = v·dOᵀ, dsᵀ; then dV += pᵀ·dO and dK += dsᵀ·q̃ with lanes over columns.
// Shared: K, V, Q, dO (32 × (D+1)) + P, dS (per warp 8 × 32).
template <int D>
__device__ __forceinline__ void attn_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k,
                                                  const float* __restrict__ v, const float* __restrict__ dO,
                                                  const float* __restrict__ lse, const float* __restrict__ delta,
                                                  float* __restrict__ dk, float* __restrict__ dv,
                                                  const WindowLayoutParams& layout, const RopeParams& rope, int heads,
                                                  float scale, UgTileRow* kRows, UgTileRow* qRows, float* sLse2,
                                                  float* sDelta) {
    constexpr int BK = UG_ATTN_F32_BLOCK, BQ = UG_ATTN_F32_BLOCK, RPW = UG_ATTN_F32_ROWS_PER_WARP;
    constexpr int LD = D + 1, CPL = D / 32, THREADS = UG_ATTN_THREADS;
    UG_DYNAMIC_SHARED(float4, smem4);
    float* sK = reinterpret_cast<float*>(smem4);
    float* sV = sK + BK * LD;
    float* sQ = sV + BK * LD;
    float* sdO = sQ + BQ * LD;
    float* sP = sdO + BQ * LD;
    float* sdS = sP + (THREADS / 32) * RPW * BQ;

    const int window = blockIdx.y / heads, head = blockIdx.y - window * heads;
    const UgAttnSlice s = ug_attn_slice(layout, window, blockIdx.z, head, heads, D);
    const int kStart = blockIdx.x * BK;
    if (kStart >= s.tokens) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool rotate = rope.enabled != 0;
    const float sl2 = scale * UG_LOG2E;

    ug_fill_tile_rows(kRows, BK, layout, s, kStart);
    __syncthreads();
    ug_load_tile_f32<D, THREADS>(sK, k, kRows, BK, rope, rotate);
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

    for (int qStart = 0; qStart < s.tokens; qStart += BQ) {
        __syncthreads();  // previous Q/dO tile, qRows and statistics no longer read
        ug_fill_tile_rows(qRows, BQ, layout, s, qStart);
        __syncthreads();
        if (threadIdx.x < BQ) {
            const long long st = qRows[threadIdx.x].stat;
            // Tail queries: lse = +∞ makes p = 0 exactly, δ = 0 keeps ds finite.
            sLse2[threadIdx.x] = st >= 0 ? lse[st] * UG_LOG2E : INFINITY;
            sDelta[threadIdx.x] = st >= 0 ? delta[st] : 0.f;
        }
        ug_load_tile_f32<D, THREADS>(sQ, q, qRows, BQ, rope, rotate);
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

    // Store: dK un-rotated. Column c = lane + 32u; its pair partner c ^ 1 sits in lane ^ 1 (same u).
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        const UgTileRow row = kRows[warp * RPW + r];
#pragma unroll
        for (int u = 0; u < CPL; ++u) {
            float g = accK[r][u] * scale;
            if (rotate) {
                const float other = __shfl_xor_sync(0xffffffffu, g, 1);
                const float2 cs = ug_rope_cs(rope, D, row, (lane + 32 * u) >> 1);
                // inverse rotation (cos, −sin): even column y0 = x0·c + x1·s, odd column y1 = −x0·s + x1·c
                g = (lane & 1) ? fmaf(-other, cs.y, g * cs.x) : fmaf(other, cs.y, g * cs.x);
            }
            if (row.offset >= 0) {
                dk[row.offset + lane + 32 * u] = g;
                dv[row.offset + lane + 32 * u] = accV[r][u];
            }
        }
    }
}

// dQ for one query tile (32 queries; warp w owns queries 8w..8w+7). Per key tile: lane j takes key j,
// s = q̃·k̃ᵀ, p, dp = dO·vᵀ, ds; then dQ += ds·k̃ with lanes over columns.
// Shared: Q, dO, K, V (32 × (D+1)) + dS (per warp 8 × 32).
template <int D>
__device__ __forceinline__ void attn_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k,
                                                const float* __restrict__ v, const float* __restrict__ dO,
                                                const float* __restrict__ lse, const float* __restrict__ delta,
                                                float* __restrict__ dq, const WindowLayoutParams& layout,
                                                const RopeParams& rope, int heads, float scale, UgTileRow* qRows,
                                                UgTileRow* kRows) {
    constexpr int BQ = UG_ATTN_F32_BLOCK, BK = UG_ATTN_F32_BLOCK, RPW = UG_ATTN_F32_ROWS_PER_WARP;
    constexpr int LD = D + 1, CPL = D / 32, THREADS = UG_ATTN_THREADS;
    UG_DYNAMIC_SHARED(float4, smem4);
    float* sQ = reinterpret_cast<float*>(smem4);
    float* sdO = sQ + BQ * LD;
    float* sK = sdO + BQ * LD;
    float* sV = sK + BK * LD;
    float* sdS = sV + BK * LD;

    const int window = blockIdx.y / heads, head = blockIdx.y - window * heads;
    const UgAttnSlice s = ug_attn_slice(layout, window, blockIdx.z, head, heads, D);
    const int qStart = blockIdx.x * BQ;
    if (qStart >= s.tokens) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool rotate = rope.enabled != 0;
    const float sl2 = scale * UG_LOG2E;

    ug_fill_tile_rows(qRows, BQ, layout, s, qStart);
    __syncthreads();
    ug_load_tile_f32<D, THREADS>(sQ, q, qRows, BQ, rope, rotate);
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

    for (int kStart = 0; kStart < s.tokens; kStart += BK) {
        __syncthreads();
        ug_fill_tile_rows(kRows, BK, layout, s, kStart);
        __syncthreads();
        ug_load_tile_f32<D, THREADS>(sK, k, kRows, BK, rope, rotate);
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
        const bool keyValid = kStart + lane < s.tokens;
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
#pragma unroll
        for (int u = 0; u < CPL; ++u) {
            float g = acc[r][u] * scale;
            if (rotate) {
                const float other = __shfl_xor_sync(0xffffffffu, g, 1);
                const float2 cs = ug_rope_cs(rope, D, row, (lane + 32 * u) >> 1);
                g = (lane & 1) ? fmaf(-other, cs.y, g * cs.x) : fmaf(other, cs.y, g * cs.x);
            }
            if (row.offset >= 0) dq[row.offset + lane + 32 * u] = g;
        }
    }
}

// ================================================================================================================
// bf16 tensor-core path (sm_80+). Fragment layouts: common/tiles.cuh.
// ================================================================================================================

// dK, dV for one key tile of 64 (warp w owns keys 16w..16w+15, M = keys), over query tiles of BQ (32 for d=128, 64 for
// d=64). Per query tile and warp: Sᵀ = K·Q̃ᵀ and dPᵀ = V·dOᵀ (16 × BQ), Pᵀ = exp2(Sᵀ·scale·log2e − lse₂),
// dSᵀ = Pᵀ∘(dPᵀ − δ); dV += Pᵀ·dO, dK += dSᵀ·Q̃ (16 × D each, f32 in registers), Pᵀ and dSᵀ reused in place as A
// fragments. K and V fragments are re-read from shared memory with ldmatrix (holding them too would spill at d=128).
// Q/dO tiles (and their lse/δ) stream through two stages: the cp.async copy of tile j+1 is in flight while tile j is
// multiplied.
// Shared: K, V (64 × (D+8)) + 2 × [Q, dO] (BQ × (D+8)) bf16.
template <int D>
__device__ __forceinline__ void attn_bwd_dkdv_bf16(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                                                   const ug_bf16* __restrict__ v, const ug_bf16* __restrict__ dO,
                                                   const float* __restrict__ lse, const float* __restrict__ delta,
                                                   ug_bf16* __restrict__ dk, ug_bf16* __restrict__ dv,
                                                   const WindowLayoutParams& layout, const RopeParams& rope, int heads,
                                                   float scale, UgTileRow* kRows, UgTileRow (*qRows)[64],
                                                   float (*sLse2)[64], float (*sDelta)[64]) {
    constexpr int BK = UG_ATTN_BF16_BLOCK_N, BQ = D == 128 ? 32 : 64, LD = D + UG_ATTN_BF16_PAD;
    constexpr int THREADS = UG_ATTN_THREADS, KSTEPS = D / 16, NBQ = BQ / 8, NBD = D / 8;
    UG_DYNAMIC_SHARED(float4, smem4);
    ug_bf16* sK = reinterpret_cast<ug_bf16*>(smem4);
    ug_bf16* sV = sK + BK * LD;
    // Stage st (0 or 1): Q at sK + (2·BK + st·BQ)·LD, dO at sK + (2·BK + (2 + st)·BQ)·LD.
    auto sQ = [&](int st) { return sK + (2 * BK + st * BQ) * LD; };
    auto sdO = [&](int st) { return sK + (2 * BK + (2 + st) * BQ) * LD; };

    const int window = blockIdx.y / heads, head = blockIdx.y - window * heads;
    const UgAttnSlice s = ug_attn_slice(layout, window, blockIdx.z, head, heads, D);
    const int kStart = blockIdx.x * BK;
    if (kStart >= s.tokens) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tq = lane & 3;
    const bool rotate = rope.enabled != 0;
    const float sl2 = scale * UG_LOG2E;

    const int nTiles = ug_tiles_in_window(s.tokens, BQ);
    // lse₂ and δ of the query tile whose rows are in qRows[st], into stage st: written after the barrier that retires
    // the stage's previous tile (its readers), read after the barrier that completes this one.
    auto loadStats = [&](int st) {
        if (threadIdx.x < BQ) {
            const long long stat = qRows[st][threadIdx.x].stat;
            sLse2[st][threadIdx.x] = stat >= 0 ? lse[stat] * UG_LOG2E : INFINITY;  // tail queries: p = 0
            sDelta[st][threadIdx.x] = stat >= 0 ? delta[stat] : 0.f;
        }
    };

    // Prologue: K/V (group 0) and Q/dO tile 0 (group 1) in flight; rotate K once it has landed.
    ug_fill_tile_rows(kRows, BK, layout, s, kStart);
    ug_fill_tile_rows(qRows[0], BQ, layout, s, 0);
    __syncthreads();
    ug_issue_tile_bf16<D, THREADS>(sK, k, kRows, BK);
    ug_issue_tile_bf16<D, THREADS>(sV, v, kRows, BK);
    ug_cp_async_commit();
    ug_issue_tile_bf16<D, THREADS>(sQ(0), q, qRows[0], BQ);
    ug_issue_tile_bf16<D, THREADS>(sdO(0), dO, qRows[0], BQ);
    ug_cp_async_commit();
    loadStats(0);
    ug_cp_async_wait<1>();
    if (rotate) ug_rotate_tile_bf16<D, THREADS>(sK, kRows, BK, rope);

    float accK[NBD][4], accV[NBD][4];
#pragma unroll
    for (int nb = 0; nb < NBD; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) accK[nb][e] = accV[nb][e] = 0.f;

    for (int j = 0; j < nTiles; ++j) {
        const int buf = j & 1;
        // Stage buf^1 (rows, Q/dO, statistics) was last read in iteration j−1; the step's barrier also publishes the
        // rotated K on the first pass; the next tile's statistics load while its copies are in flight.
        ug_stream_pair_step<D, THREADS>(j, nTiles, qRows[buf ^ 1], BQ, layout, s, (j + 1) * BQ, sQ(buf ^ 1), q, sdO(buf ^ 1), dO,
                                        [&] { loadStats(buf ^ 1); });
        if (rotate) ug_rotate_tile_bf16<D, THREADS>(sQ(buf), qRows[buf], BQ, rope);
        __syncthreads();  // tile j complete, rotated and its statistics written, for every warp

        // Sᵀ (keys × queries) and dPᵀ, A = this warp's 16 rows of K (resp. V), B = Q̃ᵀ (resp. dOᵀ).
        float st[NBQ][4], dpt[NBQ][4];
#pragma unroll
        for (int nb = 0; nb < NBQ; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[nb][e] = dpt[nb][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            uint32_t ak[4], av[4];
            ug_ldmatrix_x4(ak, ug_frag_a_addr(sK, LD, warp * 16, ks * 16, lane));
            ug_ldmatrix_x4(av, ug_frag_a_addr(sV, LD, warp * 16, ks * 16, lane));
#pragma unroll
            for (int nb2 = 0; nb2 < NBQ / 2; ++nb2) {
                uint32_t bq[4], bd[4];
                ug_ldmatrix_x4(bq, ug_frag_bt_addr(sQ(buf), LD, nb2 * 16, ks * 16, lane));
                ug_ldmatrix_x4(bd, ug_frag_bt_addr(sdO(buf), LD, nb2 * 16, ks * 16, lane));
                ug_mma_bf16(st[2 * nb2], ak, bq[0], bq[1]);
                ug_mma_bf16(st[2 * nb2 + 1], ak, bq[2], bq[3]);
                ug_mma_bf16(dpt[2 * nb2], av, bd[0], bd[1]);
                ug_mma_bf16(dpt[2 * nb2 + 1], av, bd[2], bd[3]);
            }
        }
        // Columns are queries: nb·8 + 2tq + {0,1}, the same for both rows (g, g+8) of the fragment.
#pragma unroll
        for (int nb = 0; nb < NBQ; ++nb) {
            const int c0 = nb * 8 + 2 * tq;
            const float l0 = sLse2[buf][c0], l1 = sLse2[buf][c0 + 1], d0 = sDelta[buf][c0], d1 = sDelta[buf][c0 + 1];
            st[nb][0] = exp2f(st[nb][0] * sl2 - l0);
            st[nb][1] = exp2f(st[nb][1] * sl2 - l1);
            st[nb][2] = exp2f(st[nb][2] * sl2 - l0);
            st[nb][3] = exp2f(st[nb][3] * sl2 - l1);
            dpt[nb][0] = st[nb][0] * (dpt[nb][0] - d0);
            dpt[nb][1] = st[nb][1] * (dpt[nb][1] - d1);
            dpt[nb][2] = st[nb][2] * (dpt[nb][2] - d0);
            dpt[nb][3] = st[nb][3] * (dpt[nb][3] - d1);
        }
        uint32_t pf[NBQ / 2][4], dsf[NBQ / 2][4];
        ug_c_to_a<NBQ / 2>(pf, st);
        ug_c_to_a<NBQ / 2>(dsf, dpt);
        // dV += Pᵀ·dO, dK += dSᵀ·Q̃: B = dO (resp. Q̃) stored [query][dim] = [k][n] → ldmatrix.trans.
#pragma unroll
        for (int kk = 0; kk < NBQ / 2; ++kk) {
#pragma unroll
            for (int nd2 = 0; nd2 < NBD / 2; ++nd2) {
                uint32_t bd[4], bq[4];
                ug_ldmatrix_x4_trans(bd, ug_frag_b_trans_addr(sdO(buf), LD, kk * 16, nd2 * 16, lane));
                ug_ldmatrix_x4_trans(bq, ug_frag_b_trans_addr(sQ(buf), LD, kk * 16, nd2 * 16, lane));
                ug_mma_bf16(accV[2 * nd2], pf[kk], bd[0], bd[1]);
                ug_mma_bf16(accV[2 * nd2 + 1], pf[kk], bd[2], bd[3]);
                ug_mma_bf16(accK[2 * nd2], dsf[kk], bq[0], bq[1]);
                ug_mma_bf16(accK[2 * nd2 + 1], dsf[kk], bq[2], bq[3]);
            }
        }
    }

    // Epilogue: scale and un-rotate dK̃ in registers, stage both through this warp's own rows of sK / sV (read only by
    // this warp, as A operands), 16-byte stores.
    const UgTileRow* myRows = kRows + warp * 16;
#pragma unroll
    for (int nb = 0; nb < NBD; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) accK[nb][e] *= scale;
    if (rotate) ug_unrotate_acc<D>(accK, rope, myRows[g], myRows[g + 8], lane);
    __syncwarp();
    ug_store_warp_rows_bf16<D>(sK + warp * 16 * LD, accK, myRows, dk, lane);
    ug_store_warp_rows_bf16<D>(sV + warp * 16 * LD, accV, myRows, dv, lane);
}

// dQ for one query tile of 64 (warp w owns queries 16w..16w+15), over key tiles of 64. Per key tile and warp:
// S = Q̃·K̃ᵀ, dP = dO·Vᵀ (16 × 64), P = exp2(S·scale·log2e − lse₂), dS = P∘(dP − δ), dQ += dS·K̃ (16 × D, f32).
// K/V tiles stream through two shared-memory stages as in the forward: the cp.async copy of tile j+1 is in flight
// while tile j is multiplied, so the block does not stall on every tile's global-memory latency.
// Shared: Q, dO (64 × (D+8)) + 2 × [K, V] (64 × (D+8)) bf16.
template <int D>
__device__ __forceinline__ void attn_bwd_dq_bf16(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                                                 const ug_bf16* __restrict__ v, const ug_bf16* __restrict__ dO,
                                                 const float* __restrict__ lse, const float* __restrict__ delta,
                                                 ug_bf16* __restrict__ dq, const WindowLayoutParams& layout,
                                                 const RopeParams& rope, int heads, float scale, UgTileRow* qRows,
                                                 UgTileRow (*kRows)[UG_ATTN_BF16_BLOCK_N]) {
    constexpr int BQ = UG_ATTN_BF16_BLOCK_M, BK = UG_ATTN_BF16_BLOCK_N, LD = D + UG_ATTN_BF16_PAD;
    constexpr int THREADS = UG_ATTN_THREADS, KSTEPS = D / 16, NBK = BK / 8, NBD = D / 8;
    UG_DYNAMIC_SHARED(float4, smem4);
    ug_bf16* sQ = reinterpret_cast<ug_bf16*>(smem4);
    ug_bf16* sdO = sQ + BQ * LD;
    // Stage st (0 or 1): K at sQ + (2·BQ + st·BK)·LD, V at sQ + (2·BQ + (2 + st)·BK)·LD.
    auto sK = [&](int st) { return sQ + (2 * BQ + st * BK) * LD; };
    auto sV = [&](int st) { return sQ + (2 * BQ + (2 + st) * BK) * LD; };

    const int window = blockIdx.y / heads, head = blockIdx.y - window * heads;
    const UgAttnSlice s = ug_attn_slice(layout, window, blockIdx.z, head, heads, D);
    const int qStart = blockIdx.x * BQ;
    if (qStart >= s.tokens) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tq = lane & 3;
    const bool rotate = rope.enabled != 0;
    const float sl2 = scale * UG_LOG2E;

    const int nTiles = ug_tiles_in_window(s.tokens, BK);

    // Prologue: Q/dO (group 0) and K/V tile 0 (group 1) in flight; rotate Q once it has landed.
    ug_fill_tile_rows(qRows, BQ, layout, s, qStart);
    ug_fill_tile_rows(kRows[0], BK, layout, s, 0);
    __syncthreads();
    ug_issue_tile_bf16<D, THREADS>(sQ, q, qRows, BQ);
    ug_issue_tile_bf16<D, THREADS>(sdO, dO, qRows, BQ);
    ug_cp_async_commit();
    ug_issue_tile_bf16<D, THREADS>(sK(0), k, kRows[0], BK);
    ug_issue_tile_bf16<D, THREADS>(sV(0), v, kRows[0], BK);
    ug_cp_async_commit();
    const UgTileRow* myRows = qRows + warp * 16;
    const long long stLo = myRows[g].stat, stHi = myRows[g + 8].stat;
    const float lse2Lo = stLo >= 0 ? lse[stLo] * UG_LOG2E : INFINITY, lse2Hi = stHi >= 0 ? lse[stHi] * UG_LOG2E : INFINITY;
    const float dLo = stLo >= 0 ? delta[stLo] : 0.f, dHi = stHi >= 0 ? delta[stHi] : 0.f;
    ug_cp_async_wait<1>();
    if (rotate) ug_rotate_tile_bf16<D, THREADS>(sQ, qRows, BQ, rope);

    float acc[NBD][4];
#pragma unroll
    for (int nb = 0; nb < NBD; ++nb) acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.f;

    for (int j = 0; j < nTiles; ++j) {
        const int buf = j & 1;
        const int kStart = j * BK;
        // The step's barrier also publishes the rotated Q on the first pass.
        ug_stream_pair_step<D, THREADS>(j, nTiles, kRows[buf ^ 1], BK, layout, s, kStart + BK, sK(buf ^ 1), k, sV(buf ^ 1), v, [] {});
        if (rotate) ug_rotate_tile_bf16<D, THREADS>(sK(buf), kRows[buf], BK, rope);
        __syncthreads();  // tile j complete and rotated for every warp (and Q/dO, on the first pass)

        float sc[NBK][4], dp[NBK][4];
#pragma unroll
        for (int nb = 0; nb < NBK; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e) sc[nb][e] = dp[nb][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            uint32_t aq[4], ad[4];
            ug_ldmatrix_x4(aq, ug_frag_a_addr(sQ, LD, warp * 16, ks * 16, lane));
            ug_ldmatrix_x4(ad, ug_frag_a_addr(sdO, LD, warp * 16, ks * 16, lane));
#pragma unroll
            for (int nb2 = 0; nb2 < NBK / 2; ++nb2) {
                uint32_t bk[4], bv[4];
                ug_ldmatrix_x4(bk, ug_frag_bt_addr(sK(buf), LD, nb2 * 16, ks * 16, lane));
                ug_ldmatrix_x4(bv, ug_frag_bt_addr(sV(buf), LD, nb2 * 16, ks * 16, lane));
                ug_mma_bf16(sc[2 * nb2], aq, bk[0], bk[1]);
                ug_mma_bf16(sc[2 * nb2 + 1], aq, bk[2], bk[3]);
                ug_mma_bf16(dp[2 * nb2], ad, bv[0], bv[1]);
                ug_mma_bf16(dp[2 * nb2 + 1], ad, bv[2], bv[3]);
            }
        }
#pragma unroll
        for (int nb = 0; nb < NBK; ++nb) {
            const int col = kStart + nb * 8 + 2 * tq;
            const bool v0 = col < s.tokens, v1 = col + 1 < s.tokens;
            const float p0 = v0 ? exp2f(sc[nb][0] * sl2 - lse2Lo) : 0.f;
            const float p1 = v1 ? exp2f(sc[nb][1] * sl2 - lse2Lo) : 0.f;
            const float p2 = v0 ? exp2f(sc[nb][2] * sl2 - lse2Hi) : 0.f;
            const float p3 = v1 ? exp2f(sc[nb][3] * sl2 - lse2Hi) : 0.f;
            dp[nb][0] = p0 * (dp[nb][0] - dLo);
            dp[nb][1] = p1 * (dp[nb][1] - dLo);
            dp[nb][2] = p2 * (dp[nb][2] - dHi);
            dp[nb][3] = p3 * (dp[nb][3] - dHi);
        }
        uint32_t dsf[NBK / 2][4];
        ug_c_to_a<NBK / 2>(dsf, dp);
        // dQ += dS·K̃: B = K̃ stored [key][dim] = [k][n] → ldmatrix.trans.
#pragma unroll
        for (int kk = 0; kk < NBK / 2; ++kk) {
#pragma unroll
            for (int nd2 = 0; nd2 < NBD / 2; ++nd2) {
                uint32_t b[4];
                ug_ldmatrix_x4_trans(b, ug_frag_b_trans_addr(sK(buf), LD, kk * 16, nd2 * 16, lane));
                ug_mma_bf16(acc[2 * nd2], dsf[kk], b[0], b[1]);
                ug_mma_bf16(acc[2 * nd2 + 1], dsf[kk], b[2], b[3]);
            }
        }
    }

#pragma unroll
    for (int nb = 0; nb < NBD; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nb][e] *= scale;
    if (rotate) ug_unrotate_acc<D>(acc, rope, myRows[g], myRows[g + 8], lane);
    __syncwarp();
    ug_store_warp_rows_bf16<D>(sQ + warp * 16 * LD, acc, myRows, dq, lane);  // own rows of sQ: read only by this warp
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// window_attention_bwd_preprocess_f32 / _bf16:  delta[(b·heads + h)·N + token] = Σ_c dO·O over the head's D channels
//   o, dO : (B, N, heads·headDim) f32 resp. bf16 (o = the forward output)
//   delta : f32 (B, heads, N)
//   batch, tokens (= N = T·H·W, 64-bit), heads, headDim (any; the loop is strided)
// Launch: block 256 (8 warps, one row each), grid ug_attn_preprocess_grid(B·N·heads) = ⌈B·N·heads / 8⌉, no smem.
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(256)
window_attention_bwd_preprocess_f32(const float* __restrict__ o, const float* __restrict__ dO, float* __restrict__ delta,
                                    int batch, long long tokens, int heads, int headDim) {
    attn_bwd_preprocess<float>(o, dO, delta, batch, tokens, heads, headDim);
}

extern "C" __global__ void __launch_bounds__(256)
window_attention_bwd_preprocess_bf16(const ug_bf16* __restrict__ o, const ug_bf16* __restrict__ dO,
                                     float* __restrict__ delta, int batch, long long tokens, int heads, int headDim) {
    attn_bwd_preprocess<ug_bf16>(o, dO, delta, batch, tokens, heads, headDim);
}

// ------------------------------------------------------------------------------------------------------------------
// window_attention_bwd_dkdv_f32 / _bf16
//   q, k, v, dO : forward inputs and output gradient, (B, T, H, W, heads·headDim), f32 resp. bf16
//   lse, delta  : f32 (B, heads, N) from the forward (lse pointer) and the preprocess
//   dk, dv      : outputs, same shape/dtype as k, v; every element of every window is written (overwrite, not +=)
//   layout, rope, batch, heads, headDim (32 | 64 | 128), scale: as the forward
// Launch: block 128;
//   f32 : grid ug_attn_grid(layout, heads, batch, 32) (key tiles), smem ug_attn_f32_dkdv_smem (d=64: 41,472 B,
//         d=128: 74,240 B)
//   bf16: grid ug_attn_grid(layout, heads, batch, 64) (key tiles), smem ug_attn_bf16_dkdv_smem (d=64: 55,296 B,
//         d=128: 69,632 B)
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                              const float* __restrict__ dO, const float* __restrict__ lse, const float* __restrict__ delta,
                              float* __restrict__ dk, float* __restrict__ dv, WindowLayoutParams layout, RopeParams rope,
                              int batch, int heads, int headDim, float scale) {
    (void)batch;
    __shared__ UgTileRow kRows[UG_ATTN_F32_BLOCK];
    __shared__ UgTileRow qRows[UG_ATTN_F32_BLOCK];
    __shared__ float sLse2[UG_ATTN_F32_BLOCK];
    __shared__ float sDelta[UG_ATTN_F32_BLOCK];
    if (headDim == 32)
        attn_bwd_dkdv_f32<32>(q, k, v, dO, lse, delta, dk, dv, layout, rope, heads, scale, kRows, qRows, sLse2, sDelta);
    else if (headDim == 64)
        attn_bwd_dkdv_f32<64>(q, k, v, dO, lse, delta, dk, dv, layout, rope, heads, scale, kRows, qRows, sLse2, sDelta);
    else if (headDim == 128)
        attn_bwd_dkdv_f32<128>(q, k, v, dO, lse, delta, dk, dv, layout, rope, heads, scale, kRows, qRows, sLse2, sDelta);
}

extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_bwd_dkdv_bf16(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k,
                               const ug_bf16* __restrict__ v, const ug_bf16* __restrict__ dO,
                               const float* __restrict__ lse, const float* __restrict__ delta, ug_bf16* __restrict__ dk,
                               ug_bf16* __restrict__ dv, WindowLayoutParams layout, RopeParams rope, int batch, int heads,
                               int headDim, float scale) {
    (void)batch;
    __shared__ UgTileRow kRows[UG_ATTN_BF16_BLOCK_N];
    __shared__ UgTileRow qRows[2][64];  // two stages of ≥ ug_attn_bf16_dkdv_block_q(headDim) rows
    __shared__ float sLse2[2][64];
    __shared__ float sDelta[2][64];
    if (headDim == 32)
        attn_bwd_dkdv_bf16<32>(q, k, v, dO, lse, delta, dk, dv, layout, rope, heads, scale, kRows, qRows, sLse2, sDelta);
    else if (headDim == 64)
        attn_bwd_dkdv_bf16<64>(q, k, v, dO, lse, delta, dk, dv, layout, rope, heads, scale, kRows, qRows, sLse2, sDelta);
    else if (headDim == 128)
        attn_bwd_dkdv_bf16<128>(q, k, v, dO, lse, delta, dk, dv, layout, rope, heads, scale, kRows, qRows, sLse2, sDelta);
}

// ------------------------------------------------------------------------------------------------------------------
// window_attention_bwd_dq_f32 / _bf16
//   q, k, v, dO, lse, delta: as dkdv;  dq: output, same shape/dtype as q (overwritten)
//   layout, rope, batch, heads, headDim (32 | 64 | 128), scale: as the forward
// Launch: block 128;
//   f32 : grid ug_attn_grid(layout, heads, batch, 32) (query tiles), smem ug_attn_f32_dq_smem (d=64: 37,376 B,
//         d=128: 70,144 B)
//   bf16: grid ug_attn_grid(layout, heads, batch, 64) (query tiles), smem ug_attn_bf16_dq_smem (d=64: 55,296 B,
//         d=128: 104,448 B)
// ------------------------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                            const float* __restrict__ dO, const float* __restrict__ lse, const float* __restrict__ delta,
                            float* __restrict__ dq, WindowLayoutParams layout, RopeParams rope, int batch, int heads,
                            int headDim, float scale) {
    (void)batch;
    __shared__ UgTileRow qRows[UG_ATTN_F32_BLOCK];
    __shared__ UgTileRow kRows[UG_ATTN_F32_BLOCK];
    if (headDim == 32)
        attn_bwd_dq_f32<32>(q, k, v, dO, lse, delta, dq, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 64)
        attn_bwd_dq_f32<64>(q, k, v, dO, lse, delta, dq, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 128)
        attn_bwd_dq_f32<128>(q, k, v, dO, lse, delta, dq, layout, rope, heads, scale, qRows, kRows);
}

extern "C" __global__ void __launch_bounds__(UG_ATTN_THREADS)
window_attention_bwd_dq_bf16(const ug_bf16* __restrict__ q, const ug_bf16* __restrict__ k, const ug_bf16* __restrict__ v,
                             const ug_bf16* __restrict__ dO, const float* __restrict__ lse,
                             const float* __restrict__ delta, ug_bf16* __restrict__ dq, WindowLayoutParams layout,
                             RopeParams rope, int batch, int heads, int headDim, float scale) {
    (void)batch;
    __shared__ UgTileRow qRows[UG_ATTN_BF16_BLOCK_M];
    __shared__ UgTileRow kRows[2][UG_ATTN_BF16_BLOCK_N];
    if (headDim == 32)
        attn_bwd_dq_bf16<32>(q, k, v, dO, lse, delta, dq, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 64)
        attn_bwd_dq_bf16<64>(q, k, v, dO, lse, delta, dq, layout, rope, heads, scale, qRows, kRows);
    else if (headDim == 128)
        attn_bwd_dq_bf16<128>(q, k, v, dO, lse, delta, dq, layout, rope, heads, scale, qRows, kRows);
}
