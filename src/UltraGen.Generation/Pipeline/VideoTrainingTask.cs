using UltraGen.Core;
using UltraGen.Generation.Data;
using UltraGen.Generation.Sampling;
using UltraGen.Generation.Training;
using UltraGen.Model;
using UltraGen.Model.Dit;
using UltraGen.Ops.Backends;

namespace UltraGen.Generation.Pipeline;

/// <summary>Which parameters train.</summary>
public enum TrainingMode
{
    /// <summary>Every DiT parameter and the text encoder.</summary>
    Full,

    /// <summary>
    /// The domain-aware LoRA recipe (spec §1.6): base DiT and text encoder frozen; LoRA, gates and the UltraGen down/up
    /// convs train.
    /// </summary>
    Lora,
}

/// <summary>How each sample's squared error is weighted by its timestep.</summary>
public enum LossWeighting
{
    /// <summary>DiffSynth's bell over the shifted grid (spec §2.6): weight 0 at pure noise, peak near t = 500.</summary>
    Bell,

    /// <summary>Every timestep weighs 1 (plain rectified-flow loss).</summary>
    Uniform,
}

/// <summary>Settings of a <see cref="VideoTrainingTask"/>.</summary>
public sealed record VideoTrainingSettings
{
    public required VideoFormat Format { get; init; }

    public int BatchSize { get; init; } = 8;

    public TrainingMode Mode { get; init; } = TrainingMode.Full;

    /// <summary>σ-schedule shift of the training timesteps (spec: 5).</summary>
    public double Shift { get; init; } = 5.0;

    public LossWeighting Weighting { get; init; } = LossWeighting.Bell;

    /// <summary>Probability that a sample's prompt is dropped (the unconditional context, so CFG works at sampling).</summary>
    public double PromptDropout { get; init; } = 0.1;

    /// <summary>
    /// The training prompts to draw from (<see cref="PromptGrammar.Subset"/>); null = every training prompt. A curriculum's
    /// first stage trains on a subset.
    /// </summary>
    public IReadOnlyList<VideoPrompt>? Prompts { get; init; }

    /// <summary>Text of the subset filter, for the checkpoint's description (a resumed run must use the same).</summary>
    public string? PromptsFilter { get; init; }

    /// <summary>Seed of the data stream (prompts, render jitter), timesteps and noise.</summary>
    public ulong Seed { get; init; }

    public DitOptions DitOptions { get; init; } = new();
}

/// <summary>
/// Flow-matching training of a <see cref="VideoModel"/> on the procedural dataset (spec §2.6 objective): for sample i of
/// step s (index s·B + i) a training prompt and its render seed come from <see cref="PromptGrammar.Sample(long, long, IReadOnlyList{VideoPrompt})"/>, the
/// timestep from the training grid, the noise ε from <see cref="GaussianNoise"/>; x_t = (1−σ)x₀ + σε, target ε − x₀,
/// loss = mean over the batch of w(t)·mean((v̂ − target)²). Everything is a function of (seed, step), so a resumed run
/// repeats an uninterrupted one.
/// </summary>
public sealed class VideoTrainingTask : ITrainingTask, IDisposable
{
    private readonly VideoModel _model;
    private readonly VideoTrainingSettings _settings;
    private readonly Dit _dit;
    private readonly FlowMatchTrainingSchedule _schedule;
    private readonly Func<string, bool> _ditTrainable;
    private readonly bool _textTrainable;
    private readonly List<(string Name, Tensor Master)> _parameters = [];

