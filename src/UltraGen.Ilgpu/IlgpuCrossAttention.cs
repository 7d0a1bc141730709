using ILGPU;
using ILGPU.Runtime;
using UltraGen.Core;

namespace UltraGen.Ilgpu;

/// <summary>
/// ILGPU twin of the text cross-attention kernels (<c>CrossAttentionOp</c>): o = softmax(q·kᵀ/√d)·v of N queries over L keys
/// per batch and head, no mask, no RoPE. q, o, dO, dq are (B, N, heads·headDim) f32, k, v, dk, dv are (B, L, heads·headDim).
/// Flash-style forward (online softmax, f32 accumulation) and a FlashAttention-2 style backward (D = rowsum(dO∘O), a dQ
/// kernel per query tile and a dK/dV kernel per key tile).
/// </summary>
/// <remarks>
/// <para>The kernels use the shared-memory layouts and tile pickers of <see cref="IlgpuWindowAttention"/> (Q/O/K/V/S tiles in
/// one dynamic block, the row statistics (m, 1/l) of the forward) and its intrinsic-free <c>Exp</c>; only the token
/// indexing differs: queries and keys are plain rows of two tensors instead of the tokens of one window.</para>
/// <para>Because L is small (the text length) and N large (video tokens), a dK/dV group that walked all N queries would
/// leave a GPU idle (B·heads·⌈L/Bc⌉ groups). The dK/dV grid is therefore split over chunks of query tiles ("splits", about
/// <c>targetGroups</c> groups in all); each split writes its partial dK/dV to scratch and <see cref="IlgpuReductions.ColumnSum"/>
/// adds the splits in a fixed order (deterministic, no atomics). With one split the kernel writes dk/dv directly.</para>
/// <para>All launches go to the accelerator's default stream. <see cref="Forward"/> does not synchronize; <see cref="Backward"/>
/// allocates scratch (O, row statistics, D and the split partials) and synchronizes before freeing it.</para>
/// </remarks>
public sealed class IlgpuCrossAttention : IDisposable
{
    private const string OpName = "cross_attention";

    /// <summary>Most splits of the dK/dV grid (each costs one B·L·C partial per wanted gradient).</summary>
    internal const int MaxSplits = 64;

    private readonly Accelerator _accelerator;
    private readonly IlgpuReductions _reductions;
    private readonly int _targetGroups;
    private MemoryBuffer1D<float, Stride1D.Dense>? _placeholder;

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, CrossAttentionParams>? _forwardKernel;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? _rowDotKernel;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossAttentionParams>? _keyValueKernel;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossAttentionParams>? _queryKernel;

    /// <param name="accelerator">where the kernels run</param>
    /// <param name="reductions">the column sums that add the dK/dV splits</param>
    /// <param name="targetGroups">groups the dK/dV grid aims for (0: 4 per multiprocessor)</param>
    internal IlgpuCrossAttention(Accelerator accelerator, IlgpuReductions reductions, int targetGroups = 0)
    {
        _accelerator = accelerator;
        _reductions = reductions;
        _targetGroups = targetGroups > 0 ? targetGroups : 4 * Math.Max(1, accelerator.NumMultiprocessors);
    }

