using NUnit.Framework;
using UltraGen.Core;

namespace UltraGen.Tests.Core;

/// <summary>
/// Edge cases of bf16/f16 rounding. Expected bit patterns are worked out by hand:
/// bf16 = top 16 bits of a float (1 sign, 8 exponent, 7 mantissa bits), f16 = 1 sign, 5 exponent, 10 mantissa bits.
/// </summary>
public class FloatConversionTests
{
    private static float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    private static double ToDouble(DType dtype, ushort bits) =>
        dtype == DType.BF16 ? FloatConversions.BFloat16ToFloat(bits) : FloatConversions.HalfBitsToFloat(bits);

    // ---------------------------------------------------------------- bf16

    [Test]
    public void BFloat16_NaN_StaysNaN_KeepsSign()
    {
        Assert.That(FloatConversions.FloatToBFloat16(float.NaN) & 0x7FFF, Is.GreaterThan(0x7F80));
        // Canonical quiet NaNs: sign and top mantissa bit survive.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x7FC0_0000)), Is.EqualTo(0x7FC0));
        Assert.That(FloatConversions.FloatToBFloat16(F(0xFFC0_0000)), Is.EqualTo(0xFFC0));
        // A NaN whose payload sits only in the low 16 bits would truncate to Inf (0x7F80); it must stay NaN (quieted).
        Assert.That(FloatConversions.FloatToBFloat16(F(0x7F80_0001)), Is.EqualTo(0x7FC0));
        Assert.That(FloatConversions.FloatToBFloat16(F(0xFF80_0001)), Is.EqualTo(0xFFC0));
        // The rounding add must not carry a NaN's payload into the sign bit.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x7FFF_FFFF)), Is.EqualTo(0x7FFF));
        Assert.That(float.IsNaN(FloatConversions.BFloat16ToFloat(FloatConversions.DoubleToBFloat16(double.NaN))), Is.True);
        ushort negative = FloatConversions.DoubleToBFloat16(-double.NaN);
        Assert.That(negative & 0x8000, Is.EqualTo(0x8000));
        Assert.That(negative & 0x7FFF, Is.GreaterThan(0x7F80));
    }

    [Test]
    public void BFloat16_InfinitiesAndZeros()
    {
        Assert.That(FloatConversions.FloatToBFloat16(float.PositiveInfinity), Is.EqualTo(0x7F80));
        Assert.That(FloatConversions.FloatToBFloat16(float.NegativeInfinity), Is.EqualTo(0xFF80));
        Assert.That(FloatConversions.FloatToBFloat16(0f), Is.EqualTo(0x0000));
        Assert.That(FloatConversions.FloatToBFloat16(-0f), Is.EqualTo(0x8000));
        Assert.That(FloatConversions.DoubleToBFloat16(double.PositiveInfinity), Is.EqualTo(0x7F80));
        Assert.That(FloatConversions.DoubleToBFloat16(double.NegativeInfinity), Is.EqualTo(0xFF80));
        Assert.That(FloatConversions.DoubleToBFloat16(-0.0), Is.EqualTo(0x8000));
        Assert.That(FloatConversions.BFloat16ToFloat(0x8000), Is.EqualTo(-0f));
        Assert.That(float.IsNegative(FloatConversions.BFloat16ToFloat(0x8000)), Is.True);
    }

    [Test]
    public void BFloat16_LargestFinite_AndOverflowToInf()
    {
        // bf16 max = 0x7F7F = (2 - 2^-7) * 2^127; as a float 0x7F7F0000.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x7F7F_0000)), Is.EqualTo(0x7F7F));
        Assert.That(FloatConversions.BFloat16ToFloat(0x7F7F), Is.EqualTo(3.3895314e38f));
        // Just below the midpoint to 2^128 rounds down to max...
        Assert.That(FloatConversions.FloatToBFloat16(F(0x7F7F_7FFF)), Is.EqualTo(0x7F7F));
        // ...the midpoint itself is a tie; max's mantissa 0x7F is odd, so it rounds "up" to the even pattern 0x7F80 = Inf.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x7F7F_8000)), Is.EqualTo(0x7F80));
        Assert.That(FloatConversions.FloatToBFloat16(float.MaxValue), Is.EqualTo(0x7F80));
        Assert.That(FloatConversions.FloatToBFloat16(-float.MaxValue), Is.EqualTo(0xFF80));
        Assert.That(FloatConversions.DoubleToBFloat16(3.4e38), Is.EqualTo(0x7F80));
        Assert.That(FloatConversions.DoubleToBFloat16(1e39), Is.EqualTo(0x7F80)); // past float's range too
        Assert.That(FloatConversions.DoubleToBFloat16(-1e300), Is.EqualTo(0xFF80));
    }

