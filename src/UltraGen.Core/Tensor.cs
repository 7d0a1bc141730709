using System.Runtime.InteropServices;

namespace UltraGen.Core;

/// <summary>
/// Memory that holds a tensor's elements. A backend owns the storage it allocates: host storage is native memory
/// on this process's heap; device backends subclass this for GPU buffers.
/// </summary>
public abstract class TensorStorage : IDisposable
{
    public long ByteCount { get; }

    /// <summary>Where the bytes live ("host", "cuda:0", ...).</summary>
    public abstract string Location { get; }

    protected TensorStorage(long byteCount) => ByteCount = byteCount;

    public abstract void Dispose();
}

/// <summary>64-byte aligned native memory, so SIMD loads never split a cache line at the start of a tensor.</summary>
public sealed unsafe class HostStorage : TensorStorage
{
    private void* _pointer;
    private readonly MemoryCounter? _counter;

    public HostStorage(long byteCount) : this(byteCount, null) { }

    /// <summary>Host memory whose bytes are reported to <paramref name="counter"/> (when given) until freed.</summary>
    public HostStorage(long byteCount, MemoryCounter? counter) : base(byteCount)
    {
        _pointer = NativeMemory.AlignedAlloc((nuint)Math.Max(byteCount, 1), 64);
        if (_pointer == null) throw new OutOfMemoryException($"could not allocate {byteCount} bytes of host memory");
        _counter = counter;
        _counter?.Allocated(byteCount);
    }

    public override string Location => "host";

    public IntPtr Pointer => _pointer == null ? throw new ObjectDisposedException(nameof(HostStorage)) : (IntPtr)_pointer;

    /// <summary>The storage as elements of <typeparamref name="T"/>; at most int.MaxValue of them.</summary>
    public Span<T> AsSpan<T>() where T : unmanaged
    {
        long count = ByteCount / sizeof(T);
        if (count > int.MaxValue)
            throw new UnsupportedConfigurationException(
                $"host tensor of {ByteCount} bytes exceeds a single span of {typeof(T).Name}; split it");
        return new Span<T>((void*)Pointer, (int)count);
    }

    public override void Dispose()
    {
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
            _counter?.Freed(ByteCount);
        }
        GC.SuppressFinalize(this);
    }

    ~HostStorage()
    {
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _counter?.Freed(ByteCount);
        }
    }
}

/// <summary>
/// A dense row-major tensor: shape, element type and the storage that holds it. The tensor owns its storage and
/// frees it on <see cref="Dispose"/>.
/// </summary>
public sealed class Tensor : IDisposable
{
    private readonly int[] _shape;

    private readonly bool _ownsStorage;

    public Tensor(DType dtype, int[] shape, TensorStorage storage) : this(dtype, shape, storage, ownsStorage: true) { }

    private Tensor(DType dtype, int[] shape, TensorStorage storage, bool ownsStorage)
    {
        _ownsStorage = ownsStorage;
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(storage);
        _shape = (int[])shape.Clone();
        DType = dtype;
        ElementCount = Core.Shape.ElementCount(_shape);
        if (storage.ByteCount < ByteCount)
            throw new ArgumentException(
                $"storage of {storage.ByteCount} bytes is smaller than a {dtype} tensor of shape {Core.Shape.Format(_shape)}",
                nameof(storage));
        Storage = storage;
    }

    public DType DType { get; }
    public ReadOnlySpan<int> Shape => _shape;
    public int[] ShapeArray => (int[])_shape.Clone();
    public int Rank => _shape.Length;
    public long ElementCount { get; }
    public long ByteCount => ElementCount * DTypes.SizeOf(DType);
    public TensorStorage Storage { get; }

    /// <summary>Whether disposing this tensor frees its storage (false for views made by <see cref="Reshape"/>).</summary>
    public bool OwnsStorage => _ownsStorage;

    /// <summary>
    /// A view of the same storage under another shape with the same element count. The view does not own the storage:
    /// keep the original alive while the view is used; disposing the view is a no-op.
    /// </summary>
    public Tensor Reshape(params int[] shape)
    {
        if (Core.Shape.ElementCount(shape) != ElementCount)
            throw new ShapeMismatchException($"cannot view {this} as {Core.Shape.Format(shape)}: element counts differ");
        return new Tensor(DType, shape, Storage, ownsStorage: false);
    }

    public int Dim(int axis) => _shape[axis < 0 ? _shape.Length + axis : axis];

    /// <summary>Allocates an uninitialised host tensor.</summary>
    public static Tensor Host(DType dtype, params int[] shape)
    {
        long bytes = checked(Core.Shape.ElementCount(shape) * DTypes.SizeOf(dtype));
        return new Tensor(dtype, shape, new HostStorage(bytes));
    }

    /// <summary>A host tensor of <paramref name="dtype"/> holding <paramref name="values"/> rounded to that dtype.</summary>
    public static Tensor FromDoubles(DType dtype, int[] shape, ReadOnlySpan<double> values)
    {
        var tensor = Host(dtype, shape);
        if (values.Length != tensor.ElementCount)
            throw new ShapeMismatchException(
                $"{values.Length} values do not fill a tensor of shape {Core.Shape.Format(shape)}");
        tensor.CopyFrom(values);
        return tensor;
    }

    private HostStorage HostStorageOrThrow => Storage as HostStorage
        ?? throw new InvalidOperationException($"tensor lives on {Storage.Location}; copy it to the host first");

    public bool IsHost => Storage is HostStorage;

    /// <summary>The raw bytes of a host tensor.</summary>
    public Span<byte> HostBytes => HostStorageOrThrow.AsSpan<byte>()[..checked((int)ByteCount)];

    /// <summary>Typed view of a host tensor's elements (the type must match the dtype's width).</summary>
    public Span<T> HostSpan<T>() where T : unmanaged
    {
        if (Marshal.SizeOf<T>() != DTypes.SizeOf(DType))
            throw new InvalidOperationException($"{typeof(T).Name} does not match dtype {DType}");
        return HostStorageOrThrow.AsSpan<T>()[..checked((int)ElementCount)];
    }

    public double[] ToDoubles()
    {
        var values = new double[ElementCount];
        FloatConversions.Decode(DType, HostBytes, values);
        return values;
    }

    public float[] ToFloats()
    {
        var values = ToDoubles();
        var result = new float[values.Length];
        for (int i = 0; i < values.Length; i++) result[i] = (float)values[i];
        return result;
    }

    public void CopyFrom(ReadOnlySpan<double> values) => FloatConversions.Encode(DType, values, HostBytes);

    /// <summary>Fills every element with <paramref name="value"/> (NaN poisons a buffer before a kernel writes it).</summary>
    public void Fill(double value)
    {
        var values = new double[ElementCount];
        Array.Fill(values, value);
        CopyFrom(values);
    }

    public override string ToString() => $"Tensor<{DTypes.Lower(DType)}>{Core.Shape.Format(_shape)} on {Storage.Location}";

    public void Dispose()
    {
        if (_ownsStorage) Storage.Dispose();
    }
}
