using ILGPU;
using ILGPU.Runtime;
using UltraGen.Core;

namespace UltraGen.Ilgpu;

/// <summary>
/// f32 ↔ bf16/f16 on the device, bit for bit the rules of <see cref="FloatConversions"/>: round to nearest even,
/// NaN stays NaN (quieted, sign and top payload kept), overflow rounds to ±Inf, subnormals round like any value.
/// Every kernel is a grid-stride loop over elements, working on the raw bits (uint for f32, ushort for 16-bit types).
/// </summary>
internal sealed class IlgpuConversions
{
    private const int Bf16 = 0, F16 = 1;

    private readonly LaunchShape _shape;
    private readonly Action<KernelConfig, ArrayView<uint>, ArrayView<ushort>, int, int> _narrow;
    private readonly Action<KernelConfig, ArrayView<ushort>, ArrayView<uint>, int, int> _widen;
    private readonly Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, int, int, int> _recode;

    public IlgpuConversions(Accelerator accelerator, LaunchShape shape)
    {
        _shape = shape;
        _narrow = accelerator.LoadStreamKernel<ArrayView<uint>, ArrayView<ushort>, int, int>(NarrowKernel);
        _widen = accelerator.LoadStreamKernel<ArrayView<ushort>, ArrayView<uint>, int, int>(WidenKernel);
        _recode = accelerator.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, int, int, int>(RecodeKernel);
    }

    private static int Kind(DType dtype) => dtype switch
    {
        DType.BF16 => Bf16,
        DType.F16 => F16,
        _ => throw new UnsupportedConfigurationException($"ilgpu conversions take f32, bf16 or f16, not {DTypes.Lower(dtype)}"),
    };

    /// <summary>Converts <paramref name="count"/> elements between two different dtypes.</summary>
    public void Convert(IlgpuStorage source, DType from, IlgpuStorage destination, DType to, int count)
    {
        var config = _shape.Stride(count);
        if (from == DType.F32)
            _narrow(config, source.View<uint>().SubView(0, count), destination.View<ushort>().SubView(0, count), count, Kind(to));
        else if (to == DType.F32)
            _widen(config, source.View<ushort>().SubView(0, count), destination.View<uint>().SubView(0, count), count, Kind(from));
        else
            _recode(config, source.View<ushort>().SubView(0, count), destination.View<ushort>().SubView(0, count), count, Kind(from), Kind(to));
    }

    // ---- bit rules (device functions) ----

    /// <summary>f32 bits → bf16: NaN quieted (bit 6), else add 0x7FFF plus the lowest kept bit and truncate.</summary>
    internal static ushort FloatBitsToBFloat16(uint bits)
    {
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((bits >> 16) | 0x0040u);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>f32 bits → f16 bits, round to nearest even (the integer form of the IEEE rule .NET's (Half) cast applies).</summary>
    internal static ushort FloatBitsToHalf(uint bits)
    {
        uint sign = (bits >> 16) & 0x8000u;
        uint magnitude = bits & 0x7FFF_FFFFu;
        if (magnitude > 0x7F80_0000u) return (ushort)(sign | 0x7E00u | ((magnitude & 0x007F_FFFFu) >> 13)); // NaN, quiet bit set
        if (magnitude >= 0x477F_F000u) return (ushort)(sign | 0x7C00u); // ≥ 65520 rounds to Inf (and Inf stays Inf)
        if (magnitude >= 0x3880_0000u)
        {
            // Normal half: rebias the exponent (127 → 15), then round away 13 mantissa bits to nearest even;
            // a carry out of the mantissa correctly bumps the exponent.
            uint rebiased = magnitude - 0x3800_0000u;
            return (ushort)(sign | ((rebiased + 0x0FFFu + ((rebiased >> 13) & 1u)) >> 13));
        }
        if (magnitude <= 0x3300_0000u) return (ushort)sign; // ≤ 2^-25: rounds to ±0 (2^-25 itself ties to even 0)
        // Half subnormal: value·2^24 rounded to an integer mantissa (1..1024; 1024 is the smallest normal's encoding).
        uint exponent = magnitude >> 23;
        uint mantissa = (magnitude & 0x007F_FFFFu) | 0x0080_0000u;
        int shift = 126 - (int)exponent; // 14..24
        uint kept = mantissa >> shift;
        uint rest = mantissa & ((1u << shift) - 1u);
        uint halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (kept & 1u) != 0)) kept++;
        return (ushort)(sign | kept);
    }

    /// <summary>f16 bits → f32 bits (exact; NaN keeps its payload and gets the quiet bit, as .NET's cast does).</summary>
    internal static uint HalfToFloatBits(ushort half)
    {
        uint h = half;
        uint sign = (h & 0x8000u) << 16;
        uint exponent = (h >> 10) & 0x1Fu;
        uint mantissa = h & 0x3FFu;
        if (exponent == 0x1Fu) return mantissa == 0 ? sign | 0x7F80_0000u : sign | 0x7FC0_0000u | (mantissa << 13);
        if (exponent != 0) return sign | ((exponent + 112u) << 23) | (mantissa << 13);
        // Zero or subnormal: mantissa·2^-24 is exact in f32.
        return sign | Interop.FloatAsInt(mantissa * 5.9604644775390625e-8f);
    }

    internal static uint Decode(ushort bits, int kind) => kind == Bf16 ? (uint)bits << 16 : HalfToFloatBits(bits);

    internal static ushort Encode(uint bits, int kind) => kind == Bf16 ? FloatBitsToBFloat16(bits) : FloatBitsToHalf(bits);

    // ---- kernels ----

    private static void NarrowKernel(ArrayView<uint> source, ArrayView<ushort> destination, int count, int kind)
    {
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
            destination[i] = Encode(source[i], kind);
    }

    private static void WidenKernel(ArrayView<ushort> source, ArrayView<uint> destination, int count, int kind)
    {
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
            destination[i] = Decode(source[i], kind);
    }

    private static void RecodeKernel(ArrayView<ushort> source, ArrayView<ushort> destination, int count, int from, int to)
    {
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
            destination[i] = Encode(Decode(source[i], from), to);
    }
}
