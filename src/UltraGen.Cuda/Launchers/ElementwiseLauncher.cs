using UltraGen.Cuda.Interop;
using static UltraGen.Cuda.Launchers.LaunchGeometry;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>elementwise</c> (kernels/elementwise.cu), one method per entry point, parameters in the
/// order of kernels/ABI.md. 1-D kernels: block 256, grid <see cref="ElementwiseBlocks"/> (grid-stride). The gate gradient
/// is a column reduction (block (32, 8), grid (⌈D/32⌉, splits, B)) finished by <see cref="ColumnSum"/>.
/// <code>
/// add_f32(const float* a, const float* b, float* y, long long n)
/// {gelu_tanh,silu,sigmoid}_fwd_f32(const float* x, float* y, long long n)
/// {gelu_tanh,silu,sigmoid}_bwd_f32(const float* x, const float* dy, float* dx, long long n)
/// gate_fusion_fwd_f32(local, hier, glob, alpha, beta, float* z, int batch, long long tokens, int dim)
/// gate_fusion_bwd_f32(const float* alpha, const float* beta, const float* dz, float* dlocal, float* dhier, float* dglob (nullable), int batch, long long tokens, int dim)
/// gate_fusion_bwd_gates_f32(local, hier, glob, alpha, beta, dz, float* partialAlpha, float* partialBeta, int batch, long long tokens, int dim, int splits)
/// gated_residual_fwd_f32(const float* x, const float* y, const float* gate, float* out, int batch, long long tokens, int dim)
/// gated_residual_bwd_f32(const float* gate, const float* dout, float* dx, float* dy (nullable), int batch, long long tokens, int dim)
/// gated_residual_bwd_gate_f32(const float* y, const float* dout, float* partialGate, int batch, long long tokens, int dim, int splits)
/// column_sum_f32(const float* partial, float* out, int splits, int cols, int batches)      block 256, grid (⌈cols/256⌉, batches)
/// </code>
/// </summary>
public sealed class ElementwiseLauncher(LaunchContext context)
{
    public const string Module = "elementwise";

    private static readonly Dim3 s_block = new(ElementwiseThreads);

    private void Flat(string function, long n, KernelArgs args) =>
        context.Launch(Module, function, new Dim3(ElementwiseBlocks(n)), s_block, args);

    public void Add(IntPtr a, IntPtr b, IntPtr y, long n) =>
        Flat("add_f32", n, new KernelArgs().Ptr(a).Ptr(b).Ptr(y).Add(n));

    /// <summary><paramref name="activation"/> is gelu_tanh, silu or sigmoid.</summary>
    public void ActivationForward(string activation, IntPtr x, IntPtr y, long n) =>
        Flat($"{activation}_fwd_f32", n, new KernelArgs().Ptr(x).Ptr(y).Add(n));

    public void ActivationBackward(string activation, IntPtr x, IntPtr dy, IntPtr dx, long n) =>
        Flat($"{activation}_bwd_f32", n, new KernelArgs().Ptr(x).Ptr(dy).Ptr(dx).Add(n));

    public void GateFusionForward(IntPtr local, IntPtr hier, IntPtr glob, IntPtr alpha, IntPtr beta, IntPtr z, int batch, long tokens, int dim) =>
        Flat("gate_fusion_fwd_f32", batch * tokens * dim, new KernelArgs().Ptr(local).Ptr(hier).Ptr(glob).Ptr(alpha).Ptr(beta).Ptr(z)
            .Int(batch).Add(tokens).Int(dim));

    /// <summary>Branch gradients (elementwise; zero pointers skip them) and gate gradients (column reduction over tokens).</summary>
    public void GateFusionBackward(IntPtr local, IntPtr hier, IntPtr glob, IntPtr alpha, IntPtr beta, IntPtr dz,
        IntPtr dLocal, IntPtr dHier, IntPtr dGlob, IntPtr dAlpha, IntPtr dBeta, int batch, long tokens, int dim)
    {
        if (dLocal != IntPtr.Zero || dHier != IntPtr.Zero || dGlob != IntPtr.Zero)
            Flat("gate_fusion_bwd_f32", batch * tokens * dim, new KernelArgs().Ptr(alpha).Ptr(beta).Ptr(dz)
                .Ptr(dLocal).Ptr(dHier).Ptr(dGlob).Int(batch).Add(tokens).Int(dim));
        if (dAlpha == IntPtr.Zero && dBeta == IntPtr.Zero) return;
        int splits = ReductionSplits(tokens);
        using var partialAlpha = context.Scratch(4L * batch * splits * dim);
        using var partialBeta = context.Scratch(4L * batch * splits * dim);
        context.Launch(Module, "gate_fusion_bwd_gates_f32", ReductionGrid(dim, splits, batch), ReductionBlock,
            new KernelArgs().Ptr(local).Ptr(hier).Ptr(glob).Ptr(alpha).Ptr(beta).Ptr(dz).Ptr(partialAlpha.Pointer).Ptr(partialBeta.Pointer)
                .Int(batch).Add(tokens).Int(dim).Int(splits));
        if (dAlpha != IntPtr.Zero) ColumnSum(partialAlpha.Pointer, dAlpha, splits, dim, batch);
        if (dBeta != IntPtr.Zero) ColumnSum(partialBeta.Pointer, dBeta, splits, dim, batch);
    }

    public void GatedResidualForward(IntPtr x, IntPtr y, IntPtr gate, IntPtr output, int batch, long tokens, int dim) =>
        Flat("gated_residual_fwd_f32", batch * tokens * dim, new KernelArgs().Ptr(x).Ptr(y).Ptr(gate).Ptr(output).Int(batch).Add(tokens).Int(dim));

    /// <summary>dx = dout and dy = gate·dout (elementwise; zero pointers skip them), dgate = Σ_N dout·y (column reduction over tokens).</summary>
    public void GatedResidualBackward(IntPtr y, IntPtr gate, IntPtr dOut, IntPtr dx, IntPtr dy, IntPtr dGate, int batch, long tokens, int dim)
    {
        if (dx != IntPtr.Zero || dy != IntPtr.Zero)
            Flat("gated_residual_bwd_f32", batch * tokens * dim, new KernelArgs().Ptr(gate).Ptr(dOut).Ptr(dx).Ptr(dy).Int(batch).Add(tokens).Int(dim));
        if (dGate == IntPtr.Zero) return;
        int splits = ReductionSplits(tokens);
        using var partialGate = context.Scratch(4L * batch * splits * dim);
        context.Launch(Module, "gated_residual_bwd_gate_f32", ReductionGrid(dim, splits, batch), ReductionBlock,
            new KernelArgs().Ptr(y).Ptr(dOut).Ptr(partialGate.Pointer).Int(batch).Add(tokens).Int(dim).Int(splits));
        ColumnSum(partialGate.Pointer, dGate, splits, dim, batch);
    }

    /// <summary>out[b·cols + c] = Σ_s partial[(b·splits + s)·cols + c], summed in split order (deterministic).</summary>
    public void ColumnSum(IntPtr partial, IntPtr output, int splits, int columns, int batches) =>
        context.Launch(Module, "column_sum_f32", ColumnSumGrid(columns, batches), s_block,
            new KernelArgs().Ptr(partial).Ptr(output).Int(splits).Int(columns).Int(batches));
}
