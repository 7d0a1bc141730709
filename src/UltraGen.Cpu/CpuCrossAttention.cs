using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using UltraGen.Core;
using Tensor = UltraGen.Core.Tensor;
using static UltraGen.Cpu.CpuFlashAttention;

namespace UltraGen.Cpu;

/// <summary>
/// Flash-style text cross-attention on the CPU: the f32 twin of <c>CrossAttentionOp</c> (o = softmax(q·kᵀ/√d)·v of N queries
/// over L keys per batch and head, no mask, no RoPE). q, o are host f32 (B, N, heads·headDim); k, v are (B, L, heads·headDim).
/// </summary>
/// <remarks>
/// <para><b>Pairs.</b> One pair is a (batch, head). Its L keys (a few hundred at most) are gathered once per call into
/// <see cref="CpuFlashAttention.TileKeys"/>-key tiles, transposed for q·kᵀ, and V into rows; head dims are padded with zeros
/// to a multiple of <see cref="CpuFlashAttention.ColumnPad"/>, exactly as in <see cref="CpuWindowAttention"/>, whose tile
/// kernels (<see cref="CpuFlashAttention"/>) this class shares.</para>
/// <para><b>Forward.</b> Parallel over (pair, query tile of <see cref="CpuFlashAttention.TileRows"/> rows): the q tile is
/// gathered and pre-scaled by 1/√d, then <see cref="CpuFlashAttention.AttendTile"/> walks the key tiles with an online
/// softmax. No N × L matrix exists: the largest temporary is one TileRows × TileKeys score tile per worker.</para>
/// <para><b>Backward.</b> Parallel over (pair, chunk of query tiles). Per query tile the forward is recomputed (row
/// log-sum-exp and O, then D = rowsum(dO ⊙ O)), and each key tile gives P = exp(S − lse), dV, dK, dQ
/// (<see cref="CpuFlashAttention.BackwardTile"/>). dQ of a tile is complete after its key walk and is written at once; dK
/// and dV go to the chunk's private L-row accumulators, summed over the chunks at the end (deterministic, no locks). Chunks
/// per pair are chosen so that there are about twice as many units as cores.</para>
/// </remarks>
public static unsafe class CpuCrossAttention
{
    /// <summary>o = cross-attention(q, k, v) for every batch and head (every element of <paramref name="o"/> is written).</summary>
    public static void Forward(Tensor q, Tensor k, Tensor v, Tensor o, int heads)
    {
        var plan = Plan.Create(q, k, v, heads, ("o", o, true));
        float* qp = Data(q), kp = Data(k), vp = Data(v), op = Data(o);
        int dp = plan.PaddedDim;
        long pairFloats = plan.PaddedKeys * (long)dp;
        using var keyRows = new NativeBuffer(plan.Pairs * pairFloats);
        using var keysT = new NativeBuffer(plan.Pairs * pairFloats);
        using var values = new NativeBuffer(plan.Pairs * pairFloats);
        float* kn = keyRows.Pointer, kt = keysT.Pointer, vn = values.Pointer;

        Parallel.For(0, plan.Pairs, pair =>
        {
            long at = pair * pairFloats;
            plan.GatherKeys(kp, pair, kn + at, kt + at);
            plan.GatherValues(vp, pair, vn + at, null);
        });

        Parallel.For(0, plan.Pairs * plan.TilesPerPair, () => new Scratch(dp, backward: false), (unit, _, s) =>
        {
            int pair = unit / plan.TilesPerPair, i0 = unit % plan.TilesPerPair * TileRows;
            int rows = Math.Min(TileRows, plan.Queries - i0);
            NativeMemory.Clear(s.Q, (nuint)(TileRows * dp * sizeof(float)));
            plan.GatherQueryRows(qp, pair, i0, rows, s.Q, plan.Scale);
            long at = pair * pairFloats;
            AttendTile(s, s.Q, RoundUp(rows, RowBlock), kt + at, vn + at, plan.Keys, dp, s.O, s.Lse);
            plan.ScatterQueryRows(s.O, pair, i0, rows, op, 1f);
            return s;
        }, s => s.Dispose());
    }

