using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;

namespace UltraGen.Cuda.Interop;

/// <summary>
/// Finds the CUDA driver and cuBLAS shared libraries. Our own <c>[LibraryImport]</c>s name the logical libraries
/// <see cref="Driver"/> and <see cref="CublasName"/>; the resolver maps them to the versioned files a machine actually has
/// (a driver-only machine has <c>libcuda.so.1</c> but no <c>libcuda.so</c> development link). ILGPU imports the driver as
/// "cuda", which the runtime probes as <c>libcuda.so</c>; when that fails, <see cref="AssemblyLoadContext.ResolvingUnmanagedDll"/>
/// hands it the same <c>libcuda.so.1</c> handle, so both bindings always talk to one driver instance.
/// </summary>
internal static class NativeLibraries
{
    public const string Driver = "cuda";
    public const string CublasName = "cublas";

    /// <summary>Candidate file names, most specific first.</summary>
    public static IReadOnlyList<string> DriverCandidates { get; } = OperatingSystem.IsWindows()
        ? ["nvcuda.dll"]
        : ["libcuda.so.1", "libcuda.so"];

    public static IReadOnlyList<string> CublasCandidates { get; } = OperatingSystem.IsWindows()
        ? ["cublas64_12.dll", "cublas64_11.dll"]
        : ["libcublas.so.12", "libcublas.so.11", "libcublas.so"];

    /// <summary>The file name the driver is reported under when it is missing ("libcuda.so.1" / "nvcuda.dll").</summary>
    public static string DriverFileName => DriverCandidates[0];

    private static readonly object s_gate = new();
    private static bool s_registered;
    private static IntPtr s_driver;
    private static IntPtr s_cublas;
    private static string? s_cublasError;

    /// <summary>Installs the resolvers once (idempotent, thread-safe).</summary>
    public static void EnsureRegistered()
    {
        lock (s_gate)
        {
            if (s_registered) return;
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, ResolveOwn);
            AssemblyLoadContext.Default.ResolvingUnmanagedDll += ResolveFallback;
            s_registered = true;
        }
    }

    /// <summary>Loads the driver library; false (with the file it looked for) when this machine has none.</summary>
    public static bool TryLoadDriver(out IntPtr handle)
    {
        lock (s_gate)
        {
            if (s_driver == IntPtr.Zero)
                foreach (var name in DriverCandidates)
                    if (NativeLibrary.TryLoad(name, out s_driver)) break;
            handle = s_driver;
            return handle != IntPtr.Zero;
        }
    }

    /// <summary>Loads cuBLAS; the reason names every file tried when none loads.</summary>
    public static bool TryLoadCublas(out IntPtr handle, out string? reason)
    {
        lock (s_gate)
        {
            if (s_cublas == IntPtr.Zero && s_cublasError is null)
            {
                foreach (var name in CublasCandidates)
                    if (NativeLibrary.TryLoad(name, out s_cublas)) break;
                if (s_cublas == IntPtr.Zero)
                    s_cublasError = $"cuBLAS not found (tried {string.Join(", ", CublasCandidates)}); install the CUDA toolkit's cuBLAS or put it on the library path";
            }
            handle = s_cublas;
            reason = s_cublasError;
            return handle != IntPtr.Zero;
        }
    }

    private static IntPtr ResolveOwn(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) => libraryName switch
    {
        Driver => TryLoadDriver(out var driver) ? driver : IntPtr.Zero,
        CublasName => TryLoadCublas(out var cublas, out _) ? cublas : IntPtr.Zero,
        _ => IntPtr.Zero,
    };

    private static IntPtr ResolveFallback(Assembly assembly, string libraryName) =>
        libraryName is "cuda" or "nvcuda" && TryLoadDriver(out var driver) ? driver : IntPtr.Zero;
}
