using System.Reflection;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace UltraGen.Bench;

/// <summary>
/// A benchmark class that can say how many useful floating-point operations one invocation of a benchmark method does,
/// from its parameters alone (no setup): the columns call it in the host process, where GlobalSetup never ran.
/// </summary>
public interface IFlopCounted
{
    /// <summary>Useful FLOPs of one call of <paramref name="method"/> with the current parameter values; NaN if not counted.</summary>
    double CountFlops(string method);
}

/// <summary>The FLOP count of one BenchmarkDotNet case.</summary>
public static class CaseFlops
{
    /// <summary>
    /// The count for one benchmark case: a fresh instance of the benchmark class with the case's parameter values set,
    /// asked through <see cref="IFlopCounted"/>. NaN when the class does not count.
    /// </summary>
    public static double Of(BenchmarkCase benchmarkCase)
    {
        var type = benchmarkCase.Descriptor.Type;
        if (!typeof(IFlopCounted).IsAssignableFrom(type)) return double.NaN;
        var instance = (IFlopCounted)Activator.CreateInstance(type)!;
        foreach (var parameter in benchmarkCase.Parameters.Items)
        {
            const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance;
            if (type.GetProperty(parameter.Name, flags) is { CanWrite: true } property) property.SetValue(instance, parameter.Value);
            else type.GetField(parameter.Name, flags)?.SetValue(instance, parameter.Value);
        }
        return instance.CountFlops(benchmarkCase.Descriptor.WorkloadMethod.Name);
    }
}

/// <summary>Counted useful GFLOP of one invocation.</summary>
public sealed class FlopsColumn : IColumn
{
    public string Id => "UltraGen.GFLOP";
    public string ColumnName => "GFLOP";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Useful FLOPs of one invocation, in 10^9 (attention 4·Σ tokens²·headDim per head; backward 2.5×; layers add projection GEMMs 2·N·Din·Dout)";
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double flops = CaseFlops.Of(benchmarkCase);
        return double.IsNaN(flops) ? "-" : (flops / 1e9).ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
    }

    public override string ToString() => ColumnName;
}

/// <summary>Achieved GFLOP/s: counted FLOPs over the measured mean time.</summary>
public sealed class GflopsColumn : IColumn
{
    public string Id => "UltraGen.GFLOPS";
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 1;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Counted useful GFLOP divided by the mean time of one invocation";
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double flops = CaseFlops.Of(benchmarkCase);
        var statistics = summary[benchmarkCase]?.ResultStatistics;
        if (double.IsNaN(flops) || statistics is null || statistics.Mean <= 0) return "-";
        return (flops / statistics.Mean).ToString("F1", System.Globalization.CultureInfo.InvariantCulture); // FLOP per ns = GFLOP/s
    }

    public override string ToString() => ColumnName;
}
