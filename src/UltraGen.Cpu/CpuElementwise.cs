using System.Numerics.Tensors;
using UltraGen.Core;
using Tensor = UltraGen.Core.Tensor;
using UltraGen.Ops;
using static UltraGen.Cpu.CpuParallel;

namespace UltraGen.Cpu;

/// <summary>
/// add, silu, sigmoid, gelu_tanh, gate_fusion and gated_residual on f32 host tensors (references: <see cref="AddOp"/>,
/// <see cref="Activations"/>, <see cref="GateFusionOp"/>, <see cref="GatedResidualOp"/>). The activations run as TensorPrimitives passes over
/// L1-sized tiles of a parallel chunk. Every 1 − σ(x) is computed as σ(−x), and 1 + tanh(u) as 2σ(2u), so no
/// derivative loses its small values to cancellation.
/// </summary>
public static unsafe class CpuElementwise
{
    /// <summary>Elements per parallel chunk (≈128 KiB of f32 per operand).</summary>
    private const int ChunkElements = 1 << 15;

    /// <summary>Elements per scratch tile: a few tiles stay in L1 while the TensorPrimitives passes run over them.</summary>
    private const int Tile = 1024;

    // ---- add ----

    public static void AddForward(Tensor a, Tensor b, Tensor y)
    {
        float* pa = Ptr(a), pb = Ptr(b), py = Ptr(y);
        For(y.ElementCount, ChunkElements, (s, e) => TensorPrimitives.Add(Span(pa, s, e), Span(pb, s, e), Span(py, s, e)));
    }

    /// <summary>da = db = dy.</summary>
    public static void AddBackward(Tensor dy, Tensor? da, Tensor? db)
    {
        float* pdy = Ptr(dy), pda = PtrOrNull(da), pdb = PtrOrNull(db);
        For(dy.ElementCount, ChunkElements, (s, e) =>
        {
            if (pda != null) Span(pdy, s, e).CopyTo(Span(pda, s, e));
            if (pdb != null) Span(pdy, s, e).CopyTo(Span(pdb, s, e));
        });
    }

    // ---- sigmoid: σ(x), σ′ = σ(x)·σ(−x) ----

    public static void SigmoidForward(Tensor x, Tensor y)
    {
        float* px = Ptr(x), py = Ptr(y);
        For(x.ElementCount, ChunkElements, (s, e) => TensorPrimitives.Sigmoid(Span(px, s, e), Span(py, s, e)));
    }

    public static void SigmoidBackward(Tensor x, Tensor dy, Tensor dx)
    {
        float* px = Ptr(x), pdy = Ptr(dy), pdx = Ptr(dx);
        For(x.ElementCount, ChunkElements, (s, e) =>
        {
            Span<float> sig = stackalloc float[Tile], neg = stackalloc float[Tile];
            for (int t = s; t < e; t += Tile)
            {
                int n = Math.Min(Tile, e - t);
                var xs = Span(px, t, t + n);
                Span<float> a = sig[..n], b = neg[..n];
                TensorPrimitives.Sigmoid(xs, a);
                TensorPrimitives.Negate(xs, b);
                TensorPrimitives.Sigmoid(b, b);
                TensorPrimitives.Multiply(a, b, a);
                TensorPrimitives.Multiply(Span(pdy, t, t + n), a, Span(pdx, t, t + n));
            }
        });
    }

    // ---- silu: x·σ(x), silu′ = σ(x)·(1 + x·σ(−x)) ----

    public static void SiluForward(Tensor x, Tensor y)
    {
        float* px = Ptr(x), py = Ptr(y);
        For(x.ElementCount, ChunkElements, (s, e) =>
        {
            var ys = Span(py, s, e);
            TensorPrimitives.Sigmoid(Span(px, s, e), ys);
            TensorPrimitives.Multiply(Span(px, s, e), ys, ys);
        });
    }

