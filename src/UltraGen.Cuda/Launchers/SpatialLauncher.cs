using UltraGen.Core;
using static UltraGen.Cuda.Launchers.LaunchGeometry;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>Dims of a channels-last video tensor (B, T, H, W, C).</summary>
public readonly record struct VideoDims(int B, int T, int H, int W, int C)
{
    public long Elements => (long)B * T * H * W * C;

    public static VideoDims Of(Tensor video) => new(video.Dim(0), video.Dim(1), video.Dim(2), video.Dim(3), video.Dim(4));
}

/// <summary>
/// Typed launcher of module <c>spatial</c> (kernels/spatial.cu), parameters in the order of kernels/ABI.md. Forward and
/// input-gradient kernels are 1-D over what they write (block 256, <see cref="ElementwiseBlocks"/>); weight gradients are
/// column reductions (block (32, 8), grid (⌈C/32⌉, splits)) into partials finished by <see cref="ElementwiseLauncher.ColumnSum"/>
/// with C·taps columns for the weight and C for the bias.
/// <code>
/// depthwise_conv2d_fwd_f32(const float* x, const float* weight, const float* bias (nullable), float* y, int batch, int T, int H, int W, int C, int kh, int kw)
/// depthwise_conv2d_bwd_input_f32(const float* dy, const float* weight, float* dx, int batch, int T, int H, int W, int C, int kh, int kw)
/// depthwise_conv2d_bwd_weight_f32(const float* x, const float* dy, float* partialWeight, float* partialBias (nullable), int batch, int T, int H, int W, int C, int kh, int kw, int splits)
/// depthwise_conv3d_fwd_f32(const float* x, const float* weight, const float* bias (nullable), float* y, int batch, int T, int H, int W, int C)
/// depthwise_conv3d_bwd_input_f32(const float* dy, const float* weight, float* dx, int batch, int T, int H, int W, int C)
/// depthwise_conv3d_bwd_weight_f32(const float* x, const float* dy, float* partialWeight, float* partialBias (nullable), int batch, int T, int H, int W, int C, int splits)
/// bilinear_resize_fwd_f32(const float* x, float* y, int frames, int inH, int inW, int outH, int outW, int C)
/// bilinear_resize_bwd_f32(const float* dy, float* dx, int frames, int inH, int inW, int outH, int outW, int C)
/// </code>
/// Kernel limits: conv2d 1 ≤ kh, kw ≤ 4; conv3d exactly 3×3×3 (<see cref="Conv2dLimitation"/>, <see cref="Conv3dLimitation"/>).
/// </summary>
public sealed class SpatialLauncher(LaunchContext context, ElementwiseLauncher elementwise)
{
    public const string Module = "spatial";

    private static readonly Dim3 s_block = new(ElementwiseThreads);

    public static string? Conv2dLimitation(int kh, int kw) =>
        kh is >= 1 and <= 4 && kw is >= 1 and <= 4 ? null : $"cuda depthwise_conv2d kernels take 1 ≤ kh, kw ≤ 4, got {kh}×{kw}";

    public static string? Conv3dLimitation(int kt, int kh, int kw) =>
        (kt, kh, kw) == (3, 3, 3) ? null : $"cuda depthwise_conv3d kernels are 3×3×3, got {kt}×{kh}×{kw}";

    private static void Require(string? limitation)
    {
        if (limitation is not null) throw new UnsupportedConfigurationException(limitation);
    }

    private void Flat(string function, long n, KernelArgs args) =>
        context.Launch(Module, function, new Dim3(ElementwiseBlocks(n)), s_block, args);

    private static KernelArgs Dims(KernelArgs args, VideoDims d) => args.Int(d.B).Int(d.T).Int(d.H).Int(d.W).Int(d.C);

    public void DepthwiseConv2dForward(IntPtr x, IntPtr weight, IntPtr bias, IntPtr y, VideoDims d, int kh, int kw)
    {
        Require(Conv2dLimitation(kh, kw));
        Flat("depthwise_conv2d_fwd_f32", (long)d.B * d.T * (d.H / kh) * (d.W / kw) * d.C,
            Dims(new KernelArgs().Ptr(x).Ptr(weight).Ptr(bias).Ptr(y), d).Int(kh).Int(kw));
    }