    /// <summary>o = softmax(q·kᵀ/√headDim)·v for every batch and head.</summary>
    public void Forward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o,
        int batch, int queries, int keys, int heads, int headDim)
    {
        var g = Validate(q, k, v, batch, queries, keys, heads, headDim);
        Require(o, g.QueryElements, "o", "(B, N, heads·headDim)");
        LaunchForward(q, k, v, o, Placeholder, batch, queries, keys, heads, headDim, writeStats: false);
    }

    /// <summary>Writes dq, dk, dv (each may be an empty view when that gradient is not wanted).</summary>
    public void Backward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, int batch, int queries, int keys, int heads, int headDim)
    {
        var g = Validate(q, k, v, batch, queries, keys, heads, headDim);
        Require(dO, g.QueryElements, "dO", "(B, N, heads·headDim)");
        bool wantQ = dq.Length > 0, wantK = dk.Length > 0, wantV = dv.Length > 0;
        if (wantQ) Require(dq, g.QueryElements, "dq", "(B, N, heads·headDim)");
        if (wantK) Require(dk, g.KeyElements, "dk", "(B, L, heads·headDim)");
        if (wantV) Require(dv, g.KeyElements, "dv", "(B, L, heads·headDim)");
        if (!wantQ && !wantK && !wantV) return;

        var stream = _accelerator.DefaultStream;
        long rows = g.QueryElements / headDim; // B·N·heads
        using var oScratch = _accelerator.Allocate1D<float>(g.QueryElements);
        using var stats = _accelerator.Allocate1D<float>(2 * rows);
        using var rowDot = _accelerator.Allocate1D<float>(rows);

        LaunchForward(q, k, v, oScratch.View, stats.View, batch, queries, keys, heads, headDim, writeStats: true);
        _rowDotKernel ??= _accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(
            IlgpuWindowAttentionKernels.RowDot);
        _rowDotKernel(stream, checked((int)rows), dO, oScratch.View, rowDot.View, heads, headDim);

        int threads = IlgpuWindowAttention.GroupSize(_accelerator);
        MemoryBuffer1D<float, Stride1D.Dense>? dkParts = null, dvParts = null;
        try
        {
            if (wantK || wantV)
            {
                var (br, bc) = IlgpuWindowAttention.KeyValueTiles(headDim, OpName);
                var p = Params(batch, queries, keys, heads, headDim, br, bc, tiles: CeilDiv(keys, bc));
                p.Splits = Splits(CeilDiv(queries, br), batch * heads * p.Tiles, g.KeyElements);
                p.FlagA = wantK ? 1 : 0;
                p.FlagB = wantV ? 1 : 0;
                if (p.Splits > 1)
                {
                    if (wantK) dkParts = _accelerator.Allocate1D<float>(p.Splits * g.KeyElements);
                    if (wantV) dvParts = _accelerator.Allocate1D<float>(p.Splits * g.KeyElements);
                }
                _keyValueKernel ??= _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                    ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossAttentionParams>(
                    IlgpuCrossAttentionKernels.KeyValueGrad);
                var config = new KernelConfig(checked(batch * heads * p.Tiles * p.Splits), threads,
                    SharedMemoryConfig.RequestDynamic<float>(IlgpuWindowAttention.KeyValueFloats(headDim, br, bc)));
                ArrayView<float> dkTarget = !wantK ? Placeholder : dkParts is not null ? dkParts.View : dk;
                ArrayView<float> dvTarget = !wantV ? Placeholder : dvParts is not null ? dvParts.View : dv;
                _keyValueKernel(stream, config, q, k, v, dO, stats.View, rowDot.View, dkTarget, dvTarget, p);
                // Splits → gradients: the partials are a (splits, B·L·C) matrix; its column sums are dk (dv).
                int columns = checked((int)g.KeyElements);
                var empty = ArrayView<float>.Empty;
                if (dkParts is not null) _reductions.ColumnSum(IlgpuReductions.SumA, dkParts.View, empty, empty, empty, dk, 1, p.Splits, columns);
                if (dvParts is not null) _reductions.ColumnSum(IlgpuReductions.SumA, dvParts.View, empty, empty, empty, dv, 1, p.Splits, columns);
            }
            if (wantQ)
            {
                var (br, bc) = IlgpuWindowAttention.QueryTiles(headDim, OpName);
                var p = Params(batch, queries, keys, heads, headDim, br, bc, tiles: CeilDiv(queries, br));
                _queryKernel ??= _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
                    ArrayView<float>, ArrayView<float>, ArrayView<float>, CrossAttentionParams>(IlgpuCrossAttentionKernels.QueryGrad);
                var config = new KernelConfig(checked(batch * heads * p.Tiles), threads,
                    SharedMemoryConfig.RequestDynamic<float>(IlgpuWindowAttention.QueryFloats(headDim, br, bc)));
                _queryKernel(stream, config, q, k, v, dO, stats.View, rowDot.View, dq, p);
            }
            stream.Synchronize(); // the scratch buffers are freed on return
        }
        finally
        {
            dkParts?.Dispose();
            dvParts?.Dispose();
        }
    }

    /// <summary>Frees the placeholder buffer (the accelerator frees it too when it is disposed).</summary>
    public void Dispose()
    {
        _placeholder?.Dispose();
        _placeholder = null;
    }

    /// <summary>
    /// Query-tile chunks per dK/dV key tile: enough for about <c>targetGroups</c> groups, at most one per query tile, at most
    /// <see cref="MaxSplits"/>, and at most 2^25 floats of partials per gradient.
    /// </summary>
    internal int Splits(int queryTiles, int keyValueGroups, long keyElements)
    {
        long byMemory = Math.Max(1, (1L << 25) / Math.Max(1, keyElements));
        long wanted = CeilDiv(_targetGroups, Math.Max(1, keyValueGroups));
        return (int)Math.Max(1, Math.Min(Math.Min(wanted, queryTiles), Math.Min(MaxSplits, byMemory)));
    }

    private void LaunchForward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> stats,
        int batch, int queries, int keys, int heads, int headDim, bool writeStats)
    {
        var (br, bc) = IlgpuWindowAttention.ForwardTiles(headDim, OpName);
        var p = Params(batch, queries, keys, heads, headDim, br, bc, tiles: CeilDiv(queries, br));
        p.FlagA = writeStats ? 1 : 0;
        _forwardKernel ??= _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, CrossAttentionParams>(IlgpuCrossAttentionKernels.Forward);
        var config = new KernelConfig(checked(batch * heads * p.Tiles), IlgpuWindowAttention.GroupSize(_accelerator),
            SharedMemoryConfig.RequestDynamic<float>(IlgpuWindowAttention.ForwardFloats(headDim, br, bc)));
        _forwardKernel(_accelerator.DefaultStream, config, q, k, v, o, stats, p);
    }

    private static CrossAttentionParams Params(int batch, int queries, int keys, int heads, int headDim, int br, int bc, int tiles) => new()
    {
        Batch = batch,
        Queries = queries,
        Keys = keys,
        Heads = heads,
        HeadDim = headDim,
        Channels = heads * headDim,
        Br = br,
        Bc = bc,
        Tiles = tiles,
        Splits = 1,
        Scale = (float)(1.0 / Math.Sqrt(headDim)),
    };

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    private static long CeilDiv(long a, long b) => (a + b - 1) / b;

    // ---- validation and buffers -----------------------------------------------------------------------------------------

    private readonly record struct Geometry(long QueryElements, long KeyElements);

    private static Geometry Validate(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, int batch, int queries, int keys,
        int heads, int headDim)
    {
        if (batch < 1 || queries < 1 || keys < 1 || heads < 1 || headDim < 1)
            throw new ShapeMismatchException(
                $"ilgpu cross_attention: batch, queries, keys, heads and head dim must be at least 1, got {batch}, {queries}, {keys}, {heads}, {headDim}");
        long channels = (long)heads * headDim;
        var g = new Geometry(batch * queries * channels, batch * keys * channels);
        Require(q, g.QueryElements, "q", "(B, N, heads·headDim)");
        Require(k, g.KeyElements, "k", "(B, L, heads·headDim)");
        Require(v, g.KeyElements, "v", "(B, L, heads·headDim)");
        return g;
    }

    private static void Require(ArrayView<float> view, long elements, string name, string shape)
    {
        if (view.Length != elements)
            throw new ShapeMismatchException($"ilgpu cross_attention: {name} holds {view.Length} floats, expected {elements} {shape}");
    }

    private ArrayView<float> Placeholder => (_placeholder ??= _accelerator.Allocate1D<float>(1)).View;
}

