using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Cuda;
using UltraGen.Cuda.Launchers;
using UltraGen.Ops;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Cuda;

/// <summary>
/// The 128-query bf16 forward (<c>window_attention_fwd_bf16_m128_d*</c>, <see cref="AttentionForwardTile.Queries128"/>)
/// held to the reference like the default kernel: every window_attention case the cuda kernels take, plus windows longer
/// than two 128-row query tiles (several query and key tiles, masked tails, ragged windows of one and of two tiles),
/// forward and backward (the backward recomputes o and lse with the selected forward). The op harness covers the default
/// 64-query kernel. Each test also checks that the variant it asked for is the kernel that ran.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.Children)]
public class WindowAttentionForwardTileTests
{
    private static Dictionary<string, int[]> Qkv(params int[] shape) => new() { ["q"] = shape, ["k"] = shape, ["v"] = shape };

    private static IEnumerable<OpCase> Extra()
    {
        // 3·10·10 = 300 tokens: query tiles of 128, 128, 44; key tiles 64 × 4 + 44.
        yield return new OpCase("m128_d128_full_t3h10w10_h1", Qkv(1, 3, 10, 10, 128), OpParams.Of(("heads", 1))) { GradientCheck = false };
        // Ragged 2×2 windows over 17×19 × 3 frames: 270, 243, 240 and 216 tokens (three query tiles for the first, the last
        // holding 14 rows; two for the others, so their third-tile blocks exit at once), 2 heads, batch 2.
        yield return new OpCase("m128_d64_ragged2_b2_t3h17w19_h2", Qkv(2, 3, 17, 19, 128),
            OpParams.Of(("heads", 2), ("windows", 2), ("ragged", true))) { GradientCheck = false };
        yield return new OpCase("m128_d32_norope_t2h12w12_h2", Qkv(1, 2, 12, 12, 64), OpParams.Of(("heads", 2), ("rope", false))) { GradientCheck = false };
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        var op = OpCatalog.Get("window_attention");
        foreach (var opCase in op.Cases().Concat(Extra()))
        {
            int headDim = opCase.InputShapes["q"][4] / opCase.Params.GetInt("heads");
            if (!LaunchGeometry.AttentionHeadDimSupported(headDim)) continue;
            yield return new TestCaseData(opCase).SetName($"window_attention_m128/{opCase.Name}/cuda/bf16");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void Forward_with_128_query_tiles_matches_the_reference(OpCase opCase)
    {
        using var cuda = CudaTestBackend.OrSkip();
        cuda.AttentionForwardTile = AttentionForwardTile.Queries128;
        var launched = CudaTestBackend.RecordLaunches(cuda);
        OpHarness.CheckForward(cuda, OpCatalog.Get("window_attention"), opCase, DType.BF16);
        int headDim = opCase.InputShapes["q"][4] / opCase.Params.GetInt("heads");
        Assert.That(launched, Does.Contain($"window_attention_fwd_bf16_m128_d{headDim}"));
        Assert.That(launched, Does.Not.Contain("window_attention_fwd_bf16"));
    }

    [TestCaseSource(nameof(Cases))]
    public void Backward_with_128_query_tiles_matches_the_reference(OpCase opCase)
    {
        using var cuda = CudaTestBackend.OrSkip();
        cuda.AttentionForwardTile = AttentionForwardTile.Queries128;
        var launched = CudaTestBackend.RecordLaunches(cuda);
        OpHarness.CheckBackward(cuda, OpCatalog.Get("window_attention"), opCase, DType.BF16);
        int headDim = opCase.InputShapes["q"][4] / opCase.Params.GetInt("heads");
        Assert.That(launched, Does.Contain($"window_attention_fwd_bf16_m128_d{headDim}"));
    }

    [Test]
    public void The_default_forward_is_the_64_query_kernel()
    {
        using var cuda = CudaTestBackend.OrSkip();
        Assert.That(cuda.AttentionForwardTile, Is.EqualTo(AttentionForwardTile.Queries64));
        var launched = CudaTestBackend.RecordLaunches(cuda);
        var op = OpCatalog.Get("window_attention");
        OpHarness.CheckForward(cuda, op, op.Cases().Single(c => c.Name == "d64_multitile_b2_t3h10w12_win2_h2"), DType.BF16);
        Assert.That(launched, Does.Contain("window_attention_fwd_bf16"));
        Assert.That(launched.Any(n => n.StartsWith("window_attention_fwd_bf16_m128", StringComparison.Ordinal)), Is.False);
    }
}
