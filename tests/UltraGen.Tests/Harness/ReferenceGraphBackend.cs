using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Tests.Harness;

/// <summary>
/// A test backend whose primitive "kernels" are the float64 references rounded to f32. It exercises what every kernel
/// backend shares — composite graphs (<see cref="CompositeOps"/>), bf16/f16 widening, validation — against the
/// composite references, independently of any fast kernel.
/// </summary>
public sealed class ReferenceGraphBackend : HostKernelBackend
{
    public override string Name => "reference-graph";

    public override string Description => "test double: reference primitives behind the shared kernel-backend plumbing";

    private static RefArgs Decode(IReadOnlyDictionary<string, Tensor> tensors) =>
        new(tensors.ToDictionary(kv => kv.Key, kv => RefTensor.FromTensor(kv.Value)));

    private static void Encode(RefArgs values, IReadOnlyDictionary<string, Tensor> destinations)
    {
        foreach (var (name, destination) in destinations) destination.CopyFrom(values.Get(name).Data);
    }

    protected override void ForwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters) =>
        Encode(OpRunner.Forward(op, Decode(inputs), parameters), outputs);

    protected override void BackwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters) =>
        Encode(OpRunner.Backward(op, Decode(inputs), Decode(outputGradients), parameters), inputGradients);
}

public sealed class ReferenceGraphBackendProvider : IBackendProvider
{
    public string Name => "reference-graph";

    public int AutoPriority => -1;

    public BackendProbe Probe() => BackendProbe.Available(new ReferenceGraphBackend());
}
