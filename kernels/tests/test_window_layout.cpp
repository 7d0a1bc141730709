// Host tests of the index math the CUDA kernels run (kernels/common/*.cuh compiled as plain C++): the window layout
// (src/UltraGen.Core/Layout/WindowLayout.cs), the RoPE split (Rope3d.cs), launch geometry and the bf16 rounding.
#include "common/abi.cuh"
#include "common/bf16.cuh"
#include "common/launch.cuh"
#include "common/rope.cuh"
#include "common/window_layout.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

WindowLayoutParams Layout(int t, int h, int w, int n) { return WindowLayoutParams{t, h, w, n}; }

struct WindowCase {
    const char* name;
    int T, H, W, n;                 // the grid the branch attends over before resizing, and n
    int resizedH, resizedW;         // after ug_closest_divisible (checkpoint-compatible mode)
    int windowRows, windowCols, tokens;
};

// Spec §1.4 (1080P: token grid 21×68×120; 4K: 21×135×240). Global = n = 1 on (T, ⌊H/4⌋, ⌊W/4⌋); hierarchical on
// (T, ⌊H/2⌋, ⌊W/2⌋) resized to multiples of b.
const WindowCase kSpecTable[] = {
    {"1080p_local_even", 21, 68, 120, 4, 68, 120, 17, 30, 10710},
    {"1080p_local_odd", 21, 68, 120, 5, 70, 120, 14, 24, 7056},
    {"1080p_global", 21, 17, 30, 1, 17, 30, 17, 30, 10710},
    {"1080p_hier_even", 21, 34, 60, 2, 34, 60, 17, 30, 10710},
    {"1080p_hier_odd", 21, 34, 60, 3, 33, 60, 11, 20, 4620},
    {"4k_local_even", 21, 135, 240, 4, 136, 240, 34, 60, 42840},
    {"4k_local_odd", 21, 135, 240, 5, 135, 240, 27, 48, 27216},
    {"4k_global", 21, 33, 60, 1, 33, 60, 33, 60, 41580},
    {"4k_hier_even", 21, 67, 120, 2, 66, 120, 33, 60, 41580},
    {"4k_hier_odd", 21, 67, 120, 3, 66, 120, 22, 40, 18480},
};

TEST(WindowLayout, SpecTableWindowsAndTokenCounts) {
    for (const WindowCase& c : kSpecTable) {
        SCOPED_TRACE(c.name);
        EXPECT_EQ(ug_closest_divisible(c.H, c.n), c.resizedH);
        EXPECT_EQ(ug_closest_divisible(c.W, c.n), c.resizedW);
        const WindowLayoutParams l = Layout(c.T, c.resizedH, c.resizedW, c.n);
        EXPECT_EQ(ug_max_window_rows(l), c.windowRows);
        EXPECT_EQ(ug_max_window_cols(l), c.windowCols);
        EXPECT_EQ(ug_max_tokens_in_window(l), c.tokens);
        long long total = 0;
        for (int g = 0; g < ug_window_count(l); ++g) {
            EXPECT_EQ(ug_tokens_in_window(l, g), c.tokens);  // uniform after the resize
            total += ug_tokens_in_window(l, g);
        }
        EXPECT_EQ(total, ug_tokens_per_sample(l));
    }
}

TEST(WindowLayout, SpecGlobalGridsComeFromTheFlooredConv) {
    EXPECT_EQ(68 / 4, 17);
    EXPECT_EQ(120 / 4, 30);
    EXPECT_EQ(135 / 4, 33);  // rows 132–134 lost by the floor
    EXPECT_EQ(135 / 2, 67);
}

TEST(WindowLayout, ClosestDivisibleTiesGoDownAndZeroBecomesN) {
    EXPECT_EQ(ug_closest_divisible(6, 4), 4);   // 4 and 8 are both 2 away: lower
    EXPECT_EQ(ug_closest_divisible(7, 4), 8);
    EXPECT_EQ(ug_closest_divisible(1, 4), 4);   // 0 would be empty
    EXPECT_EQ(ug_closest_divisible(2, 4), 4);
    EXPECT_EQ(ug_closest_divisible(68, 5), 70);
    EXPECT_EQ(ug_closest_divisible(34, 3), 33);
}

