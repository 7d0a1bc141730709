using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace UltraGen.Core.Layout;

/// <summary>
/// A partition of a token grid (T, H, W) into n × n spatial windows (n = <see cref="WindowsPerSide"/>), each a "tube" that
/// spans all T frames. n = 1 is full attention over the whole grid.
/// </summary>
/// <remarks>
/// <para><b>Window numbering.</b> Window g = windowRow·n + windowCol, so the window row is the slower index. This matches the
/// reference rearrange <c>"b t (n1 h) (n2 w) c -&gt; (b n1 n2) (t h w) c"</c> with n1 over rows (spec §1.3).</para>
/// <para><b>Token order inside a window.</b> The i-th token of a window is (t, localRow, localCol) with localCol fastest,
/// i = (t·rowCount + localRow)·colCount + localCol, again as in the reference's <c>(t h w)</c>.</para>
/// <para><b>Boundaries.</b> Window row r covers grid rows [⌊r·H/n⌋, ⌊(r+1)·H/n⌋), window column c covers columns
/// [⌊c·W/n⌋, ⌊(c+1)·W/n⌋). When n divides H this is exactly [r·H/n, (r+1)·H/n), the reference's uniform split, so both
/// constructions share one formula. In the ragged case window sizes differ by at most one (⌊H/n⌋ or ⌈H/n⌉), and every
/// window is non-empty exactly when n ≤ H and n ≤ W.</para>
/// <para>The per-token helpers (<see cref="TokenIndex"/>, <see cref="LocalCoordinates"/>, <see cref="RowRange"/>,
/// <see cref="ColRange"/>, <see cref="WindowBounds"/>) are plain integer arithmetic and allocate nothing, so the CUDA
/// <c>__host__ __device__</c> helpers can mirror them line for line.</para>
/// </remarks>
public sealed class WindowLayout
{
    private readonly int _n;
    private readonly int _h;
    private readonly int _w;
    private readonly int _t;

    private WindowLayout(Grid3 grid, int windowsPerSide)
    {
        Grid = grid;
        _t = grid.T;
        _h = grid.H;
        _w = grid.W;
        _n = windowsPerSide;
        IsUniform = grid.H % windowsPerSide == 0 && grid.W % windowsPerSide == 0;

        // Largest window: ⌈H/n⌉ × ⌈W/n⌉ rows/cols over T frames. Must fit an int so window-local indices are ints.
        long maxRows = (grid.H + (long)windowsPerSide - 1) / windowsPerSide;
        long maxCols = (grid.W + (long)windowsPerSide - 1) / windowsPerSide;
        MaxWindowRows = (int)maxRows;
        MaxWindowCols = (int)maxCols;
        long maxTokens = grid.T * maxRows * maxCols;
        if (maxTokens > int.MaxValue)
            throw new UnsupportedConfigurationException(
                $"a window of grid {grid} with {windowsPerSide}x{windowsPerSide} windows holds {maxTokens} tokens, more than {int.MaxValue}");
        MaxTokensInWindow = (int)maxTokens;

        // Σ over windows of tokens². Row and column sizes are independent, so the count of windows with a given
        // (rowCount, colCount) is a product; summing directly over n² windows is still cheap and obviously right.
        long pairs = 0;
        for (int r = 0; r < windowsPerSide; r++)
        {
            int rows = RowRange(r).Length;
            for (int c = 0; c < windowsPerSide; c++)
            {
                long tokens = (long)grid.T * rows * ColRange(c).Length;
                pairs = checked(pairs + tokens * tokens);
            }
        }
        AttentionPairs = pairs;
    }

    /// <summary>The grid that is partitioned.</summary>
    public Grid3 Grid { get; }

    /// <summary>n: windows along each spatial side.</summary>
    public int WindowsPerSide => _n;

    /// <summary>n².</summary>
    public int WindowCount => _n * _n;

    /// <summary>True when n divides both H and W, so every window has the same size (always true for <see cref="Divisible"/>).</summary>
    public bool IsUniform { get; }

    /// <summary>Rows of the tallest window, ⌈H/n⌉ (= H/n when uniform).</summary>
    public int MaxWindowRows { get; }

