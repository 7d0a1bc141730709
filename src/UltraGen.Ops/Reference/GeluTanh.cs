namespace UltraGen.Ops;

/// <summary>
/// An elementwise activation y = f(x) on any shape: one shape rule, one pair of reference loops, one set of cases
/// for every activation in the catalogue.
/// </summary>
public abstract class ElementwiseActivationOp : Op
{
    public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("x", "(*)")];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(*)")];

    /// <summary>f(x) for one element.</summary>
    public abstract double Apply(double x);

    /// <summary>f′(x) for one element.</summary>
    public abstract double Derivative(double x);

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        if (!shapes.TryGetValue("x", out var x)) throw ShapeError("input 'x' is missing");
        return Single("y", (int[])x.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Activations.Map(inputs.Get("x"), Apply));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters) =>
        inputGradients.SetIfRequested("x", Activations.MapBackward(inputs.Get("x"), outputGradients.Get("y"), Derivative));

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

/// <summary>
/// <c>gelu_tanh</c>: torch GELU(approximate='tanh'), 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) (Wan's FFN and text embedding).
/// </summary>
public sealed class GeluTanhOp : ElementwiseActivationOp
{
    public override string Name => "gelu_tanh";

    public override string Summary => "y = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) elementwise (torch GELU approximate='tanh')";

    public override double Apply(double x) => Activations.GeluTanh(x);

    public override double Derivative(double x) => Activations.GeluTanhDerivative(x);

    public static RefTensor Forward(RefTensor x) => Activations.Map(x, Activations.GeluTanh);

    public static RefTensor Backward(RefTensor x, RefTensor dy) => Activations.MapBackward(x, dy, Activations.GeluTanhDerivative);
}

/// <summary><c>silu</c>: x·sigmoid(x) (Wan's time embedding, the UltraGen gates).</summary>
public sealed class SiluOp : ElementwiseActivationOp
{
    public override string Name => "silu";

    public override string Summary => "y = x·sigmoid(x) elementwise";

    public override double Apply(double x) => Activations.Silu(x);

    public override double Derivative(double x) => Activations.SiluDerivative(x);
}

/// <summary><c>sigmoid</c>: 1/(1 + e^−x) (the UltraGen gates' output).</summary>
public sealed class SigmoidOp : ElementwiseActivationOp
{
    public override string Name => "sigmoid";

    public override string Summary => "y = 1/(1 + e^−x) elementwise";

    public override double Apply(double x) => Activations.Sigmoid(x);

    public override double Derivative(double x) => Activations.SigmoidDerivative(x);
}
