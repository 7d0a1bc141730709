using UltraGen.Core;

namespace UltraGen.Ops.Backends;

/// <summary>
/// Base of the backends that run hand-written kernels (Cpu, Ilgpu, Cuda). A backend implements the
/// <see cref="PrimitiveOps"/> as f32 kernels; this class supplies the rest once for all of them:
/// <list type="bullet">
/// <item>bf16/f16 storage: inputs are widened to f32 temporaries, the f32 kernel runs, outputs are rounded back;</item>
/// <item>composite ops (<see cref="CompositeOps.Names"/>: lora, gate_mlp, wan_self_attention,
/// ultragen_self_attention) run as a graph of primitive calls on this backend (<see cref="CompositeOps"/>);</item>
/// <item>shape and parameter validation before any kernel sees a tensor.</item>
/// </list>
/// </summary>
public abstract class KernelBackend : IBackend
{
    /// <summary>Ops every kernel backend implements directly; everything else in the catalogue is a composite of these.</summary>
    public static readonly IReadOnlySet<string> PrimitiveOps = new HashSet<string>(StringComparer.Ordinal)
    {
        "add", "bilinear_resize", "cross_attention", "depthwise_conv2d", "depthwise_conv3d", "gate_fusion", "gelu_tanh", "layer_norm",
        "linear", "modulate", "rms_norm", "sigmoid", "silu", "timestep_embedding", "window_attention",
        "gated_residual", "patchify", "unpatchify",
    };

    private static readonly DType[] s_storageTypes = [DType.F32, DType.BF16, DType.F16];

    public abstract string Name { get; }

    public abstract string Description { get; }

    public abstract Tensor Allocate(DType dtype, int[] shape);

    /// <inheritdoc cref="IBackend.Allocations"/>
    public virtual MemoryCounter? Allocations => null;

    /// <inheritdoc cref="IBackend.MemoryCapacity"/>
    public virtual long? MemoryCapacity => null;

    public abstract void CopyFromHost(Tensor host, Tensor destination);

    public abstract void CopyToHost(Tensor source, Tensor host);

    /// <summary>Elementwise dtype conversion between two tensors of this backend with the same shape (round to nearest even).</summary>
    public abstract void Convert(Tensor source, Tensor destination);