    public static void SiluBackward(Tensor x, Tensor dy, Tensor dx)
    {
        float* px = Ptr(x), pdy = Ptr(dy), pdx = Ptr(dx);
        For(x.ElementCount, ChunkElements, (s, e) =>
        {
            Span<float> sig = stackalloc float[Tile], neg = stackalloc float[Tile];
            for (int t = s; t < e; t += Tile)
            {
                int n = Math.Min(Tile, e - t);
                var xs = Span(px, t, t + n);
                Span<float> a = sig[..n], b = neg[..n];
                TensorPrimitives.Sigmoid(xs, a);
                TensorPrimitives.Negate(xs, b);
                TensorPrimitives.Sigmoid(b, b);
                TensorPrimitives.Multiply(xs, b, b);
                TensorPrimitives.Add(b, 1f, b);
                TensorPrimitives.Multiply(a, b, a);
                TensorPrimitives.Multiply(Span(pdy, t, t + n), a, Span(pdx, t, t + n));
            }
        });
    }

    // ---- gelu_tanh: with 2u = 2c·x·(1 + a·x²): y = x·σ(2u), y′ = σ(2u) + 2·x·σ(2u)·σ(−2u)·c·(1 + 3a·x²) ----

    private const float GeluC = (float)Activations.GeluTanhC;
    private const float GeluA = (float)Activations.GeluTanhA;

    /// <summary>Writes 2u = 2c·x·(1 + a·x²) for the tile <paramref name="x"/> into <paramref name="twoU"/>.</summary>
    private static void GeluTwoU(ReadOnlySpan<float> x, Span<float> twoU)
    {
        TensorPrimitives.Multiply(x, x, twoU);
        TensorPrimitives.Multiply(twoU, GeluA, twoU);
        TensorPrimitives.Add(twoU, 1f, twoU);
        TensorPrimitives.Multiply(twoU, x, twoU);
        TensorPrimitives.Multiply(twoU, 2f * GeluC, twoU);
    }

    public static void GeluTanhForward(Tensor x, Tensor y)
    {
        float* px = Ptr(x), py = Ptr(y);
        For(x.ElementCount, ChunkElements, (s, e) =>
        {
            var xs = Span(px, s, e);
            var ys = Span(py, s, e);
            GeluTwoU(xs, ys);
            TensorPrimitives.Sigmoid(ys, ys);
            TensorPrimitives.Multiply(xs, ys, ys);
        });
    }

    public static void GeluTanhBackward(Tensor x, Tensor dy, Tensor dx)
    {
        float* px = Ptr(x), pdy = Ptr(dy), pdx = Ptr(dx);
        For(x.ElementCount, ChunkElements, (s, e) =>
        {
            Span<float> bufA = stackalloc float[Tile], bufB = stackalloc float[Tile], bufC = stackalloc float[Tile];
            for (int t = s; t < e; t += Tile)
            {
                int n = Math.Min(Tile, e - t);
                var xs = Span(px, t, t + n);
                Span<float> sig = bufA[..n], neg = bufB[..n], poly = bufC[..n];
                GeluTwoU(xs, neg);
                TensorPrimitives.Sigmoid(neg, sig);                         // σ(2u)
                TensorPrimitives.Negate(neg, neg);
                TensorPrimitives.Sigmoid(neg, neg);                         // σ(−2u)
                TensorPrimitives.Multiply(xs, xs, poly);
                TensorPrimitives.Multiply(poly, 3f * GeluA, poly);
                TensorPrimitives.Add(poly, 1f, poly);                       // 1 + 3a·x²
                TensorPrimitives.Multiply(poly, xs, poly);
                TensorPrimitives.Multiply(poly, neg, poly);
                TensorPrimitives.Multiply(poly, 2f * GeluC, poly);          // 2c·x·(1 + 3a·x²)·σ(−2u)
                TensorPrimitives.MultiplyAdd(poly, sig, sig, poly);         // σ(2u)·(that + 1)
                TensorPrimitives.Multiply(Span(pdy, t, t + n), poly, Span(pdx, t, t + n));
            }
        });
    }

