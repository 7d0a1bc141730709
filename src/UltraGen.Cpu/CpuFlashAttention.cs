using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace UltraGen.Cpu;

/// <summary>
/// The flash-attention machinery shared by <see cref="CpuWindowAttention"/> and <see cref="CpuCrossAttention"/>: the tile
/// sizes, the online-softmax forward over key tiles (<see cref="AttendTile"/>), the FlashAttention-2 backward step on one
/// (query tile, key tile) pair (<see cref="BackwardTile"/>), the register-blocked SIMD GEMM they are built from, and the
/// per-worker scratch and pooled native buffers. Queries are rows of <see cref="ColumnPad"/>-padded head dims, pre-scaled
/// by 1/√d; keys are stored as transposed tiles ([padded dim][<see cref="TileKeys"/>]) so q·kᵀ is a broadcast-FMA product.
/// </summary>
internal static unsafe class CpuFlashAttention
{
    /// <summary>Query rows per tile.</summary>
    internal const int TileRows = 64;

    /// <summary>Keys per tile.</summary>
    internal const int TileKeys = 64;

    /// <summary>Head dims and key-tile widths are padded to a multiple of this (two Vector512 / four Vector256 of f32).</summary>
    internal const int ColumnPad = 32;

    /// <summary>Rows of the register block of <see cref="Gemm"/>; query tiles are padded to a multiple of it.</summary>
    internal const int RowBlock = 4;

    /// <summary>
    /// Attention of <paramref name="rows"/> query rows (already rotated and scaled, padded dims zero) against all keys of one
    /// item; writes the normalised output rows to <paramref name="o"/> and each row's log-sum-exp to <paramref name="lse"/>.
    /// </summary>
    internal static void AttendTile(Scratch s, float* q, int rows, float* keysT, float* values, int n, int dp, float* o, float* lse)
    {
        NativeMemory.Clear(o, (nuint)(rows * dp * sizeof(float)));
        float* max = s.Max, sum = s.Sum;
        for (int r = 0; r < rows; r++)
        {
            max[r] = float.NegativeInfinity;
            sum[r] = 0f;
        }
        for (int j0 = 0; j0 < n; j0 += TileKeys)
        {
            int w = Math.Min(TileKeys, n - j0), wp = RoundUp(w, ColumnPad);
            Gemm(q, dp, 1, keysT + (long)j0 * dp, TileKeys, s.S, TileKeys, rows, wp, dp, accumulate: false);
            // Online softmax, fused: per-row max and shift in registers, one vectorised exp over the whole tile.
            MaskPaddedKeys(s.S, rows, w, wp);
            for (int r = 0; r < rows; r++)
            {
                float* sRow = s.S + r * TileKeys;
                float newMax = Math.Max(max[r], RowMax(sRow, wp));
                s.Alpha[r] = MathF.Exp(max[r] - newMax); // rescale factor; 0 on the first tile (max = −∞)
                AddToRow(sRow, wp, -newMax);
                max[r] = newMax;
            }
            var tile = new Span<float>(s.S, rows * TileKeys);
            TensorPrimitives.Exp(tile, tile);
            for (int r = 0; r < rows; r++)
            {
                float alpha = s.Alpha[r];
                sum[r] = sum[r] * alpha + RowSum(s.S + r * TileKeys, wp);
                if (alpha != 1f)
                {
                    var oRow = new Span<float>(o + r * dp, dp);
                    TensorPrimitives.Multiply(oRow, alpha, oRow);
                }
            }
            Gemm(s.S, TileKeys, 1, values + (long)j0 * dp, dp, o, dp, rows, dp, wp, accumulate: true);
        }
        for (int r = 0; r < rows; r++)
        {
            var oRow = new Span<float>(o + r * dp, dp);
            TensorPrimitives.Multiply(oRow, 1f / sum[r], oRow);
            lse[r] = max[r] + MathF.Log(sum[r]);
        }
    }

