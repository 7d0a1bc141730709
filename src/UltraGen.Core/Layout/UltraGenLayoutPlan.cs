using System.Collections.Frozen;

namespace UltraGen.Core.Layout;

/// <summary>How a branch deals with a grid side that the window count does not divide.</summary>
public enum WindowMode
{
    /// <summary>
    /// Checkpoint-compatible default (spec §1.3, §4.2): bilinearly resize the branch's feature map to
    /// <see cref="WindowLayout.ClosestDivisible"/> of each side, attend in uniform windows, resize back.
    /// </summary>
    ResizeToDivisible,

    /// <summary>No resizing: uneven windows per <see cref="WindowLayout.Ragged"/>. Not what the released checkpoint saw.</summary>
    Ragged,
}

/// <summary>The three attention branches of a decomposed UltraGen block.</summary>
public enum AttentionBranch
{
    /// <summary>Cross-window local attention, n = K + (i mod 2) windows per side on the full grid.</summary>
    Local,

    /// <summary>Spatially compressed global attention: ×4 strided conv, one window.</summary>
    Global,

    /// <summary>Hierarchical local attention: ×2 strided conv, b = K/2 + (i mod 2) windows per side.</summary>
    Hierarchical,
}

/// <summary>
/// The window layout of one branch of one block.
/// </summary>
/// <param name="Branch">Which branch.</param>
/// <param name="Downsample">Spatial compression before attention: 1 (local), 4 (global), 2 (hierarchical).</param>
/// <param name="InputGrid">
/// The grid the branch attends over before any resize: the token grid for local, (T, ⌊H/d⌋, ⌊W/d⌋) after the strided conv
/// for global and hierarchical (the conv drops remainder rows and columns).
/// </param>
/// <param name="Layout">
/// The windows. Its <see cref="WindowLayout.Grid"/> is the resized grid (H′×W′) in <see cref="WindowMode.ResizeToDivisible"/>
/// and <paramref name="InputGrid"/> itself in <see cref="WindowMode.Ragged"/> and for the global branch.
/// </param>
public sealed record BranchLayout(AttentionBranch Branch, int Downsample, Grid3 InputGrid, WindowLayout Layout)
{
    /// <summary>n (local), 1 (global) or b (hierarchical).</summary>
    public int WindowsPerSide => Layout.WindowsPerSide;

    /// <summary>Rows of the grid the windows partition (H′, after any resize).</summary>
    public int ResizedH => Layout.Grid.H;

    /// <summary>Columns of the grid the windows partition (W′, after any resize).</summary>
    public int ResizedW => Layout.Grid.W;

    /// <summary>True when the branch resamples its feature map (InputGrid differs from the attended grid).</summary>
    public bool IsResized => InputGrid != Layout.Grid;

    /// <summary>Window height h = H′/n; for ragged layouts the largest window's height, ⌈H/n⌉.</summary>
    public int WindowH => Layout.MaxWindowRows;

    /// <summary>Window width w = W′/n; for ragged layouts the largest window's width, ⌈W/n⌉.</summary>
    public int WindowW => Layout.MaxWindowCols;

    /// <summary>T·h·w; for ragged layouts the largest window's count.</summary>
    public int TokensPerWindow => Layout.MaxTokensInWindow;

    /// <summary>Σ over windows of tokens².</summary>
    public long AttentionPairs => Layout.AttentionPairs;
}

/// <summary>
/// The three branches' window layouts for a token grid and an absolute block index i, exactly as the released UltraGen
/// code computes them (spec §1.3, tables in §1.4):
/// <list type="bullet">
/// <item>local: n = K + (i mod 2) windows per side on the full grid, H′ = ClosestDivisible(H, n), W′ likewise;</item>
/// <item>global: ×4 strided conv to (T, ⌊H/4⌋, ⌊W/4⌋), a single window;</item>
/// <item>hierarchical: ×2 strided conv to (T, ⌊H/2⌋, ⌊W/2⌋), b = K/2 + (i mod 2) windows per side, resized to
/// ClosestDivisible of each side.</item>
/// </list>
/// In <see cref="WindowMode.Ragged"/> nothing is resized and local/hierarchical use <see cref="WindowLayout.Ragged"/>.
/// The plan does not decide whether block i is decomposed at all; see <see cref="IsDecomposed(int, IReadOnlySet{int})"/>.
/// </summary>
public sealed class UltraGenLayoutPlan
{
    /// <summary>K, the local windows per side on even blocks (the reference hard-codes 4).</summary>
    public const int DefaultK = 4;

    /// <summary>Stride of the global branch's depthwise compression conv (reference <c>down=4</c>).</summary>
    public const int GlobalDownsample = 4;

    /// <summary>Stride of the hierarchical branch's depthwise compression conv (reference <c>down_factor=2</c>).</summary>
    public const int HierarchicalDownsample = 2;

    /// <summary>Blocks that keep Wan's full attention in the released code: {0, 1, 2, 27, 28, 29} (spec §1.1).</summary>
    public static IReadOnlySet<int> ReferenceFullBlocks { get; } = FrozenSet.ToFrozenSet([0, 1, 2, 27, 28, 29]);

