using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>cross_attention</c>: the DiT's text cross-attention core (spec §2.2): o = softmax(q·kᵀ/√headDim)·v per batch and head,
/// N video-token queries against L text keys, no mask, no RoPE, every key attended. q is the token tensor
/// (B, N, heads·headDim); k and v are the projected text context (B, L, heads·headDim). N and L are independent (L is the
/// text length, 8…512; N up to ~10^5), so this is not <c>window_attention</c> with one window.
/// </summary>
public sealed class CrossAttentionOp : Op
{
    public override string Name => "cross_attention";

    public override string Summary => "softmax(q·kᵀ/√d)·v of N queries over L keys per batch and head (text cross-attention), no mask, no RoPE";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("q", "(B, N, heads·headDim)"),
        new("k", "(B, L, heads·headDim)"),
        new("v", "(B, L, heads·headDim)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("o", "(B, N, heads·headDim)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("heads", "int", null, "number of attention heads; the last dim is heads·headDim"),
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var q = RequireShape(shapes, "q", 3);
        var k = RequireShape(shapes, "k", 3);
        if (q.Any(dim => dim < 1)) throw ShapeError($"every dim of q must be at least 1, got {Shape.Format(q)}");
        if (k.Any(dim => dim < 1)) throw ShapeError($"every dim of k must be at least 1, got {Shape.Format(k)}");
        if (k[0] != q[0] || k[2] != q[2])
            throw ShapeError($"k {Shape.Format(k)} must be (B, L, heads·headDim) with B and heads·headDim of q {Shape.Format(q)}");
        ExpectShape(shapes, "v", k);
        int heads = parameters.GetInt("heads");
        if (heads < 1) throw new OpParameterException($"op '{Name}': heads must be at least 1, got {heads}");
        if (q[2] % heads != 0) throw ShapeError($"channel dim {q[2]} of q {Shape.Format(q)} is not divisible by heads={heads}");
        return Single("o", (int[])q.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("o", Forward(inputs.Get("q"), inputs.Get("k"), inputs.Get("v"), parameters.GetInt("heads")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dq, dk, dv) = Backward(inputs.Get("q"), inputs.Get("k"), inputs.Get("v"), outputGradients.Get("o"), parameters.GetInt("heads"));
        inputGradients.SetIfRequested("q", dq);
        inputGradients.SetIfRequested("k", dk);
        inputGradients.SetIfRequested("v", dv);
    }

    /// <summary>o = softmax(q·kᵀ/√headDim)·v per batch and head, in float64 (the softmax shifted by the row max).</summary>
    public static RefTensor Forward(RefTensor q, RefTensor k, RefTensor v, int heads)
    {
        var g = Geometry.Of(q, k, v, heads);
        var o = new RefTensor((int[])q.Shape.Clone());
        var p = new double[g.Keys];
        for (int b = 0; b < g.Batch; b++)
            for (int head = 0; head < heads; head++)
                for (int i = 0; i < g.Queries; i++)
                {
                    long qo = g.QueryOffset(b, i, head);
                    g.Probabilities(q, k, b, head, qo, p);
                    for (int j = 0; j < g.Keys; j++)
                    {
                        long vo = g.KeyOffset(b, j, head);
                        for (int c = 0; c < g.HeadDim; c++) o.Data[qo + c] += p[j] * v.Data[vo + c];
                    }
                }
        return o;
    }

    /// <summary>
    /// Gradients of q, k, v given dO, with P the attention weights: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)),
    /// dQ = scale·dS·K, dK = scale·dSᵀ·Q.
    /// </summary>
    public static (RefTensor Dq, RefTensor Dk, RefTensor Dv) Backward(RefTensor q, RefTensor k, RefTensor v, RefTensor dO, int heads)
    {
        var g = Geometry.Of(q, k, v, heads);
        if (!dO.Shape.AsSpan().SequenceEqual(q.Shape))
            throw new ShapeMismatchException($"cross_attention: dO {Shape.Format(dO.Shape)} must match q {Shape.Format(q.Shape)}");
        var dq = new RefTensor((int[])q.Shape.Clone());
        var dk = new RefTensor((int[])k.Shape.Clone());
        var dv = new RefTensor((int[])v.Shape.Clone());
        var p = new double[g.Keys];
        var dp = new double[g.Keys];
        for (int b = 0; b < g.Batch; b++)
            for (int head = 0; head < heads; head++)
                for (int i = 0; i < g.Queries; i++)
                {
                    long qo = g.QueryOffset(b, i, head);
                    g.Probabilities(q, k, b, head, qo, p);
                    double rowDot = 0; // Σ_j P_ij·dP_ij
                    for (int j = 0; j < g.Keys; j++)
                    {
                        long vo = g.KeyOffset(b, j, head);
                        double dot = 0;
                        for (int c = 0; c < g.HeadDim; c++)
                        {
                            dot += dO.Data[qo + c] * v.Data[vo + c];
                            dv.Data[vo + c] += p[j] * dO.Data[qo + c];
                        }
                        dp[j] = dot;
                        rowDot += p[j] * dot;
                    }
                    for (int j = 0; j < g.Keys; j++)
                    {
                        double ds = g.Scale * p[j] * (dp[j] - rowDot);
                        long ko = g.KeyOffset(b, j, head);
                        for (int c = 0; c < g.HeadDim; c++)
                        {
                            dq.Data[qo + c] += ds * k.Data[ko + c];
                            dk.Data[ko + c] += ds * q.Data[qo + c];
                        }
                    }
                }
        return (dq, dk, dv);
    }

    /// <summary>Sizes of one call: batch, queries N, keys L, channels, heads, head dim and the scale 1/√headDim.</summary>
    private readonly record struct Geometry(int Batch, int Queries, int Keys, int Channels, int HeadDim, double Scale)
    {
        public static Geometry Of(RefTensor q, RefTensor k, RefTensor v, int heads)
        {
            if (q.Rank != 3 || k.Rank != 3)
                throw new ShapeMismatchException(
                    $"cross_attention: q (B, N, heads·headDim) and k (B, L, heads·headDim) must have rank 3, got {Shape.Format(q.Shape)} and {Shape.Format(k.Shape)}");
            if (k.Dim(0) != q.Dim(0) || k.Dim(2) != q.Dim(2) || !v.Shape.AsSpan().SequenceEqual(k.Shape))
                throw new ShapeMismatchException(
                    $"cross_attention: k {Shape.Format(k.Shape)} and v {Shape.Format(v.Shape)} must be (B, L, C) with B and C of q {Shape.Format(q.Shape)}");
            if (heads < 1 || q.Dim(2) % heads != 0)
                throw new ShapeMismatchException($"cross_attention: channel dim {q.Dim(2)} is not divisible by heads={heads}");
            int headDim = q.Dim(2) / heads;
            return new Geometry(q.Dim(0), q.Dim(1), k.Dim(1), q.Dim(2), headDim, 1.0 / Math.Sqrt(headDim));
        }

        public long QueryOffset(int b, int i, int head) => ((long)b * Queries + i) * Channels + (long)head * HeadDim;

        public long KeyOffset(int b, int j, int head) => ((long)b * Keys + j) * Channels + (long)head * HeadDim;

        /// <summary>p_j = softmax_j(q_i·k_j·scale) for the query row at <paramref name="queryOffset"/>.</summary>
        public void Probabilities(RefTensor q, RefTensor k, int b, int head, long queryOffset, double[] p)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < Keys; j++)
            {
                long ko = KeyOffset(b, j, head);
                double s = 0;
                for (int c = 0; c < HeadDim; c++) s += q.Data[queryOffset + c] * k.Data[ko + c];
                p[j] = s * Scale;
                if (p[j] > max) max = p[j];
            }
            double sum = 0;
            for (int j = 0; j < Keys; j++)
            {
                p[j] = Math.Exp(p[j] - max);
                sum += p[j];
            }
            for (int j = 0; j < Keys; j++) p[j] /= sum;
        }
    }

