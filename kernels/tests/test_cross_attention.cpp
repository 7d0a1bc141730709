// Host tests of the cross-attention launch geometry in kernels/common/launch.cuh (plain C++): the grids and the dK/dV
// splits, with the values the C# mirror (LaunchGeometry.CrossAttention*) is tested against, and the split chunks covering
// every query tile exactly once.
#include "common/launch.cuh"

#include <gtest/gtest.h>

#include <vector>

TEST(CrossAttentionGeometry, Grids) {
    UgGrid g = ug_cross_attn_grid(100, 12, 2, UG_ATTN_F32_BLOCK, 1);
    EXPECT_EQ(g.x, 4u);
    EXPECT_EQ(g.y, 12u);
    EXPECT_EQ(g.z, 2u);
    g = ug_cross_attn_grid(512, 12, 1, UG_ATTN_F32_BLOCK, 3);
    EXPECT_EQ(g.x, 48u);
    EXPECT_EQ(ug_cross_attn_grid(21LL * 68 * 120, 12, 1, UG_ATTN_F32_BLOCK, 1).x, 5355u);
}

TEST(CrossAttentionGeometry, SplitsFollowTheTargetTheQueryTilesAndTheCaps) {
    EXPECT_EQ(ug_cross_attn_splits(1, 171360, 512, 12, 128, 528), 3);
    EXPECT_EQ(ug_cross_attn_splits(1, 100, 8, 2, 64, 528), 4);
    EXPECT_EQ(ug_cross_attn_splits(1, 100000, 8, 1, 64, 528), UG_CROSS_ATTN_MAX_SPLITS);
    EXPECT_EQ(ug_cross_attn_splits(4, 100000, 512, 16, 128, 528), 1);
    EXPECT_EQ(ug_cross_attn_splits(1, 100000, 512, 2, 128, 10000), 64);
    EXPECT_EQ(ug_cross_attn_splits(8, 100000, 512, 4, 128, 100000), 16);
}

TEST(CrossAttentionGeometry, SplitChunksCoverEveryQueryTileOnce) {
    // The dkdv kernel's chunk of split s: query tiles [s·T/splits, (s+1)·T/splits).
    for (long long queries : {1LL, 31LL, 32LL, 100LL, 1000LL, 100000LL}) {
        const long long tiles = ug_cdiv(queries, UG_ATTN_F32_BLOCK);
        const int splits = ug_cross_attn_splits(1, queries, 8, 1, 64, 100000);
        ASSERT_GE(splits, 1);
        ASSERT_LE(splits, tiles);
        std::vector<int> seen((size_t)tiles, 0);
        for (int s = 0; s < splits; ++s) {
            const long long begin = s * tiles / splits, end = (s + 1) * tiles / splits;
            EXPECT_LT(begin, end) << "empty split " << s << " of " << splits;
            for (long long t = begin; t < end; ++t) seen[(size_t)t]++;
        }
        for (int count : seen) EXPECT_EQ(count, 1);
    }
}
