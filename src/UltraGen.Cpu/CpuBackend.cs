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
    private static readonly HashSet<string> s_kernels = new(StringComparer.Ordinal)
    {
        "add", "bilinear_resize", "cross_attention", "depthwise_conv2d", "depthwise_conv3d", "gate_fusion", "gelu_tanh", "layer_norm",
        "linear", "modulate", "rms_norm", "sigmoid", "silu", "timestep_embedding", "window_attention",
        "gated_residual", "patchify", "unpatchify",
    };

    protected override string? Limitation(Op op, DType dtype) =>
        KernelBackend.PrimitiveOps.Contains(op.Name) && !s_kernels.Contains(op.Name) ? $"no cpu kernel for '{op.Name}' yet" : null;

    protected override void ForwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        switch (op.Name)
        {
            case "add": CpuElementwise.AddForward(inputs["a"], inputs["b"], outputs["y"]); break;
            case "silu": CpuElementwise.SiluForward(inputs["x"], outputs["y"]); break;
            case "sigmoid": CpuElementwise.SigmoidForward(inputs["x"], outputs["y"]); break;
            case "gelu_tanh": CpuElementwise.GeluTanhForward(inputs["x"], outputs["y"]); break;
            case "gate_fusion":
                CpuElementwise.GateFusionForward(inputs["local"], inputs["hier"], inputs["glob"], inputs["alpha"], inputs["beta"], outputs["z"]);
                break;
            case "linear": CpuLinear.Forward(inputs["x"], inputs["weight"], inputs.GetValueOrDefault("bias"), outputs["y"]); break;
            case "rms_norm": CpuNorms.RmsNormForward(inputs["x"], inputs["weight"], outputs["y"], Eps(parameters, RmsNormOp.DefaultEps)); break;
            case "layer_norm":
                CpuNorms.LayerNormForward(inputs["x"], inputs.GetValueOrDefault("weight"), inputs.GetValueOrDefault("bias"), outputs["y"],
                    Eps(parameters, LayerNormOp.DefaultEps));
                break;
            case "modulate": CpuNorms.ModulateForward(inputs["x"], inputs["shift"], inputs["scale"], outputs["y"]); break;
            case "bilinear_resize": CpuSpatial.ResizeForward(inputs["x"], outputs["y"]); break;
            case "depthwise_conv2d": CpuSpatial.Conv2dForward(inputs["x"], inputs["weight"], inputs.GetValueOrDefault("bias"), outputs["y"]); break;
            case "depthwise_conv3d": CpuSpatial.Conv3dForward(inputs["x"], inputs["weight"], inputs.GetValueOrDefault("bias"), outputs["y"]); break;
            case "timestep_embedding": CpuTimestep.Forward(inputs["t"], outputs["embedding"], outputs["embedding"].Dim(1)); break;
            case "window_attention":
                CpuWindowAttention.Forward(inputs["q"], inputs["k"], inputs["v"], outputs["o"], parameters.GetInt("heads"),
                    WindowAttentionOp.LayoutFor(GridOf(inputs["q"]), parameters), parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", 10000));
                break;
            case "gated_residual": CpuElementwise.GatedResidualForward(inputs["x"], inputs["y"], inputs["gate"], outputs["out"]); break;
            case "patchify": CpuDitLayout.Patchify(inputs["video"], outputs["tokens"], PatchLayout.OfVideo(inputs["video"].ShapeArray, parameters, op.Name)); break;
            case "unpatchify": CpuDitLayout.Unpatchify(inputs["tokens"], outputs["video"], PatchLayout.OfTokens(inputs["tokens"].ShapeArray, parameters, op.Name)); break;
            case "cross_attention":
                CpuCrossAttention.Forward(inputs["q"], inputs["k"], inputs["v"], outputs["o"], parameters.GetInt("heads"));
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
            case "add": CpuElementwise.AddBackward(outputGradients["y"], inputGradients.GetValueOrDefault("a"), inputGradients.GetValueOrDefault("b")); break;
            case "silu": Activation(CpuElementwise.SiluBackward, inputs, outputGradients, inputGradients); break;
            case "sigmoid": Activation(CpuElementwise.SigmoidBackward, inputs, outputGradients, inputGradients); break;
            case "gelu_tanh": Activation(CpuElementwise.GeluTanhBackward, inputs, outputGradients, inputGradients); break;
            case "gate_fusion":
                CpuElementwise.GateFusionBackward(inputs["local"], inputs["hier"], inputs["glob"], inputs["alpha"], inputs["beta"], outputGradients["z"],
                    inputGradients.GetValueOrDefault("local"), inputGradients.GetValueOrDefault("hier"), inputGradients.GetValueOrDefault("glob"),
                    inputGradients.GetValueOrDefault("alpha"), inputGradients.GetValueOrDefault("beta"));
                break;
            case "linear":
                CpuLinear.Backward(inputs["x"], inputs["weight"], outputGradients["y"],
                    inputGradients.GetValueOrDefault("x"), inputGradients.GetValueOrDefault("weight"), inputGradients.GetValueOrDefault("bias"));
                break;
            case "rms_norm":
                CpuNorms.RmsNormBackward(inputs["x"], inputs["weight"], outputGradients["y"],
                    inputGradients.GetValueOrDefault("x"), inputGradients.GetValueOrDefault("weight"), Eps(parameters, RmsNormOp.DefaultEps));
                break;
            case "layer_norm":
                CpuNorms.LayerNormBackward(inputs["x"], inputs.GetValueOrDefault("weight"), outputGradients["y"], inputGradients.GetValueOrDefault("x"),
                    inputGradients.GetValueOrDefault("weight"), inputGradients.GetValueOrDefault("bias"), Eps(parameters, LayerNormOp.DefaultEps));
                break;
            case "modulate":
                CpuNorms.ModulateBackward(inputs["x"], inputs["scale"], outputGradients["y"],
                    inputGradients.GetValueOrDefault("x"), inputGradients.GetValueOrDefault("shift"), inputGradients.GetValueOrDefault("scale"));
                break;
            case "bilinear_resize":
                if (inputGradients.TryGetValue("x", out var dResized)) CpuSpatial.ResizeBackward(outputGradients["y"], dResized);
                break;
            case "depthwise_conv2d":
                CpuSpatial.Conv2dBackward(inputs["x"], inputs["weight"], outputGradients["y"],
                    inputGradients.GetValueOrDefault("x"), inputGradients.GetValueOrDefault("weight"), inputGradients.GetValueOrDefault("bias"));
                break;
            case "depthwise_conv3d":
                CpuSpatial.Conv3dBackward(inputs["x"], inputs["weight"], outputGradients["y"],
                    inputGradients.GetValueOrDefault("x"), inputGradients.GetValueOrDefault("weight"), inputGradients.GetValueOrDefault("bias"));
                break;
            case "timestep_embedding":
                if (inputGradients.TryGetValue("t", out var dt))
                    CpuTimestep.Backward(inputs["t"], outputGradients["embedding"], dt, outputGradients["embedding"].Dim(1));
                break;
            case "window_attention":
                CpuWindowAttention.Backward(inputs["q"], inputs["k"], inputs["v"], outputGradients["o"],
                    inputGradients.GetValueOrDefault("q"), inputGradients.GetValueOrDefault("k"), inputGradients.GetValueOrDefault("v"),
                    parameters.GetInt("heads"), WindowAttentionOp.LayoutFor(GridOf(inputs["q"]), parameters),
                    parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", 10000));
                break;
            case "gated_residual":
                CpuElementwise.GatedResidualBackward(inputs["y"], inputs["gate"], outputGradients["out"],
                    inputGradients.GetValueOrDefault("x"), inputGradients.GetValueOrDefault("y"), inputGradients.GetValueOrDefault("gate"));
                break;
            case "patchify":
                if (inputGradients.TryGetValue("video", out var dVideo))
                    CpuDitLayout.Unpatchify(outputGradients["tokens"], dVideo, PatchLayout.OfVideo(inputs["video"].ShapeArray, parameters, op.Name));
                break;
            case "unpatchify":
                if (inputGradients.TryGetValue("tokens", out var dTokens))
                    CpuDitLayout.Patchify(outputGradients["video"], dTokens, PatchLayout.OfTokens(inputs["tokens"].ShapeArray, parameters, op.Name));
                break;
            case "cross_attention":
                CpuCrossAttention.Backward(inputs["q"], inputs["k"], inputs["v"], outputGradients["o"], inputGradients.GetValueOrDefault("q"),
                    inputGradients.GetValueOrDefault("k"), inputGradients.GetValueOrDefault("v"), parameters.GetInt("heads"));
                break;
            default:
                throw new UnsupportedConfigurationException($"cpu backend: no backward kernel for '{op.Name}'");
        }
    }

    private static double Eps(OpParams parameters, double fallback) => parameters.GetDouble("eps", fallback);

    /// <summary>dx = dy ⊙ f′(x) for an elementwise activation, when dx is requested.</summary>
    private static void Activation(Action<Tensor, Tensor, Tensor> backward, IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputGradients, IReadOnlyDictionary<string, Tensor> inputGradients)
    {
        if (inputGradients.TryGetValue("x", out var dx)) backward(inputs["x"], outputGradients["y"], dx);
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
