namespace UltraGen.Bench;

/// <summary>Counting rules shared by the benchmarks (docs/architecture.md, "Performance accounting").</summary>
public static class Flops
{
    /// <summary>Attention forward: 4·Σ_windows tokens²·headDim per head per batch (QKᵀ and PV, 2 FLOPs per multiply-add).</summary>
    public static double AttentionForward(long attentionPairs, int headDim, int heads, int batch = 1) =>
        4.0 * attentionPairs * headDim * heads * batch;

    /// <summary>Attention backward: 2.5× the forward.</summary>
    public static double AttentionBackward(long attentionPairs, int headDim, int heads, int batch = 1) =>
        2.5 * AttentionForward(attentionPairs, headDim, heads, batch);

    /// <summary>A dense projection of n tokens from dIn to dOut features: 2·n·dIn·dOut.</summary>
    public static double Projection(long tokens, int dIn, int dOut) => 2.0 * tokens * dIn * dOut;
}
