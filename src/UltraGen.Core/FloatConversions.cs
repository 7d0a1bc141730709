using System.Runtime.CompilerServices;

namespace UltraGen.Core;

/// <summary>
/// bf16 and f16 conversions with round-to-nearest-even. NaN stays NaN (quieted, sign kept), ±Inf stays ±Inf,
/// values past the largest finite value round to Inf, subnormals round like any other value.
/// </summary>
public static class FloatConversions
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
            return (ushort)((bits >> 16) | 0x0040u); // NaN: keep sign and payload top, force quiet bit
        // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; overflow carries into Inf.
        uint roundingBias = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + roundingBias) >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BFloat16ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>double → bf16 rounded once (not via an intermediate float rounding that could round twice).</summary>
    public static ushort DoubleToBFloat16(double value)
    {
        float narrowed = (float)value;
        uint bits = BitConverter.SingleToUInt32Bits(narrowed);
        // A float whose low 16 bits are exactly 0x8000 is a bf16 tie; if the double was not exactly that float,
        // the true value lies strictly on one side, so nudge the float toward it before rounding.
        if ((bits & 0xFFFFu) == 0x8000u && !double.IsNaN(value) && (double)narrowed != value)
        {
            bits = Math.Abs(value) > Math.Abs((double)narrowed) ? bits + 1 : bits - 1;
            narrowed = BitConverter.UInt32BitsToSingle(bits);
        }
        return FloatToBFloat16(narrowed);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToHalfBits(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>double → f16; .NET converts double to Half directly with round-to-nearest-even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort DoubleToHalfBits(double value) => BitConverter.HalfToUInt16Bits((Half)value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HalfBitsToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Decodes <paramref name="source"/> (raw little-endian bytes of <paramref name="dtype"/>) into doubles.</summary>
    public static void Decode(DType dtype, ReadOnlySpan<byte> source, Span<double> destination)
    {
        int count = destination.Length;
        if (source.Length != count * DTypes.SizeOf(dtype))
            throw new ArgumentException($"{source.Length} bytes do not hold {count} {dtype} values", nameof(source));
        switch (dtype)
        {
            case DType.F64:
                System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(source).CopyTo(destination);
                break;
            case DType.F32:
            {
                var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(source);
                for (int i = 0; i < count; i++) destination[i] = values[i];
                break;
            }
            case DType.BF16:
            {
                var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < count; i++) destination[i] = BFloat16ToFloat(values[i]);
                break;
            }
            case DType.F16:
            {
                var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < count; i++) destination[i] = HalfBitsToFloat(values[i]);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }

    /// <summary>Encodes doubles into raw little-endian bytes of <paramref name="dtype"/>, rounding to nearest even.</summary>
    public static void Encode(DType dtype, ReadOnlySpan<double> source, Span<byte> destination)
    {
        int count = source.Length;
        if (destination.Length != count * DTypes.SizeOf(dtype))
            throw new ArgumentException($"{destination.Length} bytes do not hold {count} {dtype} values", nameof(destination));
        switch (dtype)
        {
            case DType.F64:
                System.Runtime.InteropServices.MemoryMarshal.Cast<double, byte>(source).CopyTo(destination);
                break;
            case DType.F32:
            {
                var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(destination);
                for (int i = 0; i < count; i++) values[i] = (float)source[i];
                break;
            }
            case DType.BF16:
            {
                var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(destination);
                for (int i = 0; i < count; i++) values[i] = DoubleToBFloat16(source[i]);
                break;
            }
            case DType.F16:
            {
                var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(destination);
                for (int i = 0; i < count; i++) values[i] = DoubleToHalfBits(source[i]);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }
}