    [Test]
    public void BFloat16_Subnormals()
    {
        // Smallest bf16 subnormal 0x0001 = 2^-133 = float 0x00010000.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x0001_0000)), Is.EqualTo(0x0001));
        Assert.That(FloatConversions.BFloat16ToFloat(0x0001), Is.EqualTo(MathF.Pow(2, -133)));
        // 2^-134 (0x00008000) is halfway between 0 and 2^-133: tie, 0 is even.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x0000_8000)), Is.EqualTo(0x0000));
        Assert.That(FloatConversions.FloatToBFloat16(F(0x8000_8000)), Is.EqualTo(0x8000));
        // One float ulp above the tie rounds up.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x0000_8001)), Is.EqualTo(0x0001));
        // 3 * 2^-134 is halfway between 0x0001 and 0x0002: the even one wins.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x0001_8000)), Is.EqualTo(0x0002));
        // The smallest float subnormal is far below half a bf16 subnormal.
        Assert.That(FloatConversions.FloatToBFloat16(float.Epsilon), Is.EqualTo(0x0000));
        // Largest bf16 subnormal 0x007F and smallest normal 0x0080 are exact.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x007F_0000)), Is.EqualTo(0x007F));
        Assert.That(FloatConversions.FloatToBFloat16(F(0x0080_0000)), Is.EqualTo(0x0080));
    }

    [Test]
    public void BFloat16_TiesToEven()
    {
        // 1.0 = 0x3F80; bf16 spacing at 1 is 2^-7, so 1 + 2^-8 (float 0x3F808000) is a tie between 0x3F80 and 0x3F81.
        // 0x3F80 has an even mantissa: round down to 1.
        Assert.That(FloatConversions.FloatToBFloat16(1f + MathF.Pow(2, -8)), Is.EqualTo(0x3F80));
        // 1 + 3*2^-8 (0x3F818000) is a tie between 0x3F81 (odd) and 0x3F82 (even) = 1 + 2^-6: round up.
        Assert.That(FloatConversions.FloatToBFloat16(1f + 3 * MathF.Pow(2, -8)), Is.EqualTo(0x3F82));
        Assert.That(FloatConversions.BFloat16ToFloat(0x3F82), Is.EqualTo(1f + MathF.Pow(2, -6)));
        // Not ties: one float ulp either side goes to the nearest.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x3F80_8001)), Is.EqualTo(0x3F81));
        Assert.That(FloatConversions.FloatToBFloat16(F(0x3F81_7FFF)), Is.EqualTo(0x3F81));
        // Same on the negative side (sign-magnitude: rounding is symmetric).
        Assert.That(FloatConversions.FloatToBFloat16(-(1f + MathF.Pow(2, -8))), Is.EqualTo(0xBF80));
        Assert.That(FloatConversions.FloatToBFloat16(-(1f + 3 * MathF.Pow(2, -8))), Is.EqualTo(0xBF82));
        // A tie that carries into the exponent: 0x3FFF8000 is between 0x3FFF (odd) and 0x4000 = 2.0.
        Assert.That(FloatConversions.FloatToBFloat16(F(0x3FFF_8000)), Is.EqualTo(0x4000));
    }

