namespace UltraGen.Core.Layout;

/// <summary>
/// A token grid of <see cref="T"/> frames × <see cref="H"/> rows × <see cref="W"/> columns (spec §1.1: the patch grid,
/// latent T × latent H/2 × latent W/2). Tokens are stored frame-major: index = (t·H + row)·W + col, column fastest.
/// </summary>
/// <remarks>
/// The reference code names the grid <c>(t, w, h)</c> with its "w" being the rows; this type always uses (T, H, W) with
/// H = rows and W = columns. A <c>default(Grid3)</c> is (0, 0, 0) and not valid; call <see cref="Validate"/> where a grid
/// comes from outside.
/// </remarks>
public readonly record struct Grid3(int T, int H, int W)
{
    /// <summary>N = T·H·W.</summary>
    public long TokenCount => (long)T * H * W;

    /// <summary>Tokens in one frame, H·W.</summary>
    public long FrameTokenCount => (long)H * W;

    /// <summary>True when every dimension is at least 1.</summary>
    public bool IsValid => T >= 1 && H >= 1 && W >= 1;

    /// <summary>True when (t, row, col) lies inside the grid.</summary>
    public bool Contains(int t, int row, int col) =>
        (uint)t < (uint)T && (uint)row < (uint)H && (uint)col < (uint)W;

    /// <summary>
    /// Frame-major global token index: (t·H + row)·W + col. No range check (the kernels' helper has none either);
    /// use <see cref="Contains"/> first where the coordinates are not known to be inside the grid.
    /// </summary>
    public long TokenIndex(int t, int row, int col) => ((long)t * H + row) * W + col;

    /// <summary>Inverse of <see cref="TokenIndex"/>: t = idx / (H·W), row = (idx / W) mod H, col = idx mod W.</summary>
    public (int T, int Row, int Col) Coordinates(long tokenIndex)
    {
        if ((ulong)tokenIndex >= (ulong)TokenCount)
            throw new ArgumentOutOfRangeException(nameof(tokenIndex), tokenIndex, $"token index outside grid {this} of {TokenCount} tokens");
        long frame = FrameTokenCount;
        int t = (int)(tokenIndex / frame);
        long inFrame = tokenIndex - t * frame;
        return (t, (int)(inFrame / W), (int)(inFrame % W));
    }

    /// <summary>Returns this grid, or throws <see cref="ShapeMismatchException"/> naming the sizes if a dimension is below 1.</summary>
    /// <param name="what">What the grid is, for the message ("token grid", "compressed grid", ...).</param>
    public Grid3 Validate(string what = "token grid")
    {
        if (!IsValid)
            throw new ShapeMismatchException($"{what} {this} is invalid: T, H and W must all be at least 1");
        return this;
    }

    /// <summary>Formats as "(T=21, H=68, W=120)".</summary>
    public override string ToString() => $"(T={T}, H={H}, W={W})";
}
