using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Ops;

/// <summary>
/// <c>window_attention</c>: softmax attention inside the windows of a <see cref="WindowLayout"/> (n × n spatial windows, each a
/// tube over all T frames; n = 1 is full attention), with Wan's 3-D RoPE on q and k in window-local coordinates (every
/// window starts at (0, 0, 0), spec §1.3, §1.5), scale 1/√headDim, no mask, heads independent. Tensors are channels-last
/// (B, T, H, W, heads·headDim). This is the attention core of UltraGen's local and hierarchical branches and, with n = 1,
/// of Wan's full self-attention.
/// </summary>
public sealed class WindowAttentionOp : Op
{
    public override string Name => "window_attention";

    public override string Summary =>
        "softmax(q·kᵀ/√d)·v inside n×n spatial windows (tubes over all frames), window-local 3-D RoPE on q and k";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("q", "(B, T, H, W, heads·headDim)"),
        new("k", "(B, T, H, W, heads·headDim)"),
        new("v", "(B, T, H, W, heads·headDim)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("o", "(B, T, H, W, heads·headDim)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("heads", "int", null, "number of attention heads; the last dim is heads·headDim"),
        new("windows", "int", "1", "windows per side n: n×n spatial windows, each spanning all T frames (1 = full attention)"),
        new("ragged", "bool", "false",
            "false: n must divide H and W (WindowLayout.Divisible); true: uneven windows, row r spans [⌊r·H/n⌋, ⌊(r+1)·H/n⌋) (WindowLayout.Ragged)"),
        new("rope", "bool", "true", "apply Wan's 3-D RoPE to q and k in window-local coordinates (needs an even headDim ≥ 6)"),
        new("rope_theta", "double", "10000", "RoPE base θ"),
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var q = RequireShape(shapes, "q", 5);
        ExpectShape(shapes, "k", q);
        ExpectShape(shapes, "v", q);
        if (q.Any(dim => dim < 1)) throw ShapeError($"every dim of q must be at least 1, got {Shape.Format(q)}");
        int heads = parameters.GetInt("heads");
        if (heads < 1) throw new OpParameterException($"op '{Name}': heads must be at least 1, got {heads}");
        if (q[4] % heads != 0)
            throw ShapeError($"channel dim {q[4]} of q {Shape.Format(q)} is not divisible by heads={heads}");
        if (parameters.GetBool("rope", true)) CheckRopeHeadDim(Name, q[4] / heads);
        _ = LayoutFor(new Grid3(q[1], q[2], q[3]), parameters);
        return Single("o", (int[])q.Clone());
    }

    /// <summary>
    /// The layout the parameters <c>windows</c> and <c>ragged</c> describe on <paramref name="grid"/>; a grid the windows
    /// cannot split is a <see cref="ShapeMismatchException"/>, a window count below 1 an <see cref="OpParameterException"/>.
    /// </summary>
    public static WindowLayout LayoutFor(Grid3 grid, OpParams parameters)
    {
        int windows = parameters.GetInt("windows", 1);
        if (windows < 1) throw new OpParameterException($"op 'window_attention': windows must be at least 1, got {windows}");
        bool ragged = parameters.GetBool("ragged", false);
        try
        {
            return ragged ? WindowLayout.Ragged(grid, windows) : WindowLayout.Divisible(grid, windows);
        }
        catch (ShapeMismatchException e)
        {
            throw new ShapeMismatchException($"op 'window_attention': {e.Message}");
        }
    }

