using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary><c>add</c>: y = a + b for tensors of one shape (residuals, LoRA sums, gradient accumulation).</summary>
public sealed class AddOp : Op
{
    public override string Name => "add";

    public override string Summary => "y = a + b elementwise, same shapes";

    public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("a", "(*)"), new("b", "(*) same as a")];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(*)")];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        if (!shapes.TryGetValue("a", out var a)) throw ShapeError("input 'a' is missing");
        ExpectShape(shapes, "b", a);
        return Single("y", (int[])a.Clone());
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(inputs.Get("a"), inputs.Get("b")));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        inputGradients.SetIfRequested("a", outputGradients.Get("y"));
        inputGradients.SetIfRequested("b", outputGradients.Get("y"));
    }

    public static RefTensor Forward(RefTensor a, RefTensor b)
    {
        if (a.Length != b.Length) throw new ShapeMismatchException($"add: {Shape.Format(a.Shape)} vs {Shape.Format(b.Shape)}");
        var y = new RefTensor((int[])a.Shape.Clone());
        for (int i = 0; i < y.Length; i++) y.Data[i] = a.Data[i] + b.Data[i];
        return y;
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("n17", new Dictionary<string, int[]> { ["a"] = [17], ["b"] = [17] }, new OpParams());
        yield return new OpCase("b2_n40_d128", new Dictionary<string, int[]> { ["a"] = [2, 40, 128], ["b"] = [2, 40, 128] }, new OpParams())
        {
            GradientCheck = false,
        };
    }
}
