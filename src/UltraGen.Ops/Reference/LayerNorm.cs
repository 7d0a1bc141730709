using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>layer_norm</c>: torch.nn.LayerNorm over the last dim with the biased variance,
/// y = (x − μ)/√(σ² + eps)·weight + bias. Wan uses it without affine (LN1, LN2, head) and with affine (LN3, eps 1e-6).
/// </summary>
public sealed class LayerNormOp : Op
{
    public const double DefaultEps = 1e-6;

    public override string Name => "layer_norm";

    public override string Summary => "y = (x − mean)/sqrt(biased var + eps)·weight + bias over the last dim (torch.nn.LayerNorm)";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(*, D)"),
        new("weight", "(D)", Optional: true),
        new("bias", "(D)", Optional: true),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(*, D)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("eps", "double", "1e-6", "added to the biased variance before the square root (> 0)"),
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        if (!shapes.TryGetValue("x", out var x)) throw ShapeError("input 'x' is missing");
        if (x.Length < 1) throw ShapeError($"input 'x' must have rank ≥ 1 (*, D), got {Shape.Format(x)}");
        if (x[^1] < 1) throw ShapeError($"input 'x' must have a normalized dim D ≥ 1 (*, D), got {Shape.Format(x)}");
        ExpectShapeIfPresent(shapes, "weight", x[^1]);
        ExpectShapeIfPresent(shapes, "bias", x[^1]);
        Eps(parameters);
        return Single("y", (int[])x.Clone());
    }

    private double Eps(OpParams parameters)
    {
        double eps = parameters.GetDouble("eps", DefaultEps);
        if (!(eps > 0) || double.IsInfinity(eps))
            throw new OpParameterException($"op '{Name}': parameter 'eps' must be a finite number > 0, got {eps}");
        return eps;
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(inputs.Get("x"), inputs.GetOptional("weight"), inputs.GetOptional("bias"), Eps(parameters)));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dx, dWeight, dBias) = Backward(inputs.Get("x"), inputs.GetOptional("weight"), outputGradients.Get("y"), Eps(parameters));
        inputGradients.SetIfRequested("x", dx);
        inputGradients.SetIfRequested("weight", dWeight);
        inputGradients.SetIfRequested("bias", dBias);
    }

    /// <summary>Mean and 1/√(biased var + eps) of row <paramref name="row"/> of <paramref name="x"/> (row length <paramref name="d"/>).</summary>
    private static (double Mean, double Rstd) Stats(double[] x, int row, int d, double eps)
    {
        int offset = row * d;
        double mean = 0;
        for (int i = 0; i < d; i++) mean += x[offset + i];
        mean /= d;
        double variance = 0;
        for (int i = 0; i < d; i++)
        {
            double c = x[offset + i] - mean;
            variance += c * c;
        }
        variance /= d;
        return (mean, 1.0 / Math.Sqrt(variance + eps));
    }

    public static RefTensor Forward(RefTensor x, RefTensor? weight, RefTensor? bias, double eps)
    {
        int d = x.Dim(-1);
        int rows = x.Length / d;
        var y = new RefTensor((int[])x.Shape.Clone());
        for (int row = 0; row < rows; row++)
        {
            var (mean, rstd) = Stats(x.Data, row, d, eps);
            for (int i = 0; i < d; i++)
            {
                double value = (x.Data[row * d + i] - mean) * rstd;
                if (weight is not null) value *= weight.Data[i];
                if (bias is not null) value += bias.Data[i];
                y.Data[row * d + i] = value;
            }
        }
        return y;
    }

    /// <summary>
    /// Gradients of x, weight and bias (the affine gradients are returned even when the layer has no affine).
    /// With g = dy·weight and x̂ the normalized row: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
    /// </summary>
    public static (RefTensor Dx, RefTensor DWeight, RefTensor DBias) Backward(RefTensor x, RefTensor? weight, RefTensor dy, double eps)
    {
        int d = x.Dim(-1);
        int rows = x.Length / d;
        var dx = new RefTensor((int[])x.Shape.Clone());
        var dWeight = new RefTensor(d);
        var dBias = new RefTensor(d);
        var xhat = new double[d];
        var g = new double[d];
        for (int row = 0; row < rows; row++)
        {
            int offset = row * d;
            var (mean, rstd) = Stats(x.Data, row, d, eps);
            double meanG = 0, meanGX = 0;
            for (int i = 0; i < d; i++)
            {
                xhat[i] = (x.Data[offset + i] - mean) * rstd;
                double gradient = dy.Data[offset + i];
                dWeight.Data[i] += gradient * xhat[i];
                dBias.Data[i] += gradient;
                g[i] = weight is null ? gradient : gradient * weight.Data[i];
                meanG += g[i];
                meanGX += g[i] * xhat[i];
            }
            meanG /= d;
            meanGX /= d;
            for (int i = 0; i < d; i++) dx.Data[offset + i] = rstd * (g[i] - meanG - xhat[i] * meanGX);
        }
        return (dx, dWeight, dBias);
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("rows3_d8_affine", new Dictionary<string, int[]>
        {
            ["x"] = [3, 8], ["weight"] = [8], ["bias"] = [8],
        }, new OpParams());
        yield return new OpCase("b2_n3_d16_noaffine", new Dictionary<string, int[]>
        {
            ["x"] = [2, 3, 16],
        }, new OpParams());
        yield return new OpCase("b2_n4_d12_affine_eps1e-5", new Dictionary<string, int[]>
        {
            ["x"] = [2, 4, 12], ["weight"] = [12], ["bias"] = [12],
        }, OpParams.Of(("eps", 1e-5)));
        yield return new OpCase("b2_n40_d128_affine", new Dictionary<string, int[]>
        {
            ["x"] = [2, 40, 128], ["weight"] = [128], ["bias"] = [128],
        }, new OpParams()) { GradientCheck = false };
        yield return new OpCase("b1_n40_d64_noaffine", new Dictionary<string, int[]>
        {
            ["x"] = [1, 40, 64],
        }, new OpParams()) { GradientCheck = false };
    }
}
