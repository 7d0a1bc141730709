using System.Numerics;
using UltraGen.Core;

namespace UltraGen.Generation.Sampling;

/// <summary>
/// The rectified-flow sampler UltraGen uses (spec §2.6; DiffSynth's <c>FlowMatchScheduler</c> constructed with
/// <c>shift=5, sigma_min=0, sigma_max=1, extra_one_step=True, num_train_timesteps=1000</c>): a shifted σ grid, Euler
/// steps on the predicted velocity, and classifier-free guidance. The model sees <c>t = 1000·σ'</c>; the latent moves
/// along <c>dx/dσ' = v</c> from pure noise at σ' = 1 to data at σ' = 0.
/// </summary>
/// <remarks>
/// The grid is computed in double (DiffSynth computes it in float32 tensors; the two agree to ~1e-7 relative, far
/// below the bf16 rounding the timestep later gets in the model, spec §4.11). Only <c>extra_one_step=True</c> is
/// supported because that is the only mode the spec's pipeline uses.
/// </remarks>
public sealed class FlowMatchScheduler
{
    private double[] _sigmas = [0.0];
    private double[] _timesteps = [];

    public FlowMatchScheduler(double shift = 5.0, double sigmaMin = 0.0, double sigmaMax = 1.0, int trainTimestepCount = 1000)
    {
        ValidateShift(shift);
        if (!(sigmaMin >= 0 && sigmaMin < sigmaMax && sigmaMax <= 1))
            throw new ArgumentOutOfRangeException(nameof(sigmaMin), $"need 0 ≤ sigma_min < sigma_max ≤ 1, got {sigmaMin}, {sigmaMax}");
        ArgumentOutOfRangeException.ThrowIfLessThan(trainTimestepCount, 1);
        Shift = shift;
        SigmaMin = sigmaMin;
        SigmaMax = sigmaMax;
        TrainTimestepCount = trainTimestepCount;
    }

    /// <summary>The σ shift last used (5 for UltraGen); larger values spend more steps at high noise.</summary>
    public double Shift { get; private set; }

    public double SigmaMin { get; }

    public double SigmaMax { get; }

    /// <summary>t = <see cref="TrainTimestepCount"/>·σ' (1000): the scale of the timestep the DiT embeds.</summary>
    public int TrainTimestepCount { get; }

    /// <summary>Number of Euler steps of the current grid (0 until <see cref="SetTimesteps"/>).</summary>
    public int StepCount => _timesteps.Length;

    /// <summary>σ'_0 … σ'_S: the S shifted noise levels followed by the appended σ'_S = 0 the last step lands on.</summary>
    public IReadOnlyList<double> Sigmas => _sigmas;

    /// <summary>t_0 … t_{S−1} = 1000·σ'_j, the timesteps the DiT is evaluated at.</summary>
    public IReadOnlyList<double> Timesteps => _timesteps;

    /// <summary>
    /// Builds the inference grid: σ_j = linspace(σ_max, σ_min, S+1)[:S], σ'_j = shift·σ_j / (1 + (shift−1)·σ_j),
    /// t_j = 1000·σ'_j, and σ'_S = 0 appended (DiffSynth's <c>step</c> goes to 0 after the last timestep).
    /// </summary>
    public void SetTimesteps(int steps, double? shift = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        if (shift is double s)
        {
            ValidateShift(s);
            Shift = s;
        }
        var sigmas = ShiftedSigmas(steps, Shift, SigmaMin, SigmaMax);
        _timesteps = Array.ConvertAll(sigmas, sigma => sigma * TrainTimestepCount);
        _sigmas = [.. sigmas, 0.0];
    }

