using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace UltraGen.Core.Safetensors;

/// <summary>Writes host tensors to a safetensors file, atomically.</summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> (host tensors of any UltraGen dtype) in the given order, contiguously, with
    /// optional <c>__metadata__</c>. The header is padded with spaces so the data buffer starts 8-byte aligned.
    /// The file is written to a temporary file in the target's directory and renamed over the target only once
    /// complete and flushed: on any exception the temporary file is deleted and an existing target is untouched.
    /// </summary>
    /// <exception cref="ArgumentException">A name is null, empty, "__metadata__" or repeated; a tensor is null or not on the host.</exception>
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var entries = tensors.ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, tensor) in entries)
        {
            if (string.IsNullOrEmpty(name))
                throw new ArgumentException("tensor names must be non-empty", nameof(tensors));
            if (name == SafetensorsHeaderParser.MetadataKey)
                throw new ArgumentException($"'{name}' is reserved and cannot name a tensor", nameof(tensors));
            if (!seen.Add(name))
                throw new ArgumentException($"duplicate tensor name '{name}'", nameof(tensors));
            if (tensor is null)
                throw new ArgumentException($"tensor '{name}' is null", nameof(tensors));
            if (!tensor.IsHost)
                throw new ArgumentException($"tensor '{name}' lives on {tensor.Storage.Location}; copy it to the host first", nameof(tensors));
        }
        if (metadata is not null)
            foreach (var (key, value) in metadata)
                if (key is null || value is null)
                    throw new ArgumentException("metadata keys and values must be non-null", nameof(metadata));

        byte[] header = BuildHeader(entries, metadata);

        string fullPath = System.IO.Path.GetFullPath(path);
        string directory = System.IO.Path.GetDirectoryName(fullPath) ?? ".";
        string temp = System.IO.Path.Combine(directory,
            $".{System.IO.Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> prefix = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                stream.Write(prefix);
                stream.Write(header);
                foreach (var (_, tensor) in entries) WriteData(stream, tensor);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); }
            catch (IOException) { } // best effort; the original exception matters more
            catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static byte[] BuildHeader(List<KeyValuePair<string, Tensor>> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(SafetensorsHeaderParser.MetadataKey);
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, tensor) in entries)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", DTypes.SafetensorsName(tensor.DType));
                json.WriteStartArray("shape");
                foreach (int dim in tensor.Shape) json.WriteNumberValue(dim);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset = checked(offset + tensor.ByteCount);
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int length = buffer.WrittenCount;
        int padded = (length + 7) / 8 * 8; // 8 + padded is then a multiple of 8
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    private static unsafe void WriteData(FileStream stream, Tensor tensor)
    {
        var storage = (HostStorage)tensor.Storage;
        byte* pointer = (byte*)storage.Pointer; // throws ObjectDisposedException for a disposed tensor
        const int Chunk = 1 << 24;
        for (long done = 0; done < tensor.ByteCount; done += Chunk)
        {
            int n = (int)Math.Min(Chunk, tensor.ByteCount - done);
            stream.Write(new ReadOnlySpan<byte>(pointer + done, n));
        }
    }
}
