// Host tests of the patchify / unpatchify index math (kernels/common/patch_layout.cuh compiled as plain C++): the same
// token and feature orders as src/UltraGen.Ops/Reference/PatchLayout.cs (hand-computed anchors shared with
// tests/UltraGen.Tests/Ops/DitPrimitiveOpsTests.cs), and the two maps are inverse bijections.
#include "common/patch_layout.cuh"

#include <gtest/gtest.h>

#include <vector>

namespace {

UgPatch Patch(int batch, int channels, int T, int H, int W, int pt, int ph, int pw, int channelsLast) {
    return UgPatch{batch, channels, T, H, W, pt, ph, pw, channelsLast};
}

// Video (1, 2, 1, 4, 2) with value 100·c + 10·row + column, patch (1, 2, 2): tokens[i] = video[ug_patch_video_index(i)].
std::vector<double> PatchifyNamedVideo(int channelsLast) {
    const UgPatch l = Patch(1, 2, 1, 2, 1, 1, 2, 2, channelsLast);
    std::vector<double> video(16);
    for (int c = 0; c < 2; ++c)
        for (int y = 0; y < 4; ++y)
            for (int x = 0; x < 2; ++x) video[(c * 4 + y) * 2 + x] = 100 * c + 10 * y + x;
    std::vector<double> tokens(16);
    for (long long i = 0; i < ug_patch_elements(l); ++i) tokens[i] = video[ug_patch_video_index(l, i)];
    return tokens;
}

}  // namespace

TEST(PatchLayout, FeaturesAreCPQRWithChannelsSlowest) {
    EXPECT_EQ(PatchifyNamedVideo(0),
              (std::vector<double>{0, 1, 10, 11, 100, 101, 110, 111, 20, 21, 30, 31, 120, 121, 130, 131}));
}

TEST(PatchLayout, ChannelsLastFeaturesArePQRC) {
    EXPECT_EQ(PatchifyNamedVideo(1),
              (std::vector<double>{0, 100, 1, 101, 10, 110, 11, 111, 20, 120, 21, 121, 30, 130, 31, 131}));
}

TEST(PatchLayout, TokenAndVideoMapsAreInverseBijections) {
    const UgPatch layouts[] = {
        Patch(2, 3, 3, 3, 5, 1, 2, 2, 0), Patch(2, 3, 3, 3, 5, 1, 2, 2, 1),
        Patch(2, 2, 2, 1, 3, 2, 3, 2, 0), Patch(1, 2, 2, 1, 3, 2, 3, 2, 1),
        Patch(1, 1, 1, 1, 1, 1, 1, 1, 0), Patch(1, 16, 3, 9, 15, 1, 2, 2, 1),
    };
    for (const UgPatch& l : layouts) {
        const long long n = ug_patch_elements(l);
        std::vector<int> hits(n, 0);
        for (long long v = 0; v < n; ++v) {
            const long long i = ug_patch_token_index(l, v);
            ASSERT_GE(i, 0);
            ASSERT_LT(i, n);
            ++hits[i];
            ASSERT_EQ(ug_patch_video_index(l, i), v) << "channels " << l.channels << " channelsLast " << l.channelsLast;
        }
        for (long long i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "token element " << i;
    }
}

TEST(PatchLayout, WanPatchAt1080pNeedsSixtyFourBitIndices) {
    // Latent (1, 16, 21, 136, 240): 10 967 040 elements fit in 32 bits; a batch of 200 would not, and the maps stay exact.
    const UgPatch l = Patch(200, 16, 21, 68, 120, 1, 2, 2, 1);
    const long long last = ug_patch_elements(l) - 1;
    EXPECT_GT(last, 2147483647LL);
    EXPECT_EQ(ug_patch_token_index(l, last), last);   // the last video element is the last feature of the last token
    EXPECT_EQ(ug_patch_video_index(l, last), last);
}
