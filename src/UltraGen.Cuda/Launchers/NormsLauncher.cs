using static UltraGen.Cuda.Launchers.LaunchGeometry;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>norms</c> (kernels/norms.cu). Row kernels: one warp per row, <see cref="RowBlocks"/> blocks of
/// 256 threads. Weight/parameter gradients are column reductions (block (32, 8), grid (⌈dim/32⌉, splits, batches)) into
/// partial sums that <see cref="ElementwiseLauncher.ColumnSum"/> adds up. The host always passes real weight/bias
/// buffers (ones/zeros for layer norm without affine), so no kernel depends on null-pointer conventions.
/// <code>
/// rms_norm_fwd_f32(const float* x, const float* weight, float* y, int rows, int dim, float eps)
/// rms_norm_bwd_f32(const float* x, const float* weight, const float* dy, float* dx, int rows, int dim, float eps)
/// rms_norm_bwd_weight_f32(const float* x, const float* dy, float* partial, int rows, int dim, float eps, int splits)
/// layer_norm_fwd_f32(const float* x, const float* weight, const float* bias, float* y, int rows, int dim, float eps)
/// layer_norm_bwd_f32(const float* x, const float* weight, const float* dy, float* dx, int rows, int dim, float eps)
/// layer_norm_bwd_affine_f32(const float* x, const float* dy, float* partialWeight, float* partialBias, int rows, int dim, float eps, int splits)
/// modulate_fwd_f32(const float* x, const float* shift, const float* scale, float* y, int batch, int tokens, int dim)
/// modulate_bwd_f32(const float* scale, const float* dy, float* dx, int batch, int tokens, int dim)
/// modulate_bwd_params_f32(const float* x, const float* dy, float* partialShift, float* partialScale, int batch, int tokens, int dim, int splits)
/// </code>
/// </summary>
public sealed class NormsLauncher(LaunchContext context, ElementwiseLauncher elementwise)
{
    public const string Module = "norms";

    private static readonly Dim3 s_rowBlock = new(RowThreads);

    private void Rows(string function, int rows, KernelArgs args) =>
        context.Launch(Module, function, new Dim3(RowBlocks(rows)), s_rowBlock, args);

    public void RmsNormForward(IntPtr x, IntPtr weight, IntPtr y, int rows, int dim, float eps) =>
        Rows("rms_norm_fwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(y).Int(rows).Int(dim).Float(eps));

    /// <summary>dx when <paramref name="dx"/> is not zero, dweight when <paramref name="dWeight"/> is not zero.</summary>
    public void RmsNormBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, int rows, int dim, float eps)
    {
        if (dx != IntPtr.Zero)
            Rows("rms_norm_bwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(dy).Ptr(dx).Int(rows).Int(dim).Float(eps));
        if (dWeight == IntPtr.Zero) return;
        int splits = ReductionSplits(rows);
        using var partial = context.Scratch(4L * splits * dim);
        context.Launch(Module, "rms_norm_bwd_weight_f32", ReductionGrid(dim, splits, 1), ReductionBlock,
            new KernelArgs().Ptr(x).Ptr(dy).Ptr(partial.Pointer).Int(rows).Int(dim).Float(eps).Int(splits));
        elementwise.ColumnSum(partial.Pointer, dWeight, 1, splits, dim);
    }

    public void LayerNormForward(IntPtr x, IntPtr weight, IntPtr bias, IntPtr y, int rows, int dim, float eps) =>
        Rows("layer_norm_fwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(bias).Ptr(y).Int(rows).Int(dim).Float(eps));

    public void LayerNormBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, IntPtr dBias, int rows, int dim, float eps)
    {
        if (dx != IntPtr.Zero)
            Rows("layer_norm_bwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(dy).Ptr(dx).Int(rows).Int(dim).Float(eps));
        if (dWeight == IntPtr.Zero && dBias == IntPtr.Zero) return;
        int splits = ReductionSplits(rows);
        using var partialWeight = context.Scratch(4L * splits * dim);
        using var partialBias = context.Scratch(4L * splits * dim);
        context.Launch(Module, "layer_norm_bwd_affine_f32", ReductionGrid(dim, splits, 1), ReductionBlock,
            new KernelArgs().Ptr(x).Ptr(dy).Ptr(partialWeight.Pointer).Ptr(partialBias.Pointer).Int(rows).Int(dim).Float(eps).Int(splits));
        if (dWeight != IntPtr.Zero) elementwise.ColumnSum(partialWeight.Pointer, dWeight, 1, splits, dim);
        if (dBias != IntPtr.Zero) elementwise.ColumnSum(partialBias.Pointer, dBias, 1, splits, dim);
    }

    public void ModulateForward(IntPtr x, IntPtr shift, IntPtr scale, IntPtr y, int batch, int tokens, int dim)
    {
        long n = (long)batch * tokens * dim;
        context.Launch(Module, "modulate_fwd_f32", new Dim3(ElementwiseBlocks(n)), new Dim3(ElementwiseThreads),
            new KernelArgs().Ptr(x).Ptr(shift).Ptr(scale).Ptr(y).Int(batch).Int(tokens).Int(dim));
    }

    public void ModulateBackward(IntPtr x, IntPtr scale, IntPtr dy, IntPtr dx, IntPtr dShift, IntPtr dScale, int batch, int tokens, int dim)
    {
        long n = (long)batch * tokens * dim;
        LaunchContext.Count(n, "modulate");
        if (dx != IntPtr.Zero)
            context.Launch(Module, "modulate_bwd_f32", new Dim3(ElementwiseBlocks(n)), new Dim3(ElementwiseThreads),
                new KernelArgs().Ptr(scale).Ptr(dy).Ptr(dx).Int(batch).Int(tokens).Int(dim));
        if (dShift == IntPtr.Zero && dScale == IntPtr.Zero) return;
        int splits = ReductionSplits(tokens);
        using var partialShift = context.Scratch(4L * batch * splits * dim);
        using var partialScale = context.Scratch(4L * batch * splits * dim);
        context.Launch(Module, "modulate_bwd_params_f32", ReductionGrid(dim, splits, batch), ReductionBlock,
            new KernelArgs().Ptr(x).Ptr(dy).Ptr(partialShift.Pointer).Ptr(partialScale.Pointer).Int(batch).Int(tokens).Int(dim).Int(splits));
        if (dShift != IntPtr.Zero) elementwise.ColumnSum(partialShift.Pointer, dShift, batch, splits, dim);
        if (dScale != IntPtr.Zero) elementwise.ColumnSum(partialScale.Pointer, dScale, batch, splits, dim);
    }
}
