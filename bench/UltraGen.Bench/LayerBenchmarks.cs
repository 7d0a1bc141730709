using BenchmarkDotNet.Attributes;
using UltraGen.Core.Layout;
using UltraGen.Ops;

namespace UltraGen.Bench;

/// <summary>
/// One self-attention layer forward through IBackend: UltraGen's decomposed layer (<c>ultragen_self_attention</c>: local,
/// hierarchical and compressed global branches, time gates, W_o; block 4, i.e. 4×4 local and 2×2 hierarchical windows,
/// checkpoint-compatible resizing) against Wan's full attention over the same tokens (<c>wan_self_attention</c>). D = 2 heads ×
/// head dim, LoRA rank 16, gate sinusoid 256.
/// </summary>
public class LayerBenchmarks : IFlopCounted
{
    private const int Block = 4;
    private const int Heads = 2;
    private const int LoraRank = 16;
    private const int Sinusoid = 256;

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

    private PreparedOp Prepare(string opName, bool decomposed)
    {
        var grid = TokenGrid;
        var parameters = decomposed
            ? OpParams.Of(("T", grid.T), ("H", grid.H), ("W", grid.W), ("heads", Heads), ("block", Block))
            : OpParams.Of(("T", grid.T), ("H", grid.H), ("W", grid.W), ("heads", Heads));
        var op = OpCatalog.Get(opName);
        var shapes = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var input in op.Inputs) shapes[input.Name] = ShapeOf(input.Name, grid, Dim);
        _ = op.OutputShapes(shapes, parameters); // fail here, with the op's message, if a shape rule is off
        double weightRange = 1 / Math.Sqrt(Dim);
        return new PreparedOp(Backend, opName, shapes, parameters, name => name switch
        {
            "x" => (-1, 1),
            "t" => (0, 1000),
            _ when name.Contains("norm", StringComparison.Ordinal) => (0.5, 1.5),
            _ => (-weightRange, weightRange),
        }, []);
    }

    /// <summary>The shape of every input of the two layer ops, by the checkpoint's naming rules.</summary>
    private static int[] ShapeOf(string name, Grid3 grid, int dim)
    {
        if (name == "x") return [1, checked((int)grid.TokenCount), dim];
        if (name == "t") return [1];
        if (name.EndsWith("lora_A.weight", StringComparison.Ordinal)) return [LoraRank, dim];
        if (name.EndsWith("lora_A.bias", StringComparison.Ordinal)) return [LoraRank];
        if (name.EndsWith("lora_B.weight", StringComparison.Ordinal)) return [dim, LoraRank];
        if (name == "downsample_conv.weight") return [dim, 1, 4, 4];
        if (name == "downsample_conv_hierachcal.weight") return [dim, 1, 2, 2];
        if (name.StartsWith("upsample_conv", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal)) return [dim, 1, 3, 3, 3];
        if (name.StartsWith("alpha_time_embedding", StringComparison.Ordinal) && name.EndsWith(".0.weight", StringComparison.Ordinal)) return [dim, Sinusoid];
        if (name.EndsWith(".weight", StringComparison.Ordinal) && !name.StartsWith("norm", StringComparison.Ordinal)) return [dim, dim];
        return [dim];
    }

    public double CountFlops(string method)
    {
        var grid = TokenGrid;
        int d = Dim;
        long n = grid.TokenCount;
        if (method == nameof(FullAttention))
        {
            var full = WindowLayout.Divisible(grid, 1);
            return Flops.AttentionForward(full.AttentionPairs, HeadDim, Heads) + 4 * Flops.Projection(n, d, d); // q, k, v, o
        }
        var plan = UltraGenLayoutPlan.Create(grid, Block);
        double flops = Flops.Projection(n, d, d); // W_o once, after fusion
        foreach (var branch in new[] { plan.Local, plan.Hierarchical, plan.Global })
        {
            long tokens = branch.Layout.Grid.TokenCount;
            flops += Flops.AttentionForward(branch.AttentionPairs, HeadDim, Heads) + 3 * Flops.Projection(tokens, d, d);
            if (branch.Branch != AttentionBranch.Local) // domain-aware LoRA on q, k, v: d→r→d
                flops += 3 * (Flops.Projection(tokens, d, LoraRank) + Flops.Projection(tokens, LoraRank, d));
        }
        return flops;
    }
}
