using System.Reflection;

namespace UltraGen.Ops.Backends;

/// <summary>Finds every <see cref="IBackendProvider"/> in the UltraGen assemblies beside the application.</summary>
public static class BackendRegistry
{
    private static readonly Lazy<IReadOnlyList<IBackendProvider>> s_providers = new(Discover);

    public static IReadOnlyList<IBackendProvider> Providers => s_providers.Value;

    public static IBackendProvider Get(string name) =>
        Providers.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new Core.OpParameterException(
            $"unknown backend '{name}'; known backends: {string.Join(", ", Providers.Select(p => p.Name))}");

    /// <summary>
    /// The backend <c>auto</c> picks: the available one with the highest priority (that runs <paramref name="op"/> in
    /// <paramref name="dtype"/>, when given, and that <paramref name="limitation"/> — why a backend cannot do the caller's
    /// work, or null — does not rule out), and a sentence saying why.
    /// </summary>
    public static (IBackend Backend, string Why) Auto(Op? op = null, Core.DType dtype = Core.DType.F32, Func<IBackend, string?>? limitation = null)
    {
        var skipped = new List<string>();
        foreach (var provider in Providers.OrderByDescending(p => p.AutoPriority))
        {
            var probe = provider.ProbeForAuto();
            if (probe.Backend is null)
            {
                skipped.Add($"{provider.Name} is unavailable ({probe.UnavailableReason})");
                continue;
            }
            if (op is not null && !probe.Backend.Supports(op, dtype, out var reason))
            {
                skipped.Add($"{provider.Name} cannot run it ({reason})");
                probe.Backend.Dispose();
                continue;
            }
            if (limitation?.Invoke(probe.Backend) is { } limit)
            {
                skipped.Add($"{provider.Name} cannot run it ({limit})");
                probe.Backend.Dispose();
                continue;
            }
            string why = skipped.Count == 0
                ? $"auto chose '{provider.Name}': the preferred backend here"
                : $"auto chose '{provider.Name}' because {string.Join("; ", skipped)}";
            return (probe.Backend, why);
        }
        throw new Core.UnsupportedConfigurationException("no backend is available: " + string.Join("; ", skipped));
    }

    private static IReadOnlyList<IBackendProvider> Discover()
    {
        var assemblies = new Dictionary<string, Assembly>(StringComparer.Ordinal);
        foreach (var loaded in AppDomain.CurrentDomain.GetAssemblies())
            if (loaded.GetName().Name is { } name && name.StartsWith("UltraGen", StringComparison.Ordinal))
                assemblies[name] = loaded;
        foreach (var path in Directory.EnumerateFiles(AppContext.BaseDirectory, "UltraGen.*.dll"))
        {
            string name = Path.GetFileNameWithoutExtension(path);
            if (assemblies.ContainsKey(name)) continue;
            try { assemblies[name] = Assembly.Load(new AssemblyName(name)); }
            catch (Exception e) when (e is FileNotFoundException or BadImageFormatException or FileLoadException) { }
        }
        return assemblies.Values
            .SelectMany(SafeTypes)
            .Where(t => t.IsClass && !t.IsAbstract && typeof(IBackendProvider).IsAssignableFrom(t) && t.GetConstructor(Type.EmptyTypes) is not null)
            .Select(t => (IBackendProvider)Activator.CreateInstance(t)!)
            .OrderByDescending(p => p.AutoPriority)
            .ToList();
    }

    private static IEnumerable<Type> SafeTypes(Assembly assembly)
    {
        try { return assembly.GetTypes(); }
        catch (ReflectionTypeLoadException e) { return e.Types.Where(t => t is not null)!; }
    }
}
