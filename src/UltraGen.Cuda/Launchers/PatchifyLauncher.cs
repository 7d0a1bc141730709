using UltraGen.Cuda.Interop;
using UltraGen.Ops;
using static UltraGen.Cuda.Launchers.LaunchGeometry;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>patchify</c> (kernels/patchify.cu), parameters in the order of kernels/ABI.md. Both kernels
/// are grid-stride permutations over the destination (elementwise launch, n = B·T·H·W·C·pt·ph·pw); (T, H, W) is the
/// token grid, channelsLast 1 for (p, q, r, c) features. Each is the other's backward.
/// <code>
/// patchify_f32(const float* video, float* tokens, int batch, int channels, int T, int H, int W, int pt, int ph, int pw, int channelsLast)
/// unpatchify_f32(const float* tokens, float* video, int batch, int channels, int T, int H, int W, int pt, int ph, int pw, int channelsLast)
/// </code>
/// </summary>
public sealed class PatchifyLauncher(LaunchContext context)
{
    public const string Module = "patchify";

    public void Patchify(IntPtr video, IntPtr tokens, PatchLayout layout) => Permute("patchify_f32", video, tokens, layout);

    public void Unpatchify(IntPtr tokens, IntPtr video, PatchLayout layout) => Permute("unpatchify_f32", tokens, video, layout);

    private void Permute(string function, IntPtr source, IntPtr destination, PatchLayout layout) =>
        context.Launch(Module, function, new Dim3(ElementwiseBlocks(layout.ElementCount)), new Dim3(ElementwiseThreads),
            new KernelArgs().Ptr(source).Ptr(destination).Int(layout.Batch).Int(layout.Channels)
                .Int(layout.Grid.T).Int(layout.Grid.H).Int(layout.Grid.W).Int(layout.Pt).Int(layout.Ph).Int(layout.Pw)
                .Int(layout.ChannelsLast ? 1 : 0));
}