    /// <summary>Columns of the widest window, ⌈W/n⌉ (= W/n when uniform).</summary>
    public int MaxWindowCols { get; }

    /// <summary>Tokens in the largest window: T·⌈H/n⌉·⌈W/n⌉ (all windows when <see cref="IsUniform"/>).</summary>
    public int MaxTokensInWindow { get; }

    /// <summary>Σ over windows of tokens²: the number of query–key pairs attention scores, for cost accounting.</summary>
    public long AttentionPairs { get; }

    /// <summary>
    /// Uniform partition, as the reference does after resizing: n must divide H and W. Throws
    /// <see cref="ShapeMismatchException"/> naming the sizes otherwise.
    /// </summary>
    public static WindowLayout Divisible(Grid3 grid, int windowsPerSide)
    {
        Check(grid, windowsPerSide);
        if (grid.H % windowsPerSide != 0 || grid.W % windowsPerSide != 0)
        {
            string bad = (grid.H % windowsPerSide != 0, grid.W % windowsPerSide != 0) switch
            {
                (true, true) => $"H={grid.H} and W={grid.W} are",
                (true, false) => $"H={grid.H} is",
                _ => $"W={grid.W} is",
            };
            throw new ShapeMismatchException(
                $"cannot split grid {grid} into {windowsPerSide}x{windowsPerSide} equal windows: {bad} not divisible by {windowsPerSide} " +
                $"(resize to H={ClosestDivisible(grid.H, windowsPerSide)}, W={ClosestDivisible(grid.W, windowsPerSide)} as the reference does, " +
                "or use WindowLayout.Ragged)");
        }
        return new WindowLayout(grid, windowsPerSide);
    }

    /// <summary>
    /// Exact uneven partition with no resizing: window row r covers rows [⌊r·H/n⌋, ⌊(r+1)·H/n⌋), window column c covers
    /// columns [⌊c·W/n⌋, ⌊(c+1)·W/n⌋). Sizes differ by at most one. Requires n ≤ H and n ≤ W so no window is empty;
    /// throws <see cref="ShapeMismatchException"/> naming the sizes otherwise. Equals <see cref="Divisible"/> when n divides H and W.
    /// </summary>
    public static WindowLayout Ragged(Grid3 grid, int windowsPerSide)
    {
        Check(grid, windowsPerSide);
        if (windowsPerSide > grid.H || windowsPerSide > grid.W)
            throw new ShapeMismatchException(
                $"cannot split grid {grid} into {windowsPerSide}x{windowsPerSide} non-empty windows: " +
                $"{windowsPerSide} windows per side needs H >= {windowsPerSide} and W >= {windowsPerSide}");
        return new WindowLayout(grid, windowsPerSide);
    }

