using UltraGen.Core.Layout;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Bench;

/// <summary>
/// One self-attention layer as the layer benchmarks run it (BenchmarkDotNet's <see cref="LayerBenchmarks"/> and the GPU
/// timing command, which compiles this file too): UltraGen's decomposed layer (<c>ultragen_self_attention</c>, block 4:
/// 4×4 local and 2×2 hierarchical windows, checkpoint-compatible resizing) or Wan's full attention
/// (<c>wan_self_attention</c>), LoRA rank 16, gate sinusoid 256; its inputs and its useful FLOPs.
/// </summary>
public static class LayerSetup
{
    public const int Block = 4;
    public const int LoraRank = 16;
    public const int Sinusoid = 256;

    /// <summary>
    /// <paramref name="opName"/> (<c>ultragen_self_attention</c> at block 4, or <c>wan_self_attention</c>) on
    /// <paramref name="backend"/> (disposed with the prepared op when <paramref name="ownsBackend"/>), f32, random inputs and
    /// weights (1/√D range).
    /// </summary>
    public static PreparedOp Prepare(IBackend backend, string opName, Grid3 grid, int heads, int headDim, bool ownsBackend = true)
    {
        int dim = heads * headDim;
        var parameters = opName == "ultragen_self_attention"
            ? OpParams.Of(("T", grid.T), ("H", grid.H), ("W", grid.W), ("heads", heads), ("block", Block))
            : OpParams.Of(("T", grid.T), ("H", grid.H), ("W", grid.W), ("heads", heads));
        var op = OpCatalog.Get(opName);
        var shapes = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var input in op.Inputs) shapes[input.Name] = ShapeOf(input.Name, grid, dim);
        _ = op.OutputShapes(shapes, parameters); // fail here, with the op's message, if a shape rule is off
        double weightRange = 1 / Math.Sqrt(dim);
        return new PreparedOp(backend, opName, shapes, parameters, name => name switch
        {
            "x" => (-1, 1),
            "t" => (0, 1000),
            _ when name.Contains("norm", StringComparison.Ordinal) => (0.5, 1.5),
            _ => (-weightRange, weightRange),
        }, [], ownsBackend: ownsBackend);
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

    /// <summary>Useful FLOPs of one <c>wan_self_attention</c> forward: attention over all tokens and the q, k, v, o projections.</summary>
    public static double FullFlops(Grid3 grid, int heads, int headDim)
    {
        int d = heads * headDim;
        var full = WindowLayout.Divisible(grid, 1);
        return Flops.AttentionForward(full.AttentionPairs, headDim, heads) + 4 * Flops.Projection(grid.TokenCount, d, d); // q, k, v, o
    }

    /// <summary>Useful FLOPs of one <c>ultragen_self_attention</c> forward (block 4): the three branches' attention and projections, LoRA, W_o.</summary>
    public static double UltraGenFlops(Grid3 grid, int heads, int headDim)
    {
        int d = heads * headDim;
        var plan = UltraGenLayoutPlan.Create(grid, Block);
        double flops = Flops.Projection(grid.TokenCount, d, d); // W_o once, after fusion
        foreach (var branch in new[] { plan.Local, plan.Hierarchical, plan.Global })
        {
            long tokens = branch.Layout.Grid.TokenCount;
            flops += Flops.AttentionForward(branch.AttentionPairs, headDim, heads) + 3 * Flops.Projection(tokens, d, d);
            if (branch.Branch != AttentionBranch.Local) // domain-aware LoRA on q, k, v: d→r→d
                flops += 3 * (Flops.Projection(tokens, d, LoraRank) + Flops.Projection(tokens, LoraRank, d));
        }
        return flops;
    }
}
