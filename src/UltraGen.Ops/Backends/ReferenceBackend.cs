using UltraGen.Core;

namespace UltraGen.Ops.Backends;

/// <summary>
/// The CPU reference as a backend: decodes the stored dtype to float64, runs the op's reference and rounds the
/// result back to the output's dtype. The oracle of every test; correct, never fast.
/// </summary>
public sealed class ReferenceBackend : IBackend
{
    public string Name => "reference";

    public string Description => "plain-loop float64 CPU reference (the oracle; not for speed)";

    public bool Supports(Op op, DType dtype, out string? reason)
    {
        reason = op.DTypes.Contains(dtype) ? null : $"op '{op.Name}' does not accept {DTypes.Lower(dtype)}";
        return reason is null;
    }

    public Tensor Allocate(DType dtype, int[] shape) => Tensor.Host(dtype, shape);

    public void CopyFromHost(Tensor host, Tensor destination) => CopyHost(host, destination);

    public void CopyToHost(Tensor source, Tensor host) => CopyHost(source, host);

    private static void CopyHost(Tensor source, Tensor destination)
    {
        if (source.DType != destination.DType || !source.Shape.SequenceEqual(destination.Shape))
            throw new ShapeMismatchException($"cannot copy {source} into {destination}");
        source.HostBytes.CopyTo(destination.HostBytes);
    }

    public void Forward(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        var results = OpRunner.Forward(op, Decode(inputs), parameters);
        Encode(results, outputs);
    }

    public void Backward(
        Op op,
        IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients,
        OpParams parameters)
    {
        var results = OpRunner.Backward(op, Decode(inputs), Decode(outputGradients), parameters);
        Encode(results, inputGradients);
    }

    private static RefArgs Decode(IReadOnlyDictionary<string, Tensor> tensors)
    {
        var args = new RefArgs();
        foreach (var (name, tensor) in tensors) args[name] = RefTensor.FromTensor(tensor);
        return args;
    }

    private static void Encode(RefArgs results, IReadOnlyDictionary<string, Tensor> destinations)
    {
        foreach (var (name, destination) in destinations)
        {
            var result = results.Get(name);
            if (!result.Shape.AsSpan().SequenceEqual(destination.Shape))
                throw new ShapeMismatchException($"'{name}': result {Shape.Format(result.Shape)} does not fit buffer {destination}");
            destination.CopyFrom(result.Data);
        }
    }

    public void Dispose() { }
}

public sealed class ReferenceBackendProvider : IBackendProvider
{
    public string Name => "reference";

    public int AutoPriority => 0;

    public BackendProbe Probe() => BackendProbe.Available(new ReferenceBackend());
}
