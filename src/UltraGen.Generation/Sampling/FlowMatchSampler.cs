using UltraGen.Core;

namespace UltraGen.Generation.Sampling;

/// <summary>One step of a running sampler, for progress bars.</summary>
public sealed record SampleProgress(int Step, int Steps, double Timestep, TimeSpan Elapsed);

/// <summary>
/// The DiT's velocity for the sampler's current latent <c>x</c> at timestep <c>t</c>: a host f32 tensor whose first
/// |x| values are the positive prompt's velocity and, when guided, the next |x| the negative prompt's (one batch of 2).
/// The sampler disposes it.
/// </summary>
public delegate Tensor BatchVelocity(ReadOnlySpan<float> x, float timestep);

/// <summary>
/// The Euler loop of spec §2.6, shared by every sampler (pixel-space <see cref="Pipeline.VideoSampler"/>, latent
/// <see cref="Latent.LatentSampler"/>): for each step j of the shifted σ grid, the model's velocities at t_j, classifier-free
/// guidance v = v_neg + cfg·(v_pos − v_neg) when cfg ≠ 1, and x ← x + v·(σ'_{j+1} − σ'_j). What the model is and how its
/// input is built is the caller's <see cref="BatchVelocity"/>.
/// </summary>
public static class FlowMatchSampler
{
    /// <summary>Whether <paramref name="cfg"/> needs the negative prompt (a batch of 2 per step); cfg = 1 is the positive prompt alone.</summary>
    public static bool IsGuided(double cfg) => cfg != 1.0;

    /// <summary>Rejects step counts below 1, a negative or non-finite cfg and a non-positive or non-finite shift, naming the value.</summary>
    public static void Validate(int steps, double cfg, double shift)
    {
        if (steps < 1) throw new OpParameterException($"steps must be at least 1, got {steps}");
        if (!(cfg >= 0) || double.IsInfinity(cfg)) throw new OpParameterException($"cfg must be a finite number ≥ 0, got {cfg}");
        if (!(shift > 0) || double.IsInfinity(shift)) throw new OpParameterException($"shift must be a finite number > 0, got {shift}");
    }

    /// <summary>
    /// Integrates <paramref name="x"/> (the initial noise, updated in place) from σ' = 1 to 0 in <paramref name="steps"/>
    /// Euler steps of the shift-<paramref name="shift"/> grid.
    /// </summary>
    public static void Run(float[] x, int steps, double cfg, double shift, BatchVelocity velocity,
        Action<SampleProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(velocity);
        Validate(steps, cfg, shift);
        bool guided = IsGuided(cfg);
        int size = x.Length;
        var scheduler = new FlowMatchScheduler(shift);
        scheduler.SetTimesteps(steps, shift);
        var guidedVelocity = new float[size];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int j = 0; j < steps; j++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var batch = velocity(x, (float)scheduler.Timesteps[j]);
            var v = batch.HostSpan<float>();
            if (v.Length != (guided ? 2 : 1) * size)
                throw new ShapeMismatchException($"sampler: the model returned {v.Length} velocity values, expected {(guided ? 2 : 1)}×{size}");
            if (guided) FlowMatchScheduler.Guidance(v[..size], v.Slice(size, size), (float)cfg, guidedVelocity);
            else v[..size].CopyTo(guidedVelocity);
            scheduler.EulerStep(x, guidedVelocity, j);
            progress?.Invoke(new SampleProgress(j + 1, steps, scheduler.Timesteps[j], clock.Elapsed));
        }
    }
}
