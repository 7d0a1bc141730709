using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>One input or output tensor of an op: its name, its shape rule (as text for <c>ops list</c>) and flags.</summary>
public sealed record TensorSpec(string Name, string ShapeRule, bool Differentiable = true, bool Optional = false);

/// <summary>
/// One test/benchmark case of an op: input shapes, parameters and value ranges. Inputs are drawn uniformly from
/// their range (default [-1, 1]) with a fresh seed each run, so no case ever sees zeros or a fixed pattern.
/// </summary>
public sealed record OpCase(
    string Name,
    IReadOnlyDictionary<string, int[]> InputShapes,
    OpParams Params,
    IReadOnlyDictionary<string, (double Low, double High)>? Ranges = null)
{
    /// <summary>Whether the finite-difference gradient check runs on this case (keep those shapes small).</summary>
    public bool GradientCheck { get; init; } = true;

    public (double Low, double High) RangeOf(string input) =>
        Ranges is not null && Ranges.TryGetValue(input, out var range) ? range : (-1.0, 1.0);

    public override string ToString() => Name;
}

/// <summary>
/// An op of the catalogue: shape rules, the float64 CPU reference (forward and backward) that defines what correct
/// means, the cases every backend is tested on, and the tolerances it is held to.
/// </summary>
public abstract class Op
{
    /// <summary>The op's one name across the catalogue, kernels, launchers and benchmarks (snake_case).</summary>
    public abstract string Name { get; }

    public abstract string Summary { get; }

    public abstract IReadOnlyList<TensorSpec> Inputs { get; }

    public abstract IReadOnlyList<TensorSpec> Outputs { get; }

    public virtual IReadOnlyList<ParamSpec> Parameters => [];

    /// <summary>Storage dtypes the op accepts; references always compute in float64.</summary>
    public virtual IReadOnlyList<DType> DTypes => [DType.F32, DType.BF16, DType.F16, DType.F64];

    /// <summary>
    /// Checks the input shapes and parameters and returns the output shapes. Every violation is a
    /// <see cref="ShapeMismatchException"/> or <see cref="OpParameterException"/> naming the op and the tensor.
    /// </summary>
    public abstract IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> inputShapes, OpParams parameters);

    /// <summary>Computes every output into caller-allocated <paramref name="outputs"/> (the caller may poison them first).</summary>
    public abstract void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters);

    /// <summary>
    /// Given the gradient of a scalar loss with respect to every output, writes the gradient with respect to each input
    /// present in <paramref name="inputGradients"/> (caller-allocated; every element must be written).
    /// </summary>
    public abstract void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters);

    public abstract IEnumerable<OpCase> Cases();

    /// <summary>Allowed ‖out − ref‖ / ‖ref‖ for a backend storing tensors in <paramref name="dtype"/>.</summary>
    public virtual double ForwardTolerance(DType dtype) => dtype switch
    {
        DType.F64 => 1e-12,
        DType.F32 => 1e-5,
        DType.F16 => 3e-3,
        DType.BF16 => 1e-2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Allowed ‖grad − ref‖ / ‖ref‖ of a backend's backward in <paramref name="dtype"/> (twice the forward's by default).</summary>
    public virtual double BackwardTolerance(DType dtype) => 2 * ForwardTolerance(dtype);

    /// <summary>Allowed relative error of the reference backward against float64 central differences.</summary>
    public virtual double GradientTolerance => 1e-6;

    /// <summary>Elements probed per input by the finite-difference check (ops with many large inputs probe fewer).</summary>
    public virtual int GradientProbesPerInput => 48;

    public TensorSpec Input(string name) => Inputs.FirstOrDefault(i => i.Name == name)
        ?? throw new ShapeMismatchException($"op '{Name}' has no input '{name}'");

    // ---- helpers for shape rules ----

    /// <summary>The shape of input <paramref name="name"/>, checked for presence and rank.</summary>
    protected int[] RequireShape(IReadOnlyDictionary<string, int[]> shapes, string name, int rank)
    {
        if (!shapes.TryGetValue(name, out var shape))
            throw new ShapeMismatchException($"op '{Name}': input '{name}' is missing");
        if (shape.Length != rank)
            throw new ShapeMismatchException(
                $"op '{Name}': input '{name}' must have rank {rank} ({Input(name).ShapeRule}), got {Core.Shape.Format(shape)}");
        return shape;
    }

    /// <summary>Checks that <paramref name="name"/> has exactly <paramref name="expected"/> shape.</summary>
    protected void ExpectShape(IReadOnlyDictionary<string, int[]> shapes, string name, params int[] expected)
    {
        var shape = RequireShape(shapes, name, expected.Length);
        if (!shape.AsSpan().SequenceEqual(expected))
            throw new ShapeMismatchException(
                $"op '{Name}': input '{name}' must be {Core.Shape.Format(expected)} ({Input(name).ShapeRule}), got {Core.Shape.Format(shape)}");
    }

    /// <summary>Optional inputs: checks the shape only when the tensor is given.</summary>
    protected void ExpectShapeIfPresent(IReadOnlyDictionary<string, int[]> shapes, string name, params int[] expected)
    {
        if (shapes.ContainsKey(name)) ExpectShape(shapes, name, expected);
    }

    protected ShapeMismatchException ShapeError(string message) => new($"op '{Name}': {message}");

    protected static IReadOnlyDictionary<string, int[]> Single(string name, params int[] shape) =>
        new Dictionary<string, int[]> { [name] = shape };
}
