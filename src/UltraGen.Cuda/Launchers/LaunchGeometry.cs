using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// C# mirror of <c>kernels/common/launch.cuh</c> (and the RoPE helpers of <c>rope.cuh</c>): grid, block and dynamic shared
/// memory of every kernel, so the host launches exactly what the kernels expect. Names follow the C++ helpers
/// (<c>ug_attn_grid</c> → <see cref="AttentionGrid"/>, ...). Pure functions; unit-tested against hand-computed values.
/// </summary>
public static class LaunchGeometry
{
    // ---- attention traits ----
    public const int AttentionThreads = 128;
    public const int AttentionF32Block = 32;
    public const int AttentionF32RowsPerWarp = 8;
    public const int AttentionBf16BlockM = 64;
    public const int AttentionBf16BlockN = 64;
    public const int AttentionBf16Pad = 8;

    // ---- memory-bound kernels ----
    public const int ElementwiseThreads = 256;
    public const int ElementwiseItems = 4;
    public const int RowThreads = 256;
    public const int ReductionTx = 32;
    public const int ReductionTy = 8;
    public const int ReductionMaxSplits = 1024;

    public static long CeilDiv(long a, long b) => (a + b - 1) / b;

    public static bool AttentionHeadDimSupported(int headDim) => headDim is 32 or 64 or 128;

    public static int AttentionBf16DkdvBlockQ(int headDim) => headDim == 128 ? 32 : 64;

    public static long AttentionTiles(WindowLayoutParams layout, int block) => CeilDiv(layout.MaxTokensInWindow, block);

    public static Dim3 AttentionGrid(WindowLayoutParams layout, int heads, int batch, int block) =>
        new(checked((int)AttentionTiles(layout, block)), checked(layout.WindowCount * heads), batch);

    public static int AttentionF32ForwardSmem(int headDim) =>
        (3 * AttentionF32Block * (headDim + 1) + AttentionThreads / 32 * AttentionF32RowsPerWarp * AttentionF32Block) * 4;

    public static int AttentionF32DkdvSmem(int headDim) =>
        (4 * AttentionF32Block * (headDim + 1) + 2 * (AttentionThreads / 32) * AttentionF32RowsPerWarp * AttentionF32Block) * 4;

    public static int AttentionF32DqSmem(int headDim) =>
        (4 * AttentionF32Block * (headDim + 1) + AttentionThreads / 32 * AttentionF32RowsPerWarp * AttentionF32Block) * 4;

    public static int AttentionBf16ForwardSmem(int headDim) =>
        (AttentionBf16BlockM + 4 * AttentionBf16BlockN) * (headDim + AttentionBf16Pad) * 2;

    /// <summary>window_attention_fwd_bf16_m128_d*: 128 queries (two 64-row Q halves) + two K/V stages.</summary>
    public static int AttentionBf16ForwardM128Smem(int headDim) =>
        (2 * AttentionBf16BlockM + 4 * AttentionBf16BlockN) * (headDim + AttentionBf16Pad) * 2;

    public static int AttentionBf16DkdvSmem(int headDim) =>
        (2 * AttentionBf16BlockN + 4 * AttentionBf16DkdvBlockQ(headDim)) * (headDim + AttentionBf16Pad) * 2;

    public static int AttentionBf16DqSmem(int headDim) =>
        (2 * AttentionBf16BlockM + 4 * AttentionBf16BlockN) * (headDim + AttentionBf16Pad) * 2;

    // ---- cross-attention (launch.cuh: ug_cross_attn_*) ----
    public const int CrossAttentionMaxSplits = 64;
    public const long CrossAttentionMaxPartial = 1L << 25;

    /// <summary>ug_cross_attn_grid with the f32 tile: (⌈rows/32⌉·splits, heads, batch); rows = N (fwd, dq) or L (dkdv).</summary>
    public static Dim3 CrossAttentionGrid(long rows, int heads, int batch, int splits) =>
        new(checked((int)(CeilDiv(rows, AttentionF32Block) * splits)), heads, batch);

