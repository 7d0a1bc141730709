using ILGPU;
using ILGPU.Runtime;
using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Ilgpu;

/// <summary>
/// ILGPU twin of the windowed attention kernel family (contract; the kernels land with the Ilgpu issue).
/// Tensors are channels-last video (B, T, H, W, heads·headDim) in f32.
/// </summary>
public sealed class IlgpuWindowAttention
{
    private readonly Accelerator _accelerator;

    public IlgpuWindowAttention(Accelerator accelerator) => _accelerator = accelerator;

    public void Forward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o,
        int batch, int heads, int headDim, WindowLayout layout, bool rope, double ropeTheta) =>
        throw new UnsupportedConfigurationException($"ilgpu window_attention forward is not implemented yet ({_accelerator.Name})");

    /// <summary>Writes dq, dk, dv (each may be an empty view when that gradient is not wanted).</summary>
    public void Backward(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dO,
        ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv,
        int batch, int heads, int headDim, WindowLayout layout, bool rope, double ropeTheta) =>
        throw new UnsupportedConfigurationException($"ilgpu window_attention backward is not implemented yet ({_accelerator.Name})");
}