// Every token of a random ragged grid belongs to exactly one (window, i), and the inverse map agrees.
TEST(WindowLayout, RaggedPartitionCoversEveryTokenOnce) {
    std::mt19937 rng(20251021);
    for (int trial = 0; trial < 300; ++trial) {
        const int T = 1 + (int)(rng() % 4), H = 1 + (int)(rng() % 23), W = 1 + (int)(rng() % 29);
        const int maxN = H < W ? H : W;
        const int n = 1 + (int)(rng() % (unsigned)maxN);
        const WindowLayoutParams l = Layout(T, H, W, n);
        SCOPED_TRACE(testing::Message() << "T=" << T << " H=" << H << " W=" << W << " n=" << n);
        std::vector<int> seen((size_t)ug_tokens_per_sample(l), 0);
        int minRows = H, maxRows = 0, minCols = W, maxCols = 0;
        for (int g = 0; g < ug_window_count(l); ++g) {
            const UgWindowBounds b = ug_window_bounds(l, g);
            ASSERT_GE(b.rowCount, 1);
            ASSERT_GE(b.colCount, 1);
            minRows = std::min(minRows, b.rowCount), maxRows = std::max(maxRows, b.rowCount);
            minCols = std::min(minCols, b.colCount), maxCols = std::max(maxCols, b.colCount);
            const int tokens = ug_tokens_in_window(l, b);
            for (int i = 0; i < tokens; ++i) {
                const long long token = ug_token_index(l, b, i);
                ASSERT_GE(token, 0);
                ASSERT_LT(token, ug_tokens_per_sample(l));
                ++seen[(size_t)token];
                const UgWindowToken back = ug_window_token_of(l, token);
                ASSERT_EQ(back.window, g);
                ASSERT_EQ(back.i, i);
            }
        }
        for (int count : seen) ASSERT_EQ(count, 1);
        EXPECT_LE(maxRows - minRows, 1);  // ragged sizes differ by at most one
        EXPECT_LE(maxCols - minCols, 1);
        EXPECT_EQ(maxRows, ug_max_window_rows(l));
        EXPECT_EQ(maxCols, ug_max_window_cols(l));
    }
}

// i ↔ (t, localRow, localCol) ↔ global token, against an independent nested-loop walk of the window.
TEST(WindowLayout, TokenIndexMatchesLocalCoordinates) {
    const WindowLayoutParams l = Layout(3, 10, 15, 4);  // ragged: rows 2/3, cols 3/4
    for (int g = 0; g < ug_window_count(l); ++g) {
        const UgWindowBounds b = ug_window_bounds(l, g);
        const int wr = g / l.windowsPerSide, wc = g % l.windowsPerSide;
        EXPECT_EQ(b.rowStart, wr * l.H / l.windowsPerSide);
        EXPECT_EQ(b.rowStart + b.rowCount, (wr + 1) * l.H / l.windowsPerSide);
        EXPECT_EQ(b.colStart, wc * l.W / l.windowsPerSide);
        EXPECT_EQ(b.colStart + b.colCount, (wc + 1) * l.W / l.windowsPerSide);
        int i = 0;
        for (int t = 0; t < l.T; ++t)
            for (int r = 0; r < b.rowCount; ++r)
                for (int c = 0; c < b.colCount; ++c, ++i) {
                    const UgLocalCoord lc = ug_local_coord(b, i);
                    EXPECT_EQ(lc.t, t);
                    EXPECT_EQ(lc.row, r);
                    EXPECT_EQ(lc.col, c);
                    EXPECT_EQ(ug_token_index(l, b, i), ((long long)t * l.H + b.rowStart + r) * l.W + b.colStart + c);
                    EXPECT_EQ(ug_token_index(l, b, lc), ug_token_index(l, b, i));
                }
        EXPECT_EQ(i, ug_tokens_in_window(l, b));
    }
}

