using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Ops;

/// <summary>
/// The geometry <see cref="PatchifyOp"/> and <see cref="UnpatchifyOp"/> share: a video (B, C, T·pt, H·ph, W·pw) cut into
/// the T·H·W tokens of <see cref="Grid"/> (frame-major, as every token tensor here), each of C·pt·ph·pw features in
/// (c, p, q, r) order (c slowest: the patch-embedding Conv3d's flattened weight) or, when <see cref="ChannelsLast"/>,
/// (p, q, r, c) order (c fastest: Wan's head, "b (f h w) (p q r c) -> b c (f p) (h q) (w r)"). One type so the two ops,
/// their parameters and every backend's index math agree on one definition.
/// </summary>
public readonly record struct PatchLayout(int Batch, int Channels, Grid3 Grid, int Pt, int Ph, int Pw, bool ChannelsLast)
{
    /// <summary>Wan2.1's patch (1, 2, 2).</summary>
    public const int DefaultPt = 1, DefaultPh = 2, DefaultPw = 2;

    /// <summary>The patch parameters both ops take, with Wan's defaults.</summary>
    public static IReadOnlyList<ParamSpec> PatchParameters { get; } =
    [
        new("pt", "int", "1", "patch frames (≥ 1)"),
        new("ph", "int", "2", "patch rows (≥ 1)"),
        new("pw", "int", "2", "patch columns (≥ 1)"),
        new("channels_last", "bool", "false",
            "features in (p, q, r, c) order, c fastest (Wan's head); false: (c, p, q, r), the patch embedding's Conv3d weight"),
    ];

    /// <summary>pt·ph·pw.</summary>
    public int Volume => Pt * Ph * Pw;

    /// <summary>Features per token, C·pt·ph·pw.</summary>
    public int Features => Channels * Volume;

    public int Tokens => checked((int)Grid.TokenCount);

    public int[] VideoShape => [Batch, Channels, Grid.T * Pt, Grid.H * Ph, Grid.W * Pw];

    public int[] TokenShape => [Batch, Tokens, Features];

    /// <summary>Elements of either tensor (the ops are permutations).</summary>
    public long ElementCount => (long)Batch * Tokens * Features;

    /// <summary>The patch parameters, checked: every patch size at least 1.</summary>
    public static (int Pt, int Ph, int Pw, bool ChannelsLast) PatchOf(OpParams parameters, string opName)
    {
        int pt = parameters.GetInt("pt", DefaultPt), ph = parameters.GetInt("ph", DefaultPh), pw = parameters.GetInt("pw", DefaultPw);
        if (pt < 1 || ph < 1 || pw < 1)
            throw new OpParameterException($"op '{opName}': patch sizes pt, ph, pw must be ≥ 1, got ({pt}, {ph}, {pw})");
        return (pt, ph, pw, parameters.GetBool("channels_last", false));
    }

    /// <summary>The layout of a video (B, C, T·pt, H·ph, W·pw); a dimension the patch does not divide is a shape error.</summary>
    public static PatchLayout OfVideo(int[] video, OpParams parameters, string opName)
    {
        var (pt, ph, pw, channelsLast) = PatchOf(parameters, opName);
        if (video.Length != 5)
            throw new ShapeMismatchException($"op '{opName}': input 'video' must be (B, C, T·pt, H·ph, W·pw), got {Shape.Format(video)}");
        if (video[2] % pt != 0 || video[3] % ph != 0 || video[4] % pw != 0 || video[2] < pt || video[3] < ph || video[4] < pw)
            throw new ShapeMismatchException(
                $"op '{opName}': video frames×rows×columns {video[2]}×{video[3]}×{video[4]} are not positive multiples of the patch {pt}×{ph}×{pw} (video {Shape.Format(video)})");
        if (video[0] < 1 || video[1] < 1)
            throw new ShapeMismatchException($"op '{opName}': video must have at least one sample and one channel, got {Shape.Format(video)}");
        return new PatchLayout(video[0], video[1], new Grid3(video[2] / pt, video[3] / ph, video[4] / pw), pt, ph, pw, channelsLast);
    }

    /// <summary>
    /// The layout of tokens (B, N, C·pt·ph·pw) unpatchified to <c>channels</c> channels on the token grid (T, H, W) of
    /// the parameters; N must be T·H·W and the feature count C·pt·ph·pw.
    /// </summary>
    public static PatchLayout OfTokens(int[] tokens, OpParams parameters, string opName)
    {
        var (pt, ph, pw, channelsLast) = PatchOf(parameters, opName);
        int channels = parameters.GetInt("channels");
        var grid = new Grid3(parameters.GetInt("T"), parameters.GetInt("H"), parameters.GetInt("W"));
        if (channels < 1 || !grid.IsValid)
            throw new OpParameterException($"op '{opName}': channels, T, H and W must be ≥ 1, got channels {channels}, grid {grid}");
        var layout = new PatchLayout(tokens.Length > 0 ? tokens[0] : 0, channels, grid, pt, ph, pw, channelsLast);
        if (tokens.Length != 3 || tokens[0] < 1 || tokens[1] != grid.TokenCount || tokens[2] != layout.Features)
            throw new ShapeMismatchException(
                $"op '{opName}': input 'tokens' must be (B, T·H·W = {grid.TokenCount}, C·pt·ph·pw = {channels}·{pt}·{ph}·{pw} = {layout.Features}) " +
                $"for grid {grid}, got {Shape.Format(tokens)}");
        return layout;
    }

    /// <summary>
    /// The index in the token tensor of video element <paramref name="videoIndex"/> (row-major (B, C, T·pt, H·ph, W·pw)):
    /// the mapping every backend's patchify/unpatchify kernel computes.
    /// </summary>
    public long TokenElementIndex(long videoIndex)
    {
        int width = Grid.W * Pw, height = Grid.H * Ph, depth = Grid.T * Pt;
        int x = (int)(videoIndex % width);
        long rest = videoIndex / width;
        int y = (int)(rest % height);
        rest /= height;
        int z = (int)(rest % depth);
        rest /= depth;
        int c = (int)(rest % Channels);
        long b = rest / Channels;
        long token = ((b * Grid.T + z / Pt) * Grid.H + y / Ph) * Grid.W + x / Pw;
        int offset = ((z % Pt) * Ph + y % Ph) * Pw + x % Pw;
        int feature = ChannelsLast ? offset * Channels + c : c * Volume + offset;
        return token * Features + feature;
    }
}
