using BenchmarkDotNet.Configs;
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
        var config = DefaultConfig.Instance
            .AddColumn(new FlopsColumn(), new GflopsColumn())
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);
        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
        return summaries.Any(s => s.HasCriticalValidationErrors) ? 1 : 0;
    }
}