TEST(WindowLayout, SixtyFourBitProducts) {
    // k·size overflows int: ⌊2·2e9/3⌋.
    const UgRange r = ug_split(2000000000, 3, 2);
    EXPECT_EQ(r.start, 1333333333);
    EXPECT_EQ(r.length, 2000000000 - 1333333333);
    // Token index past 2^31 (100 frames of 8192×8192, 64×64 windows): the last token of the last window.
    const WindowLayoutParams l = Layout(100, 8192, 8192, 64);
    const int last = ug_window_count(l) - 1;
    const UgWindowBounds b = ug_window_bounds(l, last);
    const int tokens = ug_tokens_in_window(l, b);
    EXPECT_EQ(ug_token_index(l, b, tokens - 1), ug_tokens_per_sample(l) - 1);
    EXPECT_GT(ug_tokens_per_sample(l), (long long)std::numeric_limits<int>::max());
}

TEST(Rope, AxisSplit) {
    const UgRopeSplit s128 = ug_rope_split(128), s64 = ug_rope_split(64), s6 = ug_rope_split(6);
    EXPECT_EQ(s128.timeDims, 44);
    EXPECT_EQ(s128.heightDims, 42);
    EXPECT_EQ(s128.widthDims, 42);
    EXPECT_EQ(s64.timeDims, 24);
    EXPECT_EQ(s64.heightDims, 20);
    EXPECT_EQ(s64.widthDims, 20);
    EXPECT_EQ(s6.timeDims, 2);
    EXPECT_EQ(s6.heightDims, 2);
}

TEST(Rope, PairToAxis) {
    // d = 128: pairs 0–21 time, 22–42 height, 43–63 width.
    for (int p = 0; p < 64; ++p) {
        const int expected = p < 22 ? UG_ROPE_TIME : (p < 43 ? UG_ROPE_HEIGHT : UG_ROPE_WIDTH);
        EXPECT_EQ(ug_rope_axis(p, 128), expected) << "pair " << p;
        EXPECT_EQ(ug_rope_pair_in_axis(p, 128), p < 22 ? p : (p < 43 ? p - 22 : p - 43));
    }
    // d = 64: pairs 0–11 time, 12–21 height, 22–31 width.
    for (int p = 0; p < 32; ++p) {
        const int expected = p < 12 ? UG_ROPE_TIME : (p < 22 ? UG_ROPE_HEIGHT : UG_ROPE_WIDTH);
        EXPECT_EQ(ug_rope_axis(p, 64), expected) << "pair " << p;
    }
    EXPECT_EQ(ug_rope_position(0, 128, 7, 8, 9), 7);
    EXPECT_EQ(ug_rope_position(22, 128, 7, 8, 9), 8);
    EXPECT_EQ(ug_rope_position(63, 128, 7, 8, 9), 9);
}

TEST(Rope, FrequenciesMatchWan) {
    // ω_j = θ^(−2j/dA): time axis of d = 128 has dA = 44, height dA = 42.
    EXPECT_DOUBLE_EQ(ug_rope_inv_freq(0, 128, 10000.0), 1.0);
    EXPECT_DOUBLE_EQ(ug_rope_inv_freq(5, 128, 10000.0), 1.0 / std::pow(10000.0, 10.0 / 44));
    EXPECT_DOUBLE_EQ(ug_rope_inv_freq(22, 128, 10000.0), 1.0);
    EXPECT_DOUBLE_EQ(ug_rope_inv_freq(25, 128, 10000.0), 1.0 / std::pow(10000.0, 6.0 / 42));
    EXPECT_DOUBLE_EQ(ug_rope_inv_freq(63, 128, 100.0), 1.0 / std::pow(100.0, 40.0 / 42));
}

TEST(Rope, TableLayoutAndPositions) {
    EXPECT_EQ(ug_rope_table_offset(0, 0, 128), 0);
    EXPECT_EQ(ug_rope_table_offset(0, 63, 128), 126);
    EXPECT_EQ(ug_rope_table_offset(3, 1, 128), 2 * (3 * 64 + 1));
    EXPECT_EQ(ug_rope_min_positions(Layout(21, 68, 120, 4)), 30);  // max(21, 17, 30)
    EXPECT_EQ(ug_rope_min_positions(Layout(21, 70, 120, 5)), 24);
    EXPECT_EQ(ug_rope_min_positions(Layout(21, 33, 60, 3)), 21);   // max(21, 11, 20)
    EXPECT_EQ(ug_rope_min_positions(Layout(3, 10, 15, 4)), 4);      // ragged: ⌈10/4⌉ = 3, ⌈15/4⌉ = 4
}

