using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Cpu;
using UltraGen.Model;
using UltraGen.Model.Dit;

namespace UltraGen.Tests.Model;

/// <summary>
/// <see cref="DitMemory"/> (the estimate <c>ultragen sample</c> prints) against the bytes the Cpu backend's allocation
/// counter observes while a real <see cref="Dit"/> uploads its weights and runs an inference forward. The estimate replays
/// the forward's allocations from the configuration alone, so it should match the counter exactly; the stated margin is
/// 1 % of the forward's peak.
/// </summary>
[TestFixture]
[NonParallelizable]
public class DitMemoryTests
{
    private const double Margin = 0.01;

    /// <summary>Tiny with Wan's 16 latent channels: blocks 0 and 3 full, 1 (odd) and 2 (even) decomposed.</summary>
    private static ModelConfig TinyLatent => ModelConfig.Tiny;

    public static IEnumerable<TestCaseData> Cases()
    {
        // 8×12 tokens: the odd block's local windows resize 8×12 → 10×10 and its hierarchical 4×6 → 3×6; the even block's do not.
        yield return new TestCaseData(TinyLatent, 2, new Grid3(2, 8, 12)).SetName("Tiny_batch2_8x12");
        yield return new TestCaseData(TinyLatent, 1, new Grid3(3, 4, 6)).SetName("Tiny_batch1_4x6");
        yield return new TestCaseData(TinyLatent.WithAllDecomposed() with { WindowMode = WindowMode.Ragged }, 2, new Grid3(1, 9, 7))
            .SetName("Tiny_all_decomposed_ragged_9x7");
        yield return new TestCaseData(TinyLatent.WithAllFull() with { CrossAttnNorm = false }, 2, new Grid3(2, 6, 6))
            .SetName("Tiny_all_full_no_norm3_6x6");
    }

    [TestCaseSource(nameof(Cases))]
    public void Estimate_matches_the_counted_allocations(ModelConfig config, int batch, Grid3 grid)
    {
        using var backend = new CpuBackend();
        var counter = backend.Allocations;
        var patch = config.Patch;
        using var weights = ModelWeights.Random(config, seed: 5);
        using var dit = new Dit(config, backend, weights);
        Assert.That(counter.Live, Is.EqualTo(DitMemory.WeightBytes(config)), "weights on the backend: every parameter as f32");

        var random = new Random(11);
        using var latent = Tensor.Host(DType.F32, batch, config.InChannels, grid.T * patch.T, grid.H * patch.H, grid.W * patch.W);
        using var timestep = Tensor.Host(DType.F32, batch);
        using var context = Tensor.Host(DType.F32, batch, config.TextLen, config.TextDim);
        foreach (var tensor in new[] { latent, timestep, context })
        {
            var values = tensor.HostSpan<float>();
            for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        }
        timestep.HostSpan<float>().Fill(700f);

        counter.ResetPeak();
        long before = counter.Live;
        using (var velocity = dit.Forward(latent, timestep, context))
            Assert.That(velocity.HostSpan<float>().ToArray(), Has.All.Matches<float>(float.IsFinite));
        long measured = counter.Peak - before;
        Assert.That(counter.Live, Is.EqualTo(before), "the forward frees everything it allocated");

        var estimate = DitMemory.Forward(config, batch, grid);
        TestContext.Out.WriteLine($"forward peak: counted {measured:N0} bytes, estimated {estimate.PeakBytes:N0} ({estimate.PeakAt}); " +
            $"text {estimate.TextBytes:N0}, pass {estimate.PassBytes:N0}, block {estimate.BlockBytes:N0}");
        Assert.That(estimate.TextBytes + estimate.PassBytes + estimate.BlockBytes, Is.EqualTo(estimate.PeakBytes), "the breakdown adds up");
        Assert.That((double)estimate.PeakBytes, Is.EqualTo((double)measured).Within(Margin * measured), "estimate within 1 % of the counted peak");
    }

    [Test]
    public void Inference_forward_that_frees_early_equals_the_forward_that_keeps_everything()
    {
        // Inference frees each intermediate after its last use; a tensor freed too early would be read after its memory
        // was reused. The velocity must equal, bit for bit, that of the training forward, which frees nothing.
        var config = TinyLatent;
        using var backend = new CpuBackend();
        using var weights = ModelWeights.Random(config, seed: 8);
        using var dit = new Dit(config, backend, weights);
        var random = new Random(12);
        using var latent = Tensor.Host(DType.F32, 2, 16, 2, 16, 20);
        using var timestep = Tensor.Host(DType.F32, 2);
        using var context = Tensor.Host(DType.F32, 2, config.TextLen, config.TextDim);
        foreach (var tensor in new[] { latent, context })
            foreach (ref float value in tensor.HostSpan<float>()) value = (float)(random.NextDouble() * 2 - 1);
        timestep.HostSpan<float>()[0] = 900;
        timestep.HostSpan<float>()[1] = 120;
        float[] kept;
        using (var pass = dit.ForwardForBackward(latent, timestep, context)) kept = pass.Velocity.HostSpan<float>().ToArray();
        using var inference = dit.Forward(latent, timestep, context);
        Assert.That(inference.HostSpan<float>().ToArray(), Is.EqualTo(kept));
    }

    [Test]
    public void Inference_memory_does_not_grow_with_depth()
    {
        // The forward keeps two token buffers whatever the depth: 8 blocks peak where 2 do.
        var grid = new Grid3(2, 8, 8);
        var shallow = DitMemory.Forward(ModelConfig.Tiny with { Layers = 2, FullAttentionBlocks = BlockSet.All(2) }, 2, grid);
        var deep = DitMemory.Forward(ModelConfig.Tiny with { Layers = 8, FullAttentionBlocks = BlockSet.All(8) }, 2, grid);
        Assert.That(deep.PeakBytes, Is.EqualTo(shallow.PeakBytes));
    }

    [Test]
    public void Wan_1080p_estimate_is_what_its_tensors_add_up_to()
    {
        // Independent arithmetic for the 1080P·81 peak (block 0, at the FFN's GELU): inference frees every intermediate
        // after its last use, so the block holds h2 (B, N, D), the FFN's hidden and GELU tensors (B, N, FFN) and 6 (B, D)
        // modulation chunks; the pass holds the latent and its patches, 2 token buffers, the time embedding and the text
        // context.
        var config = ModelConfig.Wan21T2V13B;
        long b = 2, n = 21L * 68 * 120, d = 1536, f = 8960, l = 512, latent = b * 16 * 21 * 136 * 240;
        long block = b * n * d + 2 * b * n * f + 6 * b * d;
        long pass = b + 2 * latent + 2 * b * n * d + b * 256 + 4 * b * d + 6 * b * d;
        long text = b * l * 4096 + 3 * b * l * d;
        var estimate = DitMemory.Forward(config, 2, new Grid3(21, 68, 120));
        Assert.That(estimate.PeakAt, Does.Contain("FFN GELU"));
        Assert.That(estimate.BlockBytes, Is.EqualTo(4 * block));
        Assert.That(estimate.PassBytes, Is.EqualTo(4 * pass));
        Assert.That(estimate.TextBytes, Is.EqualTo(4 * text));
        Assert.That(DitMemory.WeightBytes(config), Is.EqualTo(4L * (1_418_996_800 + 277_005_312)), "spec §2.1's parameter counts as f32");
    }
}
