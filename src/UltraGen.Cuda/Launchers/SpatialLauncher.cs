using static UltraGen.Cuda.Launchers.LaunchGeometry;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>Dims of a channels-last video tensor (B, T, H, W, C).</summary>
public readonly record struct VideoDims(int B, int T, int H, int W, int C)
{
    public long Elements => (long)B * T * H * W * C;

    public static VideoDims Of(Core.Tensor video) => new(video.Dim(0), video.Dim(1), video.Dim(2), video.Dim(3), video.Dim(4));
}

/// <summary>
/// Typed launcher of module <c>spatial</c> (kernels/spatial.cu). Forward and input-gradient kernels are 1-D over the
/// elements they write (256-thread blocks); weight gradients are column reductions over the B·T·H'·W' positions into
/// partials (columns = C·taps for the weight, C for the bias) summed by <see cref="ElementwiseLauncher.ColumnSum"/>.
/// Dims are always those of the input x (B, T, H, W, C); the kernels derive the output size.
/// <code>
/// depthwise_conv2d_fwd_f32(const float* x, const float* weight, const float* bias, float* y, int B, int T, int H, int W, int C, int kh, int kw)
/// depthwise_conv2d_bwd_input_f32(const float* weight, const float* dy, float* dx, int B, int T, int H, int W, int C, int kh, int kw)
/// depthwise_conv2d_bwd_weight_f32(const float* x, const float* dy, float* partialWeight, float* partialBias, int B, int T, int H, int W, int C, int kh, int kw, int splits)
/// depthwise_conv3d_fwd_f32(x, weight, bias, y, B, T, H, W, C, int kt, int kh, int kw)
/// depthwise_conv3d_bwd_input_f32(weight, dy, dx, B, T, H, W, C, kt, kh, kw)
/// depthwise_conv3d_bwd_weight_f32(x, dy, partialWeight, partialBias, B, T, H, W, C, kt, kh, kw, int splits)
/// bilinear_resize_fwd_f32(const float* x, float* y, int B, int T, int H, int W, int C, int outH, int outW)
/// bilinear_resize_bwd_f32(const float* dy, float* dx, int B, int T, int H, int W, int C, int outH, int outW)
/// </code>
/// </summary>
public sealed class SpatialLauncher(LaunchContext context, ElementwiseLauncher elementwise)
{
    public const string Module = "spatial";

    private static readonly Dim3 s_block = new(ElementwiseThreads);

    private void Flat(string function, long n, KernelArgs args)
    {
        LaunchContext.Count(n, function);
        context.Launch(Module, function, new Dim3(ElementwiseBlocks(n)), s_block, args);
    }

    private static KernelArgs Dims(KernelArgs args, VideoDims d) => args.Int(d.B).Int(d.T).Int(d.H).Int(d.W).Int(d.C);

    public void DepthwiseConv2dForward(IntPtr x, IntPtr weight, IntPtr bias, IntPtr y, VideoDims d, int kh, int kw) =>
        Flat("depthwise_conv2d_fwd_f32", (long)d.B * d.T * (d.H / kh) * (d.W / kw) * d.C,
            Dims(new KernelArgs().Ptr(x).Ptr(weight).Ptr(bias).Ptr(y), d).Int(kh).Int(kw));

    public void DepthwiseConv2dBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, IntPtr dBias, VideoDims d, int kh, int kw)
    {
        if (dx != IntPtr.Zero)
            Flat("depthwise_conv2d_bwd_input_f32", d.Elements, Dims(new KernelArgs().Ptr(weight).Ptr(dy).Ptr(dx), d).Int(kh).Int(kw));
        if (dWeight == IntPtr.Zero && dBias == IntPtr.Zero) return;
        WeightGradient("depthwise_conv2d_bwd_weight_f32", x, dy, dWeight, dBias, d, (long)d.B * d.T * (d.H / kh) * (d.W / kw), kh * kw,
            args => args.Int(kh).Int(kw));
    }

    public void DepthwiseConv3dForward(IntPtr x, IntPtr weight, IntPtr bias, IntPtr y, VideoDims d, int kt, int kh, int kw) =>
        Flat("depthwise_conv3d_fwd_f32", d.Elements, Dims(new KernelArgs().Ptr(x).Ptr(weight).Ptr(bias).Ptr(y), d).Int(kt).Int(kh).Int(kw));

    public void DepthwiseConv3dBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, IntPtr dBias, VideoDims d, int kt, int kh, int kw)
    {
        if (dx != IntPtr.Zero)
            Flat("depthwise_conv3d_bwd_input_f32", d.Elements, Dims(new KernelArgs().Ptr(weight).Ptr(dy).Ptr(dx), d).Int(kt).Int(kh).Int(kw));
        if (dWeight == IntPtr.Zero && dBias == IntPtr.Zero) return;
        WeightGradient("depthwise_conv3d_bwd_weight_f32", x, dy, dWeight, dBias, d, (long)d.B * d.T * d.H * d.W, kt * kh * kw,
            args => args.Int(kt).Int(kh).Int(kw));
    }

    private void WeightGradient(string function, IntPtr x, IntPtr dy, IntPtr dWeight, IntPtr dBias, VideoDims d, long positions, int taps,
        Func<KernelArgs, KernelArgs> kernelDims)
    {
        int splits = ReductionSplits(positions);
        int weightColumns = d.C * taps;
        using var partialWeight = context.Scratch(4L * splits * weightColumns);
        using var partialBias = context.Scratch(4L * splits * d.C);
        var args = kernelDims(Dims(new KernelArgs().Ptr(x).Ptr(dy).Ptr(partialWeight.Pointer).Ptr(partialBias.Pointer), d)).Int(splits);
        context.Launch(Module, function, ReductionGrid(weightColumns, splits, 1), ReductionBlock, args);
        if (dWeight != IntPtr.Zero) elementwise.ColumnSum(partialWeight.Pointer, dWeight, 1, splits, weightColumns);
        if (dBias != IntPtr.Zero) elementwise.ColumnSum(partialBias.Pointer, dBias, 1, splits, d.C);
    }

    public void BilinearResizeForward(IntPtr x, IntPtr y, VideoDims d, int outH, int outW) =>
        Flat("bilinear_resize_fwd_f32", (long)d.B * d.T * outH * outW * d.C, Dims(new KernelArgs().Ptr(x).Ptr(y), d).Int(outH).Int(outW));

    public void BilinearResizeBackward(IntPtr dy, IntPtr dx, VideoDims d, int outH, int outW) =>
        Flat("bilinear_resize_bwd_f32", d.Elements, Dims(new KernelArgs().Ptr(dy).Ptr(dx), d).Int(outH).Int(outW));
}
