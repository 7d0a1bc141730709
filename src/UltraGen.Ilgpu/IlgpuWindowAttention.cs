using ILGPU;
using ILGPU.Runtime;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Ops;

namespace UltraGen.Ilgpu;

/// <summary>
/// ILGPU twin of the windowed attention kernel family: flash-style forward (online softmax, f32 accumulation, window-local
/// 3-D RoPE applied as q and k tiles are loaded, tokens gathered by index arithmetic on the <see cref="WindowLayout"/>) and a
/// FlashAttention-2 style backward (D = rowsum(dO∘O), a dK/dV kernel per key tile and a dQ kernel per query tile, no atomics).
/// Tensors are channels-last video (B, T, H, W, heads·headDim) in f32.
/// </summary>
/// <remarks>
/// <para>All launches go to the accelerator's default stream. <see cref="Forward"/> does not synchronize.
/// <see cref="Backward"/> allocates scratch (O: one tensor of q's size; row statistics (m, 1/l): 2·B·T·H·W·heads floats; D: B·T·H·W·heads floats), recomputes
/// the forward into it, and synchronizes the default stream before freeing that scratch.</para>
/// <para>The RoPE (cos, sin) table is computed on the host in float64, uploaded once per (headDim, θ) and cached (it grows
/// when a grid needs larger positions). It and a one-float placeholder buffer stay allocated until <see cref="Dispose"/>
/// or until the accelerator is disposed.</para>
/// </remarks>
public sealed class IlgpuWindowAttention : IDisposable
{
    /// <summary>Shared-memory budget per group (bytes): the portable 48 KB.</summary>
    internal const int SharedMemoryBudgetBytes = 48 * 1024;

    /// <summary>Threads per group on a GPU (capped by the accelerator's maximum group size).</summary>
    internal const int PreferredGroupSize = 128;

    private static readonly int[] TileCandidates = [64, 32, 16, 8];

    private readonly Accelerator _accelerator;
    private readonly Dictionary<(int HeadDim, double Theta), (MemoryBuffer1D<float, Stride1D.Dense> Buffer, int Rows)> _ropeTables = new();
    private MemoryBuffer1D<float, Stride1D.Dense>? _placeholder;

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, WindowAttentionParams>? _forwardKernel;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? _rowDotKernel;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, WindowAttentionParams>? _keyValueKernel;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, WindowAttentionParams>? _queryKernel;

    public IlgpuWindowAttention(Accelerator accelerator) => _accelerator = accelerator;

