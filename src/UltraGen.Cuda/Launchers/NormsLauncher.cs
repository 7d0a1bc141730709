using static UltraGen.Cuda.Launchers.LaunchGeometry;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>norms</c> (kernels/norms.cu), parameters in the order of kernels/ABI.md. Row kernels: one
/// warp per row, block 256, grid <see cref="RowBlocks"/>. Weight/parameter gradients: column reductions (block (32, 8),
/// grid (⌈D/32⌉, splits, batches)) into partials that <see cref="ElementwiseLauncher.ColumnSum"/> adds up; they read the
/// per-row statistics (rstd, mean) the row kernels write through their nullable <c>*Out</c> pointers.
/// <code>
/// rms_norm_fwd_f32(const float* x, const float* weight, float* y, float* rstdOut (nullable), long long rows, int dim, float eps)
/// rms_norm_bwd_f32(const float* x, const float* weight, const float* dy, float* dx, float* rstdOut (nullable), long long rows, int dim, float eps)
/// rms_norm_bwd_weight_f32(const float* x, const float* dy, const float* rstd, float* partialWeight, long long rows, int dim, int splits)
/// layer_norm_fwd_f32(const float* x, const float* weight, const float* bias (nullable), float* y, float* meanOut, float* rstdOut (nullable), long long rows, int dim, float eps)
/// layer_norm_bwd_f32(const float* x, const float* weight (nullable), const float* dy, float* dx, float* meanOut, float* rstdOut (nullable), long long rows, int dim, float eps)
/// layer_norm_bwd_affine_f32(const float* x, const float* dy, const float* mean, const float* rstd, float* partialWeight, float* partialBias, long long rows, int dim, int splits)
/// modulate_fwd_f32(const float* x, const float* shift, const float* scale, float* y, int batch, long long tokens, int dim)
/// modulate_bwd_f32(const float* scale, const float* dy, float* dx, int batch, long long tokens, int dim)
/// modulate_bwd_params_f32(const float* x, const float* dy, float* partialShift, float* partialScale, int batch, long long tokens, int dim, int splits)
/// </code>
/// (<c>layer_norm_modulate_fwd_f32</c>, the fused LN + adaLN of the DiT block, gets its launcher with the model.)
/// </summary>
public sealed class NormsLauncher(LaunchContext context, ElementwiseLauncher elementwise)
{
    public const string Module = "norms";

    private static readonly Dim3 s_rowBlock = new(RowThreads);

    private void Rows(string function, long rows, KernelArgs args) =>
        context.Launch(Module, function, new Dim3(RowBlocks(rows)), s_rowBlock, args);

