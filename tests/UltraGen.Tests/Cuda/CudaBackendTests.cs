using System.Runtime.InteropServices;
using NUnit.Framework;
using UltraGen.Core.Layout;
using UltraGen.Cuda;
using UltraGen.Cuda.Interop;
using UltraGen.Cuda.Launchers;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Tests.Cuda;

/// <summary>
/// The CUDA host layer's logic that needs no GPU: provider diagnosis, PTX discovery, the GEMM row/column-major mapping,
/// error messages, launch geometry and argument packing. With a GPU, the op harness (OpCatalogTests) covers the kernels.
/// </summary>
[TestFixture]
public class CudaBackendTests
{
    // ---------------------------------------------------------------- provider

    private static readonly string[] s_driverReasons = ["no CUDA driver (", "no usable CUDA driver", "cuInit failed: ", "no CUDA device", "no PTX: ", "CUDA device 0"];

    [Test]
    public void Provider_is_registered_as_cuda_with_priority_30()
    {
        var provider = BackendRegistry.Get("cuda");
        Assert.That(provider, Is.InstanceOf<CudaBackendProvider>());
        Assert.That(provider.AutoPriority, Is.EqualTo(30));
    }

    /// <summary>
    /// Where a run is meant to exercise the cuda backend (a GPU session: bench/gpu/run.sh; CI's run on the CUDA emulator),
    /// ULTRAGEN_REQUIRE_CUDA=1 turns "cuda unavailable" from a skip of every cuda row into this one failure.
    /// </summary>
    [Test]
    public void Cuda_backend_is_present_when_the_run_requires_it()
    {
        if (Environment.GetEnvironmentVariable("ULTRAGEN_REQUIRE_CUDA") is not ("1" or "true"))
            Assert.Ignore("ULTRAGEN_REQUIRE_CUDA is not set: a missing cuda backend is a skip, not a failure");
        var probe = BackendRegistry.Get("cuda").Probe();
        Assert.That(probe.Backend, Is.Not.Null, () => $"ULTRAGEN_REQUIRE_CUDA=1 but cuda is unavailable: {probe.UnavailableReason}");
        TestContext.Out.WriteLine($"cuda: {probe.Backend!.Description}");
        probe.Backend.Dispose();
    }

    [Test]
    public void Provider_without_a_usable_gpu_is_unavailable_with_a_precise_reason()
    {
        var probe = new CudaBackendProvider().Probe();
        if (probe.Backend is not null)
        {
            probe.Backend.Dispose();
            Assert.Ignore("a GPU with PTX is present: the op harness covers the cuda backend");
        }
        TestContext.Out.WriteLine($"cuda: {probe.UnavailableReason}");
        Assert.That(s_driverReasons.Any(r => probe.UnavailableReason!.StartsWith(r, StringComparison.Ordinal)), Is.True, probe.UnavailableReason);
        if (probe.UnavailableReason!.StartsWith("no PTX: ", StringComparison.Ordinal))
            Assert.That(probe.UnavailableReason, Does.Contain("cmake -S . -B build && cmake --build build"));
    }

    [Test]
    public void Auto_falls_through_when_cuda_is_unavailable()
    {
        var probe = ((IBackendProvider)new CudaBackendProvider()).ProbeForAuto();
        if (probe.Backend is not null)
        {
            probe.Backend.Dispose();
            Assert.Ignore("cuda is available here");
        }
        var (backend, why) = BackendRegistry.Auto();
        using (backend)
        {
            Assert.That(backend.Name, Is.Not.EqualTo("cuda"));
            Assert.That(why, Does.Contain($"cuda is unavailable ({probe.UnavailableReason})"));
        }
    }

    private static string Describe(int status) => $"{CudaDriver.ErrorName(status)} ({status}): {CudaDriver.ErrorString(status)}";

    [Test]
    public void Diagnose_names_a_missing_driver_library()
    {
        string? reason = CudaBackendProvider.Diagnose(() => false, () => throw new AssertionException("cuInit called"), () => 1, Describe);
        string expected = OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";
        Assert.That(reason, Is.EqualTo($"no CUDA driver ({expected} not found)"));
    }

