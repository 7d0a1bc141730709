using UltraGen.Core;
using UltraGen.Generation.Sampling;
using UltraGen.Model.Dit;
using UltraGen.Ops.Backends;

namespace UltraGen.Generation.Pipeline;

/// <summary>What to sample: prompts, guidance, schedule and seed (spec §2.6's defaults except where noted).</summary>
public sealed record SampleRequest
{
    public required string Prompt { get; init; }

    /// <summary>The negative prompt of classifier-free guidance; empty = the unconditional (all-padding) context.</summary>
    public string NegativePrompt { get; init; } = "";

    public ulong Seed { get; init; }

    /// <summary>Euler steps (spec: 30).</summary>
    public int Steps { get; init; } = 30;

    /// <summary>Guidance scale (spec: 5); 1 runs the positive prompt alone (one DiT pass per step instead of two).</summary>
    public double Cfg { get; init; } = 5.0;

    /// <summary>Timestep shift of the σ schedule (spec: 5).</summary>
    public double Shift { get; init; } = 5.0;

    /// <summary>Frames × height × width; null = the model's native format.</summary>
    public VideoFormat? Format { get; init; }
}

/// <summary>
/// Flow-matching Euler sampling with classifier-free guidance (spec §2.6) of a <see cref="VideoModel"/> on a backend:
/// x_S ~ N(0, I) from <see cref="GaussianNoise"/> (seed, stream 0), then <see cref="FlowMatchSampler"/>'s loop
/// (v = v_neg + cfg·(v_pos − v_neg), x ← x + v·(σ'_{j+1} − σ'_j)). The positive and negative passes run as one batch of 2.
/// Deterministic for a seed on a given backend.
/// </summary>
public sealed class VideoSampler : IDisposable
{
    private readonly Dit _dit;

    public VideoSampler(VideoModel model, IBackend backend, DitOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(backend);
        Model = model;
        _dit = new Dit(model.Config, backend, model.DitWeights, options);
    }

    public VideoModel Model { get; }

    /// <summary>The video (3, F, H, W), values ≈ [−1, 1] (not clamped).</summary>
    public float[] Sample(SampleRequest request, Action<SampleProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var format = request.Format ?? Model.Format;
        CheckFormat(format);
        FlowMatchSampler.Validate(request.Steps, request.Cfg, request.Shift);

        bool guided = FlowMatchSampler.IsGuided(request.Cfg);
        int batch = guided ? 2 : 1;
        string[] prompts = guided ? [request.Prompt, request.NegativePrompt] : [request.Prompt];
        var ids = Model.Tokenize(prompts);
        using var context = Model.TextEncoder.Forward(ids, batch);

        int size = checked((int)format.ElementCount);
        var x = GaussianNoise.Sample(size, request.Seed, stream: 0);
        using var input = Tensor.Host(DType.F32, InputShape(format, batch));
        using var timestep = Tensor.Host(DType.F32, batch);
        var videos = new float[batch * size];
        FlowMatchSampler.Run(x, request.Steps, request.Cfg, request.Shift, (current, t) =>
        {
            for (int b = 0; b < batch; b++) current.CopyTo(videos.AsSpan(b * size, size));
            Model.AppendCoordinates(videos, batch, format, input.HostSpan<float>());
            timestep.HostSpan<float>().Fill(t);
            return _dit.Forward(input, timestep, context);
        }, progress, cancellationToken);
        return x;
    }

    private int[] InputShape(VideoFormat format, int batch) => [batch, Model.Config.InChannels, format.Frames, format.Height, format.Width];

    private void CheckFormat(VideoFormat format)
    {
        var patch = Model.Config.Patch;
        if (format.Frames < 1 || format.Height < 1 || format.Width < 1)
            throw new ShapeMismatchException($"video format {format} must be positive");
        if (format.Frames % patch.T != 0 || format.Height % patch.H != 0 || format.Width % patch.W != 0)
            throw new ShapeMismatchException($"video format {format} (frames×height×width) is not divisible by the patch size {patch}");
    }

    public void Dispose() => _dit.Dispose();
}