    /// <summary>
    /// The multiple of <paramref name="n"/> nearest to <paramref name="x"/>; on a tie the LOWER multiple (the reference's
    /// <c>closest_divisible</c>, spec §1.3). Where that would be 0 (x &lt; n, nearer to 0 or tied) this returns n instead: the
    /// reference would produce an empty grid there, which no layout can use.
    /// </summary>
    public static int ClosestDivisible(int x, int n)
    {
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n), n, "the divisor must be at least 1");
        if (x < 1) throw new ArgumentOutOfRangeException(nameof(x), x, "the size must be at least 1");
        int lower = x / n * n;          // ⌊x/n⌋·n
        int below = x - lower;          // distance down, 0 ≤ below < n
        int above = n - below;          // distance up to lower + n
        long result = below <= above ? lower : (long)lower + n; // tie (below == above) goes down
        if (result == 0) return n;
        if (result > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(x), x, $"the nearest multiple of {n} overflows int");
        return (int)result;
    }

    /// <summary>Rows covered by window row r: start ⌊r·H/n⌋, length ⌊(r+1)·H/n⌋ − start.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (int Start, int Length) RowRange(int windowRow)
    {
        if ((uint)windowRow >= (uint)_n) ThrowWindowIndex(nameof(windowRow), windowRow, _n);
        return Split(_h, _n, windowRow);
    }

    /// <summary>Columns covered by window column c: start ⌊c·W/n⌋, length ⌊(c+1)·W/n⌋ − start.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (int Start, int Length) ColRange(int windowCol)
    {
        if ((uint)windowCol >= (uint)_n) ThrowWindowIndex(nameof(windowCol), windowCol, _n);
        return Split(_w, _n, windowCol);
    }

    /// <summary>Spatial bounds of window g (windowRow = g / n, windowCol = g mod n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (int RowStart, int RowCount, int ColStart, int ColCount) WindowBounds(int window)
    {
        if ((uint)window >= (uint)(_n * _n)) ThrowWindowIndex(nameof(window), window, _n * _n);
        int windowRow = window / _n;
        int windowCol = window - windowRow * _n;
        var (rowStart, rowCount) = Split(_h, _n, windowRow);
        var (colStart, colCount) = Split(_w, _n, windowCol);
        return (rowStart, rowCount, colStart, colCount);
    }

    /// <summary>Tokens in window g: T·rowCount·colCount.</summary>
    public int TokensInWindow(int window)
    {
        var (_, rowCount, _, colCount) = WindowBounds(window);
        return _t * rowCount * colCount; // ≤ MaxTokensInWindow, checked to fit an int at construction
    }

    /// <summary>
    /// Window-local coordinates of the i-th token of window g: with hw = rowCount·colCount,
    /// t = i / hw, localRow = (i mod hw) / colCount, localCol = i mod colCount. These are the RoPE coordinates
    /// (spec §1.5): every window starts at (0, 0, 0).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (int T, int Row, int Col) LocalCoordinates(int window, int i)
    {
        var (_, rowCount, _, colCount) = WindowBounds(window);
        int frameTokens = rowCount * colCount;
        if ((uint)i >= (uint)(_t * frameTokens)) ThrowTokenIndex(i, window, _t * frameTokens);
        int t = i / frameTokens;
        int inFrame = i - t * frameTokens;
        int localRow = inFrame / colCount;
        int localCol = inFrame - localRow * colCount;
        return (t, localRow, localCol);
    }

    /// <summary>
    /// Global (frame-major) index of the i-th token of window g:
    /// ((t·H + rowStart + localRow)·W + colStart + localCol, with (t, localRow, localCol) from <see cref="LocalCoordinates"/>.
    /// Gathering tokens in this order for g = 0..n²−1 is the reference's window rearrange; scattering back inverts it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long TokenIndex(int window, int i)
    {
        var (rowStart, rowCount, colStart, colCount) = WindowBounds(window);
        int frameTokens = rowCount * colCount;
        if ((uint)i >= (uint)(_t * frameTokens)) ThrowTokenIndex(i, window, _t * frameTokens);
        int t = i / frameTokens;
        int inFrame = i - t * frameTokens;
        int localRow = inFrame / colCount;
        int localCol = inFrame - localRow * colCount;
        return ((long)t * _h + rowStart + localRow) * _w + colStart + localCol;
    }

    public override string ToString() =>
        $"{_n}x{_n} {(IsUniform ? "uniform" : "ragged")} windows over {Grid}, max {MaxTokensInWindow} tokens/window";

    // start = ⌊k·size/n⌋, end = ⌊(k+1)·size/n⌋ (64-bit products: k·size can exceed int).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (int Start, int Length) Split(int size, int n, int k)
    {
        int start = (int)((long)k * size / n);
        int end = (int)((long)(k + 1) * size / n);
        return (start, end - start);
    }

    private static void Check(Grid3 grid, int windowsPerSide)
    {
        grid.Validate();
        if (windowsPerSide < 1)
            throw new UnsupportedConfigurationException($"windows per side must be at least 1, got {windowsPerSide} (grid {grid})");
        if ((long)windowsPerSide * windowsPerSide > int.MaxValue)
            throw new UnsupportedConfigurationException($"{windowsPerSide}x{windowsPerSide} windows exceed the int window index");
    }

    [DoesNotReturn]
    private static void ThrowWindowIndex(string name, int value, int count) =>
        throw new ArgumentOutOfRangeException(name, value, $"must be in [0, {count})");

    [DoesNotReturn]
    private static void ThrowTokenIndex(int i, int window, int count) =>
        throw new ArgumentOutOfRangeException(nameof(i), i, $"window {window} holds {count} tokens");
}
