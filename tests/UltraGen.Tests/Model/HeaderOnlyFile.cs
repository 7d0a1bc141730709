using System.Text;
using UltraGen.Model;

namespace UltraGen.Tests.Model;

/// <summary>
/// Safetensors files whose header lists full-size tensors (F32) while the data region is a sparse hole that is never
/// written or read: lets header-level code (counting, checking, detection, inspect) run at Wan 1.3B size cheaply.
/// </summary>
internal static class HeaderOnlyFile
{
    public static void Write(string path, IEnumerable<ParameterSpec> specs, string metadataJson = "{\"format\":\"pt\"}")
    {
        var json = new StringBuilder($"{{\"__metadata__\":{metadataJson}");
        long offset = 0;
        foreach (var spec in specs)
        {
            long end = offset + spec.ElementCount * 4;
            json.Append($",\"{spec.Name}\":{{\"dtype\":\"F32\",\"shape\":[{string.Join(',', spec.Shape)}],\"data_offsets\":[{offset},{end}]}}");
            offset = end;
        }
        json.Append('}');
        var header = Encoding.UTF8.GetBytes(json.ToString());
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((ulong)header.Length));
        stream.Write(header);
        stream.SetLength(8 + header.Length + offset);
    }
}