    /// <summary>Runs primitive <paramref name="op"/> forward on f32 tensors (shapes and parameters already validated).</summary>
    protected abstract void ForwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters);

    /// <summary>
    /// Runs primitive <paramref name="op"/> backward on f32 tensors; writes every tensor in <paramref name="inputGradients"/>
    /// (a subset of the differentiable inputs).
    /// </summary>
    protected abstract void BackwardF32(
        Op op,
        IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients,
        OpParams parameters);

    /// <summary>
    /// Lets a backend run an op natively on its stored dtype (for example bf16 tensor-core attention) instead of
    /// widening to f32; return false to take the f32 path.
    /// </summary>
    protected virtual bool TryForwardNative(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters) => false;

    /// <summary>The backward counterpart of <see cref="TryForwardNative"/>.</summary>
    protected virtual bool TryBackwardNative(
        Op op,
        IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients,
        OpParams parameters) => false;

    /// <summary>Extra per-op limits of a backend (for example supported head dims); null when supported.</summary>
    protected virtual string? Limitation(Op op, DType dtype) => null;

    /// <summary>Shape-dependent limits of a backend's kernels for one case (composites included); null when supported.</summary>
    protected virtual string? CaseLimitation(Op op, DType dtype, IReadOnlyDictionary<string, int[]> inputShapes, OpParams parameters) => null;

    public bool SupportsCase(Op op, DType dtype, IReadOnlyDictionary<string, int[]> inputShapes, OpParams parameters, out string? reason)
    {
        if (Supports(op, dtype, out reason)) reason = CaseLimitation(op, dtype, inputShapes, parameters);
        return reason is null;
    }

    public bool Supports(Op op, DType dtype, out string? reason)
    {
        if (!s_storageTypes.Contains(dtype))
            reason = $"{DTypes.Lower(dtype)} storage is reference-only; kernels take f32, bf16 or f16";
        else if (!PrimitiveOps.Contains(op.Name) && !CompositeOps.Names.Contains(op.Name))
            reason = $"op '{op.Name}' has no kernel on {Name}";
        else if (CompositeOps.Names.Contains(op.Name))
            reason = PrimitiveOps.Select(name => Limitation(OpCatalog.Get(name), dtype)).FirstOrDefault(r => r is not null) is { } missing
                ? $"composite '{op.Name}' needs every primitive: {missing}"
                : Limitation(op, dtype);
        else
            reason = Limitation(op, dtype);
        return reason is null;
    }

    public void Forward(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        Validate(op, inputs, outputs, parameters, "output");
        if (TryForwardNative(op, inputs, outputs, parameters)) return;
        using var wide = new WidenedTensors(this);
        var inputs32 = wide.Widen(inputs);
        var outputs32 = wide.WidenOutputs(outputs);
        if (PrimitiveOps.Contains(op.Name)) ForwardF32(op, inputs32, outputs32, parameters);
        else CompositeOps.Forward(this, op, inputs32, outputs32, parameters);
        wide.NarrowBack();
    }

    public void Backward(
        Op op,
        IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients,
        OpParams parameters)
    {
        Validate(op, inputs, outputGradients, parameters, "output gradient");
        foreach (var (name, gradient) in inputGradients)
        {
            var spec = op.Inputs.FirstOrDefault(i => i.Name == name)
                ?? throw new ShapeMismatchException($"op '{op.Name}' has no input '{name}' to take a gradient of");
            if (!spec.Differentiable) throw new ShapeMismatchException($"op '{op.Name}': input '{name}' has no gradient");
            if (!inputs.TryGetValue(name, out var input) || !input.Shape.SequenceEqual(gradient.Shape))
                throw new ShapeMismatchException($"op '{op.Name}': gradient buffer for '{name}' must match the input's shape");
        }
        if (TryBackwardNative(op, inputs, outputGradients, inputGradients, parameters)) return;
        using var wide = new WidenedTensors(this);
        var inputs32 = wide.Widen(inputs);
        var outputGradients32 = wide.Widen(outputGradients);
        var inputGradients32 = wide.WidenOutputs(inputGradients);
        if (PrimitiveOps.Contains(op.Name)) BackwardF32(op, inputs32, outputGradients32, inputGradients32, parameters);
        else CompositeOps.Backward(this, op, inputs32, outputGradients32, inputGradients32, parameters);
        wide.NarrowBack();
    }

    private void Validate(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs,
        OpParams parameters, string what)
    {
        parameters.Validate(op.Name, op.Parameters);
        if (inputs.Count > 0 && !Supports(op, inputs.Values.First().DType, out var reason))
            throw new UnsupportedConfigurationException($"backend '{Name}': {reason}");
        foreach (var name in inputs.Keys)
            if (!op.Inputs.Any(i => i.Name == name))
                throw new ShapeMismatchException($"op '{op.Name}' has no input '{name}'");
        var expected = op.OutputShapes(inputs.ToDictionary(kv => kv.Key, kv => kv.Value.ShapeArray), parameters);
        foreach (var (name, shape) in expected)
        {
            if (!outputs.TryGetValue(name, out var tensor))
                throw new ShapeMismatchException($"op '{op.Name}': {what} '{name}' is missing");
            if (!tensor.Shape.SequenceEqual(shape))
                throw new ShapeMismatchException(
                    $"op '{op.Name}': {what} '{name}' must be {Shape.Format(shape)}, got {Shape.Format(tensor.Shape)}");
        }
    }

    /// <summary>f32 stand-ins for bf16/f16 tensors of one call; f32 tensors pass through untouched.</summary>
    private sealed class WidenedTensors(KernelBackend backend) : IDisposable
    {
        private readonly List<Tensor> _temporaries = [];
        private readonly List<(Tensor Wide, Tensor Narrow)> _writeBack = [];

        private Tensor Wide(Tensor narrow)
        {
            var wide = backend.Allocate(DType.F32, narrow.ShapeArray);
            _temporaries.Add(wide);
            return wide;
        }

        public IReadOnlyDictionary<string, Tensor> Widen(IReadOnlyDictionary<string, Tensor> tensors) =>
            tensors.ToDictionary(kv => kv.Key, kv =>
            {
                if (kv.Value.DType == DType.F32) return kv.Value;
                var wide = Wide(kv.Value);
                backend.Convert(kv.Value, wide);
                return wide;
            });

        public IReadOnlyDictionary<string, Tensor> WidenOutputs(IReadOnlyDictionary<string, Tensor> tensors) =>
            tensors.ToDictionary(kv => kv.Key, kv =>
            {
                if (kv.Value.DType == DType.F32) return kv.Value;
                var wide = Wide(kv.Value);
                _writeBack.Add((wide, kv.Value));
                return wide;
            });

        public void NarrowBack()
        {
            foreach (var (wide, narrow) in _writeBack) backend.Convert(wide, narrow);
        }

        public void Dispose()
        {
            foreach (var tensor in _temporaries) tensor.Dispose();
        }
    }

    public virtual void Dispose() => GC.SuppressFinalize(this);
}
