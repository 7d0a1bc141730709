using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using UltraGen.Ilgpu;
using UltraGen.Ops.Backends;

namespace UltraGen.Bench;

/// <summary>
/// Which benchmark cases run on which job. Without a CUDA GPU, ILGPU runs on its CPU accelerator, a test device that
/// emulates every GPU thread of a group: measured on this project's 2-core machine, one <c>ultragen_self_attention</c>
/// forward at T=3 × 17×30, D = 2×64 takes about a minute and one full-attention <c>window_attention</c> forward there
/// (1,530 tokens, head dim 64) about 5 s (bench/RESULTS.md). So on the CPU accelerator only the layer rows at the
/// small grid with head dim 64 run, on a short job of their own (<see cref="IlgpuCpuJob"/>); the other ilgpu cases
/// are left out and named on the console. With a CUDA GPU every ilgpu case runs on the main job like the cpu rows.
/// </summary>
public static class BenchScope
{
    public const string MainJobId = "InProcess";
    public const string IlgpuCpuJobId = "IlgpuCpuShort";

    /// <summary>The job of every row: in process, 1 launch, 2 warm-up and 8 measured iterations.</summary>
    public static Job MainJob => Job.Default
        .WithLaunchCount(1)
        .WithWarmupCount(2)
        .WithIterationCount(8)
        .WithToolchain(InProcessEmitToolchain.Instance)
        .WithId(MainJobId);

    /// <summary>
    /// The ilgpu rows on the CPU accelerator: one invocation per iteration (no pilot), 1 warm-up and 3 measured
    /// iterations, so a row costs 5 invocations (with BenchmarkDotNet's jitting call) instead of about 13.
    /// </summary>
    public static Job IlgpuCpuJob => Job.Default
        .WithLaunchCount(1)
        .WithWarmupCount(1)
        .WithIterationCount(3)
        .WithInvocationCount(1)
        .WithUnrollFactor(1)
        .WithToolchain(InProcessEmitToolchain.Instance)
        .WithId(IlgpuCpuJobId);

    private static readonly Lazy<bool> s_ilgpuOnCpu = new(() =>
    {
        var probe = BackendRegistry.Get("ilgpu").Probe();
        using var backend = probe.Backend;
        return backend is IlgpuBackend { IsGpu: false };
    });

    private static int s_announced;

    /// <summary>Whether <paramref name="benchmarkCase"/> runs (a BenchmarkDotNet filter, applied with --filter's).</summary>
    public static bool Includes(BenchmarkCase benchmarkCase)
    {
        bool ilgpuJob = benchmarkCase.Job.Id == IlgpuCpuJobId;
        if (Parameter(benchmarkCase, "Backend") is not "ilgpu") return !ilgpuJob;
        if (!s_ilgpuOnCpu.Value) return !ilgpuJob;
        if (Interlocked.Exchange(ref s_announced, 1) == 0)
            Console.WriteLine("// UltraGen.Bench: ilgpu runs on its CPU accelerator (no CUDA GPU), a test device: only " +
                "LayerBenchmarks at Grid=T3_17x30, HeadDim=64 run on it, on job IlgpuCpuShort; every other ilgpu case is left out");
        return ilgpuJob
            && benchmarkCase.Descriptor.Type == typeof(LayerBenchmarks)
            && Parameter(benchmarkCase, "Grid") is "T3_17x30"
            && Parameter(benchmarkCase, "HeadDim") is 64;
    }

    private static object? Parameter(BenchmarkCase benchmarkCase, string name) =>
        benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == name)?.Value;
}
