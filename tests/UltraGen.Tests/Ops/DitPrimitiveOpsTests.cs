using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Ops;

namespace UltraGen.Tests.Ops;

/// <summary>
/// Anchors the DiT's layout primitives (patchify, unpatchify) and gated_residual to hand-computed values: the token and
/// feature orders are DitReference's (the patch embedding's Conv3d weight and Wan's head "(p q r c)"), unpatchify inverts
/// patchify in both orders, and the index map the backends implement agrees with the reference loops.
/// </summary>
[TestFixture]
public class DitPrimitiveOpsTests
{
    /// <summary>A video whose every value names its place: 100·c + 10·(frame row) + column, frame by frame (+ 1000·frame).</summary>
    private static RefTensor NamedVideo(int b, int c, int t, int h, int w)
    {
        var video = new RefTensor(b, c, t, h, w);
        int i = 0;
        for (int ib = 0; ib < b; ib++)
            for (int ic = 0; ic < c; ic++)
                for (int it = 0; it < t; it++)
                    for (int ih = 0; ih < h; ih++)
                        for (int iw = 0; iw < w; iw++)
                            video.Data[i++] = 10000 * ib + 1000 * it + 100 * ic + 10 * ih + iw;
        return video;
    }

    private static RefTensor Random(Random random, params int[] shape)
    {
        var x = new RefTensor(shape);
        for (int i = 0; i < x.Length; i++) x.Data[i] = 2 * random.NextDouble() - 1;
        return x;
    }

    private static PatchLayout Layout(int[] video, int pt, int ph, int pw, bool channelsLast) =>
        PatchLayout.OfVideo(video, OpParams.Of(("pt", pt), ("ph", ph), ("pw", pw), ("channels_last", channelsLast)), "test");

    [Test]
    public void Patchify_orders_tokens_frame_major_and_features_c_p_q_r()
    {
        // Video (1, 2, 1, 4, 2), patch (1, 2, 2): grid 1×2×1, two tokens (rows 0–1 and rows 2–3) of 2·4 features.
        var tokens = PatchifyOp.Forward(NamedVideo(1, 2, 1, 4, 2), 1, 2, 2, channelsLast: false);
        Assert.That(tokens.Shape, Is.EqualTo(new[] { 1, 2, 8 }));
        Assert.That(tokens.Data, Is.EqualTo(new double[]
        {
            0, 1, 10, 11, 100, 101, 110, 111,        // token (f0, h0, w0): c0 (q, r) = 00 01 10 11, then c1
            20, 21, 30, 31, 120, 121, 130, 131,      // token (f0, h1, w0)
        }));
    }

    [Test]
    public void Patchify_channels_last_puts_c_fastest_like_wans_head()
    {
        var tokens = PatchifyOp.Forward(NamedVideo(1, 2, 1, 4, 2), 1, 2, 2, channelsLast: true);
        Assert.That(tokens.Data, Is.EqualTo(new double[]
        {
            0, 100, 1, 101, 10, 110, 11, 111,        // (q, r) = 00: c0 c1, 01: c0 c1, ...
            20, 120, 21, 121, 30, 130, 31, 131,
        }));
    }

    [Test]
    public void Patchify_temporal_patches_put_p_before_q_and_r_and_tokens_walk_frames_then_rows_then_columns()
    {
        // Video (1, 1, 4, 1, 4), patch (2, 1, 2): grid 2×1×2. Token (f, 0, w) holds frames 2f, 2f+1 × columns 2w, 2w+1.
        var tokens = PatchifyOp.Forward(NamedVideo(1, 1, 4, 1, 4), 2, 1, 2, channelsLast: false);
        Assert.That(tokens.Shape, Is.EqualTo(new[] { 1, 4, 4 }));
        Assert.That(tokens.Data, Is.EqualTo(new double[]
        {
            0, 1, 1000, 1001,          // (f0, w0): (p, r) = 00 01 10 11
            2, 3, 1002, 1003,          // (f0, w1)
            2000, 2001, 3000, 3001,    // (f1, w0)
            2002, 2003, 3002, 3003,    // (f1, w1)
        }));
    }

    [Test]
    public void Unpatchify_inverts_patchify_and_patchify_inverts_unpatchify([Values] bool channelsLast)
    {
        var random = new Random(channelsLast ? 11 : 12);
        foreach (var (shape, pt, ph, pw) in new[] { (new[] { 2, 3, 3, 6, 10 }, 1, 2, 2), (new[] { 1, 2, 4, 3, 6 }, 2, 3, 2), (new[] { 1, 1, 1, 1, 1 }, 1, 1, 1) })
        {
            var layout = Layout(shape, pt, ph, pw, channelsLast);
            var video = Random(random, shape);
            Assert.That(UnpatchifyOp.Forward(PatchifyOp.Forward(video, layout), layout).Data, Is.EqualTo(video.Data), $"video {Shape.Format(shape)}");
            var tokens = Random(random, layout.TokenShape);
            Assert.That(PatchifyOp.Forward(UnpatchifyOp.Forward(tokens, layout), layout).Data, Is.EqualTo(tokens.Data), $"tokens {Shape.Format(layout.TokenShape)}");
        }
    }

