using UltraGen.Core;
using UltraGen.Ops;
using static UltraGen.Cpu.CpuParallel;

namespace UltraGen.Cpu;

/// <summary>
/// patchify and unpatchify on f32 host tensors (references: <see cref="PatchifyOp"/>, <see cref="UnpatchifyOp"/>, index
/// map <see cref="PatchLayout.TokenElementIndex"/>). Both walk the video's contiguous rows (one (b, c, frame, row) each,
/// in parallel chunks): a row of W·pw values belongs to W tokens, pw values each, so every row is W short strided runs on
/// the token side (stride 1 in (c, p, q, r) order, stride C in channels-last order). Each op is the other's backward.
/// </summary>
public static unsafe class CpuDitLayout
{
    /// <summary>Video rows per parallel chunk: at least ~32K elements.</summary>
    private static int RowGrain(int width) => CpuElementwise.RowsPerChunk(width);

    public static void Patchify(Tensor video, Tensor tokens, PatchLayout layout) => Permute(Ptr(video), Ptr(tokens), layout, toTokens: true);

    public static void Unpatchify(Tensor tokens, Tensor video, PatchLayout layout) => Permute(Ptr(video), Ptr(tokens), layout, toTokens: false);

    /// <summary>Copies between the video and the token tensor, in the direction <paramref name="toTokens"/> says.</summary>
    private static void Permute(float* video, float* tokens, PatchLayout layout, bool toTokens)
    {
        var grid = layout.Grid;
        int channels = layout.Channels, features = layout.Features, pt = layout.Pt, ph = layout.Ph, pw = layout.Pw;
        int width = grid.W * pw, height = grid.H * ph, depth = grid.T * pt;
        long rows = (long)layout.Batch * channels * depth * height;
        int runStride = layout.ChannelsLast ? channels : 1;
        For(rows, RowGrain(width), (s, e) =>
        {
            for (int row = s; row < e; row++)
            {
                int y = row % height, z = row / height % depth, c = row / height / depth % channels, b = row / height / depth / channels;
                long firstToken = ((long)(b * grid.T + z / pt) * grid.H + y / ph) * grid.W;
                int offset = (z % pt * ph + y % ph) * pw;
                int firstFeature = layout.ChannelsLast ? offset * channels + c : c * layout.Volume + offset;
                float* videoRow = video + (long)row * width;
                float* tokenRow = tokens + firstToken * features + firstFeature;
                for (int w = 0; w < grid.W; w++)
                {
                    float* run = tokenRow + (long)w * features;
                    float* pixels = videoRow + w * pw;
                    if (toTokens)
                        for (int r = 0; r < pw; r++) run[r * runStride] = pixels[r];
                    else
                        for (int r = 0; r < pw; r++) pixels[r] = run[r * runStride];
                }
            }
        });
    }
}