    /// <summary>o = softmax(q̃·k̃ᵀ/√headDim)·v inside every window (q̃, k̃: q, k with window-local RoPE when <paramref name="rope"/>).</summary>
    public void Forward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o,
        int batch, int heads, int headDim, WindowLayout layout, bool rope, double ropeTheta)
    {
        var geometry = Validate(q, k, v, batch, heads, headDim, layout, rope);
        Require(o, geometry.Elements, "o");
        var table = RopeTable(headDim, ropeTheta, layout, rope);
        LaunchForward(q, k, v, o, Placeholder, table, batch, heads, headDim, layout, rope, writeStats: false);
    }

    /// <summary>Writes dq, dk, dv (each may be an empty view when that gradient is not wanted).</summary>
    public void Backward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv,
        int batch, int heads, int headDim, WindowLayout layout, bool rope, double ropeTheta)
    {
        var geometry = Validate(q, k, v, batch, heads, headDim, layout, rope);
        Require(dO, geometry.Elements, "dO");
        bool wantQ = dq.Length > 0, wantK = dk.Length > 0, wantV = dv.Length > 0;
        if (wantQ) Require(dq, geometry.Elements, "dq");
        if (wantK) Require(dk, geometry.Elements, "dk");
        if (wantV) Require(dv, geometry.Elements, "dv");
        if (!wantQ && !wantK && !wantV) return;

        var table = RopeTable(headDim, ropeTheta, layout, rope);
        var stream = _accelerator.DefaultStream;
        long rows = geometry.Elements / headDim; // B·T·H·W·heads
        using var oScratch = _accelerator.Allocate1D<float>(geometry.Elements);
        using var stats = _accelerator.Allocate1D<float>(2 * rows);
        using var rowDot = _accelerator.Allocate1D<float>(rows);

        LaunchForward(q, k, v, oScratch.View, stats.View, table, batch, heads, headDim, layout, rope, writeStats: true);

        _rowDotKernel ??= _accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(
            IlgpuWindowAttentionKernels.RowDot);
        _rowDotKernel(stream, checked((int)rows), dO, oScratch.View, rowDot.View, heads, headDim);

        int threads = GroupSize(_accelerator);
        if (wantK || wantV)
        {
            var (br, bc) = KeyValueTiles(headDim);
            var p = Params(batch, heads, headDim, layout, rope, br, bc, ownRows: bc);
            p.FlagA = wantK ? 1 : 0;
            p.FlagB = wantV ? 1 : 0;
            _keyValueKernel ??= _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, WindowAttentionParams>(
                IlgpuWindowAttentionKernels.KeyValueGrad);
            var config = new KernelConfig(Groups(batch, heads, layout, p.Tiles), threads,
                SharedMemoryConfig.RequestDynamic<float>(KeyValueFloats(headDim, br, bc)));
            _keyValueKernel(stream, config, q, k, v, dO, stats.View, rowDot.View, wantK ? dk : Placeholder, wantV ? dv : Placeholder,
                table, p);
        }
        if (wantQ)
        {
            var (br, bc) = QueryTiles(headDim);
            var p = Params(batch, heads, headDim, layout, rope, br, bc, ownRows: br);
            p.FlagA = 1;
            _queryKernel ??= _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, WindowAttentionParams>(
                IlgpuWindowAttentionKernels.QueryGrad);
            var config = new KernelConfig(Groups(batch, heads, layout, p.Tiles), threads,
                SharedMemoryConfig.RequestDynamic<float>(QueryFloats(headDim, br, bc)));
            _queryKernel(stream, config, q, k, v, dO, stats.View, rowDot.View, dq, table, p);
        }
        stream.Synchronize(); // the scratch buffers are freed on return
    }

    /// <summary>Frees the cached RoPE tables and the placeholder buffer (the accelerator frees them too when it is disposed).</summary>
    public void Dispose()
    {
        foreach (var (buffer, _) in _ropeTables.Values) buffer.Dispose();
        _ropeTables.Clear();
        _placeholder?.Dispose();
        _placeholder = null;
    }

    // ---- tile configuration ---------------------------------------------------------------------------------------------

    /// <summary>Forward shared memory (floats): Q, O Br·d | K/V Bc·d | S Br·Bc | m, l, α Br.</summary>
    internal static int ForwardFloats(int d, int br, int bc) => 2 * br * d + bc * d + br * bc + 3 * br;

    /// <summary>dK/dV shared memory (floats): K, V, dK, dV Bc·d | Q, dO Br·d | P, dS Br·Bc | m, 1/l, D Br.</summary>
    internal static int KeyValueFloats(int d, int br, int bc) => 4 * bc * d + 2 * br * d + 2 * br * bc + 3 * br;

    /// <summary>dQ shared memory (floats): Q, dO, dQ Br·d | K, V Bc·d | dS Br·Bc | m, 1/l, D Br.</summary>
    internal static int QueryFloats(int d, int br, int bc) => 3 * br * d + 2 * bc * d + br * bc + 3 * br;

    /// <summary>Forward (Br, Bc): the fitting pair with the largest smaller side, then the largest Br.</summary>
    /// <remarks>The tile pickers serve every ILGPU attention op with these shared-memory layouts (<paramref name="op"/> names it in errors).</remarks>
    internal static (int Br, int Bc) ForwardTiles(int d, string op = "window_attention") => Pick(d, ForwardFloats, ownIsRows: true, op);

    /// <summary>dK/dV (Br, Bc): the fitting pair with the largest smaller side, then the largest Bc (the group's own keys).</summary>
    internal static (int Br, int Bc) KeyValueTiles(int d, string op = "window_attention") => Pick(d, KeyValueFloats, ownIsRows: false, op);

    /// <summary>dQ (Br, Bc): the fitting pair with the largest smaller side, then the largest Br.</summary>
    internal static (int Br, int Bc) QueryTiles(int d, string op = "window_attention") => Pick(d, QueryFloats, ownIsRows: true, op);

    private static (int Br, int Bc) Pick(int d, Func<int, int, int, int> floats, bool ownIsRows, string op)
    {
        (int Br, int Bc) best = (0, 0);
        int bestMin = 0, bestOwn = 0;
        foreach (int br in TileCandidates)
            foreach (int bc in TileCandidates)
            {
                if ((long)floats(d, br, bc) * sizeof(float) > SharedMemoryBudgetBytes) continue;
                int min = Math.Min(br, bc), own = ownIsRows ? br : bc;
                if (min > bestMin || (min == bestMin && own > bestOwn)) (best, bestMin, bestOwn) = ((br, bc), min, own);
            }
        if (bestMin == 0)
            throw new UnsupportedConfigurationException(
                $"ilgpu {op}: head dim {d} does not fit the {SharedMemoryBudgetBytes / 1024} KB shared-memory budget");
        return best;
    }

    /// <summary>The attention kernels' group size on <paramref name="accelerator"/>: 128 threads, or fewer where the accelerator caps groups.</summary>
    internal static int GroupSize(Accelerator accelerator)
    {
        int max = accelerator.MaxNumThreadsPerGroup;
        int threads = Math.Min(PreferredGroupSize, max);
        int warp = accelerator.WarpSize;
        if (warp > 0 && threads >= warp) threads -= threads % warp;
        return Math.Max(1, threads);
    }

    // ---- launches -------------------------------------------------------------------------------------------------------

    private void LaunchForward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> stats,
        ArrayView<float> table, int batch, int heads, int headDim, WindowLayout layout, bool rope, bool writeStats)
    {
        var (br, bc) = ForwardTiles(headDim);
        var p = Params(batch, heads, headDim, layout, rope, br, bc, ownRows: br);
        p.FlagA = writeStats ? 1 : 0;
        _forwardKernel ??= _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, WindowAttentionParams>(IlgpuWindowAttentionKernels.Forward);
        var config = new KernelConfig(Groups(batch, heads, layout, p.Tiles), GroupSize(_accelerator),
            SharedMemoryConfig.RequestDynamic<float>(ForwardFloats(headDim, br, bc)));
        _forwardKernel(_accelerator.DefaultStream, config, q, k, v, o, stats, table, p);
    }

    private static int Groups(int batch, int heads, WindowLayout layout, int tiles) =>
        checked(batch * layout.WindowCount * heads * tiles);

    private static WindowAttentionParams Params(int batch, int heads, int headDim, WindowLayout layout, bool rope, int br, int bc,
        int ownRows)
    {
        var grid = layout.Grid;
        int spatial = 2 * (headDim / 6);
        return new WindowAttentionParams
        {
            T = grid.T,
            H = grid.H,
            W = grid.W,
            N = layout.WindowsPerSide,
            Heads = heads,
            HeadDim = headDim,
            Channels = heads * headDim,
            TokensPerSample = (long)grid.T * grid.H * grid.W,
            Br = br,
            Bc = bc,
            Tiles = (layout.MaxTokensInWindow + ownRows - 1) / ownRows,
            Rope = rope ? 1 : 0,
            PairsT = (headDim - 2 * spatial) / 2,
            PairsH = spatial / 2,
            Scale = (float)(1.0 / Math.Sqrt(headDim)),
        };
    }

    // ---- validation and buffers -----------------------------------------------------------------------------------------

    private readonly record struct Geometry(long Elements);

    private static Geometry Validate(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, int batch, int heads, int headDim,
        WindowLayout layout, bool rope)
    {
        ArgumentNullException.ThrowIfNull(layout);
        if (batch < 1 || heads < 1 || headDim < 1)
            throw new ShapeMismatchException(
                $"ilgpu window_attention: batch, heads and head dim must be at least 1, got {batch}, {heads}, {headDim}");
        if (rope) Rope3d.Split(headDim); // throws for an odd head dim or one below 6
        var grid = layout.Grid;
        long elements = (long)batch * grid.T * grid.H * grid.W * heads * headDim;
        Require(q, elements, "q");
        Require(k, elements, "k");
        Require(v, elements, "v");
        return new Geometry(elements);
    }

    private static void Require(ArrayView<float> view, long elements, string name)
    {
        if (view.Length != elements)
            throw new ShapeMismatchException(
                $"ilgpu window_attention: {name} holds {view.Length} floats, expected {elements} (B, T, H, W, heads·headDim)");
    }

    private ArrayView<float> Placeholder => (_placeholder ??= _accelerator.Allocate1D<float>(1)).View;

    /// <summary>
    /// The (cos, sin) table for (headDim, θ): entry ((pos·headDim/2 + pair)·2) is cos(pos·θ^(−2j/dAxis)) for the pair's
    /// axis and its index j on that axis, computed in float64 like <see cref="Rope3d"/>. Rows cover positions
    /// 0..max(T, ⌈H/n⌉, ⌈W/n⌉) − 1; a cached table is rebuilt larger when a layout needs more.
    /// </summary>
    private ArrayView<float> RopeTable(int headDim, double theta, WindowLayout layout, bool rope)
    {
        if (!rope) return Placeholder;
        int needed = Math.Max(layout.Grid.T, Math.Max(layout.MaxWindowRows, layout.MaxWindowCols));
        var key = (headDim, theta);
        if (_ropeTables.TryGetValue(key, out var cached))
        {
            if (cached.Rows >= needed) return cached.Buffer.View;
            _accelerator.DefaultStream.Synchronize(); // earlier launches may still read the old table
            cached.Buffer.Dispose();
            _ropeTables.Remove(key);
        }
        int rows = Math.Max(needed, 64);
        var (timeDims, heightDims, _) = Rope3d.Split(headDim);
        int pairs = headDim / 2, pairsT = timeDims / 2, pairsH = heightDims / 2;
        var host = new float[(long)rows * pairs * 2];
        for (int pair = 0; pair < pairs; pair++)
        {
            int axisDims, j;
            if (pair < pairsT) (axisDims, j) = (timeDims, pair);
            else if (pair < pairsT + pairsH) (axisDims, j) = (heightDims, pair - pairsT);
            else (axisDims, j) = (heightDims, pair - pairsT - pairsH); // width dims = height dims
            double inverseFrequency = 1.0 / Math.Pow(theta, (double)(2 * j) / axisDims);
            for (int pos = 0; pos < rows; pos++)
            {
                double angle = pos * inverseFrequency;
                long index = ((long)pos * pairs + pair) * 2;
                host[index] = (float)Math.Cos(angle);
                host[index + 1] = (float)Math.Sin(angle);
            }
        }
        var buffer = _accelerator.Allocate1D(host);
        _ropeTables[key] = (buffer, rows);
        return buffer.View;
    }
}