/// <summary>
/// Kernel argument of <see cref="IlgpuCrossAttention"/> (public only because ILGPU's CPU backend emits kernel wrappers into a
/// separate dynamic assembly): the sizes, the tile shape and the flags of one launch, passed by value.
/// </summary>
public struct CrossAttentionParams
{
    /// <summary>Batch, queries N and keys L per sample.</summary>
    public int Batch, Queries, Keys;

    /// <summary>Heads, head dim and channels (= heads·headDim).</summary>
    public int Heads, HeadDim, Channels;

    /// <summary>Query rows (Br) and key rows (Bc) per tile, and tiles per (batch, head) of the kernel's own dimension.</summary>
    public int Br, Bc, Tiles;

    /// <summary>dK/dV kernel: query-tile chunks per key tile; split s writes its partial at s·B·L·C.</summary>
    public int Splits;

    /// <summary>1/√headDim.</summary>
    public float Scale;

    /// <summary>Forward: 1 when the row statistics (m, 1/l) are written. dK/dV kernel: 1 when dk is written.</summary>
    public int FlagA;

    /// <summary>dK/dV kernel: 1 when dv is written.</summary>
    public int FlagB;
}

/// <summary>
/// The ILGPU kernels of <see cref="IlgpuCrossAttention"/>. Explicitly grouped: one group per (batch, head, tile[, split]); every
/// thread of a group walks the tile's elements with a stride of the group size, so any group size works. All tiles live in
/// one dynamic shared-memory block laid out as in <see cref="IlgpuWindowAttentionKernels"/>. Scores are kept in the scaled
/// domain (q multiplied by 1/√d on load); m and l are in those units. Row statistics and D are indexed by
/// (b·N + i)·heads + head, the layout of <see cref="IlgpuWindowAttentionKernels.RowDot"/>.
/// </summary>
internal static class IlgpuCrossAttentionKernels
{
    /// <summary>Element offset of row <paramref name="row"/> (head slice) of a (B, rows, C) tensor.</summary>
    private static long RowOffset(CrossAttentionParams p, int batch, int rowsPerSample, int row, int head) =>
        ((long)batch * rowsPerSample + row) * p.Channels + (long)head * p.HeadDim;

