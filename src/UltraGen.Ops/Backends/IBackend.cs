using UltraGen.Core;

namespace UltraGen.Ops.Backends;

/// <summary>
/// A place ops run: owns the memory it allocates and implements ops forward and backward. Callers own the output
/// buffers: every output and gradient tensor is allocated (and may be poisoned) before the call, and the backend
/// must write every element.
/// </summary>
public interface IBackend : IDisposable
{
    string Name { get; }

    /// <summary>One line on what runs where (device name, thread count, ...).</summary>
    string Description { get; }

    /// <summary>Whether this backend implements <paramref name="op"/> for tensors stored as <paramref name="dtype"/>.</summary>
    bool Supports(Op op, DType dtype, out string? reason);

    /// <summary>
    /// Shape-dependent limits on top of <see cref="Supports"/> (for example the head dims a kernel family is compiled
    /// for). The harness skips a case only when this says no; an exception while running always fails.
    /// </summary>
    bool SupportsCase(Op op, DType dtype, IReadOnlyDictionary<string, int[]> inputShapes, OpParams parameters, out string? reason) =>
        Supports(op, dtype, out reason);

    /// <summary>An uninitialised tensor in this backend's memory.</summary>
    Tensor Allocate(DType dtype, int[] shape);

    /// <summary>
    /// Live and peak bytes of the tensors <see cref="Allocate"/> has handed out and that are not yet freed, when this
    /// backend counts them (kernels' internal scratch is not included); null otherwise.
    /// </summary>
    MemoryCounter? Allocations => null;

    /// <summary>Bytes of the memory this backend allocates from (GPU memory, or the host memory available to the process), when known.</summary>
    long? MemoryCapacity => null;

    void CopyFromHost(Tensor host, Tensor destination);

    void CopyToHost(Tensor source, Tensor host);

    void Forward(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters);

    void Backward(
        Op op,
        IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients,
        OpParams parameters);
}

/// <summary>The outcome of asking a provider for its backend: a backend, or the reason there is none here.</summary>
public sealed record BackendProbe(IBackend? Backend, string? UnavailableReason)
{
    public static BackendProbe Available(IBackend backend) => new(backend, null);

    public static BackendProbe Unavailable(string reason) => new(null, reason);
}

/// <summary>
/// Creates a backend if this machine can run it. Implementations with a parameterless constructor anywhere in an
/// UltraGen.*.dll beside the application register themselves with <see cref="BackendRegistry"/>.
/// </summary>
public interface IBackendProvider
{
    string Name { get; }

    /// <summary>Higher is preferred by <c>--backend auto</c>; the reference (never fast) is lowest.</summary>
    int AutoPriority { get; }

    BackendProbe Probe();

    /// <summary>
    /// The probe <c>--backend auto</c> uses. A provider may decline here while still being usable by name (ILGPU on its
    /// CPU accelerator is a test device, slower than the Cpu backend).
    /// </summary>
    BackendProbe ProbeForAuto() => Probe();
}
