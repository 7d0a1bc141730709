using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>depthwise_conv2d</c>: per frame, a depthwise (groups = C) kh×kw convolution with stride = kernel and no padding,
/// on channels-last video x (B, T, H, W, C), as torch Conv2d(C, C, k, stride=k, padding=0, groups=C) applied to
/// (B·T, C, H, W). The weight keeps the PyTorch layout (C, 1, kh, kw). The bottom rows and right columns that do not
/// fill a whole window are dropped (output H/kh × W/kw, floored), exactly like torch; their gradient is zero.
/// This is UltraGen's <c>downsample_conv</c> (k = 4) and <c>downsample_conv_hierachcal</c> (k = 2), spec §1.3.
/// The static <see cref="Forward"/>/<see cref="Backward"/> pair is reused by the composite references.
/// </summary>
public sealed class DepthwiseConv2dOp : Op
{
    private const string OpName = "depthwise_conv2d";

    public override string Name => OpName;

    public override string Summary => "per-frame depthwise k×k conv, stride k, no padding, on (B,T,H,W,C); remainder dropped";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(B, T, H, W, C)"),
        new("weight", "(C, 1, kh, kw)"),
        new("bias", "(C)", Optional: true),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(B, T, H/kh, W/kw, C)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var x = RequireShape(shapes, "x", 5);
        var weight = RequireShape(shapes, "weight", 4);
        shapes.TryGetValue("bias", out var bias);
        return Single("y", OutputShape(x, weight, bias));
    }

    /// <summary>The output shape (B, T, H/kh, W/kw, C), after checking every input; errors are <see cref="ShapeMismatchException"/>.</summary>
    public static int[] OutputShape(int[] x, int[] weight, int[]? bias)
    {
        if (x.Length != 5)
            throw new ShapeMismatchException($"op '{OpName}': input 'x' must be (B, T, H, W, C), got {Shape.Format(x)}");
        if (weight.Length != 4 || weight[1] != 1)
            throw new ShapeMismatchException($"op '{OpName}': input 'weight' must be (C, 1, kh, kw), got {Shape.Format(weight)}");
        int c = x[4], kh = weight[2], kw = weight[3];
        if (weight[0] != c)
            throw new ShapeMismatchException(
                $"op '{OpName}': weight has {weight[0]} channels but x has C = {c} (x {Shape.Format(x)}, weight {Shape.Format(weight)})");
        if (kh < 1 || kw < 1)
            throw new ShapeMismatchException($"op '{OpName}': kernel must be at least 1×1, got weight {Shape.Format(weight)}");
        if (x[2] < kh || x[3] < kw)
            throw new ShapeMismatchException(
                $"op '{OpName}': the frame {x[2]}×{x[3]} (H×W) is smaller than the {kh}×{kw} kernel, so the output would be empty (x {Shape.Format(x)})");
        if (bias is not null && (bias.Length != 1 || bias[0] != c))
            throw new ShapeMismatchException($"op '{OpName}': input 'bias' must be ({c}), got {Shape.Format(bias)}");
        return [x[0], x[1], x[2] / kh, x[3] / kw, c];
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(inputs.Get("x"), inputs.Get("weight"), inputs.GetOptional("bias")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dx, dWeight, dBias) = Backward(inputs.Get("x"), inputs.Get("weight"), outputGradients.Get("y"));
        inputGradients.SetIfRequested("x", dx);
        inputGradients.SetIfRequested("weight", dWeight);
        inputGradients.SetIfRequested("bias", dBias);
    }

    public static RefTensor Forward(RefTensor x, RefTensor weight, RefTensor? bias)
    {
        var yShape = OutputShape(x.Shape, weight.Shape, bias?.Shape);
        int frames = x.Dim(0) * x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kh = weight.Dim(2), kw = weight.Dim(3), ho = yShape[2], wo = yShape[3];
        var y = new RefTensor(yShape);
        for (int f = 0; f < frames; f++)
            for (int oh = 0; oh < ho; oh++)
                for (int ow = 0; ow < wo; ow++)
                    for (int ch = 0; ch < c; ch++)
                    {
                        double sum = bias?.Data[ch] ?? 0.0;
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++)
                            {
                                int ih = oh * kh + i, iw = ow * kw + j;
                                sum += weight.Data[(ch * kh + i) * kw + j] * x.Data[((f * h + ih) * w + iw) * c + ch];
                            }
                        y.Data[((f * ho + oh) * wo + ow) * c + ch] = sum;
                    }
        return y;
    }

    /// <summary>
    /// Gradients of x, weight and bias (the bias gradient is returned even when the layer has none). dx is zero in the
    /// dropped bottom/right remainder.
    /// </summary>
    public static (RefTensor Dx, RefTensor DWeight, RefTensor DBias) Backward(RefTensor x, RefTensor weight, RefTensor dy)
    {
        var yShape = OutputShape(x.Shape, weight.Shape, null);
        if (!dy.Shape.AsSpan().SequenceEqual(yShape))
            throw new ShapeMismatchException($"op '{OpName}': dy must be {Shape.Format(yShape)}, got {Shape.Format(dy.Shape)}");
        int frames = x.Dim(0) * x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kh = weight.Dim(2), kw = weight.Dim(3), ho = yShape[2], wo = yShape[3];
        var dx = new RefTensor((int[])x.Shape.Clone());
        var dWeight = new RefTensor((int[])weight.Shape.Clone());
        var dBias = new RefTensor(c);
        for (int f = 0; f < frames; f++)
            for (int oh = 0; oh < ho; oh++)
                for (int ow = 0; ow < wo; ow++)
                    for (int ch = 0; ch < c; ch++)
                    {
                        double g = dy.Data[((f * ho + oh) * wo + ow) * c + ch];
                        dBias.Data[ch] += g;
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++)
                            {
                                int xi = ((f * h + oh * kh + i) * w + ow * kw + j) * c + ch;
                                int wi = (ch * kh + i) * kw + j;
                                dx.Data[xi] += g * weight.Data[wi];
                                dWeight.Data[wi] += g * x.Data[xi];
                            }
                    }
        return (dx, dWeight, dBias);
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("k2_b2_t1_h5w7_c3_ragged", new Dictionary<string, int[]>
        {
            ["x"] = [2, 1, 5, 7, 3], ["weight"] = [3, 1, 2, 2], ["bias"] = [3],
        }, new OpParams());
        yield return new OpCase("k4_b2_t1_h9w10_c2_ragged", new Dictionary<string, int[]>
        {
            ["x"] = [2, 1, 9, 10, 2], ["weight"] = [2, 1, 4, 4], ["bias"] = [2],
        }, new OpParams());
        yield return new OpCase("k2_t2_h4w6_c2_exact_nobias", new Dictionary<string, int[]>
        {
            ["x"] = [1, 2, 4, 6, 2], ["weight"] = [2, 1, 2, 2],
        }, new OpParams());
        yield return new OpCase("k3x2_t1_h7w5_c2_nonsquare", new Dictionary<string, int[]>
        {
            ["x"] = [1, 1, 7, 5, 2], ["weight"] = [2, 1, 3, 2], ["bias"] = [2],
        }, new OpParams());
        yield return new OpCase("k1_t1_h3w2_c2_pointwise", new Dictionary<string, int[]>
        {
            ["x"] = [1, 1, 3, 2, 2], ["weight"] = [2, 1, 1, 1], ["bias"] = [2],
        }, new OpParams());
        // Backend parity at model-like width: 1080P's 68×120 grid in miniature (17×30, k = 4 leaves a 1×2 remainder).
        yield return new OpCase("k4_t1_h17w30_c64", new Dictionary<string, int[]>
        {
            ["x"] = [1, 1, 17, 30, 64], ["weight"] = [64, 1, 4, 4], ["bias"] = [64],
        }, new OpParams()) { GradientCheck = false };
        yield return new OpCase("k2_t2_h17w30_c64", new Dictionary<string, int[]>
        {
            ["x"] = [1, 2, 17, 30, 64], ["weight"] = [64, 1, 2, 2], ["bias"] = [64],
        }, new OpParams()) { GradientCheck = false };
    }
}
