using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Ilgpu;
using UltraGen.Ops;
using UltraGen.Ops.Backends;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Ilgpu;

/// <summary>
/// The ILGPU backend beyond the op harness: device dtype conversion bit for bit against <see cref="FloatConversions"/>,
/// the GEMM at sizes that leave every tile edge partial, and the provider's auto-selection rule.
/// </summary>
[TestFixture]
public class IlgpuBackendTests
{
    private static IlgpuBackend Backend()
    {
        var probe = new IlgpuBackendProvider().Probe();
        if (probe.Backend is null) Assert.Ignore($"ilgpu is not available here: {probe.UnavailableReason}");
        return (IlgpuBackend)probe.Backend;
    }

    private static float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    /// <summary>Edge values: NaNs with assorted payloads and signs, ±Inf, ±0, f32 subnormals, bf16/f16 ties, overflow edges.</summary>
    private static uint[] EdgeFloatBits()
    {
        var bits = new List<uint>
        {
            0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FA0_0000, 0x7F80_2000, 0x7F80_1FFF,
            0x7F80_0000, 0xFF80_0000, 0x0000_0000, 0x8000_0000,
            0x0000_0001, 0x8000_0001, 0x0000_8000, 0x0001_8000, 0x007F_FFFF, 0x0080_0000, // f32 subnormals and the smallest normal
            0x3F80_8000, 0x3F81_8000, 0x3F80_8001, 0x3F80_7FFF, 0xBF80_8000, 0xBF81_8000, // bf16 ties (even down, odd up) and near-ties
            0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F7F_8000, 0x7F7F_7FFF, // bf16 overflow to Inf vs largest finite
            0x3F80_1000, 0x3F80_3000, 0x3F80_1001, 0x3F80_0FFF, // f16 ties at 1.0 (13 dropped bits)
            0x477F_E000, 0x477F_EFFF, 0x477F_F000, 0x4780_0000, 0xC77F_F000, // 65504, just below 65520, 65520 (→ Inf), 65536
            0x3880_0000, 0x387F_FFFF, 0x387F_F000, 0x387F_E000, // 2^-14 (smallest f16 normal) and just below
            0x3380_0000, 0x3300_0000, 0x3300_0001, 0x32FF_FFFF, 0x33C0_0000, 0x3340_0000, 0xB300_0001, // 2^-24, 2^-25 tie, …
            0x3500_0000, 0x3508_0000, 0x3518_0000, 0x3504_0000, // f16 subnormal ties, even and odd
        };
        var random = new Random(12345);
        for (int i = 0; i < 20000; i++) bits.Add((uint)random.NextInt64(0, 1L << 32));
        for (int i = 0; i < 20000; i++) bits.Add(0x3000_0000u + (uint)random.Next(0, 0x1800_0000)); // dense in the f16 range
        return [.. bits];
    }

    private static ushort[] Narrow(IlgpuBackend backend, uint[] bits, DType to)
    {
        using var host = Tensor.Host(DType.F32, bits.Length);
        bits.CopyTo(host.HostSpan<uint>());
        using var wide = backend.Allocate(DType.F32, [bits.Length]);
        using var narrow = backend.Allocate(to, [bits.Length]);
        backend.CopyFromHost(host, wide);
        backend.Convert(wide, narrow);
        using var result = Tensor.Host(to, bits.Length);
        backend.CopyToHost(narrow, result);
        return result.HostSpan<ushort>().ToArray();
    }

    private static ushort[] AllSixteenBitPatterns() => Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();

    [TestCase(DType.BF16)]
    [TestCase(DType.F16)]
    public void Narrowing_on_the_device_matches_FloatConversions_bit_for_bit(DType to)
    {
        using var backend = Backend();
        var bits = EdgeFloatBits();
        var device = Narrow(backend, bits, to);
        for (int i = 0; i < bits.Length; i++)
        {
            float value = F(bits[i]);
            ushort expected = to == DType.BF16 ? FloatConversions.FloatToBFloat16(value) : FloatConversions.FloatToHalfBits(value);
            Assert.That(device[i], Is.EqualTo(expected), $"f32 0x{bits[i]:X8} → {DTypes.Lower(to)}: device 0x{device[i]:X4}, host 0x{expected:X4}");
        }
    }

