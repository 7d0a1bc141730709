using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>modulate</c>: Wan's adaLN modulation y = x·(1 + scale) + shift, with the per-sample shift and scale (B, D)
/// broadcast over the N tokens.
/// </summary>
public sealed class ModulateOp : Op
{
    public override string Name => "modulate";

    public override string Summary => "adaLN: y = x·(1 + scale) + shift, shift/scale (B, D) broadcast over tokens";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(B, N, D)"),
        new("shift", "(B, D)"),
        new("scale", "(B, D)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(B, N, D)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var x = RequireShape(shapes, "x", 3);
        ExpectShape(shapes, "shift", x[0], x[2]);
        ExpectShape(shapes, "scale", x[0], x[2]);
        return Single("y", (int[])x.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(inputs.Get("x"), inputs.Get("shift"), inputs.Get("scale")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dx, dShift, dScale) = Backward(inputs.Get("x"), inputs.Get("scale"), outputGradients.Get("y"));
        inputGradients.SetIfRequested("x", dx);
        inputGradients.SetIfRequested("shift", dShift);
        inputGradients.SetIfRequested("scale", dScale);
    }

    public static RefTensor Forward(RefTensor x, RefTensor shift, RefTensor scale)
    {
        int b = x.Dim(0), n = x.Dim(1), d = x.Dim(2);
        var y = new RefTensor((int[])x.Shape.Clone());
        for (int bi = 0; bi < b; bi++)
            for (int t = 0; t < n; t++)
                for (int c = 0; c < d; c++)
                {
                    int i = (bi * n + t) * d + c;
                    y.Data[i] = x.Data[i] * (1.0 + scale.Data[bi * d + c]) + shift.Data[bi * d + c];
                }
        return y;
    }

    /// <summary>dx = dy·(1 + scale); dshift = Σ_N dy; dscale = Σ_N dy·x.</summary>
    public static (RefTensor Dx, RefTensor DShift, RefTensor DScale) Backward(RefTensor x, RefTensor scale, RefTensor dy)
    {
        int b = x.Dim(0), n = x.Dim(1), d = x.Dim(2);
        var dx = new RefTensor((int[])x.Shape.Clone());
        var dShift = new RefTensor(b, d);
        var dScale = new RefTensor(b, d);
        for (int bi = 0; bi < b; bi++)
            for (int t = 0; t < n; t++)
                for (int c = 0; c < d; c++)
                {
                    int i = (bi * n + t) * d + c, p = bi * d + c;
                    double g = dy.Data[i];
                    dx.Data[i] = g * (1.0 + scale.Data[p]);
                    dShift.Data[p] += g;
                    dScale.Data[p] += g * x.Data[i];
                }
        return (dx, dShift, dScale);
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("b1_n5_d8", new Dictionary<string, int[]>
        {
            ["x"] = [1, 5, 8], ["shift"] = [1, 8], ["scale"] = [1, 8],
        }, new OpParams());
        yield return new OpCase("b2_n3_d6", new Dictionary<string, int[]>
        {
            ["x"] = [2, 3, 6], ["shift"] = [2, 6], ["scale"] = [2, 6],
        }, new OpParams());
        yield return new OpCase("b2_n40_d128", new Dictionary<string, int[]>
        {
            ["x"] = [2, 40, 128], ["shift"] = [2, 128], ["scale"] = [2, 128],
        }, new OpParams()) { GradientCheck = false };
    }
}
