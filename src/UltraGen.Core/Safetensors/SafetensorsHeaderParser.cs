using System.Text.Json;
using System.Text.Unicode;

namespace UltraGen.Core.Safetensors;

/// <summary>
/// Parses and validates the JSON header of a safetensors file. Every violation is a
/// <see cref="SafetensorsFormatException"/>; nothing is allocated beyond the parsed names, shapes and metadata,
/// whose total size is bounded by the header length.
/// </summary>
internal static class SafetensorsHeaderParser
{
    public const string MetadataKey = "__metadata__";

    /// <summary>Root object, tensor object, shape array: anything deeper is a type error before it is reached.</summary>
    private const int MaxDepth = 4;

    internal sealed record Header(List<SafetensorsTensorInfo> Tensors, Dictionary<string, string> Metadata);

    public static Header Parse(string path, ReadOnlySpan<byte> json, long bufferLength)
    {
        if (!Utf8.IsValid(json))
            throw new SafetensorsFormatException(path, null, "header is not valid UTF-8");

        var tensors = new List<SafetensorsTensorInfo>();
        var byName = new HashSet<string>(StringComparer.Ordinal);
        Dictionary<string, string>? metadata = null;
        var reader = new Utf8JsonReader(json, new JsonReaderOptions
        {
            MaxDepth = MaxDepth,
            CommentHandling = JsonCommentHandling.Disallow,
            AllowTrailingCommas = false,
        });
        string? current = null;
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw new SafetensorsFormatException(path, null, "header is not a JSON object");
            while (true)
            {
                current = null;
                Next(ref reader, path, null);
                if (reader.TokenType == JsonTokenType.EndObject) break;
                string key = reader.GetString()!; // the reader guarantees a property name here
                current = key;
                if (!byName.Add(key))
                    throw new SafetensorsFormatException(path, key == MetadataKey ? null : key,
                        key == MetadataKey ? "duplicate __metadata__ entry" : "duplicate tensor name");
                if (key == MetadataKey)
                {
                    current = null;
                    metadata = ParseMetadata(ref reader, path);
                }
                else
                {
                    tensors.Add(ParseTensor(ref reader, path, key, bufferLength));
                }
            }
            current = null;
            if (reader.Read())
                throw new SafetensorsFormatException(path, null, "unexpected content after the header's JSON object");
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, current, $"header is not valid JSON ({Short(e.Message)})");
        }
        catch (InvalidOperationException e)
        {
            // Utf8JsonReader.GetString throws this for escaped lone surrogates ("\ud800").
            throw new SafetensorsFormatException(path, current, $"header holds an invalid JSON string ({Short(e.Message)})");
        }

        CheckOverlaps(path, tensors);
        return new Header(tensors, metadata ?? new Dictionary<string, string>(StringComparer.Ordinal));
    }

    private static string Short(string message) => message.Length <= 200 ? message : message[..200] + "...";

    private static void Next(ref Utf8JsonReader reader, string path, string? tensor)
    {
        if (!reader.Read())
            throw new SafetensorsFormatException(path, tensor, "header JSON ends early");
    }

    private static Dictionary<string, string> ParseMetadata(ref Utf8JsonReader reader, string path)
    {
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        Next(ref reader, path, null);
        if (reader.TokenType == JsonTokenType.Null) return metadata; // the reference implementation accepts null
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new SafetensorsFormatException(path, null, $"__metadata__ must be an object of strings, not {Describe(reader.TokenType)}");
        while (true)
        {
            Next(ref reader, path, null);
            if (reader.TokenType == JsonTokenType.EndObject) return metadata;
            string key = reader.GetString()!;
            Next(ref reader, path, null);
            if (reader.TokenType != JsonTokenType.String)
                throw new SafetensorsFormatException(path, null,
                    $"__metadata__ value of '{key}' must be a string, not {Describe(reader.TokenType)}");
            if (!metadata.TryAdd(key, reader.GetString()!))
                throw new SafetensorsFormatException(path, null, $"duplicate __metadata__ key '{key}'");
        }
    }

    private static SafetensorsTensorInfo ParseTensor(ref Utf8JsonReader reader, string path, string name, long bufferLength)
    {
        Next(ref reader, path, name);
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new SafetensorsFormatException(path, name, $"entry must be an object, not {Describe(reader.TokenType)}");

        string? dtype = null;
        int[]? shape = null;
        ulong begin = 0, end = 0;
        bool haveOffsets = false;
        while (true)
        {
            Next(ref reader, path, name);
            if (reader.TokenType == JsonTokenType.EndObject) break;
            if (reader.ValueTextEquals("dtype"u8))
            {
                if (dtype is not null) throw new SafetensorsFormatException(path, name, "duplicate field 'dtype'");
                Next(ref reader, path, name);
                if (reader.TokenType != JsonTokenType.String)
                    throw new SafetensorsFormatException(path, name, $"'dtype' must be a string, not {Describe(reader.TokenType)}");
                dtype = reader.GetString()!;
                if (!SafetensorsDTypes.IsKnown(dtype))
                    throw new SafetensorsFormatException(path, name, $"unknown dtype '{Printable(dtype)}'");
            }
            else if (reader.ValueTextEquals("shape"u8))
            {
                if (shape is not null) throw new SafetensorsFormatException(path, name, "duplicate field 'shape'");
                shape = ParseShape(ref reader, path, name);
            }
            else if (reader.ValueTextEquals("data_offsets"u8))
            {
                if (haveOffsets) throw new SafetensorsFormatException(path, name, "duplicate field 'data_offsets'");
                Next(ref reader, path, name);
                if (reader.TokenType != JsonTokenType.StartArray)
                    throw new SafetensorsFormatException(path, name, $"'data_offsets' must be an array of two integers, not {Describe(reader.TokenType)}");
                Next(ref reader, path, name);
                begin = ReadUnsigned(ref reader, path, name, "data_offsets");
                Next(ref reader, path, name);
                end = ReadUnsigned(ref reader, path, name, "data_offsets");
                Next(ref reader, path, name);
                if (reader.TokenType != JsonTokenType.EndArray)
                    throw new SafetensorsFormatException(path, name, "'data_offsets' must hold exactly two integers");
                haveOffsets = true;
            }
            else
            {
                throw new SafetensorsFormatException(path, name, $"unknown field '{Printable(reader.GetString()!)}'");
            }
        }
        if (dtype is null) throw new SafetensorsFormatException(path, name, "missing field 'dtype'");
        if (shape is null) throw new SafetensorsFormatException(path, name, "missing field 'shape'");
        if (!haveOffsets) throw new SafetensorsFormatException(path, name, "missing field 'data_offsets'");

        if (begin > end)
            throw new SafetensorsFormatException(path, name, $"data_offsets [{begin}, {end}] end before they begin");
        if (end > (ulong)bufferLength)
            throw new SafetensorsFormatException(path, name,
                $"data_offsets [{begin}, {end}] run past the end of the {bufferLength}-byte data buffer (file truncated?)");

        long elements = ElementCount(shape, out bool overflow);
        int bits = SafetensorsDTypes.BitWidth(dtype);
        UInt128 totalBits = overflow ? UInt128.MaxValue : (UInt128)(ulong)elements * (uint)bits;
        if (overflow || totalBits % 8 != 0 || totalBits / 8 != end - begin)
        {
            string size = overflow ? "more elements than fit in 63 bits"
                : totalBits % 8 != 0 ? $"{totalBits} bits, not a whole number of bytes" : $"{totalBits / 8} bytes";
            throw new SafetensorsFormatException(path, name,
                $"shape {Core.Shape.Format(shape)} of {dtype} needs {size} but data_offsets [{begin}, {end}] span {end - begin}");
        }
        return new SafetensorsTensorInfo(name, dtype, shape, elements, (long)begin, (long)end);
    }

    private static int[] ParseShape(ref Utf8JsonReader reader, string path, string name)
    {
        Next(ref reader, path, name);
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new SafetensorsFormatException(path, name, $"'shape' must be an array of integers, not {Describe(reader.TokenType)}");
        Span<int> dims = stackalloc int[16];
        int rank = 0;
        int[]? big = null;
        while (true)
        {
            Next(ref reader, path, name);
            if (reader.TokenType == JsonTokenType.EndArray) break;
            ulong dim = ReadUnsigned(ref reader, path, name, "shape");
            if (dim > int.MaxValue)
                throw new SafetensorsFormatException(path, name, $"shape dimension {dim} does not fit a 32-bit int");
            if (rank == dims.Length)
            {
                // The header length bounds the rank, so growing here is bounded by the file size.
                big = new int[dims.Length * 2];
                dims.CopyTo(big);
                dims = big;
            }
            dims[rank++] = (int)dim;
        }
        return dims[..rank].ToArray();
    }

    /// <summary>Reads a JSON number that must be a plain non-negative integer (no sign, fraction or exponent).</summary>
    private static ulong ReadUnsigned(ref Utf8JsonReader reader, string path, string name, string field)
    {
        if (reader.TokenType != JsonTokenType.Number)
            throw new SafetensorsFormatException(path, name, $"'{field}' must hold integers, not {Describe(reader.TokenType)}");
        ReadOnlySpan<byte> digits = reader.ValueSpan; // numbers are never escaped, and never split with a single span
        ulong value = 0;
        foreach (byte c in digits)
        {
            if (c is < (byte)'0' or > (byte)'9')
                throw new SafetensorsFormatException(path, name,
                    $"'{field}' must hold non-negative integers, not {System.Text.Encoding.UTF8.GetString(digits[..Math.Min(digits.Length, 40)])}");
            ulong digit = (ulong)(c - '0');
            if (value > ulong.MaxValue / 10 || (value == ulong.MaxValue / 10 && digit > ulong.MaxValue % 10))
                throw new SafetensorsFormatException(path, name, $"'{field}' holds an integer too large for 64 bits");
            value = value * 10 + digit;
        }
        return value;
    }

    private static long ElementCount(int[] shape, out bool overflow)
    {
        overflow = false;
        foreach (int dim in shape)
            if (dim == 0) return 0;
        long count = 1;
        foreach (int dim in shape)
        {
            long next = count * dim; // dims are positive and < 2^31 here
            if (count != 0 && (next / dim != count || next < 0))
            {
                overflow = true;
                return 0;
            }
            count = next;
        }
        return count;
    }

    private static void CheckOverlaps(string path, List<SafetensorsTensorInfo> tensors)
    {
        var nonEmpty = new List<SafetensorsTensorInfo>(tensors.Count);
        foreach (var t in tensors)
            if (t.DataEnd > t.DataBegin) nonEmpty.Add(t);
        nonEmpty.Sort(static (a, b) => a.DataBegin != b.DataBegin ? a.DataBegin.CompareTo(b.DataBegin) : a.DataEnd.CompareTo(b.DataEnd));
        for (int i = 1; i < nonEmpty.Count; i++)
        {
            var previous = nonEmpty[i - 1];
            var next = nonEmpty[i];
            if (next.DataBegin < previous.DataEnd)
                throw new SafetensorsFormatException(path, next.Name,
                    $"data_offsets [{next.DataBegin}, {next.DataEnd}] overlap those of tensor '{previous.Name}' [{previous.DataBegin}, {previous.DataEnd}]");
        }
    }

    private static string Describe(JsonTokenType type) => type switch
    {
        JsonTokenType.StartObject => "an object",
        JsonTokenType.StartArray => "an array",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True or JsonTokenType.False => "a boolean",
        JsonTokenType.Null => "null",
        _ => type.ToString(),
    };

    /// <summary>Keeps a user-controlled string short and free of control characters for an error message.</summary>
    private static string Printable(string text)
    {
        var clipped = text.Length <= 64 ? text : text[..64] + "...";
        return string.Create(clipped.Length, clipped, static (span, s) =>
        {
            for (int i = 0; i < s.Length; i++) span[i] = char.IsControl(s[i]) ? '?' : s[i];
        });
    }
}
