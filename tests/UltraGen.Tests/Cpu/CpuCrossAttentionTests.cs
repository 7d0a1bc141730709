using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Cpu;
using UltraGen.Ops;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Cpu;

/// <summary>
/// The Cpu flash cross-attention kernel against the float64 <see cref="CrossAttentionOp"/> on sizes the catalogue cases do
/// not reach: many query tiles split into several backward chunks per (batch, head), query counts and key counts that are not
/// multiples of the 64-row/64-key tiles, several key tiles (online-softmax rescaling), L = 512, odd head dims.
/// </summary>
[TestFixture]
public class CpuCrossAttentionTests
{
    private const double Tolerance = 1e-5;

    public static IEnumerable<TestCaseData> Cases()
    {
        // (B, N, L, heads, headDim)
        yield return new TestCaseData(1, 1000, 300, 2, 64).SetName("n1000_l300_h2d64");
        yield return new TestCaseData(2, 257, 65, 3, 40).SetName("b2_n257_l65_h3d40");
        yield return new TestCaseData(1, 130, 512, 1, 128).SetName("n130_l512_h1d128");
        yield return new TestCaseData(1, 3000, 16, 1, 64).SetName("n3000_l16_h1d64_many_chunks");
        yield return new TestCaseData(1, 70, 7, 2, 33).SetName("n70_l7_h2d33");
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

    /// <summary>The values an f32 tensor stores, so the float64 oracle sees exactly what the kernel reads.</summary>
    private static RefTensor Quantized(RefTensor tensor)
    {
        using var stored = tensor.ToTensor(DType.F32);
        return RefTensor.FromTensor(stored);
    }

    private static (RefTensor Q, RefTensor K, RefTensor V, RefTensor DO) Inputs(Random random, int batch, int queries, int keys, int channels) =>
        // Amplitude 2 on q and k gives peaked softmax rows, so the running max changes between key tiles.
        (Quantized(Random(random, 2, batch, queries, channels)), Quantized(Random(random, 2, batch, keys, channels)),
            Quantized(Random(random, 1, batch, keys, channels)), Quantized(Random(random, 1, batch, queries, channels)));

    [TestCaseSource(nameof(Cases))]
    public void ForwardAndBackwardMatchReference(int batch, int queries, int keys, int heads, int headDim)
    {
        var random = new Random(OpHarness.NewSeed());
        var (q, k, v, dO) = Inputs(random, batch, queries, keys, heads * headDim);
        using Tensor tq = q.ToTensor(DType.F32), tk = k.ToTensor(DType.F32), tv = v.ToTensor(DType.F32), tdO = dO.ToTensor(DType.F32);
        using var to = Poisoned(q.Shape);
        CpuCrossAttention.Forward(tq, tk, tv, to, heads);
        ExpectClose(to, CrossAttentionOp.Forward(q, k, v, heads), "o");

        var (dq, dk, dv) = CrossAttentionOp.Backward(q, k, v, dO, heads);
        using Tensor gq = Poisoned(q.Shape), gk = Poisoned(k.Shape), gv = Poisoned(v.Shape);
        CpuCrossAttention.Backward(tq, tk, tv, tdO, gq, gk, gv, heads);
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
        var (q, k, v, dO) = Inputs(random, 1, 200, 70, 2 * 64);
        var (dq, dk, dv) = CrossAttentionOp.Backward(q, k, v, dO, 2);

        using Tensor tq = q.ToTensor(DType.F32), tk = k.ToTensor(DType.F32), tv = v.ToTensor(DType.F32), tdO = dO.ToTensor(DType.F32);
        using Tensor gq = Poisoned(q.Shape), gk = Poisoned(k.Shape), gv = Poisoned(v.Shape);
        CpuCrossAttention.Backward(tq, tk, tv, tdO, wantQ ? gq : null, wantK ? gk : null, wantV ? gv : null, 2);
        foreach (var (want, actual, expected, name) in new[] { (wantQ, gq, dq, "dq"), (wantK, gk, dk, "dk"), (wantV, gv, dv, "dv") })
        {
            if (want) ExpectClose(actual, expected, name);
            else Assert.That(actual.ToDoubles().All(double.IsNaN), Is.True, $"{name} was not requested but was written");
        }
    }

    [Test]
    public void RejectsMismatchedShapes()
    {
        using Tensor q = Tensor.Host(DType.F32, 1, 9, 16), k = Tensor.Host(DType.F32, 1, 5, 16), narrow = Tensor.Host(DType.F32, 1, 5, 8);
        using Tensor otherBatch = Tensor.Host(DType.F32, 2, 5, 16), o = Tensor.Host(DType.F32, 1, 9, 16);
        Assert.Throws<ShapeMismatchException>(() => CpuCrossAttention.Forward(q, narrow, narrow, o, 2));
        Assert.Throws<ShapeMismatchException>(() => CpuCrossAttention.Forward(q, otherBatch, otherBatch, o, 2));
        Assert.Throws<ShapeMismatchException>(() => CpuCrossAttention.Forward(q, k, k, o, 3));
        Assert.Throws<ShapeMismatchException>(() => CpuCrossAttention.Forward(q, k, k, k, 2));
        Assert.Throws<ShapeMismatchException>(() => CpuCrossAttention.Backward(q, k, k, o, q, q, k, 2)); // dk shaped like q
        using Tensor f64 = Tensor.Host(DType.F64, 1, 9, 16);
        Assert.Throws<UnsupportedConfigurationException>(() => CpuCrossAttention.Forward(f64, k, k, o, 2));
    }
}
