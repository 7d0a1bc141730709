using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>lora</c>: the released code's LoRA, y = lora_B(lora_A(x)) = B(A·x + a) + b, both Linear layers with biases and
/// no α/r scaling (spec §1.3). Input names follow the checkpoint (<c>lora_A.weight</c> …).
/// </summary>
public sealed class LoraOp : Op
{
    public override string Name => "lora";

    public override string Summary => "y = lora_B(lora_A(x)) = B·(A·x + a) + b, rank-r bottleneck with biases, no α/r scaling";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(*, in)"),
        new("lora_A.weight", "(r, in)"),
        new("lora_A.bias", "(r)"),
        new("lora_B.weight", "(out, r)"),
        new("lora_B.bias", "(out)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(*, out)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var aWeight = RequireShape(shapes, "lora_A.weight", 2);
        var bWeight = RequireShape(shapes, "lora_B.weight", 2);
        if (!shapes.TryGetValue("x", out var x)) throw ShapeError("input 'x' is missing");
        if (x.Length < 1) throw ShapeError($"input 'x' must have rank ≥ 1 (*, in), got {Shape.Format(x)}");
        if (x[^1] != aWeight[1])
            throw ShapeError($"x's last dim {x[^1]} does not match lora_A.weight's in-features {aWeight[1]} (lora_A.weight {Shape.Format(aWeight)}, rule (r, in))");
        if (bWeight[1] != aWeight[0])
            throw ShapeError($"lora_B.weight {Shape.Format(bWeight)} must be (out, r) with r = {aWeight[0]} from lora_A.weight {Shape.Format(aWeight)}");
        ExpectShape(shapes, "lora_A.bias", aWeight[0]);
        ExpectShape(shapes, "lora_B.bias", bWeight[0]);
        var y = (int[])x.Clone();
        y[^1] = bWeight[0];
        return Single("y", y);
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(
            inputs.Get("x"), inputs.Get("lora_A.weight"), inputs.Get("lora_A.bias"), inputs.Get("lora_B.weight"), inputs.Get("lora_B.bias")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var (dx, dAWeight, dABias, dBWeight, dBBias) = Backward(
            inputs.Get("x"), inputs.Get("lora_A.weight"), inputs.Get("lora_A.bias"), inputs.Get("lora_B.weight"), outputGradients.Get("y"));
        inputGradients.SetIfRequested("x", dx);
        inputGradients.SetIfRequested("lora_A.weight", dAWeight);
        inputGradients.SetIfRequested("lora_A.bias", dABias);
        inputGradients.SetIfRequested("lora_B.weight", dBWeight);
        inputGradients.SetIfRequested("lora_B.bias", dBBias);
    }

    public static RefTensor Forward(RefTensor x, RefTensor aWeight, RefTensor aBias, RefTensor bWeight, RefTensor bBias) =>
        LinearOp.Forward(LinearOp.Forward(x, aWeight, aBias), bWeight, bBias);

    /// <summary>Recomputes the rank-r hidden h = A·x + a, then chains the two Linear backwards.</summary>
    public static (RefTensor Dx, RefTensor DAWeight, RefTensor DABias, RefTensor DBWeight, RefTensor DBBias) Backward(
        RefTensor x, RefTensor aWeight, RefTensor aBias, RefTensor bWeight, RefTensor dy)
    {
        var hidden = LinearOp.Forward(x, aWeight, aBias);
        var (dHidden, dBWeight, dBBias) = LinearOp.Backward(hidden, bWeight, dy);
        var (dx, dAWeight, dABias) = LinearOp.Backward(x, aWeight, dHidden);
        return (dx, dAWeight, dABias, dBWeight, dBBias);
    }

    private static Dictionary<string, int[]> Shapes(int[] x, int inFeatures, int rank, int outFeatures) => new()
    {
        ["x"] = x,
        ["lora_A.weight"] = [rank, inFeatures],
        ["lora_A.bias"] = [rank],
        ["lora_B.weight"] = [outFeatures, rank],
        ["lora_B.bias"] = [outFeatures],
    };

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("rows3_in8_r2_out8", Shapes([3, 8], 8, 2, 8), new OpParams());
        yield return new OpCase("b2_n3_in6_r3_out5", Shapes([2, 3, 6], 6, 3, 5), new OpParams());
        yield return new OpCase("b2_n40_in128_r16_out128", Shapes([2, 40, 128], 128, 16, 128), new OpParams()) { GradientCheck = false };
    }
}
