namespace UltraGen.Ops;

/// <summary>
/// <c>gelu_tanh</c>: torch GELU(approximate='tanh'), 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), elementwise on any shape
/// (Wan's FFN and text embedding).
/// </summary>
public sealed class GeluTanhOp : Op
{
    public override string Name => "gelu_tanh";

    public override string Summary => "y = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) elementwise (torch GELU approximate='tanh')";

    public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("x", "(*)")];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(*)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        if (!shapes.TryGetValue("x", out var x)) throw ShapeError("input 'x' is missing");
        return Single("y", (int[])x.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(inputs.Get("x")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters) =>
        inputGradients.SetIfRequested("x", Backward(inputs.Get("x"), outputGradients.Get("y")));

    public static RefTensor Forward(RefTensor x) => Activations.Map(x, Activations.GeluTanh);

    public static RefTensor Backward(RefTensor x, RefTensor dy) => Activations.MapBackward(x, dy, Activations.GeluTanhDerivative);

    public override IEnumerable<OpCase> Cases()
    {
        var wide = new Dictionary<string, (double, double)> { ["x"] = (-5.0, 5.0) };
        yield return new OpCase("n32", new Dictionary<string, int[]> { ["x"] = [32] }, new OpParams());
        yield return new OpCase("b2_n3_d8_wide", new Dictionary<string, int[]> { ["x"] = [2, 3, 8] }, new OpParams(), wide);
        yield return new OpCase("b2_n40_d128_wide", new Dictionary<string, int[]> { ["x"] = [2, 40, 128] }, new OpParams(), wide)
        {
            GradientCheck = false,
        };
    }
}
