using UltraGen.Cuda.Interop;
using UltraGen.Ops.Backends;

namespace UltraGen.Cuda;

/// <summary>
/// Registers the Cuda backend. It is available when the CUDA driver loads, <c>cuInit</c> succeeds, a device exists and the
/// PTX folder holds kernels; otherwise <see cref="Probe"/> says precisely which of these is missing. Because it declines
/// without PTX, <c>--backend auto</c> falls through to Ilgpu-on-GPU (driver only) or Cpu, as architecture.md prescribes.
/// </summary>
public sealed class CudaBackendProvider : IBackendProvider
{
    private static readonly Lazy<(CudaDevice? Device, string? Reason)> s_driver = new(ProbeDriver, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Dictionary<string, PtxModules> s_modules = new(StringComparer.Ordinal);

    public string Name => "cuda";

    public int AutoPriority => 30;

    public BackendProbe Probe()
    {
        var (device, reason) = s_driver.Value;
        if (device is null) return BackendProbe.Unavailable(reason!);
        var (directory, origin) = PtxLocator.DefaultSearchDirectory();
        if (PtxLocator.Missing(directory, origin) is { } missing) return BackendProbe.Unavailable(missing);
        device.MakeCurrent();
        return BackendProbe.Available(new CudaBackend(device, ModulesFor(device, directory, origin)));
    }

    /// <summary>One module cache per (device, PTX folder) for the whole process: each module is JIT-compiled once.</summary>
    private static PtxModules ModulesFor(CudaDevice device, string directory, string origin)
    {
        lock (s_modules)
        {
            if (!s_modules.TryGetValue(directory, out var modules))
                s_modules[directory] = modules = new PtxModules(device.ComputeCapability, directory, origin);
            return modules;
        }
    }

    private static (CudaDevice?, string?) ProbeDriver()
    {
        string? reason = Diagnose(
            () => NativeLibraries.TryLoadDriver(out _),
            CudaDriver.InitStatus,
            CudaDriver.DeviceCount,
            status => $"{CudaDriver.ErrorName(status)} ({status}): {CudaDriver.ErrorString(status)}");
        if (reason is not null) return (null, reason);
        try
        {
            return (CudaDevice.Default, null);
        }
        catch (UltraGen.Core.UltraGenException e)
        {
            return (null, $"CUDA device 0 could not be opened: {e.Message}");
        }
    }

    /// <summary>
    /// The reason the driver layer is unusable, or null: no 64-bit process, no driver library, cuInit failing (with the
    /// driver's error), no device. The steps are passed in so tests can walk every branch without a GPU.
    /// </summary>
    internal static string? Diagnose(Func<bool> loadDriver, Func<int> init, Func<int> deviceCount, Func<int, string> describe)
    {
        if (IntPtr.Size != 8) return "the CUDA backend needs a 64-bit process";
        try
        {
            if (!loadDriver()) return $"no CUDA driver ({NativeLibraries.DriverFileName} not found)";
            int status = init();
            if (status != CudaDriver.Success) return $"cuInit failed: {describe(status)}";
            int count = deviceCount();
            return count < 1 ? "no CUDA device (cuDeviceGetCount returned 0)" : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return $"no usable CUDA driver ({NativeLibraries.DriverFileName}): {e.Message}";
        }
        catch (CudaException e)
        {
            return e.Message;
        }
    }
}