    [Test]
    public void Token_element_index_is_the_map_the_reference_loops_apply([Values] bool channelsLast)
    {
        int[] shape = [2, 3, 4, 3, 6];
        var layout = Layout(shape, 2, 3, 2, channelsLast);
        var video = new RefTensor(shape);
        for (int i = 0; i < video.Length; i++) video.Data[i] = i;
        var tokens = PatchifyOp.Forward(video, layout);
        for (int i = 0; i < video.Length; i++)
            Assert.That(tokens.Data[layout.TokenElementIndex(i)], Is.EqualTo(i), $"video element {i}");
    }

    [Test]
    public void Unpatchify_op_reads_grid_and_channels_from_its_parameters()
    {
        var op = new UnpatchifyOp();
        var parameters = OpParams.Of(("channels", 16), ("T", 21), ("H", 30), ("W", 52), ("channels_last", true));
        Assert.That(op.OutputShapes(new Dictionary<string, int[]> { ["tokens"] = [1, 21 * 30 * 52, 64] }, parameters)["video"],
            Is.EqualTo(new[] { 1, 16, 21, 60, 104 }));
        var layout = PatchLayout.OfTokens([1, 21 * 30 * 52, 64], parameters, "unpatchify");
        Assert.That(layout, Is.EqualTo(new PatchLayout(1, 16, new Grid3(21, 30, 52), 1, 2, 2, true)));
    }

    [Test]
    public void Layout_errors_name_the_op_and_the_sizes()
    {
        var patchify = new PatchifyOp();
        var notDivisible = Assert.Throws<ShapeMismatchException>(() =>
            patchify.OutputShapes(new Dictionary<string, int[]> { ["video"] = [1, 16, 3, 7, 8] }, new OpParams()))!;
        Assert.That(notDivisible.Message, Does.Contain("patchify").And.Contain("3×7×8").And.Contain("1×2×2"));
        Assert.Throws<OpParameterException>(() =>
            patchify.OutputShapes(new Dictionary<string, int[]> { ["video"] = [1, 16, 3, 8, 8] }, OpParams.Of(("pt", 0))));

        var unpatchify = new UnpatchifyOp();
        var parameters = OpParams.Of(("channels", 16), ("T", 2), ("H", 3), ("W", 4));
        var wrongTokens = Assert.Throws<ShapeMismatchException>(() =>
            unpatchify.OutputShapes(new Dictionary<string, int[]> { ["tokens"] = [1, 25, 64] }, parameters))!;
        Assert.That(wrongTokens.Message, Does.Contain("unpatchify").And.Contain("'tokens'").And.Contain("24"));
        Assert.Throws<ShapeMismatchException>(() =>
            unpatchify.OutputShapes(new Dictionary<string, int[]> { ["tokens"] = [1, 24, 63] }, parameters));
        Assert.Throws<OpParameterException>(() =>
            unpatchify.OutputShapes(new Dictionary<string, int[]> { ["tokens"] = [1, 24, 64] }, OpParams.Of(("channels", 16), ("T", 2), ("H", 3))));
    }

    [Test]
    public void Gated_residual_adds_the_gated_branch_per_sample_and_channel()
    {
        // x, y (2, 2, 2); gate (2, 2): out[b, n, d] = x + gate[b, d]·y.
        var x = new RefTensor([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
        var y = new RefTensor([2, 2, 2], [10, 20, 30, 40, 50, 60, 70, 80]);
        var gate = new RefTensor([2, 2], [0.5, -1, 2, 0.25]);
        Assert.That(GatedResidualOp.Forward(x, y, gate).Data, Is.EqualTo(new double[] { 6, -18, 18, -36, 105, 21, 147, 28 }));

        var dOut = new RefTensor([2, 2, 2], [1, -1, 2, 3, 0.5, 1, -2, 4]);
        var (dx, dy, dGate) = GatedResidualOp.Backward(y, gate, dOut);
        Assert.That(dx.Data, Is.EqualTo(dOut.Data));
        Assert.That(dy.Data, Is.EqualTo(new double[] { 0.5, 1, 1, -3, 1, 0.25, -4, 1 }));
        Assert.That(dGate.Data, Is.EqualTo(new double[] { 1 * 10 + 2 * 30, -1 * 20 + 3 * 40, 0.5 * 50 - 2 * 70, 1 * 60 + 4 * 80 }));
    }
}