    // ---- gate_fusion: z = cl·local + ch·hier + cg·glob with cl = αβ, ch = α(1 − β), cg = 1 − α per (b, d) ----

    /// <summary>Rows of D per parallel chunk for the (B·N, D) gate ops: at least <see cref="ChunkElements"/> elements.</summary>
    internal static int RowsPerChunk(int d) => Math.Max(1, ChunkElements / Math.Max(d, 1));

    /// <summary>Channels per task of the per-(b, d) reductions over N: wide enough for long vector runs, narrow enough to split D.</summary>
    internal const int ChannelBlock = 256;

    public static void GateFusionForward(Tensor local, Tensor hier, Tensor glob, Tensor alpha, Tensor beta, Tensor z)
    {
        int b = local.Dim(0), n = local.Dim(1), d = local.Dim(2);
        var coefficients = new float[3 * b * d];
        float* pa = Ptr(alpha), pb = Ptr(beta);
        for (int p = 0; p < b * d; p++)
        {
            coefficients[p] = pa[p] * pb[p];
            coefficients[b * d + p] = pa[p] * (1f - pb[p]);
            coefficients[2 * b * d + p] = 1f - pa[p];
        }
        float* pl = Ptr(local), ph = Ptr(hier), pg = Ptr(glob), pz = Ptr(z);
        For((long)b * n, RowsPerChunk(d), (s, e) =>
        {
            for (int row = s; row < e; row++)
            {
                int batch = row / n, o = row * d;
                var cl = coefficients.AsSpan(batch * d, d);
                var ch = coefficients.AsSpan((b + batch) * d, d);
                var cg = coefficients.AsSpan((2 * b + batch) * d, d);
                var zs = Span(pz, o, o + d);
                TensorPrimitives.Multiply(Span(pl, o, o + d), cl, zs);
                TensorPrimitives.MultiplyAdd(Span(ph, o, o + d), ch, zs, zs);
                TensorPrimitives.MultiplyAdd(Span(pg, o, o + d), cg, zs, zs);
            }
        });
    }

    /// <summary>
    /// dlocal = dz·αβ, dhier = dz·α(1 − β), dglob = dz·(1 − α); with S1 = Σ_N dz·(local − hier) and
    /// S2 = Σ_N dz·(hier − glob): dβ = α·S1, dα = β·S1 + S2. Tasks own (b, channel block) so no two write one element.
    /// </summary>
    public static void GateFusionBackward(Tensor local, Tensor hier, Tensor glob, Tensor alpha, Tensor beta, Tensor dz,
        Tensor? dLocal, Tensor? dHier, Tensor? dGlob, Tensor? dAlpha, Tensor? dBeta)
    {
        int b = local.Dim(0), n = local.Dim(1), d = local.Dim(2);
        int blocks = (d + ChannelBlock - 1) / ChannelBlock;
        float* pl = Ptr(local), ph = Ptr(hier), pg = Ptr(glob), pa = Ptr(alpha), pb = Ptr(beta), pdz = Ptr(dz);
        float* pdl = PtrOrNull(dLocal), pdh = PtrOrNull(dHier), pdg = PtrOrNull(dGlob), pda = PtrOrNull(dAlpha), pdb = PtrOrNull(dBeta);
        bool reduce = pda != null || pdb != null;
        Parallel.For(0, b * blocks, task =>
        {
            int batch = task / blocks, c0 = task % blocks * ChannelBlock, width = Math.Min(ChannelBlock, d - c0), p = batch * d + c0;
            Span<float> cl = stackalloc float[width], ch = stackalloc float[width], cg = stackalloc float[width];
            Span<float> diff = stackalloc float[width];
            for (int c = 0; c < width; c++)
            {
                cl[c] = pa[p + c] * pb[p + c];
                ch[c] = pa[p + c] * (1f - pb[p + c]);
                cg[c] = 1f - pa[p + c];
            }
            var s1 = reduce ? new ColumnSums(width) : null;
            var s2 = reduce ? new ColumnSums(width) : null;
            for (int t = 0; t < n; t++)
            {
                int o = (batch * n + t) * d + c0;
                var g = Span(pdz, o, o + width);
                if (pdl != null) TensorPrimitives.Multiply(g, cl, Span(pdl, o, o + width));
                if (pdh != null) TensorPrimitives.Multiply(g, ch, Span(pdh, o, o + width));
                if (pdg != null) TensorPrimitives.Multiply(g, cg, Span(pdg, o, o + width));
                if (!reduce) continue;
                TensorPrimitives.Subtract(Span(pl, o, o + width), Span(ph, o, o + width), diff);
                TensorPrimitives.MultiplyAdd(g, diff, s1!.Partial, s1.Partial);
                s1.EndRow();
                TensorPrimitives.Subtract(Span(ph, o, o + width), Span(pg, o, o + width), diff);
                TensorPrimitives.MultiplyAdd(g, diff, s2!.Partial, s2.Partial);
                s2.EndRow();
            }
            if (!reduce) return;
            ReadOnlySpan<double> t1 = s1!.Totals, t2 = s2!.Totals;
            for (int c = 0; c < width; c++)
            {
                if (pdb != null) pdb[p + c] = (float)(pa[p + c] * t1[c]);
                if (pda != null) pda[p + c] = (float)(pb[p + c] * t1[c] + t2[c]);
            }
        });
    }

