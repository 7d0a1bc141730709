namespace UltraGen.Core.Safetensors;

/// <summary>The dtype names the safetensors format defines, with their widths in bits.</summary>
public static class SafetensorsDTypes
{
    /// <summary>
    /// Width in bits of a safetensors dtype, or 0 if <paramref name="name"/> is not one. Sub-byte types (F4, F6_*)
    /// are packed, so a tensor of them must hold a whole number of bytes.
    /// </summary>
    public static int BitWidth(string name) => name switch
    {
        "BOOL" or "U8" or "I8" or "F8_E4M3" or "F8_E5M2" or "F8_E8M0" => 8,
        "I16" or "U16" or "F16" or "BF16" => 16,
        "I32" or "U32" or "F32" => 32,
        "I64" or "U64" or "F64" or "C64" => 64,
        "F4" => 4,
        "F6_E2M3" or "F6_E3M2" => 6,
        _ => 0,
    };

    public static bool IsKnown(string name) => BitWidth(name) != 0;

    /// <summary>The UltraGen dtype for a safetensors dtype name, or null for one UltraGen cannot compute in (I64, U8, ...).</summary>
    public static DType? ToDType(string name) => name switch
    {
        "F32" => DType.F32,
        "BF16" => DType.BF16,
        "F16" => DType.F16,
        "F64" => DType.F64,
        _ => null,
    };
}
