using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.CompilerServices;

namespace UltraGen.Core.Safetensors;

/// <summary>
/// A safetensors file opened read-only and memory-mapped. <see cref="Open"/> validates the whole header (every
/// violation is a <see cref="SafetensorsFormatException"/> naming the file and, where one is involved, the tensor);
/// tensor data is touched only when a tensor is read. Spans from <see cref="GetBytes"/> point into the mapping and
/// are valid until <see cref="Dispose"/>.
/// </summary>
/// <remarks>
/// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data buffer, to which the
/// header's data_offsets are relative. Accepted leniencies relative to the reference implementation: gaps between
/// tensors and trailing bytes after the last tensor are allowed (overlaps are not), and <c>"__metadata__": null</c>
/// reads as empty metadata. Modifying or truncating the file while it is open is undefined (as for any mapping).
/// Reads from several threads at once are safe; <see cref="Dispose"/> must not race them.
/// </remarks>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Headers longer than this are refused before anything is allocated (the reference limit).</summary>
    public const long MaxHeaderLength = 100_000_000;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly Dictionary<string, SafetensorsTensorInfo> _byName;
    private readonly long _fileLength;
    private byte* _base;

    private SafetensorsFile(string path, long fileLength, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePointer,
        long dataOffset, SafetensorsHeaderParser.Header header)
    {
        Path = path;
        _fileLength = fileLength;
        _map = map;
        _view = view;
        _base = basePointer;
        DataOffset = dataOffset;
        Tensors = header.Tensors.AsReadOnly();
        Names = header.Tensors.ConvertAll(t => t.Name).AsReadOnly();
        Metadata = header.Metadata.AsReadOnly();
        _byName = new Dictionary<string, SafetensorsTensorInfo>(header.Tensors.Count, StringComparer.Ordinal);
        foreach (var t in header.Tensors) _byName.Add(t.Name, t);
    }

    /// <summary>The path the file was opened with (used in every error message).</summary>
    public string Path { get; }

    /// <summary>The <c>__metadata__</c> entries (empty if the header has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensor names in header order (the order the JSON object lists them, not sorted).</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>Tensor entries in header order.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }

    /// <summary>File offset of the data buffer (8 + header length).</summary>
    public long DataOffset { get; }

    public int Count => Names.Count;

    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>Opens and validates <paramref name="path"/>. A missing file is a <see cref="SafetensorsFormatException"/> saying so.</summary>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.None);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new SafetensorsFormatException(path, null, "file not found");
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        byte* pointer = null;
        try
        {
            long length = stream.Length;
            // Everything that can be decided from the length and the first 8 bytes is checked before mapping:
            // mapping a 0-byte file throws, and nothing may be allocated for a lying header length.
            if (length < 8)
                throw new SafetensorsFormatException(path, null, $"file is {length} bytes, shorter than the 8-byte header length");
            Span<byte> prefix = stackalloc byte[8];
            stream.ReadExactly(prefix);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > MaxHeaderLength)
                throw new SafetensorsFormatException(path, null,
                    $"header length {headerLength} exceeds the limit of {MaxHeaderLength} bytes");
            if (headerLength > (ulong)(length - 8))
                throw new SafetensorsFormatException(path, null,
                    $"header length {headerLength} runs past the end of the {length}-byte file");

            map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read,
                HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointer += view.PointerOffset;

            long dataOffset = 8 + (long)headerLength;
            var header = SafetensorsHeaderParser.Parse(path, new ReadOnlySpan<byte>(pointer + 8, (int)headerLength),
                length - dataOffset);
            return new SafetensorsFile(path, length, map, view, pointer, dataOffset, header);
        }
        catch
        {
            if (pointer != null) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            stream.Dispose(); // no-op once the map owns it
            throw;
        }
    }

    public bool TryGetInfo(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SafetensorsTensorInfo? info)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _byName.TryGetValue(name, out info);
    }

    /// <summary>The header entry of <paramref name="name"/>; <see cref="MissingTensorException"/> if there is none.</summary>
    public SafetensorsTensorInfo GetInfo(string name) =>
        TryGetInfo(name, out var info) ? info : throw new MissingTensorException(Path, name);

    /// <summary>
    /// The raw little-endian bytes of a tensor, straight from the mapping (valid until <see cref="Dispose"/>).
    /// Tensors over 2 GiB do not fit a span: read those with <see cref="ReadTensor(string)"/>.
    /// </summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        var info = GetInfo(name);
        if (info.ByteCount > int.MaxValue)
            throw new UnsupportedConfigurationException(
                $"{Path}: tensor '{name}' is {info.ByteCount} bytes, too large for a span; use ReadTensor");
        return new ReadOnlySpan<byte>(DataPointer(info), (int)info.ByteCount);
    }

    /// <summary>Copies a tensor into a new host tensor of its own dtype. The caller owns (and disposes) the result.</summary>
    public Tensor ReadTensor(string name)
    {
        var info = GetInfo(name);
        DType dtype = RequireComputable(info);
        var tensor = Tensor.Host(dtype, info.Shape);
        try
        {
            var storage = (HostStorage)tensor.Storage;
            Buffer.MemoryCopy(DataPointer(info), (void*)storage.Pointer, storage.ByteCount, info.ByteCount);
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
        return tensor;
    }

    /// <summary>
    /// Reads a tensor into a new host tensor of <paramref name="convertTo"/>, converting each element through double
    /// with round-to-nearest-even (<see cref="FloatConversions"/>). Same dtype is a plain copy.
    /// </summary>
    public Tensor ReadTensor(string name, DType convertTo)
    {
        var info = GetInfo(name);
        DType source = RequireComputable(info);
        if (source == convertTo) return ReadTensor(name);
        var tensor = Tensor.Host(convertTo, info.Shape);
        try
        {
            int sourceSize = DTypes.SizeOf(source), targetSize = DTypes.SizeOf(convertTo);
            byte* from = DataPointer(info);
            byte* to = (byte*)((HostStorage)tensor.Storage).Pointer;
            const int Chunk = 1024;
            Span<double> scratch = stackalloc double[Chunk];
            for (long done = 0; done < info.ElementCount; done += Chunk)
            {
                int n = (int)Math.Min(Chunk, info.ElementCount - done);
                var values = scratch[..n];
                FloatConversions.Decode(source, new ReadOnlySpan<byte>(from + done * sourceSize, n * sourceSize), values);
                FloatConversions.Encode(convertTo, values, new Span<byte>(to + done * targetSize, n * targetSize));
            }
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
        return tensor;
    }

    private DType RequireComputable(SafetensorsTensorInfo info) =>
        info.DType ?? throw new UnsupportedConfigurationException(
            $"{Path}: tensor '{info.Name}' has dtype {info.DTypeName}, which UltraGen cannot compute in (F32, BF16, F16, F64)");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* DataPointer(SafetensorsTensorInfo info)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        return _base + DataOffset + info.DataBegin;
    }

    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    public override string ToString() => $"{Path} ({Count} tensors, {_fileLength} bytes)";
}
