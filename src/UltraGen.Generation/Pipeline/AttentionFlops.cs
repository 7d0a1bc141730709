using UltraGen.Core.Layout;
using UltraGen.Model;

namespace UltraGen.Generation.Pipeline;

/// <summary>
/// Attention FLOPs of one DiT forward pass for one video: 4·pairs·D per attention (q·kᵀ and P·v, 2 FLOPs per
/// multiply-add), where pairs counts (query, key) pairs — N² for full self-attention, the sum over windows for UltraGen's
/// three branches (<see cref="UltraGenLayoutPlan.AttentionPairs"/>), N·L for cross-attention. Projections, convs and the
/// FFN are not counted (they scale linearly with N and are the same for every attention plan up to UltraGen's extra
/// branch projections).
/// </summary>
public static class AttentionFlops
{
    /// <summary>For a pixel-space model's video format (the DiT's "latent" is the video itself).</summary>
    public static (double SelfAttention, double CrossAttention) PerForward(ModelConfig config, VideoFormat format)
    {
        ArgumentNullException.ThrowIfNull(config);
        return PerForward(config, new Grid3(format.Frames / config.Patch.T, format.Height / config.Patch.H, format.Width / config.Patch.W));
    }

    /// <summary>For a token grid (T, H, W) after the patch embedding.</summary>
    public static (double SelfAttention, double CrossAttention) PerForward(ModelConfig config, Grid3 grid)
    {
        ArgumentNullException.ThrowIfNull(config);
        double tokens = grid.TokenCount, self = 0;
        for (int block = 0; block < config.Layers; block++)
        {
            double pairs = config.IsDecomposed(block)
                ? UltraGenLayoutPlan.Create(grid, block, config.WindowMode, config.WindowBase).AttentionPairs
                : tokens * tokens;
            self += 4.0 * pairs * config.Dim;
        }
        double cross = config.Layers * 4.0 * tokens * config.TextLen * config.Dim;
        return (self, cross);
    }
}