    public void RmsNormForward(IntPtr x, IntPtr weight, IntPtr y, long rows, int dim, float eps) =>
        Rows("rms_norm_fwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(y).Ptr(IntPtr.Zero).Add(rows).Int(dim).Float(eps));

    /// <summary>dx and/or dweight (zero pointers are not wanted); dx goes to scratch when only dweight is wanted (it yields rstd).</summary>
    public void RmsNormBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, long rows, int dim, float eps)
    {
        using var rstd = context.Scratch(4 * rows);
        using var dxScratch = dx == IntPtr.Zero ? context.Scratch(4 * rows * dim) : null;
        Rows("rms_norm_bwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(dy).Ptr(dxScratch?.Pointer ?? dx).Ptr(rstd.Pointer).Add(rows).Int(dim).Float(eps));
        if (dWeight == IntPtr.Zero) return;
        int splits = ReductionSplits(rows);
        using var partial = context.Scratch(4L * splits * dim);
        context.Launch(Module, "rms_norm_bwd_weight_f32", ReductionGrid(dim, splits, 1), ReductionBlock,
            new KernelArgs().Ptr(x).Ptr(dy).Ptr(rstd.Pointer).Ptr(partial.Pointer).Add(rows).Int(dim).Int(splits));
        elementwise.ColumnSum(partial.Pointer, dWeight, splits, dim, 1);
    }

    /// <summary>weight and bias may be zero (no affine).</summary>
    public void LayerNormForward(IntPtr x, IntPtr weight, IntPtr bias, IntPtr y, long rows, int dim, float eps) =>
        Rows("layer_norm_fwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(bias).Ptr(y).Ptr(IntPtr.Zero).Ptr(IntPtr.Zero).Add(rows).Int(dim).Float(eps));

    public void LayerNormBackward(IntPtr x, IntPtr weight, IntPtr dy, IntPtr dx, IntPtr dWeight, IntPtr dBias, long rows, int dim, float eps)
    {
        using var mean = context.Scratch(4 * rows);
        using var rstd = context.Scratch(4 * rows);
        using var dxScratch = dx == IntPtr.Zero ? context.Scratch(4 * rows * dim) : null;
        Rows("layer_norm_bwd_f32", rows, new KernelArgs().Ptr(x).Ptr(weight).Ptr(dy).Ptr(dxScratch?.Pointer ?? dx).Ptr(mean.Pointer).Ptr(rstd.Pointer)
            .Add(rows).Int(dim).Float(eps));
        if (dWeight == IntPtr.Zero && dBias == IntPtr.Zero) return;
        int splits = ReductionSplits(rows);
        using var partialWeight = context.Scratch(4L * splits * dim);
        using var partialBias = context.Scratch(4L * splits * dim);
        context.Launch(Module, "layer_norm_bwd_affine_f32", ReductionGrid(dim, splits, 1), ReductionBlock,
            new KernelArgs().Ptr(x).Ptr(dy).Ptr(mean.Pointer).Ptr(rstd.Pointer).Ptr(partialWeight.Pointer).Ptr(partialBias.Pointer)
                .Add(rows).Int(dim).Int(splits));
        if (dWeight != IntPtr.Zero) elementwise.ColumnSum(partialWeight.Pointer, dWeight, splits, dim, 1);
        if (dBias != IntPtr.Zero) elementwise.ColumnSum(partialBias.Pointer, dBias, splits, dim, 1);
    }

    public void ModulateForward(IntPtr x, IntPtr shift, IntPtr scale, IntPtr y, int batch, long tokens, int dim) =>
        context.Launch(Module, "modulate_fwd_f32", new Dim3(ElementwiseBlocks(batch * tokens * dim)), new Dim3(ElementwiseThreads),
            new KernelArgs().Ptr(x).Ptr(shift).Ptr(scale).Ptr(y).Int(batch).Add(tokens).Int(dim));

    public void ModulateBackward(IntPtr x, IntPtr scale, IntPtr dy, IntPtr dx, IntPtr dShift, IntPtr dScale, int batch, long tokens, int dim)
    {
        if (dx != IntPtr.Zero)
            context.Launch(Module, "modulate_bwd_f32", new Dim3(ElementwiseBlocks(batch * tokens * dim)), new Dim3(ElementwiseThreads),
                new KernelArgs().Ptr(scale).Ptr(dy).Ptr(dx).Int(batch).Add(tokens).Int(dim));
        if (dShift == IntPtr.Zero && dScale == IntPtr.Zero) return;
        int splits = ReductionSplits(tokens);
        using var partialShift = context.Scratch(4L * batch * splits * dim);
        using var partialScale = context.Scratch(4L * batch * splits * dim);
        context.Launch(Module, "modulate_bwd_params_f32", ReductionGrid(dim, splits, batch), ReductionBlock,
            new KernelArgs().Ptr(x).Ptr(dy).Ptr(partialShift.Pointer).Ptr(partialScale.Pointer).Int(batch).Add(tokens).Int(dim).Int(splits));
        if (dShift != IntPtr.Zero) elementwise.ColumnSum(partialShift.Pointer, dShift, splits, dim, batch);
        if (dScale != IntPtr.Zero) elementwise.ColumnSum(partialScale.Pointer, dScale, splits, dim, batch);
    }
}
