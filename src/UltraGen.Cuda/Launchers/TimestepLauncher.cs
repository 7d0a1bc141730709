using static UltraGen.Cuda.Launchers.LaunchGeometry;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>timestep</c> (kernels/timestep.cu), parameters in the order of kernels/ABI.md.
/// <code>
/// timestep_embedding_fwd_f32(const float* t, float* y, int batch, int dim)              block 256, grid ⌈B·dim/2 / 256⌉
/// timestep_embedding_bwd_f32(const float* t, const float* dy, float* dt, int batch, int dim)   block 256, grid ⌈B / 8⌉
/// </code>
/// </summary>
public sealed class TimestepLauncher(LaunchContext context)
{
    public const string Module = "timestep";

    public void Forward(IntPtr t, IntPtr embedding, int batch, int dim) =>
        context.Launch(Module, "timestep_embedding_fwd_f32", TimestepForwardGrid(batch, dim), new Dim3(256),
            new KernelArgs().Ptr(t).Ptr(embedding).Int(batch).Int(dim));

    public void Backward(IntPtr t, IntPtr dEmbedding, IntPtr dt, int batch, int dim) =>
        context.Launch(Module, "timestep_embedding_bwd_f32", new Dim3(RowBlocks(batch)), new Dim3(RowThreads),
            new KernelArgs().Ptr(t).Ptr(dEmbedding).Ptr(dt).Int(batch).Int(dim));
}