    /// <summary>
    /// ug_cross_attn_splits: query chunks per dK/dV key tile, about <paramref name="targetBlocks"/> blocks in all, at most one
    /// per 32-query tile, <see cref="CrossAttentionMaxSplits"/>, and <see cref="CrossAttentionMaxPartial"/> floats of partials.
    /// </summary>
    public static int CrossAttentionSplits(int batch, long queries, long keys, int heads, int headDim, int targetBlocks)
    {
        long keyValueBlocks = CeilDiv(keys, AttentionF32Block) * heads * batch;
        long splits = CeilDiv(targetBlocks, Math.Max(1, keyValueBlocks));
        splits = Math.Min(splits, CeilDiv(queries, AttentionF32Block));
        splits = Math.Min(splits, CrossAttentionMaxSplits);
        splits = Math.Min(splits, CrossAttentionMaxPartial / ((long)batch * keys * heads * headDim));
        return (int)Math.Max(1, splits);
    }

    /// <summary>Backward preprocess: one warp per (batch, token, head) row, 8 rows per 256-thread block.</summary>
    public static Dim3 AttentionPreprocessGrid(long rows) => new(checked((int)CeilDiv(rows, 8)));

    /// <summary>1-D elementwise grid: ⌈n / (256·4)⌉ blocks, at least 1, at most 65535·32 (grid-stride loops cover the rest).</summary>
    public static int ElementwiseBlocks(long n)
    {
        long blocks = Math.Max(1, CeilDiv(n, (long)ElementwiseThreads * ElementwiseItems));
        return (int)Math.Min(blocks, 65535L * 32);
    }

    /// <summary>Row kernels (norms): one warp per row, 8 rows per 256-thread block.</summary>
    public static int RowBlocks(long rows) => checked((int)CeilDiv(rows, RowThreads / 32));

    /// <summary>Column reductions: about 256 rows per split, 1 to 1024 splits.</summary>
    public static int ReductionSplits(long rows) => (int)Math.Clamp(CeilDiv(rows, 256), 1, ReductionMaxSplits);

    public static long ReductionSplitBegin(long rows, int splits, int split) => rows * split / splits;

    /// <summary>Grid of a column reduction over <paramref name="columns"/> columns: (⌈cols/32⌉, splits, batches), block (32, 8).</summary>
    public static Dim3 ReductionGrid(long columns, int splits, int batches) => new(checked((int)CeilDiv(columns, ReductionTx)), splits, batches);

    public static Dim3 ReductionBlock => new(ReductionTx, ReductionTy);

    /// <summary>column_sum_f32: block 256, grid (⌈cols/256⌉, batches).</summary>
    public static Dim3 ColumnSumGrid(long columns, int batches) => new(checked((int)CeilDiv(columns, 256)), batches);

    /// <summary>timestep_embedding_fwd_f32: one thread per (b, j) of the B·dim/2 (cos, sin) pairs, block 256.</summary>
    public static Dim3 TimestepForwardGrid(int batch, int dim) => new(checked((int)Math.Max(1, CeilDiv((long)batch * (dim / 2), 256))));

    // ---- RoPE table (rope.cuh) ----

    /// <summary>ug_rope_min_positions: max(T, ⌈H/n⌉, ⌈W/n⌉).</summary>
    public static int RopeMinPositions(WindowLayoutParams layout) => Math.Max(layout.T, Math.Max(layout.MaxWindowRows, layout.MaxWindowCols));

    /// <summary>
    /// The cos/sin table the attention kernels read: entry (pos, pair) at <c>2·(pos·(d/2) + pair)</c>, ω_pair = θ^(−2j/d_axis)
    /// with j the pair's index inside its axis (time pairs first, then height, then width), computed in float64.
    /// </summary>
    public static float[] RopeTable(int headDim, double theta, int positions)
    {
        int spatial = 2 * (headDim / 6), timeDims = headDim - 2 * spatial, pairs = headDim / 2;
        var table = new float[2 * positions * pairs];
        for (int pair = 0; pair < pairs; pair++)
        {
            (int j, int dims) = pair < timeDims / 2 ? (pair, timeDims)
                : pair < (timeDims + spatial) / 2 ? (pair - timeDims / 2, spatial)
                : (pair - (timeDims + spatial) / 2, spatial);
            double omega = 1.0 / Math.Pow(theta, (double)(2 * j) / dims);
            for (int pos = 0; pos < positions; pos++)
            {
                long offset = 2 * ((long)pos * pairs + pair);
                table[offset] = (float)Math.Cos(pos * omega);
                table[offset + 1] = (float)Math.Sin(pos * omega);
            }
        }
        return table;
    }
}