    // ---- gated_residual: out = x + gate·y with gate (B, D) per (b, d) ----

    public static void GatedResidualForward(Tensor x, Tensor y, Tensor gate, Tensor output)
    {
        int n = x.Dim(1), d = x.Dim(2);
        float* px = Ptr(x), py = Ptr(y), pgate = Ptr(gate), pout = Ptr(output);
        For((long)x.Dim(0) * n, RowsPerChunk(d), (s, e) =>
        {
            for (int row = s; row < e; row++)
            {
                int o = row * d;
                TensorPrimitives.MultiplyAdd(Span(py, o, o + d), Span(pgate + row / n * d, d), Span(px, o, o + d), Span(pout, o, o + d));
            }
        });
    }

    /// <summary>dx = dout; dy = dout·gate; dgate = Σ_N dout·y. Tasks own (b, channel block) so no two write one element.</summary>
    public static void GatedResidualBackward(Tensor y, Tensor gate, Tensor dOut, Tensor? dx, Tensor? dy, Tensor? dGate)
    {
        int b = y.Dim(0), n = y.Dim(1), d = y.Dim(2);
        int blocks = (d + ChannelBlock - 1) / ChannelBlock;
        float* py = Ptr(y), pgate = Ptr(gate), pdOut = Ptr(dOut), pdx = PtrOrNull(dx), pdy = PtrOrNull(dy), pdGate = PtrOrNull(dGate);
        Parallel.For(0, b * blocks, task =>
        {
            int batch = task / blocks, c0 = task % blocks * ChannelBlock, width = Math.Min(ChannelBlock, d - c0), p = batch * d + c0;
            var gates = Span(pgate, p, p + width);
            var sums = pdGate == null ? null : new ColumnSums(width);
            for (int t = 0; t < n; t++)
            {
                int o = (batch * n + t) * d + c0;
                var g = Span(pdOut, o, o + width);
                if (pdx != null) g.CopyTo(Span(pdx, o, o + width));
                if (pdy != null) TensorPrimitives.Multiply(g, gates, Span(pdy, o, o + width));
                if (sums is null) continue;
                TensorPrimitives.MultiplyAdd(g, Span(py, o, o + width), sums.Partial, sums.Partial);
                sums.EndRow();
            }
            if (sums is null) return;
            var totals = sums.Totals;
            for (int c = 0; c < width; c++) pdGate[p + c] = (float)totals[c];
        });
    }
}
