using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>rms_norm</c>: y = x / √(mean(x²) + eps) ⊙ weight over the last dim (Wan's q/k norm over the full model dim, before
/// the head split, spec §2.2). The static <see cref="Forward"/>/<see cref="Backward"/> pair is reused by the composite
/// references.
/// </summary>
public sealed class RmsNormOp : Op
{
    public const double DefaultEps = 1e-6;

    public override string Name => "rms_norm";

    public override string Summary => "y = x / sqrt(mean(x²) + eps) ⊙ weight over the last dim";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(*, D)"),
        new("weight", "(D)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(*, D)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("eps", "double", "1e-6", "added to mean(x²) under the square root"),
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        if (!shapes.TryGetValue("x", out var x) || x.Length < 1) throw ShapeError("input 'x' must have rank ≥ 1 (*, D)");
        if (x[^1] < 1) throw ShapeError($"x's last dim must be at least 1, got {Shape.Format(x)}");
        ExpectShape(shapes, "weight", x[^1]);
        double eps = parameters.GetDouble("eps", DefaultEps);
        if (!(eps >= 0) || double.IsInfinity(eps))
            throw new OpParameterException($"op '{Name}': eps must be a finite number ≥ 0, got {eps}");
        return Single("y", (int[])x.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(inputs.Get("x"), inputs.Get("weight"), parameters.GetDouble("eps", DefaultEps)));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dx, dWeight) = Backward(inputs.Get("x"), inputs.Get("weight"), outputGradients.Get("y"), parameters.GetDouble("eps", DefaultEps));
        inputGradients.SetIfRequested("x", dx);
        inputGradients.SetIfRequested("weight", dWeight);
    }

    public static RefTensor Forward(RefTensor x, RefTensor weight, double eps)
    {
        int dim = CheckArguments(x, weight);
        int rows = x.Length / dim;
        var y = new RefTensor((int[])x.Shape.Clone());
        for (int row = 0; row < rows; row++)
        {
            int offset = row * dim;
            double r = InverseRms(x.Data, offset, dim, eps);
            for (int i = 0; i < dim; i++) y.Data[offset + i] = x.Data[offset + i] * r * weight.Data[i];
        }
        return y;
    }

    /// <summary>
    /// With r = (mean(x²) + eps)^(−1/2) and g = dy ⊙ weight: dx = r·g − r³·x·(Σ g·x)/D and dWeight = Σ_rows dy ⊙ x·r.
    /// </summary>
    public static (RefTensor Dx, RefTensor DWeight) Backward(RefTensor x, RefTensor weight, RefTensor dy, double eps)
    {
        int dim = CheckArguments(x, weight);
        if (dy.Length != x.Length)
            throw new ShapeMismatchException($"rms_norm: dy {Shape.Format(dy.Shape)} does not match x {Shape.Format(x.Shape)}");
        int rows = x.Length / dim;
        var dx = new RefTensor((int[])x.Shape.Clone());
        var dWeight = new RefTensor(dim);
        for (int row = 0; row < rows; row++)
        {
            int offset = row * dim;
            double r = InverseRms(x.Data, offset, dim, eps);
            double gx = 0;
            for (int i = 0; i < dim; i++)
            {
                double g = dy.Data[offset + i] * weight.Data[i];
                gx += g * x.Data[offset + i];
                dWeight.Data[i] += dy.Data[offset + i] * x.Data[offset + i] * r;
            }
            double correction = r * r * r * gx / dim;
            for (int i = 0; i < dim; i++)
                dx.Data[offset + i] = r * dy.Data[offset + i] * weight.Data[i] - correction * x.Data[offset + i];
        }
        return (dx, dWeight);
    }

    private static double InverseRms(double[] data, int offset, int dim, double eps)
    {
        double sumSquares = 0;
        for (int i = 0; i < dim; i++) sumSquares += data[offset + i] * data[offset + i];
        return 1.0 / Math.Sqrt(sumSquares / dim + eps);
    }

    private static int CheckArguments(RefTensor x, RefTensor weight)
    {
        if (x.Rank < 1 || weight.Rank != 1 || weight.Length != x.Dim(-1))
            throw new ShapeMismatchException(
                $"rms_norm: weight {Shape.Format(weight.Shape)} must be (D) with D the last dim of x {Shape.Format(x.Shape)}");
        return weight.Length;
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("rows3_d16", new Dictionary<string, int[]>
        {
            ["x"] = [3, 16], ["weight"] = [16],
        }, new OpParams());
        yield return new OpCase("batch2x3_d12_eps1e-2", new Dictionary<string, int[]>
        {
            ["x"] = [2, 3, 12], ["weight"] = [12],
        }, OpParams.Of(("eps", 1e-2)));
        // One channel: y = weight·x/√(x² + eps). A large eps keeps dy/dx = weight·eps/(x² + eps)^(3/2) of order one (with
        // eps = 1e-6 it is ~1e-6, below float16's normal range and the finite-difference noise floor).
        yield return new OpCase("d1_eps0.5", new Dictionary<string, int[]>
        {
            ["x"] = [4, 1], ["weight"] = [1],
        }, OpParams.Of(("eps", 0.5)));
        yield return new OpCase("tokens32_d1536", new Dictionary<string, int[]>
        {
            ["x"] = [32, 1536], ["weight"] = [1536],
        }, new OpParams()) { GradientCheck = false };
    }
}
