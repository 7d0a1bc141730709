using UltraGen.Core;

namespace UltraGen.Ops.Backends;

/// <summary>
/// Runs catalogue ops on one backend and owns the f32 intermediates they produce, freeing them together. It is how
/// composite ops are written once for every backend: each line is one primitive call on device tensors.
/// </summary>
public sealed class DeviceScope(IBackend backend) : IDisposable
{
    private readonly List<Tensor> _owned = [];

    public IBackend Backend => backend;

    /// <summary>A new, uninitialised f32 tensor freed with the scope.</summary>
    public Tensor New(params int[] shape)
    {
        var tensor = backend.Allocate(DType.F32, shape);
        _owned.Add(tensor);
        return tensor;
    }

    /// <summary>Takes ownership of a tensor allocated elsewhere on this scope's backend (freed with the scope).</summary>
    public Tensor Adopt(Tensor tensor)
    {
        _owned.Add(tensor);
        return tensor;
    }

    /// <summary>
    /// Frees tensors of this scope before the scope ends (inference frees each intermediate after its last use). Views and
    /// tensors the scope does not own are ignored, so callers may pass whatever a helper returned.
    /// </summary>
    public void Release(params Tensor?[] tensors)
    {
        foreach (var tensor in tensors)
        {
            if (tensor is null) continue;
            int index = _owned.FindLastIndex(owned => ReferenceEquals(owned, tensor));
            if (index < 0) continue;
            _owned.RemoveAt(index);
            tensor.Dispose();
        }
    }

    public Tensor Zeros(params int[] shape)
    {
        var tensor = New(shape);
        using var zeros = Tensor.Host(DType.F32, shape);
        zeros.HostBytes.Clear();
        backend.CopyFromHost(zeros, tensor);
        return tensor;
    }

    private static Dictionary<string, Tensor> Present((string Name, Tensor? Value)[] inputs)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, value) in inputs)
            if (value is not null) result[name] = value;
        return result;
    }

    /// <summary>Runs a single-output op forward; writes into <paramref name="into"/> when given, else a new tensor.</summary>
    public Tensor Run(string opName, OpParams parameters, Tensor? into, params (string Name, Tensor? Value)[] inputs)
    {
        var op = OpCatalog.Get(opName);
        var inputTensors = Present(inputs);
        string outputName = op.Outputs.Single().Name;
        var output = into ?? New(op.OutputShapes(inputTensors.ToDictionary(kv => kv.Key, kv => kv.Value.ShapeArray), parameters)[outputName]);
        backend.Forward(op, inputTensors, new Dictionary<string, Tensor> { [outputName] = output }, parameters);
        return output;
    }

    public Tensor Run(string opName, OpParams parameters, params (string Name, Tensor? Value)[] inputs) =>
        Run(opName, parameters, null, inputs);

    /// <summary>Gradients of a single-output op for the inputs named in <paramref name="wanted"/> (those present).</summary>
    public Dictionary<string, Tensor> Gradients(string opName, OpParams parameters, Tensor outputGradient,
        (string Name, Tensor? Value)[] inputs, params string[] wanted)
    {
        var op = OpCatalog.Get(opName);
        var inputTensors = Present(inputs);
        var gradients = wanted.Where(inputTensors.ContainsKey).ToDictionary(name => name, name => New(inputTensors[name].ShapeArray));
        backend.Backward(op, inputTensors, new Dictionary<string, Tensor> { [op.Outputs.Single().Name] = outputGradient }, gradients, parameters);
        return gradients;
    }

    public Tensor Add(Tensor a, Tensor b, Tensor? into = null) => Run("add", new OpParams(), into, ("a", a), ("b", b));

    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/> (same shape) on the device.</summary>
    public void Copy(Tensor source, Tensor destination)
    {
        if (backend is KernelBackend kernels) kernels.Convert(source, destination);
        else
        {
            using var host = Tensor.Host(source.DType, source.ShapeArray);
            backend.CopyToHost(source, host);
            backend.CopyFromHost(host, destination);
        }
    }

    public void Dispose()
    {
        foreach (var tensor in _owned) tensor.Dispose();
        _owned.Clear();
    }
}

/// <summary>Sums gradient contributions per input name on the device (W_q, say, feeds all three UltraGen branches).</summary>
public sealed class DeviceGradients(DeviceScope scope)
{
    private readonly Dictionary<string, Tensor> _totals = new(StringComparer.Ordinal);

    public void Add(string name, Tensor gradient) =>
        _totals[name] = _totals.TryGetValue(name, out var total) ? scope.Add(total, gradient) : gradient;

    public void AddAll(Dictionary<string, Tensor> gradients, Func<string, string>? rename = null)
    {
        foreach (var (name, gradient) in gradients) Add(rename is null ? name : rename(name), gradient);
    }

    public bool TryGet(string name, out Tensor gradient) => _totals.TryGetValue(name, out gradient!);

    /// <summary>Writes every requested gradient into the caller's buffers; inputs that received none get zeros.</summary>
    public void WriteInto(IReadOnlyDictionary<string, Tensor> destinations)
    {
        foreach (var (name, destination) in destinations)
            scope.Copy(_totals.TryGetValue(name, out var total) ? total.Reshape(destination.ShapeArray) : scope.Zeros(destination.ShapeArray), destination);
    }
}