    [Test]
    public void Diagnose_reports_cuInit_failure_with_the_driver_error()
    {
        string? reason = CudaBackendProvider.Diagnose(() => true, () => 100, () => throw new AssertionException("count called"), Describe);
        Assert.That(reason, Does.StartWith("cuInit failed: CUDA_ERROR_NO_DEVICE (100): "));
    }

    [Test]
    public void Diagnose_reports_no_device_and_accepts_a_working_driver()
    {
        Assert.That(CudaBackendProvider.Diagnose(() => true, () => 0, () => 0, Describe), Is.EqualTo("no CUDA device (cuDeviceGetCount returned 0)"));
        Assert.That(CudaBackendProvider.Diagnose(() => true, () => 0, () => 2, Describe), Is.Null);
    }

    [Test]
    public void Diagnose_turns_a_broken_driver_library_into_a_reason()
    {
        string? reason = CudaBackendProvider.Diagnose(() => throw new EntryPointNotFoundException("cuInit"), () => 0, () => 1, Describe);
        Assert.That(reason, Does.StartWith("no usable CUDA driver"));
        Assert.That(reason, Does.Contain("cuInit"));
    }

    // ---------------------------------------------------------------- PTX discovery

    private string _ptxDir = "";

    [SetUp]
    public void CreatePtxDir()
    {
        _ptxDir = Path.Combine(Path.GetTempPath(), "ultragen-ptx-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_ptxDir);
        foreach (var name in new[] { "x.sm80.ptx", "x.sm90.ptx", "y.sm80.ptx", "z.sm90.ptx", "notes.ptx", "x.sm80.ptx.bak" })
            File.WriteAllText(Path.Combine(_ptxDir, name), "// fake\n");
    }

    [TearDown]
    public void DeletePtxDir() => Directory.Delete(_ptxDir, recursive: true);

    [TestCase("x", 90, "x.sm90.ptx")]
    [TestCase("x", 100, "x.sm90.ptx")]
    [TestCase("x", 89, "x.sm80.ptx")]
    [TestCase("x", 86, "x.sm80.ptx")]
    [TestCase("x", 80, "x.sm80.ptx")]
    [TestCase("y", 90, "y.sm80.ptx")]
    public void Ptx_selection_picks_the_highest_architecture_not_above_the_device(string module, int cc, string expected)
    {
        Assert.That(Path.GetFileName(PtxLocator.Select(module, cc, _ptxDir, "test")), Is.EqualTo(expected));
    }

    [Test]
    public void Ptx_selection_explains_what_is_missing_and_where_it_looked()
    {
        var tooNew = Assert.Throws<PtxNotFoundException>(() => PtxLocator.Select("z", 86, _ptxDir, "$ULTRAGEN_PTX_DIR"))!;
        Assert.That(tooNew.Message, Does.Contain("'z'").And.Contain("sm86").And.Contain(_ptxDir).And.Contain("$ULTRAGEN_PTX_DIR")
            .And.Contain("only sm90").And.Contain("cmake -S . -B build && cmake --build build"));
        var absent = Assert.Throws<PtxNotFoundException>(() => PtxLocator.Select("window_attention", 90, _ptxDir, "test"))!;
        Assert.That(absent.Message, Does.Contain("window_attention.sm<NN>.ptx").And.Contain("none for this module"));
    }

    [Test]
    public void Ptx_survey_lists_only_module_files()
    {
        var files = PtxLocator.Survey(_ptxDir).Select(f => $"{f.Module}@{f.Arch}").ToList();
        Assert.That(files, Is.EqualTo(new[] { "x@80", "x@90", "y@80", "z@90" }));
    }

    [Test]
    public void Missing_ptx_folder_or_files_are_reported_with_the_build_command()
    {
        Assert.That(PtxLocator.Missing(_ptxDir, "test"), Is.Null);
        string absent = Path.Combine(_ptxDir, "nope");
        Assert.That(PtxLocator.Missing(absent, "ptx/ beside the assembly"),
            Does.StartWith("no PTX: ").And.Contain(absent).And.Contain("does not exist").And.Contain("cmake --build build"));
        string empty = Path.Combine(_ptxDir, "empty");
        Directory.CreateDirectory(empty);
        Assert.That(PtxLocator.Missing(empty, "test"), Does.Contain("holds no *.sm<NN>.ptx files"));
    }

    [Test]
    public void Search_directory_is_the_environment_variable_else_ptx_beside_the_assembly()
    {
        Assert.That(PtxLocator.SearchDirectory(_ptxDir, "/app"), Is.EqualTo((_ptxDir, "$ULTRAGEN_PTX_DIR")));
        Assert.That(PtxLocator.SearchDirectory(null, "/app").Directory, Is.EqualTo(Path.Combine("/app", "ptx")));
        Assert.That(PtxLocator.SearchDirectory("  ", "/app").Origin, Is.EqualTo("ptx/ beside the assembly"));
    }

    [Test]
    public void Module_cache_resolves_paths_without_loading()
    {
        using var modules = new PtxModules(90, _ptxDir, "test");
        Assert.That(Path.GetFileName(modules.PathOf("x")), Is.EqualTo("x.sm90.ptx"));
        Assert.Throws<PtxNotFoundException>(() => modules.PathOf("elementwise"));
    }

    // ---------------------------------------------------------------- GEMM mapping

    /// <summary>BLAS semantics, column-major: C = alpha·op(A)·op(B) + beta·C, with the leading-dimension rules checked.</summary>
    private static void ColumnMajorGemm(GemmCall c, float[] a, float[] b, float[] result, float alpha, float beta)
    {
        Assert.That(c.Lda, Is.GreaterThanOrEqualTo(Math.Max(1, c.TransA == BlasOp.N ? c.M : c.K)), $"lda of {c}");
        Assert.That(c.Ldb, Is.GreaterThanOrEqualTo(Math.Max(1, c.TransB == BlasOp.N ? c.K : c.N)), $"ldb of {c}");
        Assert.That(c.Ldc, Is.GreaterThanOrEqualTo(Math.Max(1, c.M)), $"ldc of {c}");
        for (int i = 0; i < c.M; i++)
            for (int j = 0; j < c.N; j++)
            {
                double sum = 0;
                for (int l = 0; l < c.K; l++)
                {
                    double opA = c.TransA == BlasOp.N ? a[i + l * c.Lda] : a[l + i * c.Lda];
                    double opB = c.TransB == BlasOp.N ? b[l + j * c.Ldb] : b[j + l * c.Ldb];
                    sum += opA * opB;
                }
                result[i + j * c.Ldc] = (float)(alpha * sum + beta * result[i + j * c.Ldc]);
            }
    }

    private static float[] Random(Random random, int count) => Enumerable.Range(0, count).Select(_ => (float)(2 * random.NextDouble() - 1)).ToArray();

    /// <summary>Row-major reference: C(M×N) = op(A)·op(B), A stored M×K or K×M, B stored K×N or N×K.</summary>
    private static double[] RowMajorProduct(int m, int n, int k, float[] a, bool ta, float[] b, bool tb)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                for (int l = 0; l < k; l++)
                    c[i * n + j] += (double)(ta ? a[l * m + i] : a[i * k + l]) * (tb ? b[j * k + l] : b[l * n + j]);
        return c;
    }

