using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>Parameter gradients of <see cref="GateMlpOp"/> (t is not differentiated).</summary>
public sealed record GateMlpGradients(
    RefTensor DE0W, RefTensor DE0B, RefTensor DE2W, RefTensor DE2B, RefTensor DP1W, RefTensor DP1B);

/// <summary>
/// <c>gate_mlp</c>: UltraGen's per-layer time gate (spec §1.3),
/// gate = sigmoid(P(SiLU(E2(SiLU(E0(sin_F(t))))))), i.e. <c>alpha_time_embedding</c> = Seq(Linear(F→D) "embedding.0", SiLU,
/// Linear(D→D) "embedding.2") and <c>alpha_time_projection</c> = Seq(SiLU, Linear(D→D) "projection.1", Sigmoid).
/// F (256 in the model) is embedding.0.weight's second dim; sin_F is <see cref="TimestepEmbeddingOp"/> with dim F.
/// </summary>
public sealed class GateMlpOp : Op
{
    public override string Name => "gate_mlp";

    public override string Summary => "gate = sigmoid(P(SiLU(E2(SiLU(E0(sinusoid_F(t))))))): UltraGen's per-channel time gate (B, D)";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("t", "(B)", Differentiable: false),
        new("embedding.0.weight", "(D, F)"),
        new("embedding.0.bias", "(D)"),
        new("embedding.2.weight", "(D, D)"),
        new("embedding.2.bias", "(D)"),
        new("projection.1.weight", "(D, D)"),
        new("projection.1.bias", "(D)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("gate", "(B, D)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var t = RequireShape(shapes, "t", 1);
        var e0W = RequireShape(shapes, "embedding.0.weight", 2);
        int d = e0W[0], f = e0W[1];
        if (f < 2 || f % 2 != 0)
            throw ShapeError($"embedding.0.weight {Shape.Format(e0W)} must be (D, F) with F even and ≥ 2 (the sinusoid's cos + sin halves)");
        ExpectShape(shapes, "embedding.0.bias", d);
        ExpectShape(shapes, "embedding.2.weight", d, d);
        ExpectShape(shapes, "embedding.2.bias", d);
        ExpectShape(shapes, "projection.1.weight", d, d);
        ExpectShape(shapes, "projection.1.bias", d);
        return Single("gate", t[0], d);
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("gate", Forward(
            inputs.Get("t"),
            inputs.Get("embedding.0.weight"), inputs.Get("embedding.0.bias"),
            inputs.Get("embedding.2.weight"), inputs.Get("embedding.2.bias"),
            inputs.Get("projection.1.weight"), inputs.Get("projection.1.bias")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var gradients = Backward(
            inputs.Get("t"),
            inputs.Get("embedding.0.weight"), inputs.Get("embedding.0.bias"),
            inputs.Get("embedding.2.weight"), inputs.Get("embedding.2.bias"),
            inputs.Get("projection.1.weight"), inputs.Get("projection.1.bias"),
            outputGradients.Get("gate"));
        inputGradients.SetIfRequested("embedding.0.weight", gradients.DE0W);
        inputGradients.SetIfRequested("embedding.0.bias", gradients.DE0B);
        inputGradients.SetIfRequested("embedding.2.weight", gradients.DE2W);
        inputGradients.SetIfRequested("embedding.2.bias", gradients.DE2B);
        inputGradients.SetIfRequested("projection.1.weight", gradients.DP1W);
        inputGradients.SetIfRequested("projection.1.bias", gradients.DP1B);
    }

    /// <summary>The intermediate activations of the gate MLP, kept for the backward.</summary>
    private readonly record struct Activated(RefTensor Sinusoid, RefTensor H1, RefTensor A1, RefTensor H2, RefTensor A2, RefTensor H3);

    private static Activated Run(RefTensor t, RefTensor e0W, RefTensor e0B, RefTensor e2W, RefTensor e2B, RefTensor p1W, RefTensor p1B)
    {
        var sinusoid = TimestepEmbeddingOp.Forward(t, e0W.Dim(1));
        var h1 = LinearOp.Forward(sinusoid, e0W, e0B);
        var a1 = Activations.Silu(h1);
        var h2 = LinearOp.Forward(a1, e2W, e2B);
        var a2 = Activations.Silu(h2);
        var h3 = LinearOp.Forward(a2, p1W, p1B);
        return new Activated(sinusoid, h1, a1, h2, a2, h3);
    }

    public static RefTensor Forward(RefTensor t, RefTensor e0W, RefTensor e0B, RefTensor e2W, RefTensor e2B, RefTensor p1W, RefTensor p1B) =>
        Activations.Sigmoid(Run(t, e0W, e0B, e2W, e2B, p1W, p1B).H3);

    public static GateMlpGradients Backward(
        RefTensor t, RefTensor e0W, RefTensor e0B, RefTensor e2W, RefTensor e2B, RefTensor p1W, RefTensor p1B, RefTensor dGate)
    {
        var act = Run(t, e0W, e0B, e2W, e2B, p1W, p1B);
        var dH3 = Activations.SigmoidBackward(act.H3, dGate);
        var (dA2, dP1W, dP1B) = LinearOp.Backward(act.A2, p1W, dH3);
        var dH2 = Activations.SiluBackward(act.H2, dA2);
        var (dA1, dE2W, dE2B) = LinearOp.Backward(act.A1, e2W, dH2);
        var dH1 = Activations.SiluBackward(act.H1, dA1);
        var (_, dE0W, dE0B) = LinearOp.Backward(act.Sinusoid, e0W, dH1);
        return new GateMlpGradients(dE0W, dE0B, dE2W, dE2B, dP1W, dP1B);
    }

    private static Dictionary<string, int[]> Shapes(int b, int f, int d) => new()
    {
        ["t"] = [b],
        ["embedding.0.weight"] = [d, f], ["embedding.0.bias"] = [d],
        ["embedding.2.weight"] = [d, d], ["embedding.2.bias"] = [d],
        ["projection.1.weight"] = [d, d], ["projection.1.bias"] = [d],
    };

    private static readonly Dictionary<string, (double, double)> s_timesteps = new() { ["t"] = (0.0, 1000.0) };

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("b2_f16_d8", Shapes(2, 16, 8), new OpParams(), s_timesteps);
        yield return new OpCase("b3_f32_d6", Shapes(3, 32, 6), new OpParams(), s_timesteps);
        yield return new OpCase("b1_f16_d4", Shapes(1, 16, 4), new OpParams(), s_timesteps);
        // Model-sized case with weights at a trained network's scale (±1/√fan-in, like torch's Linear init): with ±1
        // weights over 128 channels the pre-sigmoid values reach the tens, the gate saturates and its f32 gradients
        // become pure rounding noise, which tests nothing.
        var modelScale = new Dictionary<string, (double, double)>(s_timesteps)
        {
            ["embedding.0.weight"] = (-1 / 16.0, 1 / 16.0),
            ["embedding.2.weight"] = (-0.088, 0.088),
            ["projection.1.weight"] = (-0.088, 0.088),
        };
        yield return new OpCase("b2_f256_d128", Shapes(2, 256, 128), new OpParams(), modelScale) { GradientCheck = false };
    }
}
