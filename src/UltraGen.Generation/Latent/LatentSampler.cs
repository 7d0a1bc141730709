using UltraGen.Core;
using UltraGen.Generation.Sampling;
using UltraGen.Model.Dit;

namespace UltraGen.Generation.Latent;

/// <summary>What to sample with the real model: text features, guidance, schedule, seed and the latent's geometry.</summary>
public sealed record LatentRequest
{
    /// <summary>The prompt's features [text_len, text_dim] (host).</summary>
    public required Tensor Context { get; init; }

    /// <summary>The negative prompt's features [text_len, text_dim]; required when <see cref="Cfg"/> ≠ 1.</summary>
    public Tensor? NegativeContext { get; init; }

    public required LatentGeometry Geometry { get; init; }

    public ulong Seed { get; init; }

    /// <summary>Euler steps (spec: 30).</summary>
    public int Steps { get; init; } = 30;

    /// <summary>Guidance scale (spec: 5); 1 runs the positive prompt alone.</summary>
    public double Cfg { get; init; } = 5.0;

    /// <summary>σ-schedule shift (spec: 5).</summary>
    public double Shift { get; init; } = 5.0;
}

/// <summary>
/// The spec §2.6 sampler on a latent-space <see cref="Dit"/> (Wan2.1 / UltraGen, 16 latent channels): x ~ N(0, I) of
/// shape (16, T, H/8, W/8) from <see cref="GaussianNoise"/> (seed, stream 0), then <see cref="FlowMatchSampler"/>'s Euler
/// loop with classifier-free guidance, the positive and negative prompts as one batch of 2. Deterministic for a seed on a
/// given backend. The noise is not torch's, so the reference's seed-0 video is not reproduced bit for bit.
/// </summary>
public static class LatentSampler
{
    /// <summary>The latent (C, T, H/8, W/8) in the DiT's normalised latent space.</summary>
    public static float[] Sample(Dit dit, LatentRequest request, Action<SampleProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dit);
        ArgumentNullException.ThrowIfNull(request);
        var config = dit.Config;
        var geometry = request.Geometry;
        if (config.InChannels != config.OutChannels)
            throw new UnsupportedConfigurationException(
                $"the DiT takes {config.InChannels} input channels but predicts {config.OutChannels}: only text-to-video models (in = out) can be sampled from noise alone");
        if (geometry.Channels != config.InChannels)
            throw new ShapeMismatchException($"the latent has {geometry.Channels} channels, the DiT {config.InChannels}");
        var grid = geometry.TokenGrid(config.Patch);
        if (geometry.LatentFrames % config.Patch.T != 0 || geometry.LatentHeight % config.Patch.H != 0 || geometry.LatentWidth % config.Patch.W != 0
            || !grid.IsValid)
            throw new ShapeMismatchException($"latent {Shape.Format(geometry.LatentShape)} is not divisible by the patch size {config.Patch}");
        FlowMatchSampler.Validate(request.Steps, request.Cfg, request.Shift);
        bool guided = FlowMatchSampler.IsGuided(request.Cfg);
        if (guided && request.NegativeContext is null)
            throw new OpParameterException($"cfg {request.Cfg} needs the negative prompt's embeddings (or cfg 1 for the prompt alone)");
        CheckContext(request.Context, config, "text embeddings");
        if (guided) CheckContext(request.NegativeContext!, config, "negative embeddings");

        int batch = guided ? 2 : 1;
        int size = checked((int)geometry.LatentElementCount);
        int contextSize = config.TextLen * config.TextDim;
        using var context = Tensor.Host(DType.F32, batch, config.TextLen, config.TextDim);
        request.Context.HostSpan<float>().CopyTo(context.HostSpan<float>());
        if (guided) request.NegativeContext!.HostSpan<float>().CopyTo(context.HostSpan<float>()[contextSize..]);

        var x = GaussianNoise.Sample(size, request.Seed, stream: 0);
        using var input = Tensor.Host(DType.F32, [batch, .. geometry.LatentShape]);
        using var timestep = Tensor.Host(DType.F32, batch);
        FlowMatchSampler.Run(x, request.Steps, request.Cfg, request.Shift, (current, t) =>
        {
            var target = input.HostSpan<float>();
            for (int b = 0; b < batch; b++) current.CopyTo(target.Slice(b * size, size));
            timestep.HostSpan<float>().Fill(t);
            return dit.Forward(input, timestep, context);
        }, progress, cancellationToken);
        return x;
    }

    private static void CheckContext(Tensor context, Model.ModelConfig config, string what)
    {
        if (!context.IsHost || context.DType != DType.F32 || !context.Shape.SequenceEqual([config.TextLen, config.TextDim]))
            throw new ShapeMismatchException(
                $"{what} must be a host f32 [{config.TextLen}, {config.TextDim}] tensor (text_len × text_dim), got {context}");
    }

    /// <summary>
    /// The memory sampling <paramref name="geometry"/> takes with <paramref name="config"/> at guidance <paramref name="cfg"/>:
    /// backend weights and the forward's peak (<see cref="DitMemory"/>), and the host buffers of this sampler.
    /// </summary>
    public static SamplingMemory Memory(Model.ModelConfig config, LatentGeometry geometry, double cfg)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(geometry);
        int batch = FlowMatchSampler.IsGuided(cfg) ? 2 : 1;
        long size = geometry.LatentElementCount * sizeof(float);
        long context = (long)config.TextLen * config.TextDim * sizeof(float);
        return new SamplingMemory(
            Batch: batch,
            WeightBytes: DitMemory.WeightBytes(config),
            Forward: DitMemory.Forward(config, batch, geometry.TokenGrid(config.Patch)),
            // Host: the embeddings as read (one per prompt) and their batch.
            HostTextBytes: 2 * batch * context,
            // Host: the latent x, the guided velocity, the batched DiT input and the velocity the DiT returns.
            HostSamplerBytes: (2 + 2L * batch) * size + batch * sizeof(float));
    }
}

/// <summary>
/// Memory of one latent sampling run. Backend: every weight as f32, plus the peak of one batched forward. Host: the
/// sampler's buffers. On a host backend (cpu) both live in host memory.
/// </summary>
public sealed record SamplingMemory(int Batch, long WeightBytes, DitForwardMemory Forward, long HostTextBytes, long HostSamplerBytes)
{
    /// <summary>The backend's peak: weights + the forward's peak.</summary>
    public long BackendBytes => WeightBytes + Forward.PeakBytes;

    public long HostBytes => HostTextBytes + HostSamplerBytes;

    public long TotalBytes => BackendBytes + HostBytes;
}
