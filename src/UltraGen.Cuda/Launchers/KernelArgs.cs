using System.Runtime.CompilerServices;
using UltraGen.Core;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// The argument list of one kernel launch, built in the order of the kernel's C parameter list: each value is copied into
/// a buffer at its natural alignment, and <see cref="Launch"/> hands cuLaunchKernel the array of pointers to them.
/// </summary>
public sealed unsafe class KernelArgs
{
    private byte[] _buffer = new byte[128];
    private readonly List<int> _offsets = [];
    private int _used;

    public int Count => _offsets.Count;

    public KernelArgs Add<T>(T value) where T : unmanaged
    {
        int size = sizeof(T), align = Math.Min(size >= 8 ? 8 : size >= 4 ? 4 : size, 8);
        int offset = (_used + align - 1) / align * align;
        if (offset + size > _buffer.Length) Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, offset + size));
        Unsafe.WriteUnaligned(ref _buffer[offset], value);
        _offsets.Add(offset);
        _used = offset + size;
        return this;
    }

    public KernelArgs Ptr(IntPtr pointer) => Add(pointer);
    public KernelArgs Int(int value) => Add(value);
    public KernelArgs Float(float value) => Add(value);

    /// <summary>The offsets of each argument in the packed buffer (for tests of the packing rule).</summary>
    public IReadOnlyList<int> Offsets => _offsets;

    internal void Launch(IntPtr function, Dim3 grid, Dim3 block, int sharedBytes, IntPtr stream, string subject)
    {
        void** pointers = stackalloc void*[Math.Max(1, _offsets.Count)];
        fixed (byte* buffer = _buffer)
        {
            for (int i = 0; i < _offsets.Count; i++) pointers[i] = buffer + _offsets[i];
            CudaDriver.Launch(function, grid, block, sharedBytes, stream, pointers, subject);
        }
    }
}

/// <summary>What a launcher needs: the device, its loaded PTX, the stream work is queued on, and scratch memory.</summary>
public sealed class LaunchContext(CudaDevice device, PtxModules modules, IntPtr stream)
{
    private readonly HashSet<IntPtr> _sharedConfigured = [];

    public CudaDevice Device => device;
    public PtxModules Modules => modules;
    public IntPtr Stream => stream;

    /// <summary>Launches <paramref name="module"/>.<paramref name="function"/>; raises the dynamic shared-memory limit first when needed.</summary>
    public void Launch(string module, string function, Dim3 grid, Dim3 block, KernelArgs args, int sharedBytes = 0)
    {
        string subject = $"kernel '{function}' (module {module})";
        if (grid.X < 1 || grid.Y < 1 || grid.Z < 1 || grid.Y > 65535 || grid.Z > 65535)
            throw new UnsupportedConfigurationException($"{subject}: grid {grid} is outside CUDA's limits (x ≥ 1, 1 ≤ y, z ≤ 65535)");
        var handle = modules.Function(module, function);
        if (sharedBytes > 48 * 1024)
        {
            if (sharedBytes > device.SharedMemoryPerBlockOptin)
                throw new UnsupportedConfigurationException(
                    $"{subject} needs {sharedBytes} bytes of shared memory per block; {device.Name} allows {device.SharedMemoryPerBlockOptin}");
            lock (_sharedConfigured)
                if (_sharedConfigured.Add(handle)) CudaDriver.SetMaxDynamicSharedMemory(handle, sharedBytes, subject);
        }
        args.Launch(handle, grid, block, sharedBytes, stream, subject);
        LaunchObserver?.Invoke(function);
        if (SynchronizeEachLaunch) CudaDriver.SynchronizeStream(stream, subject);
    }

    /// <summary>Called with each launched entry point's name (tests: which kernel variant actually ran).</summary>
    internal Action<string>? LaunchObserver { get; set; }

    /// <summary>
    /// ULTRAGEN_CUDA_SYNC=1 waits for every kernel right after its launch, so an asynchronous fault (illegal address, …)
    /// is reported against the kernel that caused it instead of a later call. Off by default (it serialises host and GPU).
    /// </summary>
    public static bool SynchronizeEachLaunch { get; } = Environment.GetEnvironmentVariable("ULTRAGEN_CUDA_SYNC") is "1" or "true";

    /// <summary>A scratch buffer on this device (dispose it after the launches that use it; cuMemFree waits for them).</summary>
    public CudaStorage Scratch(long bytes) => new(device, bytes);

    /// <summary>A 32-bit element count as the kernels take it; larger tensors are an explicit unsupported configuration.</summary>
    public static int Count(long n, string what) => n <= int.MaxValue
        ? (int)n
        : throw new UnsupportedConfigurationException($"{what}: {n} elements exceed the kernels' 32-bit element count; split the tensor");
}
