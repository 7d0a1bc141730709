using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>gated_residual</c>: out = x + gate ⊙ y, the DiT block's gated residual (spec §2.2: x + e₂·attn(...) after
/// self-attention, x + e₅·ffn(...) after the MLP), with the per-sample gate (B, D) broadcast over the N tokens. A
/// primitive of its own so the residual stream stays in device memory instead of round-tripping through modulate/add.
/// </summary>
public sealed class GatedResidualOp : Op
{
    public override string Name => "gated_residual";

    public override string Summary => "out = x + gate⊙y, gate (B, D) broadcast over tokens (the DiT blocks' gated residual)";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(B, N, D)"),
        new("y", "(B, N, D)"),
        new("gate", "(B, D)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("out", "(B, N, D)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var x = RequireShape(shapes, "x", 3);
        ExpectShape(shapes, "y", x);
        ExpectShape(shapes, "gate", x[0], x[2]);
        return Single("out", (int[])x.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("out", Forward(inputs.Get("x"), inputs.Get("y"), inputs.Get("gate")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dx, dy, dGate) = Backward(inputs.Get("y"), inputs.Get("gate"), outputGradients.Get("out"));
        inputGradients.SetIfRequested("x", dx);
        inputGradients.SetIfRequested("y", dy);
        inputGradients.SetIfRequested("gate", dGate);
    }

    public static RefTensor Forward(RefTensor x, RefTensor y, RefTensor gate)
    {
        int b = x.Dim(0), n = x.Dim(1), d = x.Dim(2);
        var result = new RefTensor((int[])x.Shape.Clone());
        for (int bi = 0; bi < b; bi++)
            for (int t = 0; t < n; t++)
                for (int c = 0; c < d; c++)
                {
                    int i = (bi * n + t) * d + c;
                    result.Data[i] = x.Data[i] + gate.Data[bi * d + c] * y.Data[i];
                }
        return result;
    }

    /// <summary>dx = dout; dy = gate ⊙ dout; dgate = Σ_N dout ⊙ y.</summary>
    public static (RefTensor Dx, RefTensor Dy, RefTensor DGate) Backward(RefTensor y, RefTensor gate, RefTensor dOut)
    {
        int b = y.Dim(0), n = y.Dim(1), d = y.Dim(2);
        var dx = dOut.Clone();
        var dy = new RefTensor((int[])y.Shape.Clone());
        var dGate = new RefTensor(b, d);
        for (int bi = 0; bi < b; bi++)
            for (int t = 0; t < n; t++)
                for (int c = 0; c < d; c++)
                {
                    int i = (bi * n + t) * d + c, p = bi * d + c;
                    double g = dOut.Data[i];
                    dy.Data[i] = g * gate.Data[p];
                    dGate.Data[p] += g * y.Data[i];
                }
        return (dx, dy, dGate);
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("b1_n5_d8", new Dictionary<string, int[]>
        {
            ["x"] = [1, 5, 8], ["y"] = [1, 5, 8], ["gate"] = [1, 8],
        }, new OpParams());
        yield return new OpCase("b2_n7_d5", new Dictionary<string, int[]>
        {
            ["x"] = [2, 7, 5], ["y"] = [2, 7, 5], ["gate"] = [2, 5],
        }, new OpParams());
        yield return new OpCase("b2_n40_d128", new Dictionary<string, int[]>
        {
            ["x"] = [2, 40, 128], ["y"] = [2, 40, 128], ["gate"] = [2, 128],
        }, new OpParams()) { GradientCheck = false };
        // More than 256 tokens: the CUDA gate reduction splits the tokens (2 splits), the Ilgpu one cycles its slices.
        yield return new OpCase("b2_n300_d37", new Dictionary<string, int[]>
        {
            ["x"] = [2, 300, 37], ["y"] = [2, 300, 37], ["gate"] = [2, 37],
        }, new OpParams()) { GradientCheck = false };
    }
}
