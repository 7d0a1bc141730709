using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>Small conveniences for running an op's reference on <see cref="RefTensor"/>s.</summary>
public static class OpRunner
{
    public static IReadOnlyDictionary<string, int[]> ShapesOf(IReadOnlyDictionary<string, RefTensor> tensors) =>
        tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Shape);

    /// <summary>Validates shapes and parameters, allocates the outputs and runs the reference forward.</summary>
    public static RefArgs Forward(Op op, RefArgs inputs, OpParams parameters)
    {
        parameters.Validate(op.Name, op.Parameters);
        var shapes = op.OutputShapes(ShapesOf(inputs), parameters);
        var outputs = new RefArgs();
        foreach (var (name, shape) in shapes) outputs[name] = new RefTensor(shape);
        op.ReferenceForward(inputs, outputs, parameters);
        return outputs;
    }

    /// <summary>Runs the reference backward for every differentiable input that is present.</summary>
    public static RefArgs Backward(Op op, RefArgs inputs, RefArgs outputGradients, OpParams parameters)
    {
        parameters.Validate(op.Name, op.Parameters);
        var outputShapes = op.OutputShapes(ShapesOf(inputs), parameters);
        foreach (var (name, shape) in outputShapes)
        {
            if (!outputGradients.TryGetValue(name, out var gradient))
                throw new ShapeMismatchException($"op '{op.Name}': gradient for output '{name}' is missing");
            if (!gradient.Shape.AsSpan().SequenceEqual(shape))
                throw new ShapeMismatchException(
                    $"op '{op.Name}': gradient for output '{name}' must be {Core.Shape.Format(shape)}, got {Core.Shape.Format(gradient.Shape)}");
        }
        var inputGradients = new RefArgs();
        foreach (var spec in op.Inputs)
            if (spec.Differentiable && inputs.TryGetValue(spec.Name, out var input))
                inputGradients[spec.Name] = new RefTensor((int[])input.Shape.Clone());
        op.ReferenceBackward(inputs, outputGradients, inputGradients, parameters);
        return inputGradients;
    }

    /// <summary>Fresh uniform random inputs for <paramref name="opCase"/>.</summary>
    public static RefArgs RandomInputs(OpCase opCase, Random random)
    {
        var inputs = new RefArgs();
        foreach (var (name, shape) in opCase.InputShapes)
        {
            var (low, high) = opCase.RangeOf(name);
            var tensor = new RefTensor((int[])shape.Clone());
            for (int i = 0; i < tensor.Length; i++) tensor.Data[i] = low + (high - low) * random.NextDouble();
            inputs[name] = tensor;
        }
        return inputs;
    }
}