    [Test]
    public void DoubleToBFloat16_RoundsOnce()
    {
        // d = 1 + 2^-8 + 2^-40 is just above the bf16 tie 1 + 2^-8, so the correct bf16 is 0x3F81.
        // (float)d rounds to 1 + 2^-8 exactly (2^-40 is below half a float ulp, 2^-24), landing on the tie, and a
        // second rounding float -> bf16 would then go to even, 0x3F80: the double-rounding error the code must avoid.
        double above = 1 + Math.Pow(2, -8) + Math.Pow(2, -40);
        Assert.That((float)above, Is.EqualTo(1f + MathF.Pow(2, -8)), "premise: the float rounding lands on the tie");
        Assert.That(FloatConversions.DoubleToBFloat16(above), Is.EqualTo(0x3F81));
        Assert.That(FloatConversions.DoubleToBFloat16(-above), Is.EqualTo(0xBF81));
        // Mirror image: just below the tie 1 + 3*2^-8 must round down to 0x3F81, not to even 0x3F82.
        double below = 1 + 3 * Math.Pow(2, -8) - Math.Pow(2, -40);
        Assert.That((float)below, Is.EqualTo(1f + 3 * MathF.Pow(2, -8)), "premise: the float rounding lands on the tie");
        Assert.That(FloatConversions.DoubleToBFloat16(below), Is.EqualTo(0x3F81));
        Assert.That(FloatConversions.DoubleToBFloat16(-below), Is.EqualTo(0xBF81));
        // Exact ties in double still go to even.
        Assert.That(FloatConversions.DoubleToBFloat16(1 + Math.Pow(2, -8)), Is.EqualTo(0x3F80));
        Assert.That(FloatConversions.DoubleToBFloat16(1 + 3 * Math.Pow(2, -8)), Is.EqualTo(0x3F82));
        // Same in the subnormal range: 2^-134 + 2^-160 rounds (as float) to 2^-134, the tie between 0 and 2^-133;
        // the true value is above it, so the answer is 0x0001, not 0.
        Assert.That(FloatConversions.DoubleToBFloat16(Math.Pow(2, -134) + Math.Pow(2, -160)), Is.EqualTo(0x0001));
        Assert.That(FloatConversions.DoubleToBFloat16(Math.Pow(2, -134)), Is.EqualTo(0x0000));
        // Just below bf16's overflow threshold (2 - 2^-8) * 2^127, whose float rounding lands on it, stays finite.
        double justBelowOverflow = (2 - Math.Pow(2, -8)) * Math.Pow(2, 127) * (1 - Math.Pow(2, -40));
        Assert.That(FloatConversions.DoubleToBFloat16(justBelowOverflow), Is.EqualTo(0x7F7F));
    }

    // ---------------------------------------------------------------- f16

    [Test]
    public void Half_NaN_Inf_Zero()
    {
        ushort nan = FloatConversions.FloatToHalfBits(float.NaN);
        Assert.That(nan & 0x7C00, Is.EqualTo(0x7C00));
        Assert.That(nan & 0x03FF, Is.Not.Zero);
        ushort negativeNan = FloatConversions.FloatToHalfBits(F(0xFFC0_0000));
        Assert.That(negativeNan & 0x8000, Is.EqualTo(0x8000), "sign of NaN kept");
        Assert.That(negativeNan & 0x03FF, Is.Not.Zero);
        ushort lowPayloadNan = FloatConversions.FloatToHalfBits(F(0x7F80_0001));
        Assert.That(lowPayloadNan & 0x7C00, Is.EqualTo(0x7C00));
        Assert.That(lowPayloadNan & 0x03FF, Is.Not.Zero, "a NaN with only low payload bits must not become Inf");
        Assert.That(float.IsNaN(FloatConversions.HalfBitsToFloat(FloatConversions.DoubleToHalfBits(double.NaN))), Is.True);

        Assert.That(FloatConversions.FloatToHalfBits(float.PositiveInfinity), Is.EqualTo(0x7C00));
        Assert.That(FloatConversions.FloatToHalfBits(float.NegativeInfinity), Is.EqualTo(0xFC00));
        Assert.That(FloatConversions.FloatToHalfBits(0f), Is.EqualTo(0x0000));
        Assert.That(FloatConversions.FloatToHalfBits(-0f), Is.EqualTo(0x8000));
        Assert.That(FloatConversions.DoubleToHalfBits(-0.0), Is.EqualTo(0x8000));
    }

    [Test]
    public void Half_LargestFinite_AndOverflow()
    {
        // f16 max = 0x7BFF = (2 - 2^-10) * 2^15 = 65504; the next step would be 65536, so 65520 is the midpoint.
        Assert.That(FloatConversions.FloatToHalfBits(65504f), Is.EqualTo(0x7BFF));
        Assert.That(FloatConversions.HalfBitsToFloat(0x7BFF), Is.EqualTo(65504f));
        Assert.That(FloatConversions.FloatToHalfBits(65519.996f), Is.EqualTo(0x7BFF)); // below the midpoint
        // 65520 is a tie; 0x7BFF is odd, so it rounds to the even neighbour, which is Inf.
        Assert.That(FloatConversions.FloatToHalfBits(65520f), Is.EqualTo(0x7C00));
        Assert.That(FloatConversions.FloatToHalfBits(-65520f), Is.EqualTo(0xFC00));
        Assert.That(FloatConversions.FloatToHalfBits(1e10f), Is.EqualTo(0x7C00));
        Assert.That(FloatConversions.DoubleToHalfBits(65520.0), Is.EqualTo(0x7C00));
        // Just below the midpoint as a double: float rounding would land on 65520 (a tie -> Inf); f16 must stay finite.
        double justBelow = 65520 - Math.Pow(2, -20);
        Assert.That((float)justBelow, Is.EqualTo(65520f), "premise: the float rounding lands on the tie");
        Assert.That(FloatConversions.DoubleToHalfBits(justBelow), Is.EqualTo(0x7BFF));
    }