    /// <summary>
    /// The backward's work on one (query tile, key tile) pair, FlashAttention-2 style: P = exp(S − lse) recomputed from the
    /// row log-sum-exp (S = Q·Kᵀ with Q already scaled, padded keys masked), dV += Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − D) with
    /// D = rowDot, dK += dSᵀ·Q, dQ += dS·K (the caller multiplies dQ by the scale once at the end). The query tile has `rows`
    /// rows, a multiple of <see cref="RowBlock"/> (padded query rows have zero q and dO, so they contribute nothing); the key
    /// tile holds `keys` valid keys. Each gradient target may be null when it is not wanted; dK and dV targets are key
    /// rows (stride dp) with room for the tile's width rounded up to <see cref="ColumnPad"/>. The key tile comes three ways:
    /// keysT transposed ([dp][TileKeys]), keyRows as rows (stride dp), valuesT the value tile transposed.
    /// </summary>
    internal static void BackwardTile(Scratch s, float* qTile, float* gradOTile, int rows, float* lse, float* rowDot, float* keysT,
        float* keyRows, float* valuesT, int keys, int dp, float* gradQ, float* gradK, float* gradV)
    {
        int wp = RoundUp(keys, ColumnPad);
        Gemm(qTile, dp, 1, keysT, TileKeys, s.S, TileKeys, rows, wp, dp, accumulate: false);
        MaskPaddedKeys(s.S, rows, keys, wp);
        for (int r = 0; r < rows; r++) AddToRow(s.S + r * TileKeys, wp, -lse[r]);
        var probabilities = new Span<float>(s.S, rows * TileKeys);
        TensorPrimitives.Exp(probabilities, probabilities);
        if (gradV != null) Gemm(s.S, 1, TileKeys, gradOTile, dp, gradV, dp, wp, dp, rows, accumulate: true); // dV += Pᵀ·dO
        if (gradQ == null && gradK == null) return;
        Gemm(gradOTile, dp, 1, valuesT, TileKeys, s.DP, TileKeys, rows, wp, dp, accumulate: false); // dP = dO·Vᵀ
        for (int r = 0; r < rows; r++)
        {
            var dpRow = new Span<float>(s.DP + r * TileKeys, wp);
            TensorPrimitives.Subtract(dpRow, rowDot[r], dpRow);
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(s.S + r * TileKeys, wp), dpRow, dpRow); // dS
        }
        if (gradK != null) Gemm(s.DP, 1, TileKeys, qTile, dp, gradK, dp, wp, dp, rows, accumulate: true); // dK += dSᵀ·Q
        if (gradQ != null) Gemm(s.DP, TileKeys, 1, keyRows, dp, gradQ, dp, rows, dp, wp, accumulate: true); // dQ += dS·K
    }

    /// <summary>Scores of padded keys (columns [w, wp) of a tile) become −∞, so exp gives exactly 0.</summary>
    internal static void MaskPaddedKeys(float* scores, int rows, int w, int wp)
    {
        if (w == wp) return;
        for (int r = 0; r < rows; r++) new Span<float>(scores + r * TileKeys + w, wp - w).Fill(float.NegativeInfinity);
    }

    // Row helpers on a multiple of ColumnPad floats (inlined: a call per 64-float row would cost as much as the work).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowMax(float* row, int n)
    {
        var m = Vector256.Create(float.NegativeInfinity);
        for (int c = 0; c < n; c += 16) m = Vector256.Max(m, Vector256.Max(Vector256.Load(row + c), Vector256.Load(row + c + 8)));
        var h = Vector128.Max(m.GetLower(), m.GetUpper());
        return MathF.Max(MathF.Max(h[0], h[1]), MathF.Max(h[2], h[3]));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowSum(float* row, int n)
    {
        var a = Vector256<float>.Zero;
        var b = Vector256<float>.Zero;
        for (int c = 0; c < n; c += 16)
        {
            a += Vector256.Load(row + c);
            b += Vector256.Load(row + c + 8);
        }
        return Vector256.Sum(a + b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddToRow(float* row, int n, float value)
    {
        var v = Vector256.Create(value);
        for (int c = 0; c < n; c += 8) (Vector256.Load(row + c) + v).Store(row + c);
    }

    /// <summary>
    /// C (+)= A·B with A (m × k) read as a[r·aRowStride + kk·aColStride] (so Aᵀ is free), B (k × n) rows of stride
    /// <paramref name="ldb"/>, C rows of stride <paramref name="ldc"/>. m must be a multiple of 4 and n of 32.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Gemm(float* a, nint aRowStride, nint aColStride, float* b, nint ldb, float* c, nint ldc, int m, int n, int k,
        bool accumulate)
    {
        if (Vector512.IsHardwareAccelerated) Gemm512(a, aRowStride, aColStride, b, ldb, c, ldc, m, n, k, accumulate);
        else Gemm256(a, aRowStride, aColStride, b, ldb, c, ldc, m, n, k, accumulate);
    }

    // 4 rows × 32 columns per register block: 8 accumulators, 2 loads of B and 4 broadcasts of A per 8 FMAs.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Gemm512(float* a, nint ars, nint acs, float* b, nint ldb, float* c, nint ldc, int m, int n, int k, bool accumulate)
    {
        for (int r = 0; r < m; r += RowBlock)
        {
            float* a0 = a + r * ars, a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars;
            float* c0 = c + r * ldc, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
            for (int col = 0; col < n; col += 32)
            {
                Vector512<float> x00, x01, x10, x11, x20, x21, x30, x31;
                if (accumulate)
                {
                    x00 = Vector512.Load(c0 + col); x01 = Vector512.Load(c0 + col + 16);
                    x10 = Vector512.Load(c1 + col); x11 = Vector512.Load(c1 + col + 16);
                    x20 = Vector512.Load(c2 + col); x21 = Vector512.Load(c2 + col + 16);
                    x30 = Vector512.Load(c3 + col); x31 = Vector512.Load(c3 + col + 16);
                }
                else
                {
                    x00 = x01 = x10 = x11 = x20 = x21 = x30 = x31 = Vector512<float>.Zero;
                }
                float* bp = b + col;
                nint ak = 0;
                for (int kk = 0; kk < k; kk++, bp += ldb, ak += acs)
                {
                    var b0 = Vector512.Load(bp);
                    var b1 = Vector512.Load(bp + 16);
                    var s = Vector512.Create(a0[ak]);
                    x00 = Vector512.FusedMultiplyAdd(s, b0, x00); x01 = Vector512.FusedMultiplyAdd(s, b1, x01);
                    s = Vector512.Create(a1[ak]);
                    x10 = Vector512.FusedMultiplyAdd(s, b0, x10); x11 = Vector512.FusedMultiplyAdd(s, b1, x11);
                    s = Vector512.Create(a2[ak]);
                    x20 = Vector512.FusedMultiplyAdd(s, b0, x20); x21 = Vector512.FusedMultiplyAdd(s, b1, x21);
                    s = Vector512.Create(a3[ak]);
                    x30 = Vector512.FusedMultiplyAdd(s, b0, x30); x31 = Vector512.FusedMultiplyAdd(s, b1, x31);
                }
                x00.Store(c0 + col); x01.Store(c0 + col + 16);
                x10.Store(c1 + col); x11.Store(c1 + col + 16);
                x20.Store(c2 + col); x21.Store(c2 + col + 16);
                x30.Store(c3 + col); x31.Store(c3 + col + 16);
            }
        }
    }

    // 4 rows × 16 columns per register block (8 accumulators); n is a multiple of 32, so two blocks per 32 columns.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Gemm256(float* a, nint ars, nint acs, float* b, nint ldb, float* c, nint ldc, int m, int n, int k, bool accumulate)
    {
        for (int r = 0; r < m; r += RowBlock)
        {
            float* a0 = a + r * ars, a1 = a0 + ars, a2 = a1 + ars, a3 = a2 + ars;
            float* c0 = c + r * ldc, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
            for (int col = 0; col < n; col += 16)
            {
                Vector256<float> x00, x01, x10, x11, x20, x21, x30, x31;
                if (accumulate)
                {
                    x00 = Vector256.Load(c0 + col); x01 = Vector256.Load(c0 + col + 8);
                    x10 = Vector256.Load(c1 + col); x11 = Vector256.Load(c1 + col + 8);
                    x20 = Vector256.Load(c2 + col); x21 = Vector256.Load(c2 + col + 8);
                    x30 = Vector256.Load(c3 + col); x31 = Vector256.Load(c3 + col + 8);
                }
                else
                {
                    x00 = x01 = x10 = x11 = x20 = x21 = x30 = x31 = Vector256<float>.Zero;
                }
                float* bp = b + col;
                nint ak = 0;
                for (int kk = 0; kk < k; kk++, bp += ldb, ak += acs)
                {
                    var b0 = Vector256.Load(bp);
                    var b1 = Vector256.Load(bp + 8);
                    var s = Vector256.Create(a0[ak]);
                    x00 = Vector256.FusedMultiplyAdd(s, b0, x00); x01 = Vector256.FusedMultiplyAdd(s, b1, x01);
                    s = Vector256.Create(a1[ak]);
                    x10 = Vector256.FusedMultiplyAdd(s, b0, x10); x11 = Vector256.FusedMultiplyAdd(s, b1, x11);
                    s = Vector256.Create(a2[ak]);
                    x20 = Vector256.FusedMultiplyAdd(s, b0, x20); x21 = Vector256.FusedMultiplyAdd(s, b1, x21);
                    s = Vector256.Create(a3[ak]);
                    x30 = Vector256.FusedMultiplyAdd(s, b0, x30); x31 = Vector256.FusedMultiplyAdd(s, b1, x31);
                }
                x00.Store(c0 + col); x01.Store(c0 + col + 8);
                x10.Store(c1 + col); x11.Store(c1 + col + 8);
                x20.Store(c2 + col); x21.Store(c2 + col + 8);
                x30.Store(c3 + col); x31.Store(c3 + col + 8);
            }
        }
    }

    /// <summary>Rows (n × dp) to key-tile-transposed layout: tile t holds [dp][TileKeys] at offset t·TileKeys·dp.</summary>
    internal static void Transpose(float* rows, int n, int dp, float* tiles)
    {
        for (int i = 0; i < n; i++)
        {
            float* dst = tiles + (long)(i / TileKeys) * TileKeys * dp + i % TileKeys;
            float* src = rows + (long)i * dp;
            for (int c = 0; c < dp; c++) dst[c * TileKeys] = src[c];
        }
    }

    internal static int RoundUp(int x, int multiple) => (x + multiple - 1) / multiple * multiple;

    internal static int CeilDiv(int x, int y) => (x + y - 1) / y;

    /// <summary>Per-worker tiles (one native block, 64-byte aligned), reused for every tile the worker runs.</summary>
    internal sealed class Scratch : IDisposable
    {
        private readonly NativeBuffer _block;

        public Scratch(int dp, bool backward)
        {
            long tile = (long)TileRows * dp, scores = (long)TileRows * TileKeys, keyTile = (long)TileKeys * dp;
            _block = new NativeBuffer(2 * tile + 2 * scores + 4 * TileRows + (backward ? 2 * keyTile : 0));
            float* p = _block.Pointer;
            Q = p; p += tile;
            O = p; p += tile;
            S = p; p += scores;
            DP = p; p += scores;
            Max = p; p += TileRows;
            Sum = p; p += TileRows;
            Lse = p; p += TileRows;
            Alpha = p; p += TileRows;
            if (backward)
            {
                GradV = p; p += keyTile;
                GradK = p;
            }
        }

        public float* Q { get; }
        public float* O { get; }
        public float* S { get; }
        public float* DP { get; }
        public float* Max { get; }
        public float* Sum { get; }
        public float* Lse { get; }
        public float* Alpha { get; }
        public float* GradV { get; }
        public float* GradK { get; }

        public void Dispose() => _block.Dispose();
    }

    /// <summary>
    /// 64-byte aligned native f32 memory (uninitialised), rented from a small process-wide pool and returned on dispose.
    /// Reusing blocks matters: a fresh multi-megabyte block costs a page fault per 4 KiB on first touch, which for the
    /// 1080P window layouts was a quarter of the forward's time.
    /// </summary>
    internal sealed class NativeBuffer : IDisposable
    {
        private const int PoolLimit = 32;
        private static readonly List<(nint Pointer, long Capacity)> s_pool = [];

        private readonly long _capacity;

        public NativeBuffer(long floats)
        {
            long wanted = Math.Max(floats, 16);
            lock (s_pool)
            {
                int best = -1;
                for (int i = 0; i < s_pool.Count; i++)
                    if (s_pool[i].Capacity >= wanted && (best < 0 || s_pool[i].Capacity < s_pool[best].Capacity)) best = i;
                if (best >= 0)
                {
                    (nint pointer, _capacity) = s_pool[best];
                    s_pool.RemoveAt(best);
                    Pointer = (float*)pointer;
                    return;
                }
            }
            _capacity = wanted;
            Pointer = (float*)NativeMemory.AlignedAlloc((nuint)(wanted * sizeof(float)), 64);
        }

        public float* Pointer { get; private set; }

        public void Dispose()
        {
            if (Pointer == null) return;
            nint pointer = (nint)Pointer;
            Pointer = null;
            lock (s_pool)
            {
                if (s_pool.Count < PoolLimit)
                {
                    s_pool.Add((pointer, _capacity));
                    return;
                }
            }
            NativeMemory.AlignedFree((void*)pointer);
        }
    }
}