    internal static void CheckRopeHeadDim(string opName, int headDim)
    {
        if (headDim < 6 || headDim % 2 != 0)
            throw new UnsupportedConfigurationException(
                $"op '{opName}': 3-D RoPE needs an even head dim of at least 6, got head dim {headDim}");
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters)
    {
        var q = inputs.Get("q");
        var layout = LayoutFor(new Grid3(q.Dim(1), q.Dim(2), q.Dim(3)), parameters);
        outputs.SetIfRequested("o", Forward(q, inputs.Get("k"), inputs.Get("v"), parameters.GetInt("heads"), layout,
            parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", Rope3d.DefaultTheta)));
    }

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var q = inputs.Get("q");
        var layout = LayoutFor(new Grid3(q.Dim(1), q.Dim(2), q.Dim(3)), parameters);
        var (dq, dk, dv) = Backward(q, inputs.Get("k"), inputs.Get("v"), outputGradients.Get("o"), parameters.GetInt("heads"), layout,
            parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", Rope3d.DefaultTheta));
        inputGradients.SetIfRequested("q", dq);
        inputGradients.SetIfRequested("k", dk);
        inputGradients.SetIfRequested("v", dv);
    }

    /// <summary>
    /// o = softmax(q̃·k̃ᵀ/√headDim)·v per batch, window and head, where q̃, k̃ are q, k rotated by <see cref="Rope3d"/> at the
    /// token's window-local (t, row, col) when <paramref name="rope"/> is set. <paramref name="layout"/> partitions the
    /// (T, H, W) grid of q; the batch dim is handled here.
    /// </summary>
    public static RefTensor Forward(RefTensor q, RefTensor k, RefTensor v, int heads, WindowLayout layout, bool rope = true,
        double ropeTheta = 10000)
    {
        var geometry = Geometry.Of(q, k, v, heads, layout, rope);
        var o = new RefTensor((int[])q.Shape.Clone());
        for (int b = 0; b < geometry.Batch; b++)
            for (int window = 0; window < layout.WindowCount; window++)
                for (int head = 0; head < heads; head++)
                {
                    var block = WindowBlock.Compute(q, k, v, geometry, layout, b, window, head, rope, ropeTheta);
                    block.Scatter(block.O, o);
                }
        return o;
    }

    /// <summary>
    /// Gradients of q, k, v given dO: on the rotated q̃, k̃ with P the attention weights, dV = Pᵀ·dO, dP = dO·Vᵀ,
    /// dS = P ⊙ (dP − rowsum(dO ⊙ O)), dQ̃ = scale·dS·K̃, dK̃ = scale·dSᵀ·Q̃; then dq, dk are dQ̃, dK̃ rotated back by
    /// <see cref="Rope3d.ApplyInverse"/>.
    /// </summary>
    public static (RefTensor Dq, RefTensor Dk, RefTensor Dv) Backward(RefTensor q, RefTensor k, RefTensor v, RefTensor dO, int heads,
        WindowLayout layout, bool rope = true, double ropeTheta = 10000)
    {
        var geometry = Geometry.Of(q, k, v, heads, layout, rope);
        if (!dO.Shape.AsSpan().SequenceEqual(q.Shape))
            throw new ShapeMismatchException($"window_attention: dO {Shape.Format(dO.Shape)} must match q {Shape.Format(q.Shape)}");
        var dq = new RefTensor((int[])q.Shape.Clone());
        var dk = new RefTensor((int[])q.Shape.Clone());
        var dv = new RefTensor((int[])q.Shape.Clone());
        for (int b = 0; b < geometry.Batch; b++)
            for (int window = 0; window < layout.WindowCount; window++)
                for (int head = 0; head < heads; head++)
                {
                    var block = WindowBlock.Compute(q, k, v, geometry, layout, b, window, head, rope, ropeTheta);
                    block.Backward(dO, dq, dk, dv, rope, ropeTheta);
                }
        return (dq, dk, dv);
    }

    /// <summary>Sizes shared by one call: batch, tokens per sample, channels, heads and head dim.</summary>
    private readonly record struct Geometry(int Batch, int TokensPerSample, int Channels, int Heads, int HeadDim)
    {
        public static Geometry Of(RefTensor q, RefTensor k, RefTensor v, int heads, WindowLayout layout, bool rope)
        {
            if (q.Rank != 5)
                throw new ShapeMismatchException($"window_attention: q must be (B, T, H, W, heads·headDim), got {Shape.Format(q.Shape)}");
            if (!k.Shape.AsSpan().SequenceEqual(q.Shape) || !v.Shape.AsSpan().SequenceEqual(q.Shape))
                throw new ShapeMismatchException(
                    $"window_attention: k {Shape.Format(k.Shape)} and v {Shape.Format(v.Shape)} must match q {Shape.Format(q.Shape)}");
            var grid = layout.Grid;
            if (grid.T != q.Dim(1) || grid.H != q.Dim(2) || grid.W != q.Dim(3))
                throw new ShapeMismatchException($"window_attention: layout grid {grid} does not match q {Shape.Format(q.Shape)}");
            if (heads < 1 || q.Dim(4) % heads != 0)
                throw new ShapeMismatchException($"window_attention: channel dim {q.Dim(4)} is not divisible by heads={heads}");
            int headDim = q.Dim(4) / heads;
            if (rope) CheckRopeHeadDim("window_attention", headDim);
            return new Geometry(q.Dim(0), q.Dim(1) * q.Dim(2) * q.Dim(3), q.Dim(4), heads, headDim);
        }
    }

    /// <summary>One (batch, window, head): the gathered, rotated q̃, k̃, v, the attention weights P and the output O.</summary>
    private sealed class WindowBlock
    {
        private readonly int _n;
        private readonly int _d;
        private readonly double _scale;
        private readonly int[] _offsets;       // flat offset of each window token's head slice in the (B, T, H, W, C) tensors
        private readonly (int T, int Row, int Col)[] _coordinates;
        private readonly double[] _q, _k, _v, _p;

        public double[] O { get; }

        private WindowBlock(int n, int d)
        {
            _n = n;
            _d = d;
            _scale = 1.0 / Math.Sqrt(d);
            _offsets = new int[n];
            _coordinates = new (int, int, int)[n];
            _q = new double[n * d];
            _k = new double[n * d];
            _v = new double[n * d];
            _p = new double[n * n];
            O = new double[n * d];
        }

        public static WindowBlock Compute(RefTensor q, RefTensor k, RefTensor v, Geometry g, WindowLayout layout, int b, int window,
            int head, bool rope, double ropeTheta)
        {
            int n = layout.TokensInWindow(window), d = g.HeadDim;
            var block = new WindowBlock(n, d);
            for (int i = 0; i < n; i++)
            {
                long token = layout.TokenIndex(window, i);
                int offset = (int)(((long)b * g.TokensPerSample + token) * g.Channels + (long)head * d);
                block._offsets[i] = offset;
                block._coordinates[i] = layout.LocalCoordinates(window, i);
                Array.Copy(q.Data, offset, block._q, i * d, d);
                Array.Copy(k.Data, offset, block._k, i * d, d);
                Array.Copy(v.Data, offset, block._v, i * d, d);
                if (rope)
                {
                    var (t, row, col) = block._coordinates[i];
                    Rope3d.Apply(block._q.AsSpan(i * d, d), t, row, col, ropeTheta);
                    Rope3d.Apply(block._k.AsSpan(i * d, d), t, row, col, ropeTheta);
                }
            }
            block.Attend();
            return block;
        }

        private void Attend()
        {
            int n = _n, d = _d;
            for (int i = 0; i < n; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int c = 0; c < d; c++) s += _q[i * d + c] * _k[j * d + c];
                    s *= _scale;
                    _p[i * n + j] = s;
                    if (s > max) max = s;
                }
                double sum = 0;
                for (int j = 0; j < n; j++)
                {
                    double e = Math.Exp(_p[i * n + j] - max);
                    _p[i * n + j] = e;
                    sum += e;
                }
                for (int j = 0; j < n; j++) _p[i * n + j] /= sum;
                for (int c = 0; c < d; c++)
                {
                    double acc = 0;
                    for (int j = 0; j < n; j++) acc += _p[i * n + j] * _v[j * d + c];
                    O[i * d + c] = acc;
                }
            }
        }

        /// <summary>Writes per-token head vectors (n × d) into their places in <paramref name="target"/>.</summary>
        public void Scatter(double[] values, RefTensor target)
        {
            for (int i = 0; i < _n; i++) Array.Copy(values, i * _d, target.Data, _offsets[i], _d);
        }

        public void Backward(RefTensor dO, RefTensor dq, RefTensor dk, RefTensor dv, bool rope, double ropeTheta)
        {
            int n = _n, d = _d;
            var gradO = new double[n * d];
            for (int i = 0; i < n; i++) Array.Copy(dO.Data, _offsets[i], gradO, i * d, d);

            var gradQ = new double[n * d];
            var gradK = new double[n * d];
            var gradV = new double[n * d];
            var gradS = new double[n * n];
            for (int i = 0; i < n; i++)
            {
                double rowDot = 0; // Σ_c dO_ic·O_ic = Σ_j P_ij·dP_ij
                for (int c = 0; c < d; c++) rowDot += gradO[i * d + c] * O[i * d + c];
                for (int j = 0; j < n; j++)
                {
                    double dp = 0;
                    for (int c = 0; c < d; c++) dp += gradO[i * d + c] * _v[j * d + c];
                    gradS[i * n + j] = _p[i * n + j] * (dp - rowDot);
                }
            }
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                {
                    double p = _p[i * n + j], ds = _scale * gradS[i * n + j];
                    for (int c = 0; c < d; c++)
                    {
                        gradV[j * d + c] += p * gradO[i * d + c];
                        gradQ[i * d + c] += ds * _k[j * d + c];
                        gradK[j * d + c] += ds * _q[i * d + c];
                    }
                }
            if (rope)
                for (int i = 0; i < n; i++)
                {
                    var (t, row, col) = _coordinates[i];
                    Rope3d.ApplyInverse(gradQ.AsSpan(i * d, d), t, row, col, ropeTheta);
                    Rope3d.ApplyInverse(gradK.AsSpan(i * d, d), t, row, col, ropeTheta);
                }
            Scatter(gradQ, dq);
            Scatter(gradK, dk);
            Scatter(gradV, dv);
        }
    }

