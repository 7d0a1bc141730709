using BenchmarkDotNet.Attributes;
using UltraGen.Ops;

namespace UltraGen.Bench;

/// <summary>
/// <c>window_attention</c> alone through IBackend, forward and backward (dq, dk, dv), with and without the window-local
/// RoPE. Rope = false is the like-for-like row for <see cref="TorchSdpaBenchmarks"/>.
/// </summary>
public class WindowAttentionBenchmarks : IFlopCounted
{
    private PreparedOp? _op;

    public static IEnumerable<string> Backends => BenchBackends.Supporting("window_attention");

    public static IEnumerable<string> Cases => AttentionCase.Names;

    [ParamsSource(nameof(Backends))]
    public string Backend { get; set; } = "cpu";

    [ParamsSource(nameof(Cases))]
    public string Case { get; set; } = AttentionCase.All[0].Name;

    [Params(false, true)]
    public bool Rope { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var c = AttentionCase.Get(Case);
        var shapes = new Dictionary<string, int[]> { ["q"] = c.Shape, ["k"] = c.Shape, ["v"] = c.Shape };
        var parameters = OpParams.Of(("heads", c.Heads), ("windows", c.Windows), ("ragged", true), ("rope", Rope));
        _op = new PreparedOp(Backend, "window_attention", shapes, parameters, _ => (-1, 1), ["q", "k", "v"]);
    }

    [GlobalCleanup]
    public void Cleanup() => _op?.Dispose();

    [Benchmark]
    public void Forward() => _op!.Forward();

    [Benchmark]
    public void Backward() => _op!.Backward();

    public double CountFlops(string method)
    {
        var c = AttentionCase.Get(Case);
        long pairs = c.Layout.AttentionPairs;
        return method == nameof(Backward)
            ? Flops.AttentionBackward(pairs, c.HeadDim, c.Heads)
            : Flops.AttentionForward(pairs, c.HeadDim, c.Heads);
    }
}