    public VideoTrainingTask(VideoModel model, IBackend backend, VideoTrainingSettings settings)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.BatchSize < 1) throw new OpParameterException($"batch size must be at least 1, got {settings.BatchSize}");
        if (settings.PromptDropout is < 0 or > 1) throw new OpParameterException($"prompt dropout must be in [0, 1], got {settings.PromptDropout}");
        if (settings.Prompts is { } pool)
        {
            if (pool.Count == 0) throw new OpParameterException("the training prompt subset is empty");
            if (pool.FirstOrDefault(PromptGrammar.IsHeldOut) is { } heldOut)
                throw new OpParameterException($"the training prompt subset contains the held-out prompt \"{heldOut.Text}\"");
        }
        _model = model;
        _settings = settings;
        _schedule = FlowMatchScheduler.TrainingTimesteps(1000, settings.Shift);
        var specs = ParameterCatalog.List(model.Config).ToDictionary(s => s.Name);
        _ditTrainable = settings.Mode == TrainingMode.Full ? _ => true : name => specs[name].TrainableInLora;
        _textTrainable = settings.Mode == TrainingMode.Full;
        foreach (var spec in specs.Values)
            if (_ditTrainable(spec.Name)) _parameters.Add((spec.Name, model.DitWeights[spec.Name]));
        if (_textTrainable) _parameters.AddRange(model.TextEncoder.Parameters.Select(kv => (kv.Key, kv.Value)));
        if (_parameters.Count == 0)
            throw new UnsupportedConfigurationException("nothing to train: LoRA mode needs decomposed (UltraGen) blocks");
        _dit = new Dit(model.Config, backend, model.DitWeights, settings.DitOptions);
    }

    public IReadOnlyList<(string Name, Tensor Master)> Parameters => _parameters;

    /// <summary>A short description for the checkpoint's config string (resuming with different settings is refused).</summary>
    public string Describe() => FormattableString.Invariant(
        $"format {_settings.Format}, batch {_settings.BatchSize}, mode {_settings.Mode}, shift {_settings.Shift}, weighting {_settings.Weighting}, dropout {_settings.PromptDropout}, prompts {(_settings.Prompts is null ? "all" : $"{_settings.PromptsFilter ?? "subset"} ({_settings.Prompts.Count})")}, dim {_model.Config.Dim}, layers {_model.Config.Layers}, inputs {_model.Config.InChannels}, full blocks {_model.Config.FullAttentionBlocks}");

    /// <summary>The clean video and prompt of sample <paramref name="index"/> of the stream.</summary>
    public (VideoPrompt Prompt, float[] Video) Example(long index)
    {
        long seed = unchecked((long)_settings.Seed);
        var prompt = _settings.Prompts is { } pool ? PromptGrammar.Sample(seed, index, pool) : PromptGrammar.Sample(seed, index);
        var format = _settings.Format;
        return (prompt, ProceduralVideo.Render(prompt, format.Width, format.Height, format.Frames, PromptGrammar.SampleRenderSeed(seed, index)));
    }

    public double ComputeGradients(long step, IReadOnlyDictionary<string, Tensor> gradients)
    {
        int batch = _settings.BatchSize;
        var format = _settings.Format;
        int size = checked((int)format.ElementCount);
        var prompts = new string[batch];
        var sigmas = new double[batch];
        var weights = new double[batch];
        var noisy = new float[batch * size];
        using var timestep = Tensor.Host(DType.F32, batch);
        var target = new float[batch * size];
        var noise = new float[size];
        for (int b = 0; b < batch; b++)
        {
            long index = step * batch + b;
            var (prompt, video) = Example(index);
            bool dropped = UnitUniform(index, 0x64726f70 /* "drop" */) < _settings.PromptDropout;
            prompts[b] = dropped ? "" : prompt.Text;
            int k = _schedule.SampleIndex(_settings.Seed, index);
            sigmas[b] = _schedule.Sigmas[k];
            weights[b] = _settings.Weighting == LossWeighting.Bell ? _schedule.Weights[k] : 1.0;
            timestep.HostSpan<float>()[b] = (float)_schedule.Timesteps[k];
            GaussianNoise.Fill(noise, _settings.Seed, stream: unchecked((ulong)index) + 1);
            FlowMatchScheduler.NoisyInput(video, noise, sigmas[b], noisy.AsSpan(b * size, size));
            FlowMatchScheduler.VelocityTarget(video, noise, target.AsSpan(b * size, size));
        }

        using var latent = Tensor.Host(DType.F32, [batch, _model.Config.InChannels, format.Frames, format.Height, format.Width]);
        _model.AppendCoordinates(noisy, batch, format, latent.HostSpan<float>());
        var ids = _model.Tokenize(prompts);
        using var context = _model.TextEncoder.Forward(ids, batch);
        using var pass = _dit.ForwardForBackward(latent, timestep, context);
        var velocity = pass.Velocity.HostSpan<float>();
        using var dVelocity = Tensor.Host(DType.F32, format.Shape(batch));
        var dv = dVelocity.HostSpan<float>();
        double loss = 0;
        for (int b = 0; b < batch; b++)
        {
            var slice = dv.Slice(b * size, size);
            loss += FlowMatchingLoss.Compute(velocity.Slice(b * size, size), target.AsSpan(b * size, size), weights[b], slice) / batch;
            foreach (ref float g in slice) g /= batch;
        }

        using var grads = _dit.Backward(pass, dVelocity, _ditTrainable);
        foreach (var (name, gradient) in grads.Parameters) gradient.HostSpan<float>().CopyTo(gradients[name].HostSpan<float>());
        if (_textTrainable)
        {
            var dToken = gradients[Text.TextEncoder.TokenEmbeddingName];
            var dPosition = gradients[Text.TextEncoder.PositionEmbeddingName];
            dToken.HostSpan<float>().Clear();
            dPosition.HostSpan<float>().Clear();
            _model.TextEncoder.Backward(ids, batch, grads.Context, dToken, dPosition);
        }
        return loss;
    }

    private double UnitUniform(long index, ulong purpose) =>
        (GaussianNoise.Hash(_settings.Seed, unchecked((ulong)index), purpose) >> 11) * (1.0 / (1UL << 53));

    public void ParametersUpdated() => _dit.SetWeights(_parameters.Where(p => _model.DitWeights.ContainsKey(p.Name))
        .Select(p => new KeyValuePair<string, Tensor>(p.Name, p.Master)));

    public void Dispose() => _dit.Dispose();
}
