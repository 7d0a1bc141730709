using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>gate_fusion</c>: the UltraGen branch fusion (spec §1.3), z = α ⊙ (β ⊙ local + (1 − β) ⊙ hier) + (1 − α) ⊙ glob,
/// with the per-sample, per-channel gates α, β (B, D) broadcast over the N tokens (code convention: α weights the local side).
/// </summary>
public sealed class GateFusionOp : Op
{
    public override string Name => "gate_fusion";

    public override string Summary => "z = α⊙(β⊙local + (1−β)⊙hier) + (1−α)⊙glob, gates (B, D) broadcast over tokens";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("local", "(B, N, D)"),
        new("hier", "(B, N, D)"),
        new("glob", "(B, N, D)"),
        new("alpha", "(B, D)"),
        new("beta", "(B, D)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("z", "(B, N, D)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var local = RequireShape(shapes, "local", 3);
        ExpectShape(shapes, "hier", local);
        ExpectShape(shapes, "glob", local);
        ExpectShape(shapes, "alpha", local[0], local[2]);
        ExpectShape(shapes, "beta", local[0], local[2]);
        return Single("z", (int[])local.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("z", Forward(inputs.Get("local"), inputs.Get("hier"), inputs.Get("glob"), inputs.Get("alpha"), inputs.Get("beta")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dLocal, dHier, dGlob, dAlpha, dBeta) = Backward(
            inputs.Get("local"), inputs.Get("hier"), inputs.Get("glob"), inputs.Get("alpha"), inputs.Get("beta"), outputGradients.Get("z"));
        inputGradients.SetIfRequested("local", dLocal);
        inputGradients.SetIfRequested("hier", dHier);
        inputGradients.SetIfRequested("glob", dGlob);
        inputGradients.SetIfRequested("alpha", dAlpha);
        inputGradients.SetIfRequested("beta", dBeta);
    }

    public static RefTensor Forward(RefTensor local, RefTensor hier, RefTensor glob, RefTensor alpha, RefTensor beta)
    {
        int b = local.Dim(0), n = local.Dim(1), d = local.Dim(2);
        var z = new RefTensor((int[])local.Shape.Clone());
        for (int bi = 0; bi < b; bi++)
            for (int t = 0; t < n; t++)
                for (int c = 0; c < d; c++)
                {
                    int i = (bi * n + t) * d + c, p = bi * d + c;
                    double a = alpha.Data[p], be = beta.Data[p];
                    z.Data[i] = a * (be * local.Data[i] + (1.0 - be) * hier.Data[i]) + (1.0 - a) * glob.Data[i];
                }
        return z;
    }

    /// <summary>
    /// dlocal = dz·α·β; dhier = dz·α·(1 − β); dglob = dz·(1 − α);
    /// dα = Σ_N dz·(β·local + (1 − β)·hier − glob); dβ = Σ_N dz·α·(local − hier).
    /// </summary>
    public static (RefTensor DLocal, RefTensor DHier, RefTensor DGlob, RefTensor DAlpha, RefTensor DBeta) Backward(
        RefTensor local, RefTensor hier, RefTensor glob, RefTensor alpha, RefTensor beta, RefTensor dz)
    {
        int b = local.Dim(0), n = local.Dim(1), d = local.Dim(2);
        var dLocal = new RefTensor((int[])local.Shape.Clone());
        var dHier = new RefTensor((int[])local.Shape.Clone());
        var dGlob = new RefTensor((int[])local.Shape.Clone());
        var dAlpha = new RefTensor(b, d);
        var dBeta = new RefTensor(b, d);
        for (int bi = 0; bi < b; bi++)
            for (int t = 0; t < n; t++)
                for (int c = 0; c < d; c++)
                {
                    int i = (bi * n + t) * d + c, p = bi * d + c;
                    double a = alpha.Data[p], be = beta.Data[p], g = dz.Data[i];
                    double l = local.Data[i], h = hier.Data[i];
                    dLocal.Data[i] = g * a * be;
                    dHier.Data[i] = g * a * (1.0 - be);
                    dGlob.Data[i] = g * (1.0 - a);
                    dAlpha.Data[p] += g * (be * l + (1.0 - be) * h - glob.Data[i]);
                    dBeta.Data[p] += g * a * (l - h);
                }
        return (dLocal, dHier, dGlob, dAlpha, dBeta);
    }

    private static Dictionary<string, int[]> Shapes(int b, int n, int d) => new()
    {
        ["local"] = [b, n, d], ["hier"] = [b, n, d], ["glob"] = [b, n, d], ["alpha"] = [b, d], ["beta"] = [b, d],
    };

    // The gates are sigmoid outputs, so cases draw them from (0, 1).
    private static readonly Dictionary<string, (double, double)> s_gates = new() { ["alpha"] = (0.0, 1.0), ["beta"] = (0.0, 1.0) };

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("b1_n4_d8", Shapes(1, 4, 8), new OpParams(), s_gates);
        yield return new OpCase("b2_n3_d6", Shapes(2, 3, 6), new OpParams(), s_gates);
        yield return new OpCase("b2_n40_d128", Shapes(2, 40, 128), new OpParams(), s_gates) { GradientCheck = false };
    }
}
