using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>linear</c>: y = x Wᵀ + b over the last dim, as torch.nn.Linear (weight stored (out, in)).
/// The static <see cref="Forward"/>/<see cref="Backward"/> pair is reused by the composite references.
/// </summary>
public sealed class LinearOp : Op
{
    public override string Name => "linear";

    public override string Summary => "y = x·Wᵀ + b over the last dim (torch.nn.Linear layout)";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(*, in)"),
        new("weight", "(out, in)"),
        new("bias", "(out)", Optional: true),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(*, out)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var weight = RequireShape(shapes, "weight", 2);
        if (!shapes.TryGetValue("x", out var x) || x.Length < 1) throw ShapeError("input 'x' must have rank ≥ 1 (*, in)");
        if (x[^1] != weight[1])
            throw ShapeError($"x's last dim {x[^1]} does not match weight's in-features {weight[1]} (weight {Shape.Format(weight)})");
        ExpectShapeIfPresent(shapes, "bias", weight[0]);
        var y = (int[])x.Clone();
        y[^1] = weight[0];
        return Single("y", y);
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
        int inFeatures = weight.Dim(1), outFeatures = weight.Dim(0);
        int rows = x.Length / inFeatures;
        var yShape = (int[])x.Shape.Clone();
        yShape[^1] = outFeatures;
        var y = new RefTensor(yShape);
        for (int row = 0; row < rows; row++)
            for (int o = 0; o < outFeatures; o++)
            {
                double sum = bias?.Data[o] ?? 0.0;
                for (int i = 0; i < inFeatures; i++) sum += x.Data[row * inFeatures + i] * weight.Data[o * inFeatures + i];
                y.Data[row * outFeatures + o] = sum;
            }
        return y;
    }

    /// <summary>Gradients of x, weight and bias (the bias gradient is returned even when the layer has none).</summary>
    public static (RefTensor Dx, RefTensor DWeight, RefTensor DBias) Backward(RefTensor x, RefTensor weight, RefTensor dy)
    {
        int inFeatures = weight.Dim(1), outFeatures = weight.Dim(0);
        int rows = x.Length / inFeatures;
        var dx = new RefTensor((int[])x.Shape.Clone());
        var dWeight = new RefTensor(outFeatures, inFeatures);
        var dBias = new RefTensor(outFeatures);
        for (int row = 0; row < rows; row++)
            for (int o = 0; o < outFeatures; o++)
            {
                double g = dy.Data[row * outFeatures + o];
                dBias.Data[o] += g;
                for (int i = 0; i < inFeatures; i++)
                {
                    dx.Data[row * inFeatures + i] += g * weight.Data[o * inFeatures + i];
                    dWeight.Data[o * inFeatures + i] += g * x.Data[row * inFeatures + i];
                }
            }
        return (dx, dWeight, dBias);
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("rows3_in5_out4", new Dictionary<string, int[]>
        {
            ["x"] = [3, 5], ["weight"] = [4, 5], ["bias"] = [4],
        }, new OpParams());
        yield return new OpCase("batch2x3_in8_out6_nobias", new Dictionary<string, int[]>
        {
            ["x"] = [2, 3, 8], ["weight"] = [6, 8],
        }, new OpParams());
        yield return new OpCase("tokens64_in32_out48", new Dictionary<string, int[]>
        {
            ["x"] = [64, 32], ["weight"] = [48, 32], ["bias"] = [48],
        }, new OpParams()) { GradientCheck = false };
    }
}
