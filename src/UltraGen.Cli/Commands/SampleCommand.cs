using System.CommandLine;
using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Cli.Commands;

/// <summary><c>ultragen sample</c>: text → video with a bundled or given model.</summary>
public static partial class SampleCommand
{
    /// <summary>
    /// The backend named <paramref name="name"/>, or for "auto" the preferred one that runs the whole DiT (every
    /// primitive, cross-attention the newest); <paramref name="why"/> says how it was chosen.
    /// </summary>
    public static IBackend OpenBackend(string name, out string why)
    {
        if (string.Equals(name, "auto", StringComparison.OrdinalIgnoreCase))
        {
            var (backend, reason) = BackendRegistry.Auto(OpCatalog.Get("cross_attention"));
            why = reason;
            return backend;
        }
        var probe = BackendRegistry.Get(name).Probe();
        why = "chosen with --backend";
        return probe.Backend ?? throw new UnsupportedConfigurationException($"backend '{name}' is not available here: {probe.UnavailableReason}");
    }
}
