using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Bench;

/// <summary>
/// Which backends a benchmark runs on, and one op prepared on one backend (random inputs uploaded once, outputs and
/// gradients allocated once) so that the timed method is a single IBackend call.
/// </summary>
public static class BenchBackends
{
    /// <summary>The backends the benchmarks are written for.</summary>
    public static readonly string[] Candidates = ["cpu", "ilgpu"];

    /// <summary>
    /// The candidates that are available here and run <paramref name="opName"/> in f32; each one left out is named on the
    /// console with the reason, so a skipped backend is visible in the run's log and never silently missing.
    /// </summary>
    public static IEnumerable<string> Supporting(string opName)
    {
        var op = OpCatalog.Get(opName);
        var result = new List<string>();
        foreach (var name in Candidates)
        {
            string? reason = WhyNot(name, op);
            if (reason is null) result.Add(name);
            else Console.WriteLine($"// UltraGen.Bench: skipping backend '{name}' for '{opName}': {reason}");
        }
        return result;
    }

    private static string? WhyNot(string name, Op op)
    {
        try
        {
            var probe = BackendRegistry.Get(name).Probe();
            if (probe.Backend is null) return $"unavailable ({probe.UnavailableReason})";
            using var backend = probe.Backend;
            return backend.Supports(op, DType.F32, out var reason) ? null : reason;
        }
        catch (Exception e) when (e is OpParameterException or UnsupportedConfigurationException)
        {
            return e.Message;
        }
    }

    /// <summary>The backend named <paramref name="name"/>, or a clear exception when it cannot run <paramref name="opName"/>.</summary>
    public static IBackend Open(string name, string opName)
    {
        var probe = BackendRegistry.Get(name).Probe();
        if (probe.Backend is null)
            throw new InvalidOperationException($"backend '{name}' is unavailable here: {probe.UnavailableReason}");
        if (!probe.Backend.Supports(OpCatalog.Get(opName), DType.F32, out var reason))
        {
            probe.Backend.Dispose();
            throw new InvalidOperationException($"backend '{name}' does not run '{opName}': {reason}");
        }
        return probe.Backend;
    }
}

/// <summary>One op on one backend with inputs, outputs and (optionally) gradient buffers ready.</summary>
public sealed class PreparedOp : IDisposable
{
    private readonly IBackend _backend;
    private readonly Op _op;
    private readonly OpParams _parameters;
    private readonly Dictionary<string, Tensor> _inputs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _outputs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _outputGradients = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _inputGradients = new(StringComparer.Ordinal);
    private readonly bool _ownsBackend = true;

    /// <param name="scale">per-input uniform range half-width (default 1); weights are usually given 1/√fan-in.</param>
    /// <param name="gradientsOf">inputs whose gradients the backward benchmark asks for (empty: forward only).</param>
    public PreparedOp(string backendName, string opName, IReadOnlyDictionary<string, int[]> shapes, OpParams parameters,
        Func<string, (double Low, double High)> range, IEnumerable<string> gradientsOf, int seed = 1234)
        : this(BenchBackends.Open(backendName, opName), opName, shapes, parameters, range, gradientsOf, seed)
    {
    }

    /// <summary>As above, on an open <paramref name="backend"/>, disposed with this prepared op when <paramref name="ownsBackend"/>.</summary>
    public PreparedOp(IBackend backend, string opName, IReadOnlyDictionary<string, int[]> shapes, OpParams parameters,
        Func<string, (double Low, double High)> range, IEnumerable<string> gradientsOf, int seed = 1234, bool ownsBackend = true)
    {
        _op = OpCatalog.Get(opName);
        _parameters = parameters;
        _backend = backend;
        _ownsBackend = ownsBackend;
        var random = new Random(seed);
        foreach (var (name, shape) in shapes) _inputs[name] = Upload(shape, range(name), random);
        foreach (var (name, shape) in _op.OutputShapes(shapes, parameters))
        {
            _outputs[name] = _backend.Allocate(DType.F32, shape);
            _outputGradients[name] = Upload(shape, (-1, 1), random);
        }
        foreach (var name in gradientsOf) _inputGradients[name] = _backend.Allocate(DType.F32, shapes[name]);
    }

    public IReadOnlyDictionary<string, Tensor> Inputs => _inputs;

    private Tensor Upload(int[] shape, (double Low, double High) range, Random random)
    {
        using var host = Tensor.Host(DType.F32, shape);
        var span = host.HostSpan<float>();
        for (int i = 0; i < span.Length; i++) span[i] = (float)(range.Low + (range.High - range.Low) * random.NextDouble());
        var device = _backend.Allocate(DType.F32, shape);
        _backend.CopyFromHost(host, device);
        return device;
    }

    public void Forward() => _backend.Forward(_op, _inputs, _outputs, _parameters);

    public void Backward() => _backend.Backward(_op, _inputs, _outputGradients, _inputGradients, _parameters);

    public void Dispose()
    {
        foreach (var tensor in _inputs.Values.Concat(_outputs.Values).Concat(_outputGradients.Values).Concat(_inputGradients.Values))
            tensor.Dispose();
        if (_ownsBackend) _backend.Dispose();
    }
}