    /// <summary>
    /// One Euler step of the probability-flow ODE: x ← x + v·(σ'_{j+1} − σ'_j), with v the (guided) velocity the DiT
    /// predicted at t_j. The σ difference is formed in double and rounded once to float.
    /// </summary>
    public void EulerStep(Span<float> x, ReadOnlySpan<float> velocity, int stepIndex)
    {
        if ((uint)stepIndex >= (uint)StepCount)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), $"step {stepIndex} is outside 0..{StepCount - 1} (call SetTimesteps first)");
        RequireSameLength(x.Length, velocity.Length, nameof(velocity));
        float dt = (float)(_sigmas[stepIndex + 1] - _sigmas[stepIndex]);
        AddScaled(x, velocity, dt);
    }

    /// <summary>
    /// Classifier-free guidance: destination = vNeg + cfg·(vPos − vNeg) (cfg = 5 for UltraGen). The destination may
    /// alias either input.
    /// </summary>
    public static void Guidance(ReadOnlySpan<float> positive, ReadOnlySpan<float> negative, float cfg, Span<float> destination)
    {
        RequireSameLength(positive.Length, negative.Length, nameof(negative));
        RequireSameLength(positive.Length, destination.Length, nameof(destination));
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var scale = new Vector<float>(cfg);
            for (; i <= positive.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var pos = new Vector<float>(positive[i..]);
                var neg = new Vector<float>(negative[i..]);
                (neg + scale * (pos - neg)).CopyTo(destination[i..]);
            }
        }
        for (; i < positive.Length; i++) destination[i] = negative[i] + cfg * (positive[i] - negative[i]);
    }

    /// <summary>
    /// The training grid (spec §2.6; DiffSynth <c>set_timesteps(1000, training=True)</c>): the same shifted σ' as
    /// inference with <paramref name="count"/> steps, t_k = 1000·σ'_k, and the per-timestep loss weight.
    /// </summary>
    public static FlowMatchTrainingSchedule TrainingTimesteps(int count = 1000, double shift = 5.0,
        double sigmaMin = 0.0, double sigmaMax = 1.0, int trainTimestepCount = 1000)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 2);
        ValidateShift(shift);
        var sigmas = ShiftedSigmas(count, shift, sigmaMin, sigmaMax);
        var timesteps = Array.ConvertAll(sigmas, sigma => sigma * trainTimestepCount);
        return new FlowMatchTrainingSchedule(sigmas, timesteps, BellWeights(timesteps, count));
    }

    /// <summary>
    /// DiffSynth's "bsmntw" weight: y_k = exp(−2((t_k − n/2)/n)²) over the n training timesteps t_k (the shifted ones,
    /// not the integers 0..n−1), minus min_k y_k, scaled so the n weights average exactly 1. With n = 1000 the centre
    /// and width are 500 and 1000 as the spec writes them; DiffSynth takes both from n, and so does this.
    /// </summary>
    /// <remarks>
    /// Consequence worth knowing: on the shift-5 grid the minimum sits at t_0 = 1000 (pure noise), whose weight is
    /// exactly 0, and the weight peaks near t = 500 (k = 833) at about 2.08, because most of the shifted grid sits at
    /// high t where the bell is low and the mean is pinned to 1.
    /// </remarks>
    public static double[] BellWeights(ReadOnlySpan<double> timesteps, int n)
    {
        var weights = new double[timesteps.Length];
        double min = double.PositiveInfinity;
        for (int k = 0; k < timesteps.Length; k++)
        {
            double z = (timesteps[k] - n / 2.0) / n;
            weights[k] = Math.Exp(-2 * z * z);
            min = Math.Min(min, weights[k]);
        }
        double sum = 0;
        for (int k = 0; k < weights.Length; k++) sum += weights[k] -= min;
        if (!(sum > 0))
            throw new UnsupportedConfigurationException("the training timesteps are all equal; the bell weight is undefined");
        double scale = weights.Length / sum;
        for (int k = 0; k < weights.Length; k++) weights[k] *= scale;
        return weights;
    }

    /// <summary>
    /// The noisy latent the DiT is trained on: destination = (1−σ)·x0 + σ·ε (σ = 0 is data, σ = 1 pure noise).
    /// The destination may alias either input.
    /// </summary>
    public static void NoisyInput(ReadOnlySpan<float> x0, ReadOnlySpan<float> noise, double sigma, Span<float> destination)
    {
        RequireSameLength(x0.Length, noise.Length, nameof(noise));
        RequireSameLength(x0.Length, destination.Length, nameof(destination));
        float s = (float)sigma, keep = (float)(1 - sigma);
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            for (; i <= x0.Length - Vector<float>.Count; i += Vector<float>.Count)
                (keep * new Vector<float>(x0[i..]) + s * new Vector<float>(noise[i..])).CopyTo(destination[i..]);
        }
        for (; i < x0.Length; i++) destination[i] = keep * x0[i] + s * noise[i];
    }

    /// <summary>The velocity target of rectified flow: destination = ε − x0 (d x_σ / dσ; independent of σ).</summary>
    public static void VelocityTarget(ReadOnlySpan<float> x0, ReadOnlySpan<float> noise, Span<float> destination)
    {
        RequireSameLength(x0.Length, noise.Length, nameof(noise));
        RequireSameLength(x0.Length, destination.Length, nameof(destination));
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            for (; i <= x0.Length - Vector<float>.Count; i += Vector<float>.Count)
                (new Vector<float>(noise[i..]) - new Vector<float>(x0[i..])).CopyTo(destination[i..]);
        }
        for (; i < x0.Length; i++) destination[i] = noise[i] - x0[i];
    }

    /// <summary>σ'_j for j = 0..S−1: linspace(σ_max, σ_min, S+1) without its last point, then shifted.</summary>
    private static double[] ShiftedSigmas(int steps, double shift, double sigmaMin, double sigmaMax)
    {
        var sigmas = new double[steps];
        for (int j = 0; j < steps; j++)
        {
            double sigma = sigmaMax + (sigmaMin - sigmaMax) * j / steps;
            sigmas[j] = shift * sigma / (1 + (shift - 1) * sigma);
        }
        return sigmas;
    }

    private static void AddScaled(Span<float> x, ReadOnlySpan<float> v, float scale)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var s = new Vector<float>(scale);
            for (; i <= x.Length - Vector<float>.Count; i += Vector<float>.Count)
                (new Vector<float>(x[i..]) + new Vector<float>(v[i..]) * s).CopyTo(x[i..]);
        }
        for (; i < x.Length; i++) x[i] += v[i] * scale;
    }

    private static void ValidateShift(double shift)
    {
        if (!(shift > 0 && double.IsFinite(shift)))
            throw new ArgumentOutOfRangeException(nameof(shift), shift, "shift must be a positive finite number");
    }

    private static void RequireSameLength(int expected, int actual, string name)
    {
        if (expected != actual)
            throw new ShapeMismatchException($"{name} has {actual} elements, expected {expected}");
    }
}