    /// <summary>
    /// Forward. Grid: batch·heads·⌈N/Br⌉ groups (tile fastest); each group owns Br query rows, walks the L keys in tiles of Bc
    /// with an online softmax, and writes o (and (m, 1/l) per row when FlagA = 1).
    /// Shared memory (floats): Q Br·d | O Br·d | K/V Bc·d (K, then V over it) | S Br·Bc | m, l, α Br each.
    /// </summary>
    public static void Forward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o,
        ArrayView<float> stats, CrossAttentionParams p)
    {
        int tid = Group.IdxX, threads = Group.DimX;
        int group = Grid.IdxX;
        int tile = group % p.Tiles;
        int pair = group / p.Tiles;
        int head = pair % p.Heads, batch = pair / p.Heads;
        int rowBase = tile * p.Br;
        int d = p.HeadDim, br = p.Br, bc = p.Bc;
        int qn = p.Queries - rowBase < br ? p.Queries - rowBase : br;
        var shared = SharedMemory.GetDynamic<float>();
        int sQ = 0, sO = br * d, sKV = 2 * br * d, sS = sKV + bc * d, sM = sS + br * bc, sL = sM + br, sA = sL + br;

        for (int e = tid; e < br * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            shared[sQ + e] = r < qn ? p.Scale * q[RowOffset(p, batch, p.Queries, rowBase + r, head) + c] : 0f;
            shared[sO + e] = 0f;
        }
        for (int r = tid; r < br; r += threads)
        {
            shared[sM + r] = float.NegativeInfinity;
            shared[sL + r] = 0f;
        }
        Group.Barrier();

        for (int keyBase = 0; keyBase < p.Keys; keyBase += bc)
        {
            int kn = p.Keys - keyBase < bc ? p.Keys - keyBase : bc;
            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                shared[sKV + e] = j < kn ? k[RowOffset(p, batch, p.Keys, keyBase + j, head) + c] : 0f;
            }
            Group.Barrier();

            for (int e = tid; e < br * bc; e += threads)
            {
                int r = e / bc, j = e - r * bc;
                float s = float.NegativeInfinity;
                if (j < kn)
                {
                    s = 0f;
                    for (int c = 0; c < d; c++) s += shared[sQ + r * d + c] * shared[sKV + j * d + c];
                }
                shared[sS + e] = s;
            }
            Group.Barrier();

            // Online softmax row statistics (one thread per row) while the whole group loads V over K.
            for (int r = tid; r < br; r += threads)
            {
                float previous = shared[sM + r];
                float max = previous;
                for (int j = 0; j < kn; j++)
                {
                    float s = shared[sS + r * bc + j];
                    if (s > max) max = s;
                }
                float sum = 0f;
                for (int j = 0; j < kn; j++)
                {
                    float e = IlgpuWindowAttentionKernels.Exp(shared[sS + r * bc + j] - max);
                    shared[sS + r * bc + j] = e;
                    sum += e;
                }
                for (int j = kn; j < bc; j++) shared[sS + r * bc + j] = 0f;
                float alpha = IlgpuWindowAttentionKernels.Exp(previous - max); // 0 on the first tile (previous = −∞)
                shared[sL + r] = shared[sL + r] * alpha + sum;
                shared[sM + r] = max;
                shared[sA + r] = alpha;
            }
            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                shared[sKV + e] = j < kn ? v[RowOffset(p, batch, p.Keys, keyBase + j, head) + c] : 0f;
            }
            Group.Barrier();

            for (int e = tid; e < br * d; e += threads)
            {
                int r = e / d, c = e - r * d;
                float acc = shared[sO + e] * shared[sA + r];
                for (int j = 0; j < kn; j++) acc += shared[sS + r * bc + j] * shared[sKV + j * d + c];
                shared[sO + e] = acc;
            }
            Group.Barrier();
        }

        for (int e = tid; e < qn * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            o[RowOffset(p, batch, p.Queries, rowBase + r, head) + c] = shared[sO + e] / shared[sL + r];
        }
        if (p.FlagA != 0)
            for (int r = tid; r < qn; r += threads)
            {
                long stat = (((long)batch * p.Queries + rowBase + r) * p.Heads + head) * 2;
                stats[stat] = shared[sM + r];
                stats[stat + 1] = 1f / shared[sL + r];
            }
    }

    /// <summary>
    /// Backward dK/dV. Grid: batch·heads·⌈L/Bc⌉·splits groups (split fastest); each group owns Bc keys and the query tiles
    /// [split·T/splits, (split+1)·T/splits) of T = ⌈N/Br⌉, recomputes P = exp(q·kᵀ/√d − m)/l from the forward's row statistics,
    /// and accumulates dV = Pᵀ·dO and dK = dSᵀ·(q/√d) with dS = P∘(dO·Vᵀ − D). Split s writes its rows at offset s·B·L·C of
    /// dk (when FlagA = 1) and dv (when FlagB = 1): the gradients themselves for one split, else partials to be summed.
    /// Shared memory (floats): K, V, dK, dV Bc·d each | Q, dO Br·d each | P, dS Br·Bc each | m, 1/l, D Br each.
    /// </summary>
    public static void KeyValueGrad(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> stats, ArrayView<float> rowDot, ArrayView<float> dk, ArrayView<float> dv, CrossAttentionParams p)
    {
        int tid = Group.IdxX, threads = Group.DimX;
        int group = Grid.IdxX;
        int split = group % p.Splits;
        int rest = group / p.Splits;
        int tile = rest % p.Tiles;
        int pair = rest / p.Tiles;
        int head = pair % p.Heads, batch = pair / p.Heads;
        int keyBase = tile * p.Bc;
        int d = p.HeadDim, br = p.Br, bc = p.Bc;
        int kn = p.Keys - keyBase < bc ? p.Keys - keyBase : bc;
        int queryTiles = (p.Queries + br - 1) / br;
        int firstRow = (int)((long)split * queryTiles / p.Splits) * br;
        int endRow = (int)((long)(split + 1) * queryTiles / p.Splits) * br;
        if (endRow > p.Queries) endRow = p.Queries;
        var shared = SharedMemory.GetDynamic<float>();
        int sK = 0, sV = bc * d, sDK = 2 * bc * d, sDV = 3 * bc * d, sQ = 4 * bc * d, sDO = sQ + br * d;
        int sP = sDO + br * d, sDS = sP + br * bc, sM = sDS + br * bc, sInvL = sM + br, sD = sInvL + br;

        for (int e = tid; e < bc * d; e += threads)
        {
            int j = e / d, c = e - j * d;
            float key = 0f, value = 0f;
            if (j < kn)
            {
                long offset = RowOffset(p, batch, p.Keys, keyBase + j, head);
                key = k[offset + c];
                value = v[offset + c];
            }
            shared[sK + e] = key;
            shared[sV + e] = value;
            shared[sDK + e] = 0f;
            shared[sDV + e] = 0f;
        }

        for (int rowBase = firstRow; rowBase < endRow; rowBase += br)
        {
            int qn = endRow - rowBase < br ? endRow - rowBase : br;
            for (int e = tid; e < br * d; e += threads)
            {
                int r = e / d, c = e - r * d;
                float query = 0f, grad = 0f;
                if (r < qn)
                {
                    long offset = RowOffset(p, batch, p.Queries, rowBase + r, head);
                    query = p.Scale * q[offset + c];
                    grad = dO[offset + c];
                }
                shared[sQ + e] = query;
                shared[sDO + e] = grad;
            }
            for (int r = tid; r < br; r += threads)
            {
                float rowMax = 0f, rowInvSum = 0f, rowD = 0f;
                if (r < qn)
                {
                    long entry = ((long)batch * p.Queries + rowBase + r) * p.Heads + head;
                    rowMax = stats[entry * 2];
                    rowInvSum = stats[entry * 2 + 1];
                    rowD = rowDot[entry];
                }
                shared[sM + r] = rowMax;
                shared[sInvL + r] = rowInvSum;
                shared[sD + r] = rowD;
            }
            Group.Barrier();

            for (int e = tid; e < br * bc; e += threads)
            {
                int r = e / bc, j = e - r * bc;
                float prob = 0f, ds = 0f;
                if (r < qn && j < kn)
                {
                    float s = 0f, dp = 0f;
                    for (int c = 0; c < d; c++)
                    {
                        s += shared[sQ + r * d + c] * shared[sK + j * d + c];
                        dp += shared[sDO + r * d + c] * shared[sV + j * d + c];
                    }
                    prob = IlgpuWindowAttentionKernels.Exp(s - shared[sM + r]) * shared[sInvL + r];
                    ds = prob * (dp - shared[sD + r]);
                }
                shared[sP + e] = prob;
                shared[sDS + e] = ds;
            }
            Group.Barrier();

            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                float accV = shared[sDV + e], accK = shared[sDK + e];
                for (int r = 0; r < qn; r++)
                {
                    accV += shared[sP + r * bc + j] * shared[sDO + r * d + c];
                    accK += shared[sDS + r * bc + j] * shared[sQ + r * d + c];
                }
                shared[sDV + e] = accV;
                shared[sDK + e] = accK;
            }
            Group.Barrier();
        }

        long partOffset = (long)split * p.Batch * p.Keys * p.Channels;
        for (int e = tid; e < kn * d; e += threads)
        {
            int j = e / d, c = e - j * d;
            long offset = partOffset + RowOffset(p, batch, p.Keys, keyBase + j, head) + c;
            if (p.FlagA != 0) dk[offset] = shared[sDK + e];
            if (p.FlagB != 0) dv[offset] = shared[sDV + e];
        }
    }

    /// <summary>
    /// Backward dQ. Grid: batch·heads·⌈N/Br⌉ groups; each group owns Br query rows, walks the L keys in tiles of Bc and
    /// accumulates dQ = (1/√d)·Σ dS·K.
    /// Shared memory (floats): Q, dO, dQ Br·d each | K, V Bc·d each | dS Br·Bc | m, 1/l, D Br each.
    /// </summary>
    public static void QueryGrad(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> stats, ArrayView<float> rowDot, ArrayView<float> dq, CrossAttentionParams p)
    {
        int tid = Group.IdxX, threads = Group.DimX;
        int group = Grid.IdxX;
        int tile = group % p.Tiles;
        int pair = group / p.Tiles;
        int head = pair % p.Heads, batch = pair / p.Heads;
        int rowBase = tile * p.Br;
        int d = p.HeadDim, br = p.Br, bc = p.Bc;
        int qn = p.Queries - rowBase < br ? p.Queries - rowBase : br;
        var shared = SharedMemory.GetDynamic<float>();
        int sQ = 0, sDO = br * d, sDQ = 2 * br * d, sK = 3 * br * d, sV = sK + bc * d, sDS = sV + bc * d;
        int sM = sDS + br * bc, sInvL = sM + br, sD = sInvL + br;

        for (int e = tid; e < br * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            float query = 0f, grad = 0f;
            if (r < qn)
            {
                long offset = RowOffset(p, batch, p.Queries, rowBase + r, head);
                query = p.Scale * q[offset + c];
                grad = dO[offset + c];
            }
            shared[sQ + e] = query;
            shared[sDO + e] = grad;
            shared[sDQ + e] = 0f;
        }
        for (int r = tid; r < br; r += threads)
        {
            float rowMax = 0f, rowInvSum = 0f, rowD = 0f;
            if (r < qn)
            {
                long entry = ((long)batch * p.Queries + rowBase + r) * p.Heads + head;
                rowMax = stats[entry * 2];
                rowInvSum = stats[entry * 2 + 1];
                rowD = rowDot[entry];
            }
            shared[sM + r] = rowMax;
            shared[sInvL + r] = rowInvSum;
            shared[sD + r] = rowD;
        }

        for (int keyBase = 0; keyBase < p.Keys; keyBase += bc)
        {
            int kn = p.Keys - keyBase < bc ? p.Keys - keyBase : bc;
            for (int e = tid; e < bc * d; e += threads)
            {
                int j = e / d, c = e - j * d;
                float key = 0f, value = 0f;
                if (j < kn)
                {
                    long offset = RowOffset(p, batch, p.Keys, keyBase + j, head);
                    key = k[offset + c];
                    value = v[offset + c];
                }
                shared[sK + e] = key;
                shared[sV + e] = value;
            }
            Group.Barrier();

            for (int e = tid; e < br * bc; e += threads)
            {
                int r = e / bc, j = e - r * bc;
                float ds = 0f;
                if (r < qn && j < kn)
                {
                    float s = 0f, dp = 0f;
                    for (int c = 0; c < d; c++)
                    {
                        s += shared[sQ + r * d + c] * shared[sK + j * d + c];
                        dp += shared[sDO + r * d + c] * shared[sV + j * d + c];
                    }
                    ds = IlgpuWindowAttentionKernels.Exp(s - shared[sM + r]) * shared[sInvL + r] * (dp - shared[sD + r]);
                }
                shared[sDS + e] = ds;
            }
            Group.Barrier();

            for (int e = tid; e < br * d; e += threads)
            {
                int r = e / d, c = e - r * d;
                float acc = shared[sDQ + e];
                for (int j = 0; j < kn; j++) acc += shared[sDS + r * bc + j] * shared[sK + j * d + c];
                shared[sDQ + e] = acc;
            }
            Group.Barrier();
        }

        for (int e = tid; e < qn * d; e += threads)
        {
            int r = e / d, c = e - r * d;
            dq[RowOffset(p, batch, p.Queries, rowBase + r, head) + c] = p.Scale * shared[sDQ + e];
        }
    }
}
