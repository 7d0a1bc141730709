using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Cpu;

/// <summary>
/// The backend a user without a GPU runs: f32 kernels with SIMD (Vector256/Vector512, TensorPrimitives) and
/// Parallel.For over independent work items. bf16/f16 storage is widened per call by <see cref="KernelBackend"/>.
/// </summary>
public sealed class CpuBackend : HostKernelBackend
{
    public override string Name => "cpu";

    public override string Description =>
        $"SIMD f32 kernels ({(System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512" : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "scalar")}) on {Environment.ProcessorCount} threads";

    /// <summary>Primitives with a Cpu kernel; the rest report themselves unsupported (skipped by the harness, never faked).</summary>
    private static readonly HashSet<string> s_kernels = new(StringComparer.Ordinal) { "window_attention" };

    protected override string? Limitation(Op op, DType dtype) =>
        KernelBackend.PrimitiveOps.Contains(op.Name) && !s_kernels.Contains(op.Name) ? $"no cpu kernel for '{op.Name}' yet" : null;

    protected override void ForwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        switch (op.Name)
        {
            case "window_attention":
                CpuWindowAttention.Forward(inputs["q"], inputs["k"], inputs["v"], outputs["o"], parameters.GetInt("heads"),
                    WindowAttentionOp.LayoutFor(GridOf(inputs["q"]), parameters), parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", 10000));
                break;
            default:
                throw new UnsupportedConfigurationException($"cpu backend: no forward kernel for '{op.Name}'");
        }
    }

    protected override void BackwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters)
    {
        switch (op.Name)
        {
            case "window_attention":
                CpuWindowAttention.Backward(inputs["q"], inputs["k"], inputs["v"], outputGradients["o"],
                    inputGradients.GetValueOrDefault("q"), inputGradients.GetValueOrDefault("k"), inputGradients.GetValueOrDefault("v"),
                    parameters.GetInt("heads"), WindowAttentionOp.LayoutFor(GridOf(inputs["q"]), parameters),
                    parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", 10000));
                break;
            default:
                throw new UnsupportedConfigurationException($"cpu backend: no backward kernel for '{op.Name}'");
        }
    }

    /// <summary>The token grid of a channels-last video tensor (B, T, H, W, C).</summary>
    internal static UltraGen.Core.Layout.Grid3 GridOf(Tensor video) => new(video.Dim(1), video.Dim(2), video.Dim(3));
}

public sealed class CpuBackendProvider : IBackendProvider
{
    public string Name => "cpu";

    public int AutoPriority => 10;

    public BackendProbe Probe() => BackendProbe.Available(new CpuBackend());
}
