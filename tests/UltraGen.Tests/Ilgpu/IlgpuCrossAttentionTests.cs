using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Ilgpu;
using UltraGen.Ops;

namespace UltraGen.Tests.Ilgpu;

/// <summary>
/// <see cref="IlgpuCrossAttention"/> on ILGPU's CPU accelerator against the float64 reference <see cref="CrossAttentionOp"/>:
/// forward and all three gradients with the dK/dV grid unsplit and split over query chunks (partials summed by the column
/// reduction), gradient subsets, 128-thread groups, and the PTX compile of the kernels. Outputs are poisoned with NaN first.
/// </summary>
[TestFixture]
public class IlgpuCrossAttentionTests
{
    private const double Tolerance = 1e-5; // max |ilgpu − reference| relative to max |reference|

    private Context _context = null!;
    private CPUAccelerator _accelerator = null!;
    private IlgpuReductions _reductions = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        // Like IlgpuDevice: 32-thread warps, 64-thread groups (the column reduction needs groups of at least 32).
        _context = Context.Create(builder => builder.CPU(new CPUDevice(32, 2, 2)));
        _accelerator = _context.CreateCPUAccelerator(0);
        _reductions = new IlgpuReductions(_accelerator, new LaunchShape(64, 4));
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        _accelerator.Dispose();
        _context.Dispose();
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        //                          batch, N, L, heads, headDim, target groups (1: one split; 1000: as many splits as query tiles)
        yield return Case("n100_l77_d64_unsplit", 1, 100, 77, 2, 64, 1);
        yield return Case("n100_l77_d64_split", 1, 100, 77, 2, 64, 1000);
        yield return Case("n100_l77_d64_3uneven_splits", 1, 100, 77, 2, 64, 18); // 7 query tiles of 16 over 3 splits
        yield return Case("b2_n70_l20_d128_split", 2, 70, 20, 1, 128, 1000);
        yield return Case("n150_l3_h3d8_split", 1, 150, 3, 3, 8, 1000);
        yield return Case("n9_l130_h1d5_split", 1, 9, 130, 1, 5, 1000);
    }

    private static TestCaseData Case(string name, int batch, int queries, int keys, int heads, int headDim, int targetGroups) =>
        new TestCaseData(batch, queries, keys, heads, headDim, targetGroups).SetName($"IlgpuCrossAttention_{name}");

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(int batch, int queries, int keys, int heads, int headDim, int targetGroups)
    {
        using var attention = new IlgpuCrossAttention(_accelerator, _reductions, targetGroups);
        Compare(_accelerator, attention, batch, queries, keys, heads, headDim);
    }

    /// <summary>The GPU group size (128 threads, ILGPU's "Intel" CPU device profile).</summary>
    [Test]
    public void MatchesReferenceWith128ThreadGroups()
    {
        using var context = Context.Create(builder => builder.CPU(CPUDevice.Intel));
        using var accelerator = context.CreateCPUAccelerator(0);
        Assert.That(accelerator.MaxNumThreadsPerGroup, Is.EqualTo(128));
        using var attention = new IlgpuCrossAttention(accelerator, new IlgpuReductions(accelerator, new LaunchShape(128, 4)), 1000);
        Compare(accelerator, attention, 1, 70, 65, 2, 64);
    }

    [Test]
    public void SplitsFollowTheTargetTheQueryTilesAndTheMemoryCap()
    {
        using var attention = new IlgpuCrossAttention(_accelerator, _reductions, targetGroups: 528);
        Assert.That(attention.Splits(queryTiles: 1000, keyValueGroups: 12 * 16, keyElements: 512 * 1536), Is.EqualTo(3));
        Assert.That(attention.Splits(queryTiles: 2, keyValueGroups: 1, keyElements: 100), Is.EqualTo(2));
        Assert.That(attention.Splits(queryTiles: 1000, keyValueGroups: 1, keyElements: 100), Is.EqualTo(IlgpuCrossAttention.MaxSplits));
        Assert.That(attention.Splits(queryTiles: 1000, keyValueGroups: 1, keyElements: 1L << 23), Is.EqualTo(4));
        Assert.That(attention.Splits(queryTiles: 1000, keyValueGroups: 10_000, keyElements: 100), Is.EqualTo(1));
    }

    private void Compare(Accelerator accelerator, IlgpuCrossAttention attention, int batch, int queries, int keys, int heads, int headDim)
    {
        int channels = heads * headDim;
        var random = new Random(HashCode.Combine(batch, queries, keys, heads, headDim));
        var (qHost, qRef) = RandomTensor(random, [batch, queries, channels]);
        var (kHost, kRef) = RandomTensor(random, [batch, keys, channels]);
        var (vHost, vRef) = RandomTensor(random, [batch, keys, channels]);
        var (dOHost, dORef) = RandomTensor(random, [batch, queries, channels]);
        var oExpected = CrossAttentionOp.Forward(qRef, kRef, vRef, heads);
        var (dqExpected, dkExpected, dvExpected) = CrossAttentionOp.Backward(qRef, kRef, vRef, dORef, heads);

        using var q = accelerator.Allocate1D(qHost);
        using var k = accelerator.Allocate1D(kHost);
        using var v = accelerator.Allocate1D(vHost);
        using var dO = accelerator.Allocate1D(dOHost);
        using var o = Poisoned(accelerator, qHost.Length);
        using var dq = Poisoned(accelerator, qHost.Length);
        using var dk = Poisoned(accelerator, kHost.Length);
        using var dv = Poisoned(accelerator, kHost.Length);

        attention.Forward(q.View, k.View, v.View, o.View, batch, queries, keys, heads, headDim);
        accelerator.Synchronize();
        AssertClose("o", o.GetAsArray1D(), oExpected);
        attention.Backward(q.View, k.View, v.View, dO.View, dq.View, dk.View, dv.View, batch, queries, keys, heads, headDim);
        AssertClose("dq", dq.GetAsArray1D(), dqExpected);
        AssertClose("dk", dk.GetAsArray1D(), dkExpected);
        AssertClose("dv", dv.GetAsArray1D(), dvExpected);
    }

    [TestCase(1)]
    [TestCase(1000)]
    public void WritesOnlyTheRequestedGradients(int targetGroups)
    {
        int batch = 1, queries = 40, keys = 11, heads = 2, headDim = 8, channels = heads * headDim;
        var random = new Random(7);
        var (qHost, qRef) = RandomTensor(random, [batch, queries, channels]);
        var (kHost, kRef) = RandomTensor(random, [batch, keys, channels]);
        var (vHost, vRef) = RandomTensor(random, [batch, keys, channels]);
        var (dOHost, dORef) = RandomTensor(random, [batch, queries, channels]);
        var (dqExpected, dkExpected, dvExpected) = CrossAttentionOp.Backward(qRef, kRef, vRef, dORef, heads);

        using var attention = new IlgpuCrossAttention(_accelerator, _reductions, targetGroups);
        using var q = _accelerator.Allocate1D(qHost);
        using var k = _accelerator.Allocate1D(kHost);
        using var v = _accelerator.Allocate1D(vHost);
        using var dO = _accelerator.Allocate1D(dOHost);
        using var queryGrad = Poisoned(_accelerator, qHost.Length);
        using var keyGrad = Poisoned(_accelerator, kHost.Length);
        using var canary = Poisoned(_accelerator, kHost.Length);

        attention.Backward(q.View, k.View, v.View, dO.View, default, canary.View.SubView(0, 0), keyGrad.View, batch, queries, keys, heads, headDim);
        AssertClose("dv alone", keyGrad.GetAsArray1D(), dvExpected);
        attention.Backward(q.View, k.View, v.View, dO.View, default, keyGrad.View, default, batch, queries, keys, heads, headDim);
        AssertClose("dk alone", keyGrad.GetAsArray1D(), dkExpected);
        attention.Backward(q.View, k.View, v.View, dO.View, queryGrad.View, default, default, batch, queries, keys, heads, headDim);
        AssertClose("dq alone", queryGrad.GetAsArray1D(), dqExpected);
        Assert.That(canary.GetAsArray1D().All(float.IsNaN), "a buffer behind an empty view was written");
    }

    [Test]
    public void RejectsMismatchedViews()
    {
        using var attention = new IlgpuCrossAttention(_accelerator, _reductions);
        using var q = _accelerator.Allocate1D<float>(5 * 8);
        using var k = _accelerator.Allocate1D<float>(3 * 8);
        var error = Assert.Throws<ShapeMismatchException>(() => attention.Forward(q.View, k.View, k.View, k.View, 1, 5, 3, 2, 4))!;
        Assert.That(error.Message, Does.Contain("cross_attention").And.Contain("o"));
        Assert.Throws<ShapeMismatchException>(() => attention.Forward(q.View, q.View, k.View, q.View, 1, 5, 3, 2, 4));
        Assert.Throws<ShapeMismatchException>(() =>
            attention.Backward(q.View, k.View, k.View, q.View, q.View, q.View, default, 1, 5, 3, 2, 4)); // dk sized like q
        Assert.Throws<ShapeMismatchException>(() => attention.Forward(q.View, k.View, k.View, q.View, 1, 5, 0, 2, 4));
    }

    /// <summary>The kernels compile for CUDA (PTX, sm_90) without EnableAlgorithms or libdevice and without .local spills.</summary>
    [Test]
    public void KernelsCompileToPtxWithoutAlgorithmsOrLocalMemory()
    {
        using var context = Context.Create(builder => builder.Default().Optimize(OptimizationLevel.O2));
        var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90,
            CudaInstructionSet.ISA_80, null!);
        foreach (string name in new[] { "Forward", "KeyValueGrad", "QueryGrad" })
        {
            var entry = EntryPointDescription.FromExplicitlyGroupedKernel(typeof(IlgpuCrossAttentionKernels).GetMethod(name)!);
            var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
            Assert.That(compiled.PTXAssembly, Does.Contain("__dyn_shared_alloca"), name);
            Assert.That(compiled.PTXAssembly, Does.Not.Contain(".local"), name);
        }
    }

    private static MemoryBuffer1D<float, Stride1D.Dense> Poisoned(Accelerator accelerator, int length)
    {
        var host = new float[length];
        Array.Fill(host, float.NaN);
        return accelerator.Allocate1D(host);
    }

    private static (float[] Host, RefTensor Reference) RandomTensor(Random random, int[] shape)
    {
        var reference = new RefTensor(shape);
        var host = new float[reference.Length];
        for (int i = 0; i < host.Length; i++)
        {
            host[i] = (float)(2 * random.NextDouble() - 1);
            reference.Data[i] = host[i];
        }
        return (host, reference);
    }

    private static void AssertClose(string name, float[] actual, RefTensor expected)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), name);
        double maxRef = 0, maxDiff = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(expected.Data[i]));
            double diff = Math.Abs(actual[i] - expected.Data[i]);
            if (!(diff <= maxDiff)) maxDiff = double.IsNaN(diff) ? double.PositiveInfinity : diff;
        }
        TestContext.Out.WriteLine($"{name}: relative error {maxDiff / Math.Max(maxRef, 1e-30):G3}");
        Assert.That(maxDiff, Is.LessThanOrEqualTo(Tolerance * Math.Max(maxRef, 1e-30)), $"{name}: max |diff| {maxDiff:G3}, max |ref| {maxRef:G3}");
    }
}
