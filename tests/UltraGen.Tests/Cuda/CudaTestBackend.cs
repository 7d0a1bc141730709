using NUnit.Framework;
using UltraGen.Cuda;
using UltraGen.Ops.Backends;

namespace UltraGen.Tests.Cuda;

/// <summary>The cuda backend for a test (skipped, with the reason, where there is none) and a record of what it launched.</summary>
internal static class CudaTestBackend
{
    public static CudaBackend OrSkip()
    {
        var probe = BackendRegistry.Get("cuda").Probe();
        if (probe.Backend is CudaBackend cuda) return cuda;
        probe.Backend?.Dispose();
        Assert.Ignore($"backend 'cuda' is not available here: {probe.UnavailableReason}");
        return null!;
    }

    /// <summary>The names of the entry points <paramref name="cuda"/> launches from now on, in order.</summary>
    public static List<string> RecordLaunches(CudaBackend cuda)
    {
        var launched = new List<string>();
        cuda.LaunchContext.LaunchObserver = name => { lock (launched) launched.Add(name); };
        return launched;
    }
}
