using BenchmarkDotNet.Attributes;
using UltraGen.Core.Layout;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Bench;

/// <summary>
/// One self-attention layer forward through IBackend: UltraGen's decomposed layer (<c>ultragen_self_attention</c>: local,
/// hierarchical and compressed global branches, time gates, W_o; block 4, i.e. 4×4 local and 2×2 hierarchical windows,
/// checkpoint-compatible resizing) against Wan's full attention over the same tokens (<c>wan_self_attention</c>). D = 2 heads ×
/// head dim, LoRA rank 16, gate sinusoid 256.
/// </summary>
public class LayerBenchmarks : IFlopCounted
{
    private const int Heads = 2;

    private PreparedOp? _op;

    public static IEnumerable<string> Backends =>
        BenchBackends.Supporting("ultragen_self_attention").Intersect(BenchBackends.Supporting("wan_self_attention"));

    /// <summary>1080P-proportioned T=5, 34×60 (N = 10,200) and a smaller T=3, 17×30 (N = 1,530).</summary>
    public static IEnumerable<string> Grids => ["T5_34x60", "T3_17x30"];

    [ParamsSource(nameof(Backends))]
    public string Backend { get; set; } = "cpu";

    [ParamsSource(nameof(Grids))]
    public string Grid { get; set; } = "T3_17x30";

    [Params(64, 128)]
    public int HeadDim { get; set; } = 64;

    private Grid3 TokenGrid => Grid switch
    {
        "T5_34x60" => new Grid3(5, 34, 60),
        "T3_17x30" => new Grid3(3, 17, 30),
        _ => throw new ArgumentException($"unknown grid '{Grid}'"),
    };

    private int Dim => Heads * HeadDim;

    [GlobalSetup(Target = nameof(UltraGen))]
    public void SetupUltraGen() => _op = Prepare("ultragen_self_attention", decomposed: true);

    [GlobalSetup(Target = nameof(FullAttention))]
    public void SetupFull() => _op = Prepare("wan_self_attention", decomposed: false);

    [GlobalCleanup]
    public void Cleanup() => _op?.Dispose();

    [Benchmark]
    public void UltraGen() => _op!.Forward();

    [Benchmark]
    public void FullAttention() => _op!.Forward();

    private PreparedOp Prepare(string opName, bool decomposed) =>
        LayerSetup.Prepare(BenchBackends.Open(Backend, opName), opName, TokenGrid, Heads, HeadDim);

    public double CountFlops(string method) => method == nameof(FullAttention)
        ? LayerSetup.FullFlops(TokenGrid, Heads, HeadDim)
        : LayerSetup.UltraGenFlops(TokenGrid, Heads, HeadDim);
}
