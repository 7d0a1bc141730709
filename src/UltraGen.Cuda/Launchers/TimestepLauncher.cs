using static UltraGen.Cuda.Launchers.LaunchGeometry;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>timestep</c> (kernels/timestep.cu): the forward is 1-D over the B·dim outputs; the backward
/// reduces each row to dt with one warp per row (<see cref="RowBlocks"/>).
/// <code>
/// timestep_embedding_fwd_f32(const float* t, float* embedding, int batch, int dim)
/// timestep_embedding_bwd_f32(const float* t, const float* dEmbedding, float* dt, int batch, int dim)
/// </code>
/// </summary>
public sealed class TimestepLauncher(LaunchContext context)
{
    public const string Module = "timestep";

    public void Forward(IntPtr t, IntPtr embedding, int batch, int dim) =>
        context.Launch(Module, "timestep_embedding_fwd_f32", new Dim3(ElementwiseBlocks((long)batch * dim)), new Dim3(ElementwiseThreads),
            new KernelArgs().Ptr(t).Ptr(embedding).Int(batch).Int(dim));

    public void Backward(IntPtr t, IntPtr dEmbedding, IntPtr dt, int batch, int dim) =>
        context.Launch(Module, "timestep_embedding_bwd_f32", new Dim3(RowBlocks(batch)), new Dim3(RowThreads),
            new KernelArgs().Ptr(t).Ptr(dEmbedding).Ptr(dt).Int(batch).Int(dim));
}