    /// <summary>Gradients of q, k, v given dO; writes only the non-null gradient tensors (each of them entirely).</summary>
    public static void Backward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, int heads)
    {
        var plan = Plan.Create(q, k, v, heads, ("dO", dO, true), ("dq", dq, true), ("dk", dk, false), ("dv", dv, false));
        if (dq is null && dk is null && dv is null) return;
        bool wantQ = dq is not null, wantK = dk is not null, wantV = dv is not null;
        float* qp = Data(q), kp = Data(k), vp = Data(v), dop = Data(dO);
        float* dqp = wantQ ? Data(dq!) : null, dkp = wantK ? Data(dk!) : null, dvp = wantV ? Data(dv!) : null;
        int dp = plan.PaddedDim;
        long pairFloats = plan.PaddedKeys * (long)dp;

        // Query-tile chunks per pair: enough units to keep every core busy even with one batch and few heads.
        int chunks = Math.Clamp(CeilDiv(2 * Environment.ProcessorCount, plan.Pairs), 1, plan.TilesPerPair);
        long partFloats = chunks * pairFloats; // one pair's dK (or dV) partials, all chunks

        using var keyRows = new NativeBuffer(plan.Pairs * pairFloats);
        using var keysT = new NativeBuffer(plan.Pairs * pairFloats);
        using var values = new NativeBuffer(plan.Pairs * pairFloats);
        using var valuesT = new NativeBuffer(plan.Pairs * pairFloats);
        using var gradKParts = new NativeBuffer(wantK ? plan.Pairs * partFloats : 0);
        using var gradVParts = new NativeBuffer(wantV ? plan.Pairs * partFloats : 0);
        float* kn = keyRows.Pointer, kt = keysT.Pointer, vn = values.Pointer, vt = valuesT.Pointer;
        float* gkParts = gradKParts.Pointer, gvParts = gradVParts.Pointer;

        // 1. Gather k (rows and transposed tiles) and v (rows and transposed tiles) per pair; clear the dK/dV partials.
        Parallel.For(0, plan.Pairs, pair =>
        {
            long at = pair * pairFloats;
            plan.GatherKeys(kp, pair, kn + at, kt + at);
            plan.GatherValues(vp, pair, vn + at, vt + at);
            if (wantK) NativeMemory.Clear(gkParts + pair * partFloats, (nuint)(partFloats * sizeof(float)));
            if (wantV) NativeMemory.Clear(gvParts + pair * partFloats, (nuint)(partFloats * sizeof(float)));
        });

        // 2. Per (pair, chunk): recompute the forward per query tile, then walk the key tiles.
        Parallel.For(0, plan.Pairs * chunks, () => new BackwardScratch(dp), (unit, _, w) =>
        {
            int pair = unit / chunks, chunk = unit % chunks;
            int firstTile = (int)((long)chunk * plan.TilesPerPair / chunks), endTile = (int)((long)(chunk + 1) * plan.TilesPerPair / chunks);
            long at = pair * pairFloats, partAt = pair * partFloats + chunk * pairFloats;
            var s = w.Tiles;
            for (int tile = firstTile; tile < endTile; tile++)
            {
                int i0 = tile * TileRows, rows = Math.Min(TileRows, plan.Queries - i0), mr = RoundUp(rows, RowBlock);
                NativeMemory.Clear(s.Q, (nuint)(TileRows * dp * sizeof(float)));
                NativeMemory.Clear(w.GradO, (nuint)(TileRows * dp * sizeof(float)));
                plan.GatherQueryRows(qp, pair, i0, rows, s.Q, plan.Scale);
                plan.GatherQueryRows(dop, pair, i0, rows, w.GradO, 1f);
                AttendTile(s, s.Q, mr, kt + at, vn + at, plan.Keys, dp, s.O, s.Lse);
                for (int r = 0; r < mr; r++)
                    w.RowDot[r] = TensorPrimitives.Dot(new ReadOnlySpan<float>(w.GradO + r * dp, dp), new ReadOnlySpan<float>(s.O + r * dp, dp));
                if (wantQ) NativeMemory.Clear(w.GradQ, (nuint)(TileRows * dp * sizeof(float)));
                for (int j0 = 0; j0 < plan.Keys; j0 += TileKeys)
                {
                    long keyAt = (long)j0 * dp;
                    BackwardTile(s, s.Q, w.GradO, mr, s.Lse, w.RowDot, kt + at + keyAt, kn + at + keyAt, vt + at + keyAt,
                        Math.Min(TileKeys, plan.Keys - j0), dp, wantQ ? w.GradQ : null,
                        wantK ? gkParts + partAt + keyAt : null, wantV ? gvParts + partAt + keyAt : null);
                }
                if (wantQ) plan.ScatterQueryRows(w.GradQ, pair, i0, rows, dqp, plan.Scale);
            }
            return w;
        }, w => w.Dispose());

        // 3. Sum the chunks' dK/dV partials into chunk 0 and scatter them.
        if (!wantK && !wantV) return;
        Parallel.For(0, plan.Pairs, pair =>
        {
            foreach (var (parts, target) in new[] { ((nint)gkParts, (nint)dkp), ((nint)gvParts, (nint)dvp) })
            {
                if (target == 0) continue;
                float* first = (float*)parts + pair * partFloats;
                var sum = new Span<float>(first, plan.Keys * dp);
                for (int c = 1; c < chunks; c++) TensorPrimitives.Add(sum, new ReadOnlySpan<float>(first + c * pairFloats, plan.Keys * dp), sum);
                plan.ScatterKeyRows(first, pair, (float*)target);
            }
        });
    }

    private static float* Data(Tensor t) => (float*)((HostStorage)t.Storage).Pointer;

    /// <summary>The sizes of one call and the gathers between the (B, ·, heads·headDim) tensors and per-pair padded rows.</summary>
    private sealed class Plan
    {
        public int Heads { get; private init; }
        public int HeadDim { get; private init; }
        public int PaddedDim { get; private init; }
        public int Channels { get; private init; }
        public int Queries { get; private init; }
        public int Keys { get; private init; }
        /// <summary>Keys rounded up to whole key tiles: the row count of every per-pair key buffer.</summary>
        public int PaddedKeys { get; private init; }
        public int Pairs { get; private init; }
        public int TilesPerPair { get; private init; }
        public float Scale { get; private init; }

        public static Plan Create(Tensor q, Tensor k, Tensor v, int heads, params (string Name, Tensor? Tensor, bool LikeQ)[] others)
        {
            CheckF32Host(q, "q");
            CheckF32Host(k, "k");
            CheckF32Host(v, "v");
            if (q.Rank != 3 || k.Rank != 3 || k.Dim(0) != q.Dim(0) || k.Dim(2) != q.Dim(2) || !v.Shape.SequenceEqual(k.Shape))
                throw new ShapeMismatchException(
                    $"cpu cross_attention: q {Shape.Format(q.ShapeArray)} must be (B, N, C) and k {Shape.Format(k.ShapeArray)}, v {Shape.Format(v.ShapeArray)} (B, L, C)");
            foreach (var (name, tensor, likeQ) in others)
            {
                if (tensor is null) continue;
                CheckF32Host(tensor, name);
                var expected = likeQ ? q : k;
                if (!tensor.Shape.SequenceEqual(expected.Shape))
                    throw new ShapeMismatchException(
                        $"cpu cross_attention: {name} {Shape.Format(tensor.ShapeArray)} must match {(likeQ ? "q" : "k")} {Shape.Format(expected.ShapeArray)}");
            }
            if (heads < 1 || q.Dim(2) % heads != 0)
                throw new ShapeMismatchException($"cpu cross_attention: channel dim {q.Dim(2)} is not divisible by heads={heads}");
            int headDim = q.Dim(2) / heads;
            return new Plan
            {
                Heads = heads,
                HeadDim = headDim,
                PaddedDim = RoundUp(headDim, ColumnPad),
                Channels = q.Dim(2),
                Queries = q.Dim(1),
                Keys = k.Dim(1),
                PaddedKeys = RoundUp(k.Dim(1), TileKeys),
                Pairs = checked(q.Dim(0) * heads),
                TilesPerPair = CeilDiv(q.Dim(1), TileRows),
                Scale = (float)(1.0 / Math.Sqrt(headDim)),
            };
        }

        private static void CheckF32Host(Tensor t, string name)
        {
            if (t.DType != DType.F32 || !t.IsHost)
                throw new UnsupportedConfigurationException($"cpu cross_attention: {name} must be a host f32 tensor, got {t}");
        }

        /// <summary>Flat offset of (b, row, head, 0) in a (B, rows, C) tensor, for pair = b·heads + head.</summary>
        private long Offset(int pair, int rowsPerSample, int row) =>
            ((long)(pair / Heads) * rowsPerSample + row) * Channels + (long)(pair % Heads) * HeadDim;

        /// <summary>Copies query rows [first, first+count) of the pair into <paramref name="destination"/> (stride PaddedDim), times scale.</summary>
        public void GatherQueryRows(float* source, int pair, int first, int count, float* destination, float scale)
        {
            for (int r = 0; r < count; r++)
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(source + Offset(pair, Queries, first + r), HeadDim), scale,
                    new Span<float>(destination + (long)r * PaddedDim, HeadDim));
        }

        /// <summary>Writes rows (stride PaddedDim) as query rows [first, first+count) of the pair in <paramref name="target"/>, times scale.</summary>
        public void ScatterQueryRows(float* rows, int pair, int first, int count, float* target, float scale)
        {
            for (int r = 0; r < count; r++)
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(rows + (long)r * PaddedDim, HeadDim), scale,
                    new Span<float>(target + Offset(pair, Queries, first + r), HeadDim));
        }

        /// <summary>Writes the pair's L key rows (stride PaddedDim) into a (B, L, C) tensor.</summary>
        public void ScatterKeyRows(float* rows, int pair, float* target)
        {
            for (int j = 0; j < Keys; j++)
                Buffer.MemoryCopy(rows + (long)j * PaddedDim, target + Offset(pair, Keys, j), HeadDim * sizeof(float), HeadDim * sizeof(float));
        }

        /// <summary>The pair's k as zero-padded rows (PaddedKeys × PaddedDim) and as transposed key tiles.</summary>
        public void GatherKeys(float* source, int pair, float* rows, float* tiles)
        {
            GatherKeyRows(source, pair, rows);
            NativeMemory.Clear(tiles, (nuint)((long)PaddedKeys * PaddedDim * sizeof(float)));
            Transpose(rows, Keys, PaddedDim, tiles);
        }

        /// <summary>The pair's v as zero-padded rows, and as transposed tiles when <paramref name="tiles"/> is not null.</summary>
        public void GatherValues(float* source, int pair, float* rows, float* tiles)
        {
            GatherKeyRows(source, pair, rows);
            if (tiles == null) return;
            NativeMemory.Clear(tiles, (nuint)((long)PaddedKeys * PaddedDim * sizeof(float)));
            Transpose(rows, Keys, PaddedDim, tiles);
        }

        private void GatherKeyRows(float* source, int pair, float* rows)
        {
            NativeMemory.Clear(rows, (nuint)((long)PaddedKeys * PaddedDim * sizeof(float)));
            for (int j = 0; j < Keys; j++)
                Buffer.MemoryCopy(source + Offset(pair, Keys, j), rows + (long)j * PaddedDim, HeadDim * sizeof(float), HeadDim * sizeof(float));
        }
    }

    /// <summary>A backward worker's tiles: the shared forward scratch plus dO, dQ (TileRows × PaddedDim) and D per row.</summary>
    private sealed class BackwardScratch : IDisposable
    {
        private readonly NativeBuffer _block;

        public BackwardScratch(int dp)
        {
            Tiles = new Scratch(dp, backward: false);
            long tile = (long)TileRows * dp;
            _block = new NativeBuffer(2 * tile + TileRows);
            GradO = _block.Pointer;
            GradQ = GradO + tile;
            RowDot = GradQ + tile;
        }

        public Scratch Tiles { get; }
        public float* GradO { get; }
        public float* GradQ { get; }
        public float* RowDot { get; }

        public void Dispose()
        {
            Tiles.Dispose();
            _block.Dispose();
        }
    }
}
