using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Filters;
using BenchmarkDotNet.Running;

namespace UltraGen.Bench;

/// <summary>
/// UltraGen kernel benchmarks (BenchmarkDotNet). Run everything with
/// <c>dotnet run -c Release --project bench/UltraGen.Bench -- --filter '*'</c>; see bench/README.md.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {

        // Every row runs in process: our kernels and libtorch (whose native package a generated child project would
        // not reference) are measured in the same process, one after the other. The main job (1 launch, 2 warm-up and
        // 8 measured iterations) keeps a full run well under 15 minutes on 2 cores; ilgpu on its CPU accelerator gets
        // a shorter job and only the small layer case (BenchScope).
        var config = DefaultConfig.Instance
            .AddJob(BenchScope.MainJob)
            .AddJob(BenchScope.IlgpuCpuJob)
            .AddFilter(new SimpleFilter(BenchScope.Includes))
            .AddColumn(new FlopsColumn(), new GflopsColumn())
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);
        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
        return summaries.Any(s => s.HasCriticalValidationErrors) ? 1 : 0;
    }
}
