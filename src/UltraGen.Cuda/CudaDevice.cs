using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda;

/// <summary>
/// Device 0 and its primary context, shared by every <see cref="CudaBackend"/> in the process (the primary context is
/// the one the CUDA runtime, cuBLAS and ILGPU also use, so buffers can be shared). Retained for the life of the process.
/// The driver binds contexts per thread: every entry point calls <see cref="MakeCurrent"/> first, so a backend may be used
/// from any thread (one thread at a time per backend).
/// </summary>
public sealed class CudaDevice
{
    private static readonly object s_gate = new();
    private static CudaDevice? s_instance;

    public int Ordinal { get; }
    public int Handle { get; }
    public string Name { get; }
    public int ComputeCapabilityMajor { get; }
    public int ComputeCapabilityMinor { get; }
    public int MultiprocessorCount { get; }
    public int SharedMemoryPerBlock { get; }
    public int SharedMemoryPerBlockOptin { get; }
    public long TotalMemory { get; }
    public IntPtr Context { get; }

    /// <summary>major·10 + minor (80 for A100, 86 for RTX 30xx, 89 for Ada, 90 for H100).</summary>
    public int ComputeCapability => ComputeCapabilityMajor * 10 + ComputeCapabilityMinor;

    private CudaDevice(int ordinal)
    {
        Ordinal = ordinal;
        Handle = CudaDriver.Device(ordinal);
        Name = CudaDriver.DeviceName(Handle);
        ComputeCapabilityMajor = CudaDriver.Attribute(Handle, CudaDriver.AttributeComputeCapabilityMajor);
        ComputeCapabilityMinor = CudaDriver.Attribute(Handle, CudaDriver.AttributeComputeCapabilityMinor);
        MultiprocessorCount = CudaDriver.Attribute(Handle, CudaDriver.AttributeMultiprocessorCount);
        SharedMemoryPerBlock = CudaDriver.Attribute(Handle, CudaDriver.AttributeMaxSharedMemoryPerBlock);
        SharedMemoryPerBlockOptin = CudaDriver.Attribute(Handle, CudaDriver.AttributeMaxSharedMemoryPerBlockOptin);
        Context = CudaDriver.RetainPrimaryContext(Handle);
        CudaDriver.SetCurrent(Context);
        TotalMemory = CudaDriver.MemoryInfo().Total;
    }

    /// <summary>Device 0 with its context current on this thread; cuInit must have succeeded (see <see cref="CudaBackendProvider"/>).</summary>
    public static CudaDevice Default
    {
        get
        {
            lock (s_gate)
            {
                s_instance ??= new CudaDevice(0);
            }
            s_instance.MakeCurrent();
            return s_instance;
        }
    }

    public void MakeCurrent() => CudaDriver.SetCurrent(Context);

    public override string ToString() =>
        $"{Name} (sm{ComputeCapability}, {MultiprocessorCount} SMs, {TotalMemory / (1 << 20)} MiB, {SharedMemoryPerBlockOptin / 1024} KiB shared/block opt-in)";
}
