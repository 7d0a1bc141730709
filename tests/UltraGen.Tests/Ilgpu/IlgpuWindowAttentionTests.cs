using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.CPU;
using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Ilgpu;
using UltraGen.Ops;

namespace UltraGen.Tests.Ilgpu;

/// <summary>
/// <see cref="IlgpuWindowAttention"/> on ILGPU's CPU accelerator (explicitly grouped kernels, shared memory and barriers run
/// there) against the float64 reference <see cref="WindowAttentionOp"/>: forward and all three gradients, full, divisible
/// and ragged windows, T = 1, batch 2, head dims 6, 8, 16, 64 and 128 with window token counts that are not tile multiples,
/// RoPE on and off. Outputs are poisoned with NaN first, so an element the kernels skip fails the comparison.
/// </summary>
[TestFixture]
public class IlgpuWindowAttentionTests
{
    private const double Tolerance = 1e-5; // max |ilgpu − reference| relative to max |reference|

    private Context _context = null!;
    private CPUAccelerator _accelerator = null!;
    private IlgpuWindowAttention _attention = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        _context = Context.Create(builder => builder.CPU(CPUDevice.Default));
        _accelerator = _context.CreateCPUAccelerator(0);
        _attention = new IlgpuWindowAttention(_accelerator);
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        _attention.Dispose();
        _accelerator.Dispose();
        _context.Dispose();
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        //                             batch, T, H, W, heads, headDim, windows, ragged, rope
        yield return Case("full_d8_84tok", 1, 2, 6, 7, 2, 8, 1, false, true);
        yield return Case("full_d8_84tok_norope", 1, 2, 6, 7, 2, 8, 1, false, false);
        yield return Case("win2_divisible_d64_40tok", 1, 2, 8, 10, 1, 64, 2, false, true);
        yield return Case("ragged3_7x10_d128", 1, 2, 7, 10, 1, 128, 3, true, true);
        yield return Case("ragged3_7x10_d128_norope", 1, 2, 7, 10, 1, 128, 3, true, false);
        yield return Case("full_d128_t1_batch2_40tok", 2, 1, 5, 8, 1, 128, 1, false, true);
        yield return Case("ragged2_t1_batch2_d16", 2, 1, 5, 9, 2, 16, 2, true, true);
        yield return Case("full_d6_heads3", 1, 2, 3, 4, 3, 6, 1, false, true);
        yield return Case("full_d128_108tok", 1, 3, 6, 6, 1, 128, 1, false, true);
        yield return Case("ragged2_5x9_t4_d96", 1, 4, 5, 9, 2, 96, 2, true, true);
        yield return Case("ragged5_11x13_d32", 1, 2, 11, 13, 1, 32, 5, true, true);
        yield return Case("full_d64_384tok_long_positions", 1, 12, 16, 2, 1, 64, 1, false, true);
    }

    private static TestCaseData Case(string name, int batch, int t, int h, int w, int heads, int headDim, int windows, bool ragged,
        bool rope) =>
        new TestCaseData(batch, t, h, w, heads, headDim, windows, ragged, rope).SetName($"IlgpuWindowAttention_{name}");

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(int batch, int t, int h, int w, int heads, int headDim, int windows, bool ragged, bool rope) =>
        Compare(_accelerator, _attention, batch, t, h, w, heads, headDim, windows, ragged, rope);

    /// <summary>The GPU group size (128 threads, ILGPU's "Intel" CPU device profile) instead of the default CPU device's 16.</summary>
    [Test]
    public void MatchesReferenceWith128ThreadGroups()
    {
        using var context = Context.Create(builder => builder.CPU(CPUDevice.Intel));
        using var accelerator = context.CreateCPUAccelerator(0);
        using var attention = new IlgpuWindowAttention(accelerator);
        Assert.That(accelerator.MaxNumThreadsPerGroup, Is.EqualTo(128));
        Compare(accelerator, attention, 1, 2, 7, 10, 1, 128, 3, true, true);
        Compare(accelerator, attention, 2, 2, 6, 7, 2, 8, 1, false, true);
    }

    private static void Compare(CPUAccelerator accelerator, IlgpuWindowAttention attention, int batch, int t, int h, int w, int heads,
        int headDim, int windows, bool ragged, bool rope)
    {
        var grid = new Grid3(t, h, w);
        var layout = ragged ? WindowLayout.Ragged(grid, windows) : WindowLayout.Divisible(grid, windows);
        int[] shape = [batch, t, h, w, heads * headDim];
        var random = new Random(HashCode.Combine(batch, t, h, w, heads, headDim, windows, rope));
        var (qHost, qRef) = RandomTensor(random, shape);
        var (kHost, kRef) = RandomTensor(random, shape);
        var (vHost, vRef) = RandomTensor(random, shape);
        var (dOHost, dORef) = RandomTensor(random, shape);

        var oExpected = WindowAttentionOp.Forward(qRef, kRef, vRef, heads, layout, rope);
        var (dqExpected, dkExpected, dvExpected) = WindowAttentionOp.Backward(qRef, kRef, vRef, dORef, heads, layout, rope);

        using var q = accelerator.Allocate1D(qHost);
        using var k = accelerator.Allocate1D(kHost);
        using var v = accelerator.Allocate1D(vHost);
        using var dO = accelerator.Allocate1D(dOHost);
        using var o = Poisoned(accelerator, qHost.Length);
        using var dq = Poisoned(accelerator, qHost.Length);
        using var dk = Poisoned(accelerator, qHost.Length);
        using var dv = Poisoned(accelerator, qHost.Length);

        attention.Forward(q.View, k.View, v.View, o.View, batch, heads, headDim, layout, rope, Rope3d.DefaultTheta);
        accelerator.Synchronize();
        AssertClose("o", o.GetAsArray1D(), oExpected);

        attention.Backward(q.View, k.View, v.View, dO.View, dq.View, dk.View, dv.View, batch, heads, headDim, layout, rope,
            Rope3d.DefaultTheta);
        accelerator.Synchronize();
        AssertClose("dq", dq.GetAsArray1D(), dqExpected);
        AssertClose("dk", dk.GetAsArray1D(), dkExpected);
        AssertClose("dv", dv.GetAsArray1D(), dvExpected);
    }

    [Test]
    public void WritesOnlyTheRequestedGradients()
    {
        var layout = WindowLayout.Ragged(new Grid3(2, 5, 7), 2);
        int batch = 1, heads = 2, headDim = 8;
        int[] shape = [batch, 2, 5, 7, heads * headDim];
        var random = new Random(7);
        var (qHost, qRef) = RandomTensor(random, shape);
        var (kHost, kRef) = RandomTensor(random, shape);
        var (vHost, vRef) = RandomTensor(random, shape);
        var (dOHost, dORef) = RandomTensor(random, shape);
        var (dqExpected, dkExpected, dvExpected) = WindowAttentionOp.Backward(qRef, kRef, vRef, dORef, heads, layout);

        using var q = _accelerator.Allocate1D(qHost);
        using var k = _accelerator.Allocate1D(kHost);
        using var v = _accelerator.Allocate1D(vHost);
        using var dO = _accelerator.Allocate1D(dOHost);
        using var grad = Poisoned(_accelerator, qHost.Length);
        using var canary = Poisoned(_accelerator, qHost.Length);

        // dv only (dq, dk empty).
        _attention.Backward(q.View, k.View, v.View, dO.View, default, canary.View.SubView(0, 0), grad.View, batch, heads, headDim,
            layout, true, Rope3d.DefaultTheta);
        AssertClose("dv alone", grad.GetAsArray1D(), dvExpected);
        // dk only.
        _attention.Backward(q.View, k.View, v.View, dO.View, default, grad.View, default, batch, heads, headDim, layout, true,
            Rope3d.DefaultTheta);
        AssertClose("dk alone", grad.GetAsArray1D(), dkExpected);
        // dq only.
        _attention.Backward(q.View, k.View, v.View, dO.View, grad.View, default, default, batch, heads, headDim, layout, true,
            Rope3d.DefaultTheta);
        AssertClose("dq alone", grad.GetAsArray1D(), dqExpected);
        Assert.That(canary.GetAsArray1D().All(float.IsNaN), "a buffer behind an empty view was written");
    }

    [Test]
    public void RejectsMismatchedViewsAndOddRopeHeadDims()
    {
        var layout = WindowLayout.Divisible(new Grid3(1, 2, 2), 1);
        using var x = _accelerator.Allocate1D<float>(4 * 8);
        using var small = _accelerator.Allocate1D<float>(4 * 8 - 1);
        Assert.Throws<ShapeMismatchException>(() =>
            _attention.Forward(x.View, x.View, x.View, small.View, 1, 1, 8, layout, true, Rope3d.DefaultTheta));
        using var odd = _accelerator.Allocate1D<float>(4 * 7);
        Assert.Throws<UnsupportedConfigurationException>(() =>
            _attention.Forward(odd.View, odd.View, odd.View, odd.View, 1, 1, 7, layout, true, Rope3d.DefaultTheta));
    }

    /// <summary>
    /// The kernels compile for CUDA (PTX, sm_90) on a plain context, without EnableAlgorithms or libdevice, and keep
    /// everything in registers and shared memory (no .local spills). Needs no GPU: only ILGPU's PTX code generator runs.
    /// </summary>
    [Test]
    public void KernelsCompileToPtxWithoutAlgorithmsOrLocalMemory()
    {
        using var context = Context.Create(builder => builder.Default().Optimize(OptimizationLevel.O2));
        var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90,
            CudaInstructionSet.ISA_80, null!);
        var kernels = typeof(IlgpuWindowAttentionKernels);
        foreach (string name in new[] { "Forward", "KeyValueGrad", "QueryGrad" })
        {
            var entry = EntryPointDescription.FromExplicitlyGroupedKernel(kernels.GetMethod(name)!);
            var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
            Assert.That(compiled.PTXAssembly, Does.Contain("__dyn_shared_alloca"), name);
            Assert.That(compiled.PTXAssembly, Does.Not.Contain(".local"), name);
        }
        var rowDot = EntryPointDescription.FromImplicitlyGroupedKernel(kernels.GetMethod("RowDot")!);
        Assert.That(((PTXCompiledKernel)backend.Compile(rowDot, KernelSpecialization.Empty)).PTXAssembly, Is.Not.Empty);
    }

    [Test]
    public void KernelExpMatchesMathExp()
    {
        double worst = 0;
        for (double x = -90; x <= 5; x += 0.001953125)
        {
            double expected = Math.Exp((float)x), actual = IlgpuWindowAttentionKernels.Exp((float)x);
            if (expected < 1e-37) Assert.That(actual, Is.LessThan(2e-37), $"x={x}");
            else worst = Math.Max(worst, Math.Abs(actual - expected) / expected);
        }
        Assert.That(worst, Is.LessThan(3e-7), "max relative error of the kernels' exp");
        Assert.That(IlgpuWindowAttentionKernels.Exp(float.NegativeInfinity), Is.EqualTo(0f));
        Assert.That(IlgpuWindowAttentionKernels.Exp(0f), Is.EqualTo(1f));
    }

    [Test]
    public void TilesFitTheSharedMemoryBudget()
    {
        foreach (int d in new[] { 6, 8, 16, 32, 64, 96, 128 })
        {
            var (fr, fc) = IlgpuWindowAttention.ForwardTiles(d);
            var (kr, kc) = IlgpuWindowAttention.KeyValueTiles(d);
            var (qr, qc) = IlgpuWindowAttention.QueryTiles(d);
            Assert.That(IlgpuWindowAttention.ForwardFloats(d, fr, fc) * 4, Is.LessThanOrEqualTo(48 * 1024), $"forward d={d}");
            Assert.That(IlgpuWindowAttention.KeyValueFloats(d, kr, kc) * 4, Is.LessThanOrEqualTo(48 * 1024), $"dK/dV d={d}");
            Assert.That(IlgpuWindowAttention.QueryFloats(d, qr, qc) * 4, Is.LessThanOrEqualTo(48 * 1024), $"dQ d={d}");
        }
        Assert.That(IlgpuWindowAttention.ForwardTiles(128), Is.EqualTo((32, 16)));
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
        int worst = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(expected.Data[i]));
            double diff = Math.Abs(actual[i] - expected.Data[i]);
            if (!(diff <= maxDiff)) (maxDiff, worst) = (double.IsNaN(diff) ? double.PositiveInfinity : diff, i);
        }
        TestContext.Out.WriteLine($"{name}: relative error {maxDiff / Math.Max(maxRef, 1e-30):G3}");
        Assert.That(maxDiff, Is.LessThanOrEqualTo(Tolerance * Math.Max(maxRef, 1e-30)),
            $"{name}: max |diff| {maxDiff:G3} at {worst} (got {(worst >= 0 ? actual[worst] : 0)}, expected " +
            $"{(worst >= 0 ? expected.Data[worst] : 0)}), max |ref| {maxRef:G3}");
    }
}