    private static Dictionary<string, int[]> Qkv(int batch, int queries, int keys, int channels) => new()
    {
        ["q"] = [batch, queries, channels],
        ["k"] = [batch, keys, channels],
        ["v"] = [batch, keys, channels],
    };

    public override IEnumerable<OpCase> Cases()
    {
        // Gradient-checked (small): several heads, one head, odd head dims, L = 1, L above one 64-key tile, batch 2.
        yield return new OpCase("n7_l5_h2d4", Qkv(1, 7, 5, 8), OpParams.Of(("heads", 2)));
        yield return new OpCase("b2_n9_l3_h1d6", Qkv(2, 9, 3, 6), OpParams.Of(("heads", 1)));
        yield return new OpCase("n6_l4_h3d5", Qkv(1, 6, 4, 15), OpParams.Of(("heads", 3)));
        yield return new OpCase("n5_l70_h2d4", Qkv(1, 5, 70, 8), OpParams.Of(("heads", 2)));
        yield return new OpCase("n3_l1_h1d3", Qkv(1, 3, 1, 3), OpParams.Of(("heads", 1)));
        yield return new OpCase("b2_n11_l8_h2d6_wide", Qkv(2, 11, 8, 12), OpParams.Of(("heads", 2)),
            new Dictionary<string, (double, double)> { ["q"] = (-3, 3), ["k"] = (-3, 3) });

        // Parity only (the CUDA kernels' head dims; N not a multiple of any tile; L small, L > 64, L = 512).
        yield return new OpCase("d64_n100_l77_h2", Qkv(1, 100, 77, 128), OpParams.Of(("heads", 2))) { GradientCheck = false };
        yield return new OpCase("d128_b2_n70_l20_h2", Qkv(2, 70, 20, 256), OpParams.Of(("heads", 2))) { GradientCheck = false };
        yield return new OpCase("d64_n33_l512_h1", Qkv(1, 33, 512, 64), OpParams.Of(("heads", 1))) { GradientCheck = false };
        yield return new OpCase("d128_n130_l8_h1", Qkv(1, 130, 8, 128), OpParams.Of(("heads", 1))) { GradientCheck = false };
        yield return new OpCase("d32_b2_n70_l40_h3", Qkv(2, 70, 40, 96), OpParams.Of(("heads", 3))) { GradientCheck = false };
        yield return new OpCase("d40_n65_l9_h3", Qkv(1, 65, 9, 120), OpParams.Of(("heads", 3))) { GradientCheck = false };
    }
}
