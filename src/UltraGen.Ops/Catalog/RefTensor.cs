using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// A float64 tensor the CPU reference computes on: a shape and a flat row-major array. References accumulate in
/// float64 so they can serve as the oracle for every backend and for finite-difference gradient checks.
/// </summary>
public sealed class RefTensor
{
    public RefTensor(int[] shape, double[] data)
    {
        if (Core.Shape.ElementCount(shape) != data.Length)
            throw new ShapeMismatchException($"{data.Length} values do not fill shape {Core.Shape.Format(shape)}");
        Shape = shape;
        Data = data;
    }

    public RefTensor(params int[] shape) : this(shape, new double[Core.Shape.ElementCount(shape)]) { }

    public int[] Shape { get; }
    public double[] Data { get; }
    public int Rank => Shape.Length;
    public int Length => Data.Length;

    public int Dim(int axis) => Shape[axis < 0 ? Shape.Length + axis : axis];

    public RefTensor Clone() => new((int[])Shape.Clone(), (double[])Data.Clone());

    public static RefTensor FromTensor(Tensor tensor) => new(tensor.ShapeArray, tensor.ToDoubles());

    public Tensor ToTensor(DType dtype) => Tensor.FromDoubles(dtype, Shape, Data);

    /// <summary>The same values under another shape with the same element count.</summary>
    public RefTensor Reshape(params int[] shape) => new(shape, Data);

    public override string ToString() => $"RefTensor{Core.Shape.Format(Shape)}";
}

/// <summary>Named tensors passed to and from an op's reference (inputs, outputs or gradients).</summary>
public sealed class RefArgs : Dictionary<string, RefTensor>
{
    public RefArgs() : base(StringComparer.Ordinal) { }

    public RefArgs(IDictionary<string, RefTensor> source) : base(source, StringComparer.Ordinal) { }

    /// <summary>The tensor named <paramref name="name"/>; a missing one is a clear error, not a KeyNotFoundException.</summary>
    public RefTensor Get(string name) =>
        TryGetValue(name, out var tensor) ? tensor : throw new ShapeMismatchException($"tensor '{name}' is missing");

    public RefTensor? GetOptional(string name) => TryGetValue(name, out var tensor) ? tensor : null;

    /// <summary>Writes <paramref name="values"/> into the caller-allocated tensor <paramref name="name"/> if the caller asked for it.</summary>
    public void SetIfRequested(string name, RefTensor values)
    {
        if (!TryGetValue(name, out var target)) return;
        if (target.Length != values.Length)
            throw new ShapeMismatchException(
                $"'{name}': result has {values.Length} elements, buffer {Core.Shape.Format(target.Shape)} holds {target.Length}");
        Array.Copy(values.Data, target.Data, values.Length);
    }
}
