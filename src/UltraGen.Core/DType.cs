namespace UltraGen.Core;

/// <summary>Element types a <see cref="Tensor"/> can hold. F64 exists for the reference and for cross-checks.</summary>
public enum DType
{
    F32,
    BF16,
    F16,
    F64,
}

public static class DTypes
{
    public static int SizeOf(DType dtype) => dtype switch
    {
        DType.F32 => 4,
        DType.BF16 => 2,
        DType.F16 => 2,
        DType.F64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>The dtype's name in safetensors headers ("F32", "BF16", "F16", "F64").</summary>
    public static string SafetensorsName(DType dtype) => dtype switch
    {
        DType.F32 => "F32",
        DType.BF16 => "BF16",
        DType.F16 => "F16",
        DType.F64 => "F64",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>Parses "f32", "bf16", "f16", "f64" (any case, also the safetensors spelling).</summary>
    public static bool TryParse(string text, out DType dtype)
    {
        switch (text.Trim().ToUpperInvariant())
        {
            case "F32": case "FLOAT32": dtype = DType.F32; return true;
            case "BF16": case "BFLOAT16": dtype = DType.BF16; return true;
            case "F16": case "FLOAT16": case "HALF": dtype = DType.F16; return true;
            case "F64": case "FLOAT64": dtype = DType.F64; return true;
            default: dtype = default; return false;
        }
    }

    public static string Lower(DType dtype) => SafetensorsName(dtype).ToLowerInvariant();
}
