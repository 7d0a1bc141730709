using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Ops;

namespace UltraGen.Tests.Ops;

/// <summary>Hand-computed anchors for the spatial ops (depthwise convs and bilinear resize), independent of the harness.</summary>
[TestFixture]
public class SpatialOpsTests
{
    private const double Tol = 1e-12;

    private static RefTensor Video(int b, int t, int h, int w, int c, Func<int, int, int, int, int, double> value)
    {
        var x = new RefTensor(b, t, h, w, c);
        int i = 0;
        for (int ib = 0; ib < b; ib++)
            for (int it = 0; it < t; it++)
                for (int ih = 0; ih < h; ih++)
                    for (int iw = 0; iw < w; iw++)
                        for (int ic = 0; ic < c; ic++)
                            x.Data[i++] = value(ib, it, ih, iw, ic);
        return x;
    }

    private static double At(RefTensor x, int b, int t, int h, int w, int c) =>
        x.Data[(((b * x.Dim(1) + t) * x.Dim(2) + h) * x.Dim(3) + w) * x.Dim(4) + c];

    private static RefTensor Random(Random random, params int[] shape)
    {
        var x = new RefTensor(shape);
        for (int i = 0; i < x.Length; i++) x.Data[i] = 2 * random.NextDouble() - 1;
        return x;
    }

    private static double Dot(RefTensor a, RefTensor b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += a.Data[i] * b.Data[i];
        return sum;
    }

    // ---------------- bilinear_resize ----------------

    [Test]
    public void SourceIndex_2_to_4_matches_torch_align_corners_false()
    {
        // Sampled positions −0.25 (clamped to 0), 0.25, 0.75, 1.25 (i0 = i1 = 1).
        Assert.That(BilinearResizeOp.SourceIndex(0, 2, 4), Is.EqualTo((0, 1, 0.0)));
        Assert.That(BilinearResizeOp.SourceIndex(1, 2, 4), Is.EqualTo((0, 1, 0.25)));
        Assert.That(BilinearResizeOp.SourceIndex(2, 2, 4), Is.EqualTo((0, 1, 0.75)));
        Assert.That(BilinearResizeOp.SourceIndex(3, 2, 4), Is.EqualTo((1, 1, 0.25)));
    }

    [Test]
    public void SourceIndex_downsizing_3_to_2_and_identity()
    {
        // scale 1.5: positions 0.25 and 1.75.
        Assert.That(BilinearResizeOp.SourceIndex(0, 3, 2), Is.EqualTo((0, 1, 0.25)));
        Assert.That(BilinearResizeOp.SourceIndex(1, 3, 2), Is.EqualTo((1, 2, 0.75)));
        for (int o = 0; o < 5; o++)
        {
            var (i0, _, lambda) = BilinearResizeOp.SourceIndex(o, 5, 5);
            Assert.That(i0, Is.EqualTo(o));
            Assert.That(lambda, Is.EqualTo(0.0));
        }
    }

    [Test]
    public void Resize_2x2_ramp_to_4x4_matches_torch()
    {
        // torch.nn.functional.interpolate(tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4), mode='bilinear', align_corners=False)
        var x = Video(1, 1, 2, 2, 1, (_, _, h, w, _) => 2 * h + w);
        var y = BilinearResizeOp.Forward(x, 4, 4);
        double[,] expected =
        {
            { 0.00, 0.25, 0.75, 1.00 },
            { 0.50, 0.75, 1.25, 1.50 },
            { 1.50, 1.75, 2.25, 2.50 },
            { 2.00, 2.25, 2.75, 3.00 },
        };
        Assert.That(y.Shape, Is.EqualTo(new[] { 1, 1, 4, 4, 1 }));
        for (int h = 0; h < 4; h++)
            for (int w = 0; w < 4; w++)
                Assert.That(At(y, 0, 0, h, w, 0), Is.EqualTo(expected[h, w]).Within(Tol), $"y[{h},{w}]");
    }