TEST(Rope, RotationAndInverse) {
    float y0, y1, z0, z1;
    const double a = 0.7;
    const float c = (float)std::cos(a), s = (float)std::sin(a);
    ug_rope_rotate(1.5f, -2.f, c, s, y0, y1);
    EXPECT_NEAR(y0, 1.5 * std::cos(a) + 2.0 * std::sin(a), 1e-6);
    EXPECT_NEAR(y1, 1.5 * std::sin(a) - 2.0 * std::cos(a), 1e-6);
    ug_rope_rotate(y0, y1, c, -s, z0, z1);
    EXPECT_NEAR(z0, 1.5f, 1e-6);
    EXPECT_NEAR(z1, -2.f, 1e-6);
}

TEST(LaunchGeometry, TilesPerWindowWithTails) {
    EXPECT_EQ(ug_tiles_in_window(7056, 64), 111);  // 110 full tiles + 16 rows
    EXPECT_EQ(ug_tile_rows(7056, 64, 110), 16);
    EXPECT_EQ(ug_tile_rows(7056, 64, 109), 64);
    EXPECT_EQ(ug_tile_rows(7056, 64, 111), 0);
    EXPECT_EQ(ug_tiles_in_window(10710, 32), 335);
    EXPECT_EQ(ug_tile_rows(10710, 32, 334), 22);  // 10710 − 334·32
    EXPECT_EQ(ug_tiles_in_window(64, 64), 1);
    EXPECT_EQ(ug_tile_rows(64, 64, 0), 64);
    EXPECT_EQ(ug_tiles_in_window(1, 64), 1);
    EXPECT_EQ(ug_tile_rows(1, 64, 0), 1);
}

TEST(LaunchGeometry, AttentionGrids) {
    // 1080P odd local layer: 25 windows × 12 heads, ⌈7056/64⌉ query tiles (bf16) or ⌈7056/32⌉ (f32).
    const UgGrid g = ug_attn_grid(Layout(21, 70, 120, 5), 12, 1, UG_ATTN_BF16_BLOCK_M);
    EXPECT_EQ(g.x, 111u);
    EXPECT_EQ(g.y, 300u);
    EXPECT_EQ(g.z, 1u);
    EXPECT_EQ(ug_attn_grid(Layout(21, 70, 120, 5), 12, 2, UG_ATTN_F32_BLOCK).x, 221u);
    // Ragged: grid.x covers the largest window; smaller windows' last tiles start past their end.
    const WindowLayoutParams r = Layout(2, 7, 10, 3);  // windows 2–3 rows × 3–4 cols
    EXPECT_EQ(ug_max_tokens_in_window(r), 2 * 3 * 4);
    EXPECT_EQ(ug_attn_grid(r, 2, 1, 16).x, 2u);
    EXPECT_EQ(ug_tiles_in_window(ug_tokens_in_window(r, 0), 16), 1);  // 2·2·3 = 12 tokens
    // Full attention over N = 32K tokens as one window.
    EXPECT_EQ(ug_attn_grid(Layout(1, 128, 256, 1), 12, 1, 64).x, 512u);
}

