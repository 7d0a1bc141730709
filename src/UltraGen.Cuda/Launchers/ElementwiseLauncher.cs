using UltraGen.Cuda.Interop;
using static UltraGen.Cuda.Launchers.LaunchGeometry;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>elementwise</c> (kernels/elementwise.cu). Every kernel is 1-D: <see cref="ElementwiseBlocks"/>
/// blocks of 256 threads with grid-stride loops, except the gate reduction ((32, 8) blocks, see <see cref="ReductionGrid"/>).
/// Parameter lists, in order (f32 pointers unless noted):
/// <code>
/// add_f32(const float* a, const float* b, float* y, int n)
/// {gelu_tanh,silu,sigmoid}_fwd_f32(const float* x, float* y, int n)
/// {gelu_tanh,silu,sigmoid}_bwd_f32(const float* x, const float* dy, float* dx, int n)
/// gate_fusion_fwd_f32(local, hier, glob, alpha, beta, float* z, int batch, int tokens, int dim)
/// gate_fusion_bwd_f32(local, hier, glob, alpha, beta, dz, float* dlocal, float* dhier, float* dglob, int batch, int tokens, int dim)
/// gate_fusion_bwd_gates_f32(local, hier, glob, alpha, beta, dz, float* partialAlpha, float* partialBeta, int batch, int tokens, int dim, int splits)
/// column_sum_f32(const float* partial, float* out, int batches, int splits, int cols)
/// </code>
/// </summary>
public sealed class ElementwiseLauncher(LaunchContext context)
{
    public const string Module = "elementwise";

    private static readonly Dim3 s_block = new(ElementwiseThreads);

    private void Flat(string function, long n, KernelArgs args) =>
        context.Launch(Module, function, new Dim3(ElementwiseBlocks(n)), s_block, args);

    public void Add(IntPtr a, IntPtr b, IntPtr y, long n) =>
        Flat("add_f32", n, new KernelArgs().Ptr(a).Ptr(b).Ptr(y).Int(LaunchContext.Count(n, "add")));

    /// <summary><paramref name="activation"/> is gelu_tanh, silu or sigmoid.</summary>
    public void ActivationForward(string activation, IntPtr x, IntPtr y, long n) =>
        Flat($"{activation}_fwd_f32", n, new KernelArgs().Ptr(x).Ptr(y).Int(LaunchContext.Count(n, activation)));

    public void ActivationBackward(string activation, IntPtr x, IntPtr dy, IntPtr dx, long n) =>
        Flat($"{activation}_bwd_f32", n, new KernelArgs().Ptr(x).Ptr(dy).Ptr(dx).Int(LaunchContext.Count(n, activation)));

    public void GateFusionForward(IntPtr local, IntPtr hier, IntPtr glob, IntPtr alpha, IntPtr beta, IntPtr z, int batch, int tokens, int dim) =>
        Flat("gate_fusion_fwd_f32", (long)batch * tokens * dim, new KernelArgs().Ptr(local).Ptr(hier).Ptr(glob).Ptr(alpha).Ptr(beta).Ptr(z)
            .Int(batch).Int(tokens).Int(dim));

    /// <summary>Gradients of the three branches (elementwise) and of the two gates (column reduction over tokens).</summary>
    public void GateFusionBackward(IntPtr local, IntPtr hier, IntPtr glob, IntPtr alpha, IntPtr beta, IntPtr dz,
        IntPtr dLocal, IntPtr dHier, IntPtr dGlob, IntPtr dAlpha, IntPtr dBeta, int batch, int tokens, int dim)
    {
        long n = (long)batch * tokens * dim;
        LaunchContext.Count(n, "gate_fusion");
        Flat("gate_fusion_bwd_f32", n, new KernelArgs().Ptr(local).Ptr(hier).Ptr(glob).Ptr(alpha).Ptr(beta).Ptr(dz)
            .Ptr(dLocal).Ptr(dHier).Ptr(dGlob).Int(batch).Int(tokens).Int(dim));
        int splits = ReductionSplits(tokens);
        using var partialAlpha = context.Scratch(4L * batch * splits * dim);
        using var partialBeta = context.Scratch(4L * batch * splits * dim);
        context.Launch(Module, "gate_fusion_bwd_gates_f32", ReductionGrid(dim, splits, batch), ReductionBlock,
            new KernelArgs().Ptr(local).Ptr(hier).Ptr(glob).Ptr(alpha).Ptr(beta).Ptr(dz).Ptr(partialAlpha.Pointer).Ptr(partialBeta.Pointer)
                .Int(batch).Int(tokens).Int(dim).Int(splits));
        ColumnSum(partialAlpha.Pointer, dAlpha, batch, splits, dim);
        ColumnSum(partialBeta.Pointer, dBeta, batch, splits, dim);
    }

    /// <summary>out[b·cols + c] = Σ_s partial[(b·splits + s)·cols + c], summed in split order (deterministic).</summary>
    public void ColumnSum(IntPtr partial, IntPtr output, int batches, int splits, int columns) =>
        Flat("column_sum_f32", (long)batches * columns, new KernelArgs().Ptr(partial).Ptr(output).Int(batches).Int(splits).Int(columns));
}