/// <summary>
/// The 1000-point training grid: σ'_k, t_k = 1000·σ'_k and the loss weight w_k (mean 1). A training step draws k
/// uniformly, builds <see cref="FlowMatchScheduler.NoisyInput"/> at σ'_k, feeds t_k to the DiT and scales the MSE
/// against <see cref="FlowMatchScheduler.VelocityTarget"/> by w_k.
/// </summary>
public sealed class FlowMatchTrainingSchedule
{
    private readonly double[] _sigmas, _timesteps, _weights;

    internal FlowMatchTrainingSchedule(double[] sigmas, double[] timesteps, double[] weights)
    {
        _sigmas = sigmas;
        _timesteps = timesteps;
        _weights = weights;
    }

    public int Count => _sigmas.Length;

    public IReadOnlyList<double> Sigmas => _sigmas;

    public IReadOnlyList<double> Timesteps => _timesteps;

    public IReadOnlyList<double> Weights => _weights;

    /// <summary>
    /// A uniform index in 0..Count−1 that depends only on (seed, step), so a resumed run draws the same timesteps as an
    /// uninterrupted one.
    /// </summary>
    public int SampleIndex(ulong seed, long step) =>
        (int)(GaussianNoise.Hash(seed, unchecked((ulong)step), 0x7469_6D65_7374_6570UL /* "timestep" */) % (ulong)Count);
}