TEST(LaunchGeometry, SharedMemoryBytesAsDocumented) {
    EXPECT_EQ(ug_attn_f32_fwd_smem(64), 29056);
    EXPECT_EQ(ug_attn_f32_fwd_smem(128), 53632);
    EXPECT_EQ(ug_attn_f32_dkdv_smem(64), 41472);
    EXPECT_EQ(ug_attn_f32_dkdv_smem(128), 74240);
    EXPECT_EQ(ug_attn_f32_dq_smem(64), 37376);
    EXPECT_EQ(ug_attn_f32_dq_smem(128), 70144);
    EXPECT_EQ(ug_attn_bf16_fwd_smem(64), 46080);
    EXPECT_EQ(ug_attn_bf16_fwd_smem(128), 87040);
    EXPECT_EQ(ug_attn_bf16_fwd_m128_smem(64), 55296);
    EXPECT_EQ(ug_attn_bf16_fwd_m128_smem(128), 104448);
    EXPECT_EQ(ug_attn_bf16_dkdv_smem(64), 55296);
    EXPECT_EQ(ug_attn_bf16_dkdv_smem(128), 69632);
    EXPECT_EQ(ug_attn_bf16_dq_smem(64), 55296);
    EXPECT_EQ(ug_attn_bf16_dq_smem(128), 104448);
    // All fit the 227 KiB per-block opt-in limit of sm_80/sm_90 with the static row arrays (≤ 6 KiB).
    EXPECT_LT(ug_attn_bf16_fwd_smem(128) + 6144, 227 * 1024);
    // The 128-query forward (8 KiB of static rows): two blocks still fit one sm_90 multiprocessor's 228 KiB, counting
    // the 1 KiB the hardware reserves per block.
    EXPECT_LE(2 * (ug_attn_bf16_fwd_m128_smem(128) + 8192 + 1024), 228 * 1024);
}

TEST(LaunchGeometry, ReductionSplitsCoverEveryRowOnce) {
    for (long long rows : {1LL, 7LL, 256LL, 257LL, 171360LL, 680400LL * 2}) {
        const int splits = ug_red_splits(rows);
        ASSERT_GE(splits, 1);
        ASSERT_LE(splits, (int)UG_RED_MAX_SPLITS);
        EXPECT_EQ(ug_red_split_begin(rows, splits, 0), 0);
        EXPECT_EQ(ug_red_split_begin(rows, splits, splits), rows);
        for (int s = 0; s < splits; ++s) EXPECT_LE(ug_red_split_begin(rows, splits, s), ug_red_split_begin(rows, splits, s + 1));
    }
    EXPECT_EQ(ug_ew_blocks(0), 1u);
    EXPECT_EQ(ug_ew_blocks(1024), 1u);
    EXPECT_EQ(ug_ew_blocks(1025), 2u);
    EXPECT_EQ(ug_row_blocks(17), 3u);
}

TEST(Bf16, RoundToNearestEvenAndNaN) {
    auto bits = [](uint32_t u) { float f; std::memcpy(&f, &u, 4); return ug_f32_to_bf16_bits(f); };
    EXPECT_EQ(ug_f32_to_bf16_bits(1.0f), 0x3F80);
    EXPECT_EQ(ug_f32_to_bf16_bits(-2.0f), 0xC000);
    EXPECT_EQ(bits(0x3F808000u), 0x3F80);  // exactly halfway, even below: down
    EXPECT_EQ(bits(0x3F818000u), 0x3F82);  // exactly halfway, odd below: up to even
    EXPECT_EQ(bits(0x3F808001u), 0x3F81);  // above halfway: up
    EXPECT_EQ(bits(0x3F807FFFu), 0x3F80);  // below halfway: down
    EXPECT_EQ(bits(0x7F7FFFFFu), 0x7F80);  // FLT_MAX rounds to +inf
    EXPECT_EQ(ug_f32_to_bf16_bits(std::numeric_limits<float>::infinity()), 0x7F80);
    const uint16_t nan = ug_f32_to_bf16_bits(std::numeric_limits<float>::quiet_NaN());
    EXPECT_TRUE(std::isnan(ug_bf16_bits_to_f32(nan)));
    EXPECT_TRUE(std::isnan(ug_bf16_bits_to_f32(bits(0x7F800001u))));  // signalling NaN with a low payload stays NaN
    EXPECT_TRUE(std::isnan(ug_bf16_bits_to_f32(bits(0xFFC00001u))));
    EXPECT_EQ(ug_bf16_bits_to_f32(0x3F80), 1.0f);
    EXPECT_EQ(ug_bf16_bits_to_f32(0x0001), std::ldexp(1.0f, -133));  // smallest bf16 subnormal widens exactly
}

}  // namespace