    [Test]
    public void Resize_is_per_frame_and_per_channel()
    {
        // Each (b, t, c) slice is resized independently: a constant slice stays constant, whatever its neighbours hold.
        var x = Video(2, 2, 3, 4, 3, (b, t, h, w, c) => c == 1 ? 10 * b + t : b + t + h * w + c);
        var y = BilinearResizeOp.Forward(x, 5, 2);
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 2; t++)
                for (int h = 0; h < 5; h++)
                    for (int w = 0; w < 2; w++)
                        Assert.That(At(y, b, t, h, w, 1), Is.EqualTo(10 * b + t).Within(Tol));
    }

    [Test]
    public void Resize_identity_size_is_identity()
    {
        var x = Random(new Random(1), 1, 2, 3, 4, 2);
        var y = BilinearResizeOp.Forward(x, 3, 4);
        Assert.That(y.Data, Is.EqualTo(x.Data).Within(Tol));
    }

    [Test]
    public void Resize_backward_is_the_transpose_of_forward([Values(2, 4, 7)] int outH, [Values(3, 5, 8)] int outW)
    {
        var random = new Random(outH * 31 + outW);
        var x = Random(random, 2, 1, 5, 4, 3);
        var dy = Random(random, 2, 1, outH, outW, 3);
        double lhs = Dot(dy, BilinearResizeOp.Forward(x, outH, outW));
        double rhs = Dot(BilinearResizeOp.Backward(dy, 5, 4), x);
        Assert.That(lhs, Is.EqualTo(rhs).Within(1e-12 * (1 + Math.Abs(lhs))));
    }

    [Test]
    public void Resize_rejects_bad_sizes()
    {
        var op = new BilinearResizeOp();
        var shapes = new Dictionary<string, int[]> { ["x"] = [1, 1, 3, 3, 2] };
        Assert.Throws<OpParameterException>(() => op.OutputShapes(shapes, OpParams.Of(("out_h", 0), ("out_w", 3))));
        Assert.Throws<ShapeMismatchException>(() =>
            op.OutputShapes(new Dictionary<string, int[]> { ["x"] = [3, 3, 2] }, OpParams.Of(("out_h", 2), ("out_w", 3))));
    }

    // ---------------- depthwise_conv2d ----------------

    [Test]
    public void Conv2d_with_uniform_weights_is_average_pooling_dropping_the_remainder([Values(2, 4)] int k)
    {
        int b = 2, t = 2, h = 9, w = 10, c = 3;
        var x = Random(new Random(k), b, t, h, w, c);
        var weight = new RefTensor(c, 1, k, k);
        Array.Fill(weight.Data, 1.0 / (k * k));
        var y = DepthwiseConv2dOp.Forward(x, weight, null);
        Assert.That(y.Shape, Is.EqualTo(new[] { b, t, h / k, w / k, c }));
        for (int ib = 0; ib < b; ib++)
            for (int it = 0; it < t; it++)
                for (int oh = 0; oh < h / k; oh++)
                    for (int ow = 0; ow < w / k; ow++)
                        for (int ic = 0; ic < c; ic++)
                        {
                            double mean = 0;
                            for (int i = 0; i < k; i++)
                                for (int j = 0; j < k; j++)
                                    mean += At(x, ib, it, oh * k + i, ow * k + j, ic);
                            mean /= k * k;
                            Assert.That(At(y, ib, it, oh, ow, ic), Is.EqualTo(mean).Within(Tol));
                        }
    }

    [Test]
    public void Conv2d_hand_computed_with_bias_and_per_channel_weights()
    {
        // One 2×2 frame, two channels, k = 2: y[c] = Σ w[c,i,j]·x[i,j,c] + b[c].
        var x = Video(1, 1, 3, 2, 2, (_, _, h, w, c) => c == 0 ? 1 + 2 * h + w : -(1 + 2 * h + w)); // row 2 is dropped
        var weight = new RefTensor([2, 1, 2, 2], [1, 2, 3, 4, 0, 0, 0, 1]);
        var bias = new RefTensor([2], [0.5, -0.5]);
        var y = DepthwiseConv2dOp.Forward(x, weight, bias);
        Assert.That(y.Shape, Is.EqualTo(new[] { 1, 1, 1, 1, 2 }));
        Assert.That(y.Data[0], Is.EqualTo(1 * 1 + 2 * 2 + 3 * 3 + 4 * 4 + 0.5).Within(Tol));
        Assert.That(y.Data[1], Is.EqualTo(-4 - 0.5).Within(Tol));
    }

    [Test]
    public void Conv2d_backward_leaves_the_dropped_remainder_zero()
    {
        var random = new Random(7);
        var x = Random(random, 1, 1, 9, 10, 2);
        var weight = Random(random, 2, 1, 4, 4);
        var dy = Random(random, 1, 1, 2, 2, 2);
        var (dx, _, _) = DepthwiseConv2dOp.Backward(x, weight, dy);
        for (int h = 0; h < 9; h++)
            for (int w = 0; w < 10; w++)
                for (int c = 0; c < 2; c++)
                    if (h >= 8 || w >= 8)
                        Assert.That(At(dx, 0, 0, h, w, c), Is.EqualTo(0.0), $"dx[{h},{w},{c}]");
                    else
                        Assert.That(At(dx, 0, 0, h, w, c), Is.Not.EqualTo(0.0));
    }

    [Test]
    public void Conv2d_rejects_frames_smaller_than_the_kernel()
    {
        var op = new DepthwiseConv2dOp();
        var shapes = new Dictionary<string, int[]> { ["x"] = [1, 1, 3, 8, 2], ["weight"] = [2, 1, 4, 4] };
        var error = Assert.Throws<ShapeMismatchException>(() => op.OutputShapes(shapes, new OpParams()));
        Assert.That(error!.Message, Does.Contain("depthwise_conv2d").And.Contain("smaller"));
        Assert.Throws<ShapeMismatchException>(() => DepthwiseConv2dOp.Forward(new RefTensor(1, 1, 3, 8, 2), new RefTensor(2, 1, 4, 4), null));
        Assert.Throws<ShapeMismatchException>(() =>
            op.OutputShapes(new Dictionary<string, int[]> { ["x"] = [1, 1, 8, 8, 3], ["weight"] = [2, 1, 4, 4] }, new OpParams()));
    }

    // ---------------- depthwise_conv3d ----------------

    [Test]
    public void Conv3d_delta_kernel_is_identity_plus_bias()
    {
        var x = Random(new Random(3), 2, 3, 4, 5, 2);
        var weight = new RefTensor(2, 1, 3, 3, 3);
        weight.Data[(0 * 3 + 1) * 9 + 1 * 3 + 1] = 1; // centre of channel 0
        weight.Data[(1 * 3 + 1) * 9 + 1 * 3 + 1] = 1; // centre of channel 1
        var y = DepthwiseConv3dOp.Forward(x, weight, null);
        Assert.That(y.Data, Is.EqualTo(x.Data).Within(Tol));
        var bias = new RefTensor([2], [0.25, -1.5]);
        var yb = DepthwiseConv3dOp.Forward(x, weight, bias);
        for (int i = 0; i < x.Length; i++) Assert.That(yb.Data[i], Is.EqualTo(x.Data[i] + bias.Data[i % 2]).Within(Tol));
    }

    [Test]
    public void Conv3d_box_kernel_is_zero_padded_mean()
    {
        // x = 1 + 9t + 3h + w on a 2×3×3 grid; the 1/27 box kernel (the loader's init) with zero padding.
        var x = Video(1, 2, 3, 3, 1, (_, t, h, w, _) => 1 + 9 * t + 3 * h + w);
        var weight = new RefTensor(1, 1, 3, 3, 3);
        Array.Fill(weight.Data, 1.0 / 27);
        var y = DepthwiseConv3dOp.Forward(x, weight, null);
        // Corner (0,0,0): t∈{0,1}, h∈{0,1}, w∈{0,1} → (1+2+4+5) + (10+11+13+14) = 60.
        Assert.That(At(y, 0, 0, 0, 0, 0), Is.EqualTo(60.0 / 27).Within(Tol));
        // Opposite corner (1,2,2): t∈{0,1}, h∈{1,2}, w∈{1,2} → (5+6+8+9) + (14+15+17+18) = 92.
        Assert.That(At(y, 0, 1, 2, 2, 0), Is.EqualTo(92.0 / 27).Within(Tol));
        // Frame centre (0,1,1): t∈{0,1}, all of h, w → 45 + 126 = 171.
        Assert.That(At(y, 0, 0, 1, 1, 0), Is.EqualTo(171.0 / 27).Within(Tol));
    }

    [Test]
    public void Conv3d_weight_index_is_c_dt_dh_dw()
    {
        // A kernel with only [c, 0, dt=2, dh=1, dw=0] = 1 reads x[t+1, h, w−1]: a shift, zero where it runs off the grid.
        var x = Random(new Random(5), 1, 3, 3, 4, 1);
        var weight = new RefTensor(1, 1, 3, 3, 3);
        weight.Data[2 * 9 + 1 * 3 + 0] = 1;
        var y = DepthwiseConv3dOp.Forward(x, weight, null);
        for (int t = 0; t < 3; t++)
            for (int h = 0; h < 3; h++)
                for (int w = 0; w < 4; w++)
                {
                    double expected = t + 1 < 3 && w - 1 >= 0 ? At(x, 0, t + 1, h, w - 1, 0) : 0.0;
                    Assert.That(At(y, 0, t, h, w, 0), Is.EqualTo(expected).Within(Tol), $"y[{t},{h},{w}]");
                }
    }

    [Test]
    public void Conv3d_rejects_even_kernels_and_channel_mismatch()
    {
        var op = new DepthwiseConv3dOp();
        Assert.Throws<ShapeMismatchException>(() =>
            op.OutputShapes(new Dictionary<string, int[]> { ["x"] = [1, 1, 4, 4, 2], ["weight"] = [2, 1, 2, 3, 3] }, new OpParams()));
        Assert.Throws<ShapeMismatchException>(() =>
            op.OutputShapes(new Dictionary<string, int[]> { ["x"] = [1, 1, 4, 4, 2], ["weight"] = [3, 1, 3, 3, 3] }, new OpParams()));
        Assert.Throws<ShapeMismatchException>(() =>
            op.OutputShapes(new Dictionary<string, int[]> { ["x"] = [1, 1, 4, 4, 2], ["weight"] = [2, 1, 3, 3, 3], ["bias"] = [3] }, new OpParams()));
    }
}
