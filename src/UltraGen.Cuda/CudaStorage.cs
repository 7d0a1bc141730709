using UltraGen.Core;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda;

/// <summary>
/// A device buffer from cuMemAlloc. <see cref="Dispose"/> frees it; a storage that is never disposed is freed by its
/// finalizer, which makes the context current on the finalizer thread first and never throws (a driver already torn down
/// at process exit is ignored).
/// </summary>
public sealed class CudaStorage : TensorStorage
{
    private readonly CudaDevice _device;
    private IntPtr _pointer;
    private readonly MemoryCounter? _counter;

    public CudaStorage(CudaDevice device, long byteCount) : this(device, byteCount, null) { }

    /// <summary>A device buffer whose bytes are reported to <paramref name="counter"/> (when given) until freed.</summary>
    public CudaStorage(CudaDevice device, long byteCount, MemoryCounter? counter) : base(byteCount)
    {
        _device = device;
        _device.MakeCurrent();
        _pointer = CudaDriver.Allocate(byteCount);
        _counter = counter;
        _counter?.Allocated(byteCount);
    }

    public override string Location => $"cuda:{_device.Ordinal}";

    /// <summary>The device address (CUdeviceptr).</summary>
    public IntPtr Pointer => _pointer == IntPtr.Zero ? throw new ObjectDisposedException(nameof(CudaStorage)) : _pointer;

    public CudaDevice Device => _device;

    public override void Dispose()
    {
        Release();
        GC.SuppressFinalize(this);
    }

    private void Release()
    {
        var pointer = Interlocked.Exchange(ref _pointer, IntPtr.Zero);
        if (pointer == IntPtr.Zero) return;
        _counter?.Freed(ByteCount);
        try
        {
            _device.MakeCurrent();
            CudaDriver.Free(pointer);
        }
        catch (CudaException) { } // context gone at shutdown: the driver reclaims the memory with the process
    }

    ~CudaStorage() => Release();
}