    [Test]
    public void Row_major_gemm_maps_onto_column_major_blas([Values(1, 3, 7)] int m, [Values(1, 4)] int n, [Values(1, 5)] int k,
        [Values] bool transposeA, [Values] bool transposeB)
    {
        var random = new Random(m * 1000 + n * 100 + k * 10 + (transposeA ? 2 : 0) + (transposeB ? 1 : 0));
        var a = Random(random, m * k);
        var b = Random(random, k * n);
        var call = GemmCall.RowMajor(m, n, k, transposeA, transposeB);
        Assert.That(call.SwapOperands, Is.True);
        var c = new float[m * n];
        ColumnMajorGemm(call, b, a, c, 1f, 0f); // operands swapped: B's buffer first
        var expected = RowMajorProduct(m, n, k, a, transposeA, b, transposeB);
        for (int i = 0; i < c.Length; i++) Assert.That(c[i], Is.EqualTo(expected[i]).Within(1e-5), $"element {i} of {call}");
    }

    [Test]
    public void Linear_forward_and_backward_gemms_match_the_reference_linear()
    {
        const int rows = 5, inFeatures = 3, outFeatures = 4;
        var random = new Random(7);
        var x = Random(random, rows * inFeatures);
        var w = Random(random, outFeatures * inFeatures);
        var bias = Random(random, outFeatures);
        var dy = Random(random, rows * outFeatures);
        var ones = Enumerable.Repeat(1f, rows).ToArray();

        var y = new float[rows * outFeatures];
        ColumnMajorGemm(GemmCall.LinearForward(rows, inFeatures, outFeatures), w, x, y, 1f, 0f);
        ColumnMajorGemm(GemmCall.BiasBroadcast(rows, outFeatures), bias, ones, y, 1f, 1f);
        var dx = new float[rows * inFeatures];
        ColumnMajorGemm(GemmCall.LinearBackwardInput(rows, inFeatures, outFeatures), w, dy, dx, 1f, 0f);
        var dw = new float[outFeatures * inFeatures];
        ColumnMajorGemm(GemmCall.LinearBackwardWeight(rows, inFeatures, outFeatures), x, dy, dw, 1f, 0f);
        var db = new float[outFeatures];
        ColumnMajorGemm(GemmCall.BiasGradient(rows, outFeatures), ones, dy, db, 1f, 0f);

        var rx = ToRef(x, rows, inFeatures);
        var rw = ToRef(w, outFeatures, inFeatures);
        var expectedY = LinearOp.Forward(rx, rw, ToRef(bias, outFeatures));
        var (edx, edw, edb) = LinearOp.Backward(rx, rw, ToRef(dy, rows, outFeatures));
        AssertClose(y, expectedY.Data, "y");
        AssertClose(dx, edx.Data, "dx");
        AssertClose(dw, edw.Data, "dW");
        AssertClose(db, edb.Data, "db");
    }