    private static Dictionary<string, int[]> Qkv(params int[] shape) => new() { ["q"] = shape, ["k"] = shape, ["v"] = shape };

    public override IEnumerable<OpCase> Cases()
    {
        // Gradient-checked (small).
        yield return new OpCase("full_t2h3w4_h2d8", Qkv(1, 2, 3, 4, 16), OpParams.Of(("heads", 2)));
        yield return new OpCase("full_t2h3w4_h2d8_norope", Qkv(1, 2, 3, 4, 16), OpParams.Of(("heads", 2), ("rope", false)));
        yield return new OpCase("win2_t2h4w6_h2d8", Qkv(1, 2, 4, 6, 16), OpParams.Of(("heads", 2), ("windows", 2)));
        yield return new OpCase("ragged2_t2h5w7_h1d8", Qkv(1, 2, 5, 7, 8),
            OpParams.Of(("heads", 1), ("windows", 2), ("ragged", true)));
        yield return new OpCase("t1_h4w6_win2_h2d8", Qkv(1, 1, 4, 6, 16), OpParams.Of(("heads", 2), ("windows", 2)));
        yield return new OpCase("batch2_t2h4w4_win2_h2d8", Qkv(2, 2, 4, 4, 16), OpParams.Of(("heads", 2), ("windows", 2)));
        yield return new OpCase("d6_t2h3w3_h2", Qkv(1, 2, 3, 3, 12), OpParams.Of(("heads", 2)));
        yield return new OpCase("theta100_t3h2w2_h1d12", Qkv(1, 3, 2, 2, 12), OpParams.Of(("heads", 1), ("rope_theta", 100)));

        // Parity only (realistic head dims, more windows).
        yield return new OpCase("d64_t2h8w8_win2_h2", Qkv(1, 2, 8, 8, 128), OpParams.Of(("heads", 2), ("windows", 2)))
        { GradientCheck = false };
        yield return new OpCase("d128_t2h8w8_win2_h2", Qkv(1, 2, 8, 8, 256), OpParams.Of(("heads", 2), ("windows", 2)))
        { GradientCheck = false };
        yield return new OpCase("d64_ragged3_t2h7w10_h2", Qkv(1, 2, 7, 10, 128),
            OpParams.Of(("heads", 2), ("windows", 3), ("ragged", true))) { GradientCheck = false };
        yield return new OpCase("win5_t1h10w15_h2d8", Qkv(1, 1, 10, 15, 16), OpParams.Of(("heads", 2), ("windows", 5)))
        { GradientCheck = false };
        // Windows longer than one kernel tile (f32: 32 tokens, bf16: 64): several key tiles per query tile (the double-buffered
        // cp.async pipeline), several query tiles per window, masked tail tiles, and in the ragged case windows of one and
        // of two tiles in the same launch.
        yield return new OpCase("d64_multitile_b2_t3h10w12_win2_h2", Qkv(2, 3, 10, 12, 128), OpParams.Of(("heads", 2), ("windows", 2)))
        { GradientCheck = false };
        yield return new OpCase("d128_multitile_full_t2h9w10_h1", Qkv(1, 2, 9, 10, 128), OpParams.Of(("heads", 1)))
        { GradientCheck = false };
        yield return new OpCase("d64_multitile_ragged3_t3h14w16_h1", Qkv(1, 3, 14, 16, 64),
            OpParams.Of(("heads", 1), ("windows", 3), ("ragged", true))) { GradientCheck = false };
        yield return new OpCase("d32_multitile_t3h10w12_win2_h3", Qkv(1, 3, 10, 12, 96), OpParams.Of(("heads", 3), ("windows", 2)))
        { GradientCheck = false };
    }
}
