using System.Text.RegularExpressions;
using UltraGen.Core;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda;

/// <summary>A PTX module or entry point the backend needs is missing; the message says what was looked for and where.</summary>
public sealed class PtxNotFoundException(string message) : UltraGenException(message);

/// <summary>
/// Where PTX lives and which file fits a device: modules are <c>{module}.sm{NN}.ptx</c> (CMakeLists.txt emits one per
/// architecture in ULTRAGEN_CUDA_ARCHS); the best file for compute capability <c>cc</c> is the highest NN ≤ cc (sm90 on
/// Hopper when built, else sm80; sm80 on Ada and Ampere). Pure functions, testable without a GPU.
/// </summary>
public static partial class PtxLocator
{
    public const string EnvironmentVariable = "ULTRAGEN_PTX_DIR";

    public const string BuildHint = "build it with `cmake -S . -B build && cmake --build build` (needs nvcc), then set ULTRAGEN_PTX_DIR=build/ptx or rebuild the .NET project so build/ptx is copied to ptx/ beside the assembly";

    [GeneratedRegex(@"^(?<module>.+)\.sm(?<arch>\d{2,3})\.ptx$", RegexOptions.CultureInvariant)]
    private static partial Regex FileNamePattern();

    /// <summary>The folder to search: <c>$ULTRAGEN_PTX_DIR</c> when set (and only it), else <c>ptx/</c> beside this assembly.</summary>
    public static (string Directory, string Origin) SearchDirectory(string? environmentValue, string assemblyDirectory) =>
        string.IsNullOrWhiteSpace(environmentValue)
            ? (Path.Combine(assemblyDirectory, "ptx"), "ptx/ beside the assembly")
            : (Path.GetFullPath(environmentValue), $"${EnvironmentVariable}");

    public static (string Directory, string Origin) DefaultSearchDirectory() =>
        SearchDirectory(Environment.GetEnvironmentVariable(EnvironmentVariable), Path.GetDirectoryName(typeof(PtxLocator).Assembly.Location) ?? AppContext.BaseDirectory);

    /// <summary>Every <c>{module}.sm{NN}.ptx</c> in <paramref name="directory"/> (empty when the folder does not exist).</summary>
    public static IReadOnlyList<(string Module, int Arch, string Path)> Survey(string directory)
    {
        if (!Directory.Exists(directory)) return [];
        var result = new List<(string, int, string)>();
        foreach (var path in Directory.EnumerateFiles(directory, "*.ptx"))
        {
            var match = FileNamePattern().Match(Path.GetFileName(path));
            if (match.Success) result.Add((match.Groups["module"].Value, int.Parse(match.Groups["arch"].Value), path));
        }
        return result.OrderBy(f => f.Item1, StringComparer.Ordinal).ThenBy(f => f.Item2).ToList();
    }

    /// <summary>Null when the folder holds usable PTX, else why not (the folder, where the path came from, how to build).</summary>
    public static string? Missing(string directory, string origin)
    {
        if (!Directory.Exists(directory)) return $"no PTX: {directory} ({origin}) does not exist; {BuildHint}";
        if (Survey(directory).Count == 0) return $"no PTX: {directory} ({origin}) holds no *.sm<NN>.ptx files; {BuildHint}";
        return null;
    }

    /// <summary>
    /// The file of <paramref name="module"/> for a device of compute capability <paramref name="computeCapability"/>
    /// (major·10 + minor): the highest architecture not above it. Throws <see cref="PtxNotFoundException"/> naming the
    /// module, the folder and the architectures that are there.
    /// </summary>
    public static string Select(string module, int computeCapability, string directory, string origin)
    {
        var files = Survey(directory).Where(f => f.Module == module).ToList();
        var best = files.Where(f => f.Arch <= computeCapability).OrderByDescending(f => f.Arch).FirstOrDefault();
        if (best.Path is not null) return best.Path;
        string found = files.Count == 0
            ? "none for this module"
            : "only " + string.Join(", ", files.Select(f => $"sm{f.Arch}")) + $", all newer than the device's sm{computeCapability}";
        throw new PtxNotFoundException(
            $"PTX module '{module}' for sm{computeCapability} not found: looked for {module}.sm<NN>.ptx with NN ≤ {computeCapability} in {directory} ({origin}), found {found}; {BuildHint}");
    }
}

/// <summary>
/// The PTX modules loaded into one CUDA context: each module JIT-compiled once, on first use, and each function handle
/// looked up once. Thread-safe. Unloaded on <see cref="Dispose"/> (with the context current).
/// </summary>
public sealed class PtxModules(int computeCapability, string directory, string origin) : IDisposable
{
    private readonly object _gate = new();
    private readonly Dictionary<string, IntPtr> _modules = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Module, string Function), IntPtr> _functions = [];

    public int ComputeCapability => computeCapability;
    public string Directory => directory;
    public string Origin => origin;

    /// <summary>The file a module loads from (without loading it).</summary>
    public string PathOf(string module) => PtxLocator.Select(module, computeCapability, directory, origin);

    /// <summary>The handle of entry point <paramref name="function"/> in <paramref name="module"/>, loading the module if needed.</summary>
    public IntPtr Function(string module, string function)
    {
        lock (_gate)
        {
            if (_functions.TryGetValue((module, function), out var cached)) return cached;
            var handle = Module(module);
            IntPtr result;
            try
            {
                result = CudaDriver.Function(handle, function, $"kernel '{function}' (module {module}, {PathOf(module)})");
            }
            catch (CudaException e) when (e.ErrorCode == 500) // CUDA_ERROR_NOT_FOUND
            {
                throw new PtxNotFoundException(
                    $"PTX module '{module}' ({PathOf(module)}) has no entry point '{function}' ({e.ErrorName}); rebuild the PTX from kernels/ — {PtxLocator.BuildHint}");
            }
            _functions[(module, function)] = result;
            return result;
        }
    }

    private IntPtr Module(string module)
    {
        if (_modules.TryGetValue(module, out var loaded)) return loaded;
        string path = PathOf(module);
        var handle = CudaDriver.LoadModule(File.ReadAllText(path), $"module {module} ({path})");
        _modules[module] = handle;
        return handle;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var handle in _modules.Values) CudaDriver.UnloadModule(handle);
            _modules.Clear();
            _functions.Clear();
        }
    }
}
