using UltraGen.Core.Layout;

namespace UltraGen.Bench;

/// <summary>A window_attention workload: grid, windows per side, heads and head dim (batch 1).</summary>
public sealed record AttentionCase(string Name, int T, int H, int W, int Windows, int Heads, int HeadDim)
{
    /// <summary>
    /// The 1080P-proportioned local layout (4×4 windows over T=5 × 32×60: 16 tubes of 5×8×15 = 600 tokens) and full
    /// attention (windows = 1) over a smaller grid (T=3 × 17×30 = 1,530 tokens), each with head dims 64 and 128, 2 heads.
    /// </summary>
    public static readonly AttentionCase[] All =
    [
        new("local4_T5_32x60_d64", 5, 32, 60, 4, 2, 64),
        new("local4_T5_32x60_d128", 5, 32, 60, 4, 2, 128),
        new("full_T3_17x30_d64", 3, 17, 30, 1, 2, 64),
        new("full_T3_17x30_d128", 3, 17, 30, 1, 2, 128),
    ];

    public static AttentionCase Get(string name) =>
        All.FirstOrDefault(c => c.Name == name) ?? throw new ArgumentException($"unknown attention case '{name}'");

    public static IEnumerable<string> Names => All.Select(c => c.Name);

    public Grid3 Grid => new(T, H, W);

    public WindowLayout Layout => WindowLayout.Ragged(Grid, Windows);

    public int[] Shape => [1, T, H, W, Heads * HeadDim];
}