    public void DepthwiseConv2dBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, IntPtr dBias, VideoDims d, int kh, int kw)
    {
        Require(Conv2dLimitation(kh, kw));
        if (dx != IntPtr.Zero)
            Flat("depthwise_conv2d_bwd_input_f32", d.Elements, Dims(new KernelArgs().Ptr(dy).Ptr(weight).Ptr(dx), d).Int(kh).Int(kw));
        if (dWeight == IntPtr.Zero && dBias == IntPtr.Zero) return;
        long positions = (long)d.B * d.T * (d.H / kh) * (d.W / kw);
        WeightGradient("depthwise_conv2d_bwd_weight_f32", x, dy, dWeight, dBias, d, positions, kh * kw, args => args.Int(kh).Int(kw));
    }

    public void DepthwiseConv3dForward(IntPtr x, IntPtr weight, IntPtr bias, IntPtr y, VideoDims d, int kt, int kh, int kw)
    {
        Require(Conv3dLimitation(kt, kh, kw));
        Flat("depthwise_conv3d_fwd_f32", d.Elements, Dims(new KernelArgs().Ptr(x).Ptr(weight).Ptr(bias).Ptr(y), d));
    }

    public void DepthwiseConv3dBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, IntPtr dBias, VideoDims d, int kt, int kh, int kw)
    {
        Require(Conv3dLimitation(kt, kh, kw));
        if (dx != IntPtr.Zero)
            Flat("depthwise_conv3d_bwd_input_f32", d.Elements, Dims(new KernelArgs().Ptr(dy).Ptr(weight).Ptr(dx), d));
        if (dWeight == IntPtr.Zero && dBias == IntPtr.Zero) return;
        WeightGradient("depthwise_conv3d_bwd_weight_f32", x, dy, dWeight, dBias, d, (long)d.B * d.T * d.H * d.W, 27, args => args);
    }

    private void WeightGradient(string function, IntPtr x, IntPtr dy, IntPtr dWeight, IntPtr dBias, VideoDims d, long positions, int taps,
        Func<KernelArgs, KernelArgs> kernelSizes)
    {
        int splits = ReductionSplits(positions);
        int weightColumns = d.C * taps;
        using var partialWeight = context.Scratch(4L * splits * weightColumns);
        using var partialBias = dBias == IntPtr.Zero ? null : context.Scratch(4L * splits * d.C);
        var args = kernelSizes(Dims(new KernelArgs().Ptr(x).Ptr(dy).Ptr(partialWeight.Pointer).Ptr(partialBias?.Pointer ?? IntPtr.Zero), d)).Int(splits);
        context.Launch(Module, function, ReductionGrid(d.C, splits, 1), ReductionBlock, args);
        if (dWeight != IntPtr.Zero) elementwise.ColumnSum(partialWeight.Pointer, dWeight, splits, weightColumns, 1);
        if (partialBias is not null) elementwise.ColumnSum(partialBias.Pointer, dBias, splits, d.C, 1);
    }

    public void BilinearResizeForward(IntPtr x, IntPtr y, VideoDims d, int outH, int outW) =>
        Flat("bilinear_resize_fwd_f32", (long)d.B * d.T * outH * outW * d.C,
            new KernelArgs().Ptr(x).Ptr(y).Int(checked(d.B * d.T)).Int(d.H).Int(d.W).Int(outH).Int(outW).Int(d.C));

    public void BilinearResizeBackward(IntPtr dy, IntPtr dx, VideoDims d, int outH, int outW) =>
        Flat("bilinear_resize_bwd_f32", d.Elements,
            new KernelArgs().Ptr(dy).Ptr(dx).Int(checked(d.B * d.T)).Int(d.H).Int(d.W).Int(outH).Int(outW).Int(d.C));
}
