using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>bilinear_resize</c>: per frame, bilinear resampling of channels-last video x (B, T, H, W, C) to
/// (B, T, out_h, out_w, C), matching torch.nn.functional.interpolate(mode='bilinear', align_corners=False,
/// antialias=False) for both up- and down-sizing (spec §1.3, §1.8, §4 items 2 and 15). Along each axis the source
/// position of output index o is (o + 0.5)·in/out − 0.5, clamped below at 0; it reads x[i0] and x[i1 = min(i0+1, in−1)]
/// with weights 1 − λ and λ. The 2-D weights are the products of the per-axis weights.
/// The static <see cref="Forward"/>/<see cref="Backward"/> pair is reused by the composite references.
/// </summary>
public sealed class BilinearResizeOp : Op
{
    private const string OpName = "bilinear_resize";

    public override string Name => OpName;

    public override string Summary => "per-frame bilinear resize of (B,T,H,W,C), align_corners=False, no antialias (torch interpolate)";

    public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("x", "(B, T, H, W, C)")];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(B, T, out_h, out_w, C)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("out_h", "int", null, "output height (≥ 1)"),
        new("out_w", "int", null, "output width (≥ 1)"),
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var x = RequireShape(shapes, "x", 5);
        var (outH, outW) = OutputSize(parameters);
        CheckInput(x);
        return Single("y", x[0], x[1], outH, outW, x[4]);
    }

    private static (int OutH, int OutW) OutputSize(OpParams parameters)
    {
        int outH = parameters.GetInt("out_h"), outW = parameters.GetInt("out_w");
        CheckSize(outH, outW);
        return (outH, outW);
    }

    private static void CheckSize(int outH, int outW)
    {
        if (outH < 1 || outW < 1)
            throw new OpParameterException($"op '{OpName}': out_h and out_w must be ≥ 1, got {outH}×{outW}");
    }

    private static void CheckInput(int[] x)
    {
        if (x.Length != 5)
            throw new ShapeMismatchException($"op '{OpName}': input 'x' must be (B, T, H, W, C), got {Shape.Format(x)}");
        if (x[2] < 1 || x[3] < 1)
            throw new ShapeMismatchException($"op '{OpName}': input frames must be at least 1×1, got x {Shape.Format(x)}");
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters)
    {
        var (outH, outW) = OutputSize(parameters);
        outputs.SetIfRequested("y", Forward(inputs.Get("x"), outH, outW));
    }

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var x = inputs.Get("x");
        inputGradients.SetIfRequested("x", Backward(outputGradients.Get("y"), x.Dim(2), x.Dim(3)));
    }

    /// <summary>
    /// The two source indices and the weight λ of the second one for output index <paramref name="outIndex"/> along an
    /// axis resized from <paramref name="inSize"/> to <paramref name="outSize"/> (torch's align_corners=False rule).
    /// The output value is (1 − λ)·x[I0] + λ·x[I1]; at the far edge I1 = I0.
    /// </summary>
    public static (int I0, int I1, double Lambda) SourceIndex(int outIndex, int inSize, int outSize)
    {
        if (inSize < 1 || outSize < 1)
            throw new OpParameterException($"op '{OpName}': sizes must be ≥ 1, got in {inSize}, out {outSize}");
        if (outIndex < 0 || outIndex >= outSize)
            throw new ArgumentOutOfRangeException(nameof(outIndex), outIndex, $"must be in [0, {outSize})");
        double scale = (double)inSize / outSize;
        double source = (outIndex + 0.5) * scale - 0.5;
        if (source < 0) source = 0;
        int i0 = Math.Min((int)Math.Floor(source), inSize - 1);
        int i1 = Math.Min(i0 + 1, inSize - 1);
        return (i0, i1, source - i0);
    }

    private static (int I0, int I1, double Lambda)[] Table(int inSize, int outSize)
    {
        var table = new (int, int, double)[outSize];
        for (int o = 0; o < outSize; o++) table[o] = SourceIndex(o, inSize, outSize);
        return table;
    }

    public static RefTensor Forward(RefTensor x, int outH, int outW)
    {
        CheckInput(x.Shape);
        CheckSize(outH, outW);
        int frames = x.Dim(0) * x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        var rows = Table(h, outH);
        var cols = Table(w, outW);
        var y = new RefTensor(x.Dim(0), x.Dim(1), outH, outW, c);
        for (int f = 0; f < frames; f++)
            for (int oh = 0; oh < outH; oh++)
            {
                var (h0, h1, lh) = rows[oh];
                for (int ow = 0; ow < outW; ow++)
                {
                    var (w0, w1, lw) = cols[ow];
                    int p00 = ((f * h + h0) * w + w0) * c, p01 = ((f * h + h0) * w + w1) * c;
                    int p10 = ((f * h + h1) * w + w0) * c, p11 = ((f * h + h1) * w + w1) * c;
                    int o = ((f * outH + oh) * outW + ow) * c;
                    for (int ch = 0; ch < c; ch++)
                        y.Data[o + ch] =
                            (1 - lh) * ((1 - lw) * x.Data[p00 + ch] + lw * x.Data[p01 + ch])
                            + lh * ((1 - lw) * x.Data[p10 + ch] + lw * x.Data[p11 + ch]);
                }
            }
        return y;
    }

    /// <summary>The transpose of <see cref="Forward"/>: scatters dy (B, T, outH, outW, C) back onto (B, T, inH, inW, C).</summary>
    public static RefTensor Backward(RefTensor dy, int inH, int inW)
    {
        CheckInput(dy.Shape);
        if (inH < 1 || inW < 1)
            throw new OpParameterException($"op '{OpName}': input size must be ≥ 1, got {inH}×{inW}");
        int frames = dy.Dim(0) * dy.Dim(1), outH = dy.Dim(2), outW = dy.Dim(3), c = dy.Dim(4);
        var rows = Table(inH, outH);
        var cols = Table(inW, outW);
        var dx = new RefTensor(dy.Dim(0), dy.Dim(1), inH, inW, c);
        for (int f = 0; f < frames; f++)
            for (int oh = 0; oh < outH; oh++)
            {
                var (h0, h1, lh) = rows[oh];
                for (int ow = 0; ow < outW; ow++)
                {
                    var (w0, w1, lw) = cols[ow];
                    int p00 = ((f * inH + h0) * inW + w0) * c, p01 = ((f * inH + h0) * inW + w1) * c;
                    int p10 = ((f * inH + h1) * inW + w0) * c, p11 = ((f * inH + h1) * inW + w1) * c;
                    int o = ((f * outH + oh) * outW + ow) * c;
                    for (int ch = 0; ch < c; ch++)
                    {
                        double g = dy.Data[o + ch];
                        dx.Data[p00 + ch] += (1 - lh) * (1 - lw) * g;
                        dx.Data[p01 + ch] += (1 - lh) * lw * g;
                        dx.Data[p10 + ch] += lh * (1 - lw) * g;
                        dx.Data[p11 + ch] += lh * lw * g;
                    }
                }
            }
        return dx;
    }

    public override IEnumerable<OpCase> Cases()
    {
        static OpCase Resize(string name, int[] x, int outH, int outW, bool gradientCheck = true) =>
            new(name, new Dictionary<string, int[]> { ["x"] = x }, OpParams.Of(("out_h", outH), ("out_w", outW)))
            {
                GradientCheck = gradientCheck,
            };

        yield return Resize("up_b2_3x5_to_7x8", [2, 1, 3, 5, 2], 7, 8);
        yield return Resize("down_t2_9x6_to_8x5", [1, 2, 9, 6, 2], 8, 5);
        yield return Resize("identity_4x5", [1, 1, 4, 5, 3], 4, 5);
        yield return Resize("mixed_6x3_to_4x7", [1, 1, 6, 3, 2], 4, 7);
        yield return Resize("single_pixel_1x1_to_3x2", [1, 1, 1, 1, 2], 3, 2);
        // 1080P ratios in miniature: global ×4 (17×30 → 68×120), hierarchical ×2 (34×60 → 68×120),
        // local-odd resize 68 → 70 (≈ 17 → 18 and back), hierarchical-odd 34 → 33 (≈ 11 → 10 and 33×60 → 68×120 ≈ 3×5 → 7×10).
        yield return Resize("global_x4_3x2_to_12x8", [1, 1, 3, 2, 2], 12, 8);
        yield return Resize("hier_x2_4x3_to_8x6", [1, 1, 4, 3, 2], 8, 6);
        yield return Resize("local_odd_17x4_to_18x4", [1, 1, 17, 4, 1], 18, 4);
        yield return Resize("local_odd_back_18x4_to_17x4", [1, 1, 18, 4, 1], 17, 4);
        yield return Resize("hier_odd_11x4_to_10x4", [1, 1, 11, 4, 1], 10, 4);
        yield return Resize("hier_odd_up_3x5_to_7x10", [1, 1, 3, 5, 2], 7, 10);
        // Backend parity at the model's global-branch ratio, C = 64.
        yield return Resize("global_x4_17x30_to_68x120_c64", [1, 1, 17, 30, 64], 68, 120, gradientCheck: false);
        yield return Resize("hier_odd_t2_34x60_to_33x60_c64", [1, 2, 34, 60, 64], 33, 60, gradientCheck: false);
    }
}
