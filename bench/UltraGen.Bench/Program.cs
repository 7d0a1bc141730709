using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace UltraGen.Bench;

/// <summary>
/// UltraGen kernel benchmarks (BenchmarkDotNet). Run everything with
/// <c>dotnet run -c Release --project bench/UltraGen.Bench -- --filter '*'</c>; see bench/README.md.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        // One job for every benchmark, in process: our kernels and libtorch (whose native package a generated child
        // project would not reference) are measured in the same process, one after the other. 1 launch, 2 warm-up and
        // 8 measured iterations keep a full run well under 15 minutes on 2 cores.
        var job = Job.Default
            .WithLaunchCount(1)
            .WithWarmupCount(2)
            .WithIterationCount(8)
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithId("InProcess");
        var config = DefaultConfig.Instance
            .AddJob(job.AsDefault())
            .AddColumn(new FlopsColumn(), new GflopsColumn())
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);
        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
        return summaries.Any(s => s.HasCriticalValidationErrors) ? 1 : 0;
    }
}