    private static RefTensor ToRef(float[] values, params int[] shape)
    {
        var tensor = new RefTensor(shape);
        for (int i = 0; i < values.Length; i++) tensor.Data[i] = values[i];
        return tensor;
    }

    private static void AssertClose(float[] actual, double[] expected, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        for (int i = 0; i < actual.Length; i++) Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-5), $"{what}[{i}]");
    }

    [Test]
    public void Linear_forward_uses_the_transpose_trick_parameters()
    {
        // y(rows×out) = x·Wᵀ  ⇒  column-major yᵀ(out×rows) = W·xᵀ: cublas(T, N, m=out, n=rows, k=in, A=W lda=in, B=x ldb=in, ldc=out).
        Assert.That(GemmCall.LinearForward(rows: 10, inFeatures: 3, outFeatures: 4),
            Is.EqualTo(new GemmCall(BlasOp.T, BlasOp.N, 4, 10, 3, 3, 3, 4, true)));
        Assert.That(GemmCall.LinearBackwardInput(10, 3, 4), Is.EqualTo(new GemmCall(BlasOp.N, BlasOp.N, 3, 10, 4, 3, 4, 3, true)));
        Assert.That(GemmCall.LinearBackwardWeight(10, 3, 4), Is.EqualTo(new GemmCall(BlasOp.N, BlasOp.T, 3, 4, 10, 3, 4, 3, true)));
        Assert.Throws<ArgumentOutOfRangeException>(() => GemmCall.RowMajor(0, 1, 1, false, false));
    }

    // ---------------------------------------------------------------- errors

    [Test]
    public void Cuda_exception_names_call_kernel_error_name_and_description()
    {
        var e = new CudaException("cuLaunchKernel", 1, "CUDA_ERROR_INVALID_VALUE", "invalid argument", "kernel 'add_f32' (module elementwise)", "grid (1, 1, 1)");
        Assert.That(e, Is.InstanceOf<UltraGen.Core.UltraGenException>());
        Assert.That(e.Message, Is.EqualTo("cuLaunchKernel failed for kernel 'add_f32' (module elementwise): CUDA_ERROR_INVALID_VALUE (1): invalid argument; grid (1, 1, 1)"));
        Assert.That((e.Call, e.ErrorCode, e.ErrorName), Is.EqualTo(("cuLaunchKernel", 1, "CUDA_ERROR_INVALID_VALUE")));
    }

    [Test]
    public void Out_of_memory_says_requested_free_and_total()
    {
        var e = new CudaOutOfMemoryException("cuMemAlloc_v2", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory", 3L << 30, 1L << 30, 80L << 30);
        Assert.That(e, Is.InstanceOf<CudaException>());
        Assert.That(e.Message, Does.StartWith("cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory; requested 3221225472 bytes (3 GiB), device has 1073741824 bytes (1 GiB) free of 85899345920 bytes (80 GiB)"));
        Assert.That((e.RequestedBytes, e.FreeBytes, e.TotalBytes), Is.EqualTo((3L << 30, 1L << 30, 80L << 30)));
    }

    [Test]
    public void Driver_error_names_resolve_with_or_without_a_driver()
    {
        Assert.That(CudaDriver.ErrorName(100), Is.EqualTo("CUDA_ERROR_NO_DEVICE"));
        Assert.That(CudaDriver.ErrorName(2), Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
        Assert.That(CudaDriver.ErrorName(123456), Is.EqualTo("CUDA_ERROR_123456"));
        var e = Assert.Throws<CudaException>(() => CudaDriver.Check(218, "cuModuleLoadDataEx", "module spatial (/p/spatial.sm80.ptx)"))!;
        Assert.That(e.Message, Does.StartWith("cuModuleLoadDataEx failed for module spatial (/p/spatial.sm80.ptx): CUDA_ERROR_INVALID_PTX (218): "));
        Assert.DoesNotThrow(() => CudaDriver.Check(0, "cuInit"));
    }

    [Test]
    public void Cublas_exception_names_status()
    {
        var e = new CublasException("cublasGemmEx", 7, "linear y = x·Wᵀ: cublas(...)");
        Assert.That(e.Message, Is.EqualTo("cublasGemmEx failed: CUBLAS_STATUS_INVALID_VALUE (7); linear y = x·Wᵀ: cublas(...)"));
    }

    // ---------------------------------------------------------------- launch geometry (mirror of kernels/common/launch.cuh)

    [Test]
    public void Elementwise_row_and_reduction_geometry()
    {
        Assert.That(new[] { 0L, 1, 1024, 1025, 4096 }.Select(LaunchGeometry.ElementwiseBlocks), Is.EqualTo(new[] { 1, 1, 1, 2, 4 }));
        Assert.That(LaunchGeometry.ElementwiseBlocks(1L << 40), Is.EqualTo(65535 * 32));
        Assert.That(new[] { 1L, 8, 9, 171_360 }.Select(LaunchGeometry.RowBlocks), Is.EqualTo(new[] { 1, 1, 2, 21_420 }));
        Assert.That(new[] { 1L, 256, 257, 1_000_000_000 }.Select(LaunchGeometry.ReductionSplits), Is.EqualTo(new[] { 1, 1, 2, 1024 }));
        Assert.That(LaunchGeometry.ReductionGrid(100, 3, 2), Is.EqualTo(new Dim3(4, 3, 2)));
        Assert.That(LaunchGeometry.ReductionBlock, Is.EqualTo(new Dim3(32, 8)));
        Assert.That(LaunchGeometry.ReductionSplitBegin(10, 3, 1), Is.EqualTo(3));
        Assert.That(LaunchGeometry.AttentionPreprocessGrid(17), Is.EqualTo(new Dim3(3)));
        Assert.That(LaunchGeometry.ColumnSumGrid(257, 2), Is.EqualTo(new Dim3(2, 2)));
        Assert.That(LaunchGeometry.TimestepForwardGrid(batch: 3, dim: 256), Is.EqualTo(new Dim3(2)));   // ⌈3·128 / 256⌉
        Assert.That(SpatialLauncher.Conv2dLimitation(4, 4), Is.Null);
        Assert.That(SpatialLauncher.Conv2dLimitation(5, 1), Does.Contain("1 ≤ kh, kw ≤ 4"));
        Assert.That(SpatialLauncher.Conv3dLimitation(3, 3, 3), Is.Null);
        Assert.That(SpatialLauncher.Conv3dLimitation(1, 3, 3), Does.Contain("3×3×3"));
    }

    [Test]
    public void Attention_grids_cover_the_largest_window()
    {
        var divisible = WindowLayoutParams.From(WindowLayout.Divisible(new Grid3(2, 8, 8), 2));
        Assert.That(divisible.MaxTokensInWindow, Is.EqualTo(32));
        Assert.That(LaunchGeometry.AttentionGrid(divisible, heads: 2, batch: 1, block: 32), Is.EqualTo(new Dim3(1, 8, 1)));
        var ragged = WindowLayoutParams.From(WindowLayout.Ragged(new Grid3(2, 7, 10), 3));
        Assert.That(ragged.MaxTokensInWindow, Is.EqualTo(2 * 3 * 4));
        Assert.That(LaunchGeometry.AttentionGrid(ragged, heads: 2, batch: 3, block: 64), Is.EqualTo(new Dim3(1, 18, 3)));
        // 1080P local branch: grid (21, 68, 120), 4×4 windows → 21·17·30 = 10 710 tokens per window.
        var local1080 = WindowLayoutParams.From(WindowLayout.Divisible(new Grid3(21, 68, 120), 4));
        Assert.That(LaunchGeometry.AttentionGrid(local1080, heads: 12, batch: 1, block: 64), Is.EqualTo(new Dim3(168, 192, 1)));
        Assert.That(LaunchGeometry.RopeMinPositions(local1080), Is.EqualTo(30));
        Assert.That(WindowLayoutParams.From(WindowLayout.Divisible(new Grid3(21, 68, 120), 4)).MaxTokensInWindow,
            Is.EqualTo(WindowLayout.Divisible(new Grid3(21, 68, 120), 4).MaxTokensInWindow));
    }

    [Test]
    public void Attention_shared_memory_per_kernel()
    {
        Assert.That(LaunchGeometry.AttentionF32ForwardSmem(64), Is.EqualTo((3 * 32 * 65 + 4 * 8 * 32) * 4)); // 29 056
        Assert.That(LaunchGeometry.AttentionF32ForwardSmem(128), Is.EqualTo(53_632));                     // > 48 KiB: opt-in
        Assert.That(LaunchGeometry.AttentionF32DkdvSmem(64), Is.EqualTo(41_472));
        Assert.That(LaunchGeometry.AttentionF32DqSmem(64), Is.EqualTo(37_376));
        Assert.That(LaunchGeometry.AttentionBf16ForwardSmem(64), Is.EqualTo(46_080));
        Assert.That(LaunchGeometry.AttentionBf16ForwardSmem(128), Is.EqualTo(87_040));
        Assert.That(LaunchGeometry.AttentionBf16ForwardM128Smem(64), Is.EqualTo((128 + 4 * 64) * 72 * 2)); // 55 296
        Assert.That(LaunchGeometry.AttentionBf16ForwardM128Smem(128), Is.EqualTo(104_448));
        Assert.That(LaunchGeometry.AttentionF32DkdvSmem(128), Is.EqualTo(74_240));
        Assert.That(LaunchGeometry.AttentionF32DqSmem(128), Is.EqualTo(70_144));
        Assert.That(LaunchGeometry.AttentionBf16DqSmem(128), Is.EqualTo(104_448));
        Assert.That(LaunchGeometry.AttentionBf16DkdvSmem(64), Is.EqualTo(55_296));
        Assert.That(LaunchGeometry.AttentionBf16DkdvSmem(128), Is.EqualTo(69_632));
        Assert.That(LaunchGeometry.AttentionBf16DqSmem(64), Is.EqualTo(55_296));
        Assert.That(new[] { 32, 64, 128 }.All(LaunchGeometry.AttentionHeadDimSupported), Is.True);
        Assert.That(new[] { 8, 16, 96 }.Any(LaunchGeometry.AttentionHeadDimSupported), Is.False);
        Assert.That(WindowAttentionLauncher.Limitation(8), Does.Contain("head dims 32, 64 and 128, got 8"));
    }

    [TestCase(12, 100.0, 4)]
    [TestCase(128, 10000.0, 5)]
    public void Rope_table_matches_the_reference_rotation(int headDim, double theta, int positions)
    {
        var table = LaunchGeometry.RopeTable(headDim, theta, positions);
        Assert.That(table.Length, Is.EqualTo(2 * positions * (headDim / 2)));
        for (int pos = 0; pos < positions; pos++)
            for (int pair = 0; pair < headDim / 2; pair++)
            {
                // Rotating the unit vector e_{2·pair} at (pos, pos, pos) yields (cos, sin) of that pair's angle.
                var v = new double[headDim];
                v[2 * pair] = 1;
                Rope3d.Apply(v, pos, pos, pos, theta);
                long offset = 2 * ((long)pos * (headDim / 2) + pair);
                Assert.That(table[offset], Is.EqualTo((float)v[2 * pair]), $"cos pos {pos} pair {pair}");
                Assert.That(table[offset + 1], Is.EqualTo((float)v[2 * pair + 1]), $"sin pos {pos} pair {pair}");
            }
    }

    // ---------------------------------------------------------------- ABI structs and argument packing

    [Test]
    public void Abi_structs_match_abi_cuh()
    {
        Assert.That(Marshal.SizeOf<WindowLayoutParams>(), Is.EqualTo(16));
        Assert.That(Marshal.SizeOf<RopeParams>(), Is.EqualTo(16));
        Assert.That(Marshal.OffsetOf<RopeParams>(nameof(RopeParams.CosSin)).ToInt32(), Is.EqualTo(8));
        Assert.That(Marshal.OffsetOf<WindowLayoutParams>(nameof(WindowLayoutParams.WindowsPerSide)).ToInt32(), Is.EqualTo(12));
    }

    [Test]
    public void Kernel_arguments_are_packed_at_natural_alignment()
    {
        var args = new KernelArgs().Ptr(new IntPtr(0x1000)).Int(3).Float(0.5f).Add(new WindowLayoutParams(1, 2, 3, 1)).Add(new RopeParams(1, 4, IntPtr.Zero)).Int(7);
        Assert.That(args.Count, Is.EqualTo(6));
        Assert.That(args.Offsets, Is.EqualTo(new[] { 0, 8, 12, 16, 32, 48 }));
    }

    [Test]
    public void Convert_entry_points_and_timer_median()
    {
        Assert.That(ConvertLauncher.EntryPoint(UltraGen.Core.DType.F32, UltraGen.Core.DType.BF16), Is.EqualTo("f32_to_bf16"));
        Assert.That(ConvertLauncher.EntryPoint(UltraGen.Core.DType.F16, UltraGen.Core.DType.F32), Is.EqualTo("f16_to_f32"));
        Assert.That(ConvertLauncher.EntryPoint(UltraGen.Core.DType.BF16, UltraGen.Core.DType.F16), Is.Null);
        Assert.That(CudaTimer.MedianOf([3.0, 1.0, 2.0]), Is.EqualTo(2.0));
        Assert.That(CudaTimer.MedianOf([4.0, 1.0, 2.0, 3.0]), Is.EqualTo(2.5));
    }
}