    [TestCase(DType.BF16)]
    [TestCase(DType.F16)]
    public void Widening_on_the_device_matches_FloatConversions_for_every_pattern(DType from)
    {
        using var backend = Backend();
        var patterns = AllSixteenBitPatterns();
        using var host = Tensor.Host(from, patterns.Length);
        patterns.CopyTo(host.HostSpan<ushort>());
        using var narrow = backend.Allocate(from, [patterns.Length]);
        using var wide = backend.Allocate(DType.F32, [patterns.Length]);
        backend.CopyFromHost(host, narrow);
        backend.Convert(narrow, wide);
        using var result = Tensor.Host(DType.F32, patterns.Length);
        backend.CopyToHost(wide, result);
        var device = result.HostSpan<uint>();
        for (int i = 0; i < patterns.Length; i++)
        {
            float value = from == DType.BF16 ? FloatConversions.BFloat16ToFloat(patterns[i]) : FloatConversions.HalfBitsToFloat(patterns[i]);
            uint expected = BitConverter.SingleToUInt32Bits(value);
            Assert.That(device[i], Is.EqualTo(expected), $"{DTypes.Lower(from)} 0x{patterns[i]:X4} → f32: device 0x{device[i]:X8}, host 0x{expected:X8}");
        }
    }

    [TestCase(DType.BF16, DType.F16)]
    [TestCase(DType.F16, DType.BF16)]
    public void Sixteen_bit_recoding_goes_through_f32_like_the_host(DType from, DType to)
    {
        using var backend = Backend();
        var patterns = AllSixteenBitPatterns();
        using var host = Tensor.Host(from, patterns.Length);
        patterns.CopyTo(host.HostSpan<ushort>());
        using var source = backend.Allocate(from, [patterns.Length]);
        using var destination = backend.Allocate(to, [patterns.Length]);
        backend.CopyFromHost(host, source);
        backend.Convert(source, destination);
        using var result = Tensor.Host(to, patterns.Length);
        backend.CopyToHost(destination, result);
        var device = result.HostSpan<ushort>();
        for (int i = 0; i < patterns.Length; i++)
        {
            float value = from == DType.BF16 ? FloatConversions.BFloat16ToFloat(patterns[i]) : FloatConversions.HalfBitsToFloat(patterns[i]);
            ushort expected = to == DType.BF16 ? FloatConversions.FloatToBFloat16(value) : FloatConversions.FloatToHalfBits(value);
            Assert.That(device[i], Is.EqualTo(expected), $"0x{patterns[i]:X4}: device 0x{device[i]:X4}, host 0x{expected:X4}");
        }
    }

    /// <summary>67 rows, 130 in, 77 out: no dimension is a multiple of the 16-wide tile, so every edge path runs.</summary>
    [Test]
    public void Linear_at_tile_edge_sizes_matches_the_reference_forward_and_backward()
    {
        using var backend = Backend();
        var op = OpCatalog.Get("linear");
        var opCase = new OpCase("rows67_in130_out77", new Dictionary<string, int[]>
        {
            ["x"] = [67, 130], ["weight"] = [77, 130], ["bias"] = [77],
        }, new OpParams());
        foreach (var (name, error) in OpHarness.ForwardErrors(backend, op, opCase, DType.F32))
            Assert.That(error, OpHarness.Within(1e-5), $"'{name}' forward relative error");
        var backward = OpHarness.BackwardErrors(backend, op, opCase, DType.F32);
        Assert.That(backward.Keys, Is.EquivalentTo(new[] { "x", "weight", "bias" }));
        foreach (var (name, error) in backward)
            Assert.That(error, OpHarness.Within(2e-5), $"gradient of '{name}' relative error");
    }

    [Test]
    public void Auto_declines_the_cpu_accelerator_with_a_reason()
    {
        using var backend = Backend();
        if (backend.IsGpu) Assert.Ignore($"this machine has a GPU for ILGPU ({backend.Description})");
        Assert.That(backend.Description, Does.Contain("CPU"));
        var auto = new IlgpuBackendProvider().ProbeForAuto();
        Assert.That(auto.Backend, Is.Null);
        Assert.That(auto.UnavailableReason, Does.Contain("CPU accelerator").And.Contain("slower than the cpu backend"));
        var (chosen, why) = BackendRegistry.Auto();
        using (chosen)
        {
            Assert.That(chosen.Name, Is.Not.EqualTo("ilgpu"));
            Assert.That(why, Does.Contain("ilgpu is unavailable"));
        }
    }

    [Test]
    public void Disposing_a_backend_leaves_the_shared_accelerator_usable()
    {
        Backend().Dispose();
        using var backend = Backend();
        using var host = Tensor.FromDoubles(DType.F32, [3], [1, 2, 3]);
        using var device = backend.Allocate(DType.F32, [3]);
        backend.CopyFromHost(host, device);
        using var back = Tensor.Host(DType.F32, 3);
        backend.CopyToHost(device, back);
        Assert.That(back.ToDoubles(), Is.EqualTo(new double[] { 1, 2, 3 }));
    }
}
