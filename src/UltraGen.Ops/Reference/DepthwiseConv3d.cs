using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>depthwise_conv3d</c>: a depthwise (groups = C) kt×kh×kw convolution over (T, H, W), stride 1, zero padding k/2 on
/// each axis (odd kernel sizes only, so the output has the input's shape), on channels-last video x (B, T, H, W, C).
/// It equals torch Conv3d(C, C, 3, padding=1, groups=C) applied to (B, C, T, H, W) for the model's 3×3×3 kernel.
/// The weight keeps the PyTorch layout (C, 1, kt, kh, kw), indexed [c, 0, dt, dh, dw]. This is UltraGen's
/// <c>upsample_conv</c> and <c>upsample_conv_hierachcal</c> (spec §1.3, §4 item 7).
/// The static <see cref="Forward"/>/<see cref="Backward"/> pair is reused by the composite references.
/// </summary>
public sealed class DepthwiseConv3dOp : Op
{
    private const string OpName = "depthwise_conv3d";

    public override string Name => OpName;

    public override string Summary => "depthwise 3×3×3 (any odd size) conv over (T,H,W), stride 1, zero pad k/2, on (B,T,H,W,C)";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(B, T, H, W, C)"),
        new("weight", "(C, 1, kt, kh, kw), odd sizes"),
        new("bias", "(C)", Optional: true),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(B, T, H, W, C)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var x = RequireShape(shapes, "x", 5);
        var weight = RequireShape(shapes, "weight", 5);
        shapes.TryGetValue("bias", out var bias);
        CheckShapes(x, weight, bias);
        return Single("y", (int[])x.Clone());
    }

    /// <summary>Checks x, weight and (optional) bias shapes; errors are <see cref="ShapeMismatchException"/>.</summary>
    public static void CheckShapes(int[] x, int[] weight, int[]? bias)
    {
        if (x.Length != 5)
            throw new ShapeMismatchException($"op '{OpName}': input 'x' must be (B, T, H, W, C), got {Shape.Format(x)}");
        if (weight.Length != 5 || weight[1] != 1)
            throw new ShapeMismatchException($"op '{OpName}': input 'weight' must be (C, 1, kt, kh, kw), got {Shape.Format(weight)}");
        int c = x[4];
        if (weight[0] != c)
            throw new ShapeMismatchException(
                $"op '{OpName}': weight has {weight[0]} channels but x has C = {c} (x {Shape.Format(x)}, weight {Shape.Format(weight)})");
        for (int axis = 2; axis < 5; axis++)
            if (weight[axis] < 1 || weight[axis] % 2 == 0)
                throw new ShapeMismatchException(
                    $"op '{OpName}': kernel sizes must be odd (padding k/2 keeps the shape), got weight {Shape.Format(weight)}");
        if (bias is not null && (bias.Length != 1 || bias[0] != c))
            throw new ShapeMismatchException($"op '{OpName}': input 'bias' must be ({c}), got {Shape.Format(bias)}");
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
        CheckShapes(x.Shape, weight.Shape, bias?.Shape);
        int batch = x.Dim(0), t = x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kt = weight.Dim(2), kh = weight.Dim(3), kw = weight.Dim(4);
        int pt = kt / 2, ph = kh / 2, pw = kw / 2;
        var y = new RefTensor((int[])x.Shape.Clone());
        for (int b = 0; b < batch; b++)
            for (int ot = 0; ot < t; ot++)
                for (int oh = 0; oh < h; oh++)
                    for (int ow = 0; ow < w; ow++)
                        for (int ch = 0; ch < c; ch++)
                        {
                            double sum = bias?.Data[ch] ?? 0.0;
                            for (int dt = 0; dt < kt; dt++)
                            {
                                int it = ot + dt - pt;
                                if (it < 0 || it >= t) continue;
                                for (int dh = 0; dh < kh; dh++)
                                {
                                    int ih = oh + dh - ph;
                                    if (ih < 0 || ih >= h) continue;
                                    for (int dw = 0; dw < kw; dw++)
                                    {
                                        int iw = ow + dw - pw;
                                        if (iw < 0 || iw >= w) continue;
                                        sum += weight.Data[((ch * kt + dt) * kh + dh) * kw + dw]
                                             * x.Data[((((b * t) + it) * h + ih) * w + iw) * c + ch];
                                    }
                                }
                            }
                            y.Data[((((b * t) + ot) * h + oh) * w + ow) * c + ch] = sum;
                        }
        return y;
    }

    /// <summary>Gradients of x, weight and bias (the bias gradient is returned even when the layer has none).</summary>
    public static (RefTensor Dx, RefTensor DWeight, RefTensor DBias) Backward(RefTensor x, RefTensor weight, RefTensor dy)
    {
        CheckShapes(x.Shape, weight.Shape, null);
        if (!dy.Shape.AsSpan().SequenceEqual(x.Shape))
            throw new ShapeMismatchException($"op '{OpName}': dy must be {Shape.Format(x.Shape)}, got {Shape.Format(dy.Shape)}");
        int batch = x.Dim(0), t = x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kt = weight.Dim(2), kh = weight.Dim(3), kw = weight.Dim(4);
        int pt = kt / 2, ph = kh / 2, pw = kw / 2;
        var dx = new RefTensor((int[])x.Shape.Clone());
        var dWeight = new RefTensor((int[])weight.Shape.Clone());
        var dBias = new RefTensor(c);
        for (int b = 0; b < batch; b++)
            for (int ot = 0; ot < t; ot++)
                for (int oh = 0; oh < h; oh++)
                    for (int ow = 0; ow < w; ow++)
                        for (int ch = 0; ch < c; ch++)
                        {
                            double g = dy.Data[((((b * t) + ot) * h + oh) * w + ow) * c + ch];
                            dBias.Data[ch] += g;
                            for (int dt = 0; dt < kt; dt++)
                            {
                                int it = ot + dt - pt;
                                if (it < 0 || it >= t) continue;
                                for (int dh = 0; dh < kh; dh++)
                                {
                                    int ih = oh + dh - ph;
                                    if (ih < 0 || ih >= h) continue;
                                    for (int dw = 0; dw < kw; dw++)
                                    {
                                        int iw = ow + dw - pw;
                                        if (iw < 0 || iw >= w) continue;
                                        int xi = ((((b * t) + it) * h + ih) * w + iw) * c + ch;
                                        int wi = ((ch * kt + dt) * kh + dh) * kw + dw;
                                        dx.Data[xi] += g * weight.Data[wi];
                                        dWeight.Data[wi] += g * x.Data[xi];
                                    }
                                }
                            }
                        }
        return (dx, dWeight, dBias);
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("k3_b2_t1_h4w5_c3", new Dictionary<string, int[]>
        {
            ["x"] = [2, 1, 4, 5, 3], ["weight"] = [3, 1, 3, 3, 3], ["bias"] = [3],
        }, new OpParams());
        yield return new OpCase("k3_t3_h4w4_c2_nobias", new Dictionary<string, int[]>
        {
            ["x"] = [1, 3, 4, 4, 2], ["weight"] = [2, 1, 3, 3, 3],
        }, new OpParams());
        yield return new OpCase("k3_t3_h2w1_c2_tiny", new Dictionary<string, int[]>
        {
            ["x"] = [1, 3, 2, 1, 2], ["weight"] = [2, 1, 3, 3, 3], ["bias"] = [2],
        }, new OpParams());
        yield return new OpCase("k1x5x3_t2_h5w4_c2", new Dictionary<string, int[]>
        {
            ["x"] = [1, 2, 5, 4, 2], ["weight"] = [2, 1, 1, 5, 3], ["bias"] = [2],
        }, new OpParams());
        yield return new OpCase("k3_t1_h17w30_c64", new Dictionary<string, int[]>
        {
            ["x"] = [1, 1, 17, 30, 64], ["weight"] = [64, 1, 3, 3, 3], ["bias"] = [64],
        }, new OpParams()) { GradientCheck = false };
        yield return new OpCase("k3_t3_h17w30_c64", new Dictionary<string, int[]>
        {
            ["x"] = [1, 3, 17, 30, 64], ["weight"] = [64, 1, 3, 3, 3], ["bias"] = [64],
        }, new OpParams()) { GradientCheck = false };
    }
}