    private UltraGenLayoutPlan(Grid3 grid, int block, int k, WindowMode mode, BranchLayout local, BranchLayout global, BranchLayout hierarchical)
    {
        Grid = grid;
        Block = block;
        K = k;
        Mode = mode;
        Local = local;
        Global = global;
        Hierarchical = hierarchical;
        AttentionPairs = checked(local.AttentionPairs + global.AttentionPairs + hierarchical.AttentionPairs);
        double n = grid.TokenCount;
        AttentionCostRatio = AttentionPairs / (n * n);
    }

    /// <summary>The token grid (T, H, W) the block sees.</summary>
    public Grid3 Grid { get; }

    /// <summary>Absolute block index i; its parity picks the window counts.</summary>
    public int Block { get; }

    /// <summary>i mod 2.</summary>
    public int Parity => Block % 2;

    /// <summary>K.</summary>
    public int K { get; }

    public WindowMode Mode { get; }

    public BranchLayout Local { get; }

    public BranchLayout Global { get; }

    public BranchLayout Hierarchical { get; }

    /// <summary>Σ over the three branches of Σ over windows of tokens².</summary>
    public long AttentionPairs { get; }

    /// <summary><see cref="AttentionPairs"/> / N², N = T·H·W of <see cref="Grid"/>: attention-map cost relative to full attention.</summary>
    public double AttentionCostRatio { get; }

    /// <summary>
    /// Plans block <paramref name="block"/> on <paramref name="grid"/>. <paramref name="k"/> must be even and at least 2
    /// (hierarchical windows are K/2 per side). The grid needs H ≥ 4 and W ≥ 4 so the global branch is non-empty; ragged mode
    /// further needs every side at least as large as its window count.
    /// </summary>
    public static UltraGenLayoutPlan Create(Grid3 grid, int block, WindowMode mode = WindowMode.ResizeToDivisible, int k = DefaultK)
    {
        grid.Validate();
        if (block < 0) throw new ArgumentOutOfRangeException(nameof(block), block, "block index must be non-negative");
        if (k < 2 || k % 2 != 0)
            throw new UnsupportedConfigurationException($"K must be an even number >= 2 (hierarchical windows are K/2 per side), got {k}");
        if (mode is not (WindowMode.ResizeToDivisible or WindowMode.Ragged))
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown window mode");
        if (grid.H < GlobalDownsample || grid.W < GlobalDownsample)
            throw new ShapeMismatchException(
                $"grid {grid} is too small for UltraGen attention: the global branch compresses by {GlobalDownsample}, " +
                $"so H and W must be at least {GlobalDownsample}");

        int parity = block % 2;

        int localWindows = k + parity;
        var local = new BranchLayout(AttentionBranch.Local, 1, grid, Partition(grid, localWindows, mode));

        var globalGrid = new Grid3(grid.T, grid.H / GlobalDownsample, grid.W / GlobalDownsample);
        var global = new BranchLayout(AttentionBranch.Global, GlobalDownsample, globalGrid, WindowLayout.Divisible(globalGrid, 1));

        int hierWindows = k / 2 + parity;
        var compressed = new Grid3(grid.T, grid.H / HierarchicalDownsample, grid.W / HierarchicalDownsample);
        var hierarchical = new BranchLayout(AttentionBranch.Hierarchical, HierarchicalDownsample, compressed,
            Partition(compressed, hierWindows, mode));

        return new UltraGenLayoutPlan(grid, block, k, mode, local, global, hierarchical);
    }

    /// <summary>The branch layout by enum.</summary>
    public BranchLayout this[AttentionBranch branch] => branch switch
    {
        AttentionBranch.Local => Local,
        AttentionBranch.Global => Global,
        AttentionBranch.Hierarchical => Hierarchical,
        _ => throw new ArgumentOutOfRangeException(nameof(branch), branch, "unknown branch"),
    };

    /// <summary>True when block <paramref name="block"/> uses the decomposed attention, i.e. is not in <paramref name="fullBlocks"/>.</summary>
    public static bool IsDecomposed(int block, IReadOnlySet<int> fullBlocks)
    {
        ArgumentNullException.ThrowIfNull(fullBlocks);
        if (block < 0) throw new ArgumentOutOfRangeException(nameof(block), block, "block index must be non-negative");
        return !fullBlocks.Contains(block);
    }

    /// <summary><see cref="IsDecomposed(int, IReadOnlySet{int})"/> with <see cref="ReferenceFullBlocks"/>.</summary>
    public static bool IsDecomposed(int block) => IsDecomposed(block, ReferenceFullBlocks);

    public override string ToString() =>
        $"block {Block} on {Grid} ({Mode}): local {Local.Layout}; global {Global.Layout}; hierarchical {Hierarchical.Layout}; " +
        $"cost ratio {AttentionCostRatio:F4}";

    private static WindowLayout Partition(Grid3 grid, int windowsPerSide, WindowMode mode)
    {
        if (mode == WindowMode.Ragged) return WindowLayout.Ragged(grid, windowsPerSide);
        var resized = new Grid3(grid.T,
            WindowLayout.ClosestDivisible(grid.H, windowsPerSide),
            WindowLayout.ClosestDivisible(grid.W, windowsPerSide));
        return WindowLayout.Divisible(resized, windowsPerSide);
    }
}