    [Test]
    public void Half_Subnormals()
    {
        // Smallest f16 subnormal 0x0001 = 2^-24.
        Assert.That(FloatConversions.FloatToHalfBits(MathF.Pow(2, -24)), Is.EqualTo(0x0001));
        Assert.That(FloatConversions.HalfBitsToFloat(0x0001), Is.EqualTo(MathF.Pow(2, -24)));
        // 2^-25 is the tie between 0 and 2^-24: 0 is even.
        Assert.That(FloatConversions.FloatToHalfBits(MathF.Pow(2, -25)), Is.EqualTo(0x0000));
        Assert.That(FloatConversions.FloatToHalfBits(-MathF.Pow(2, -25)), Is.EqualTo(0x8000));
        // A float ulp above it rounds up; 3 * 2^-25 is the tie between 0x0001 and 0x0002 -> 0x0002.
        Assert.That(FloatConversions.FloatToHalfBits(MathF.BitIncrement(MathF.Pow(2, -25))), Is.EqualTo(0x0001));
        Assert.That(FloatConversions.FloatToHalfBits(3 * MathF.Pow(2, -25)), Is.EqualTo(0x0002));
        // Largest subnormal 0x03FF = 1023 * 2^-24, smallest normal 0x0400 = 2^-14.
        Assert.That(FloatConversions.FloatToHalfBits(1023 * MathF.Pow(2, -24)), Is.EqualTo(0x03FF));
        Assert.That(FloatConversions.FloatToHalfBits(MathF.Pow(2, -14)), Is.EqualTo(0x0400));
        // Double slightly above the 2^-25 tie must round up (a float rounding would keep it on the tie only if
        // the excess were below half a float ulp at 2^-25, i.e. 2^-49; 2^-60 is).
        Assert.That(FloatConversions.DoubleToHalfBits(Math.Pow(2, -25) + Math.Pow(2, -60)), Is.EqualTo(0x0001));
    }

    [Test]
    public void Half_TiesToEven_AndSingleRoundingFromDouble()
    {
        // f16 spacing at 1 is 2^-10: 1 + 2^-11 ties between 0x3C00 (even) and 0x3C01 -> 0x3C00.
        Assert.That(FloatConversions.FloatToHalfBits(1f + MathF.Pow(2, -11)), Is.EqualTo(0x3C00));
        // 1 + 3*2^-11 ties between 0x3C01 (odd) and 0x3C02 -> 0x3C02.
        Assert.That(FloatConversions.FloatToHalfBits(1f + 3 * MathF.Pow(2, -11)), Is.EqualTo(0x3C02));
        // double just above the first tie; (float) lands on the tie, so only a direct rounding gives 0x3C01.
        double above = 1 + Math.Pow(2, -11) + Math.Pow(2, -40);
        Assert.That((float)above, Is.EqualTo(1f + MathF.Pow(2, -11)), "premise: the float rounding lands on the tie");
        Assert.That(FloatConversions.DoubleToHalfBits(above), Is.EqualTo(0x3C01));
        Assert.That(FloatConversions.DoubleToHalfBits(-above), Is.EqualTo(0xBC01));
        double below = 1 + 3 * Math.Pow(2, -11) - Math.Pow(2, -40);
        Assert.That(FloatConversions.DoubleToHalfBits(below), Is.EqualTo(0x3C01));
    }

    [Test]
    public void EncodeDecode_RoundTripsEveryBf16AndF16Pattern()
    {
        foreach (var dtype in new[] { DType.BF16, DType.F16 })
        {
            var bytes = new byte[65536 * 2];
            for (int i = 0; i < 65536; i++) BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (ushort)i);
            var values = new double[65536];
            FloatConversions.Decode(dtype, bytes, values);
            var back = new byte[bytes.Length];
            FloatConversions.Encode(dtype, values, back);
            for (int i = 0; i < 65536; i++)
            {
                ushort original = (ushort)i, result = BitConverter.ToUInt16(back, 2 * i);
                bool isNaN = double.IsNaN(values[i]);
                if (isNaN)
                    Assert.That(double.IsNaN(ToDouble(dtype, result)) && (result & 0x8000) == (original & 0x8000),
                        Is.True, $"{dtype} NaN 0x{original:X4} -> 0x{result:X4}");
                else
                    Assert.That(result, Is.EqualTo(original), $"{dtype} 0x{original:X4}");
            }
        }
    }
}
