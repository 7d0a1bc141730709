using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Cpu;
using UltraGen.Ops;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Cpu;

/// <summary>
/// The Cpu flash kernel against the float64 <see cref="WindowAttentionOp"/> on sizes the catalogue cases do not reach:
/// windows whose token counts are not multiples of the 64-row/64-key tiles, several key tiles per window (online-softmax
/// rescaling), ragged windows, odd head counts, and the backward's key-chunk split (few items, dQ partial sums).
/// </summary>
[TestFixture]
public class CpuWindowAttentionTests
{
    private const double Tolerance = 1e-5;

    public static IEnumerable<TestCaseData> Cases()
    {
        // (B, T, H, W, heads, headDim, windows per side, ragged, rope)
        yield return new TestCaseData(1, 1, 10, 15, 2, 64, 4, true, true).SetName("ragged4_t1h10w15_h2d64");
        yield return new TestCaseData(1, 1, 10, 15, 2, 128, 4, true, true).SetName("ragged4_t1h10w15_h2d128");
        yield return new TestCaseData(1, 2, 10, 15, 2, 64, 2, true, true).SetName("ragged2_t2h10w15_h2d64_tiles70_80");
        yield return new TestCaseData(2, 3, 10, 15, 3, 128, 2, true, true).SetName("ragged2_b2t3h10w15_h3d128");
        yield return new TestCaseData(1, 3, 10, 15, 1, 64, 1, false, true).SetName("full_t3h10w15_h1d64_450tokens");
        yield return new TestCaseData(1, 3, 9, 13, 2, 128, 1, false, false).SetName("full_t3h9w13_h2d128_norope");
        yield return new TestCaseData(1, 2, 11, 17, 2, 40, 3, true, true).SetName("ragged3_t2h11w17_h2d40");
    }

    private static RefTensor Random(Random random, double amplitude, params int[] shape)
    {
        var tensor = new RefTensor(shape);
        for (int i = 0; i < tensor.Length; i++) tensor.Data[i] = amplitude * (2 * random.NextDouble() - 1);
        return tensor;
    }

    private static Tensor Poisoned(int[] shape)
    {
        var tensor = Tensor.Host(DType.F32, shape);
        tensor.Fill(double.NaN);
        return tensor;
    }

    private static void ExpectClose(Tensor actual, RefTensor expected, string what)
    {
        double error = OpHarness.RelativeError(actual.ToDoubles(), expected.Data);
        TestContext.Out.WriteLine($"{what}: rel err {error:E3}");
        Assert.That(error, Is.LessThan(Tolerance), what);
    }

    [TestCaseSource(nameof(Cases))]
    public void ForwardAndBackwardMatchReference(int batch, int frames, int height, int width, int heads, int headDim, int windows,
        bool ragged, bool rope)
    {
        var random = new Random(OpHarness.NewSeed());
        int[] shape = [batch, frames, height, width, heads * headDim];
        var grid = new Grid3(frames, height, width);
        var layout = ragged ? WindowLayout.Ragged(grid, windows) : WindowLayout.Divisible(grid, windows);
        // Amplitude 2 gives peaked softmax rows, so the running max changes between key tiles.
        var q = Quantized(Random(random, 2, shape));
        var k = Quantized(Random(random, 2, shape));
        var v = Quantized(Random(random, 1, shape));
        var dO = Quantized(Random(random, 1, shape));

        using Tensor tq = q.ToTensor(DType.F32), tk = k.ToTensor(DType.F32), tv = v.ToTensor(DType.F32), tdO = dO.ToTensor(DType.F32);
        using var to = Poisoned(shape);
        CpuWindowAttention.Forward(tq, tk, tv, to, heads, layout, rope, Rope3d.DefaultTheta);
        ExpectClose(to, WindowAttentionOp.Forward(q, k, v, heads, layout, rope), "o");

        var (dq, dk, dv) = WindowAttentionOp.Backward(q, k, v, dO, heads, layout, rope);
        using Tensor gq = Poisoned(shape), gk = Poisoned(shape), gv = Poisoned(shape);
        CpuWindowAttention.Backward(tq, tk, tv, tdO, gq, gk, gv, heads, layout, rope, Rope3d.DefaultTheta);
        ExpectClose(gq, dq, "dq");
        ExpectClose(gk, dk, "dk");
        ExpectClose(gv, dv, "dv");
    }

    [TestCase(true, false, false)]
    [TestCase(false, true, false)]
    [TestCase(false, false, true)]
    [TestCase(false, true, true)]
    public void BackwardWritesOnlyRequestedGradients(bool wantQ, bool wantK, bool wantV)
    {
        var random = new Random(OpHarness.NewSeed());
        int[] shape = [1, 2, 10, 15, 2 * 64];
        var layout = WindowLayout.Ragged(new Grid3(2, 10, 15), 2);
        var q = Quantized(Random(random, 2, shape));
        var k = Quantized(Random(random, 2, shape));
        var v = Quantized(Random(random, 1, shape));
        var dO = Quantized(Random(random, 1, shape));
        var (dq, dk, dv) = WindowAttentionOp.Backward(q, k, v, dO, 2, layout);

        using Tensor tq = q.ToTensor(DType.F32), tk = k.ToTensor(DType.F32), tv = v.ToTensor(DType.F32), tdO = dO.ToTensor(DType.F32);
        using Tensor gq = Poisoned(shape), gk = Poisoned(shape), gv = Poisoned(shape);
        CpuWindowAttention.Backward(tq, tk, tv, tdO, wantQ ? gq : null, wantK ? gk : null, wantV ? gv : null, 2, layout, true,
            Rope3d.DefaultTheta);
        foreach (var (want, actual, expected, name) in new[] { (wantQ, gq, dq, "dq"), (wantK, gk, dk, "dk"), (wantV, gv, dv, "dv") })
        {
            if (want) ExpectClose(actual, expected, name);
            else Assert.That(actual.ToDoubles().All(double.IsNaN), Is.True, $"{name} was not requested but was written");
        }
    }

    [Test]
    public void RejectsMismatchedShapesAndOddRopeHeadDim()
    {
        var layout = WindowLayout.Divisible(new Grid3(1, 4, 4), 2);
        using Tensor q = Tensor.Host(DType.F32, 1, 1, 4, 4, 16), bad = Tensor.Host(DType.F32, 1, 1, 4, 4, 8);
        Assert.Throws<ShapeMismatchException>(() => CpuWindowAttention.Forward(q, bad, q, q, 2, layout, true, 10000));
        Assert.Throws<ShapeMismatchException>(() => CpuWindowAttention.Forward(q, q, q, q, 3, layout, true, 10000));
        using Tensor odd = Tensor.Host(DType.F32, 1, 1, 4, 4, 10);
        Assert.Throws<UnsupportedConfigurationException>(() => CpuWindowAttention.Forward(odd, odd, odd, odd, 2, layout, true, 10000));
    }

    /// <summary>The values an f32 tensor stores, so the float64 oracle sees exactly what the kernel reads.</summary>
    private static RefTensor Quantized(RefTensor tensor)
    {
        using var stored = tensor.ToTensor(DType.F32);
        return RefTensor.FromTensor(stored);
    }
}
