namespace UltraGen.Generation.Training;

/// <summary>
/// Learning rate per step: linear warm-up from peak/W to the peak over the first W steps, then constant, or (with
/// <see cref="CosineDecay"/>) a half cosine from the peak down to <see cref="Minimum"/> at the last step.
/// </summary>
/// <param name="Peak">The learning rate after warm-up (1e-4 in UltraGen's run.sh).</param>
/// <param name="WarmupSteps">Steps of linear warm-up; 0 starts at the peak.</param>
/// <param name="CosineDecay">Decay after warm-up instead of holding the peak.</param>
/// <param name="Minimum">Where the cosine ends.</param>
public sealed record LearningRateSchedule(double Peak, long WarmupSteps = 0, bool CosineDecay = false, double Minimum = 0)
{
    public void Validate()
    {
        if (!(Peak > 0 && double.IsFinite(Peak))) throw new ArgumentOutOfRangeException(nameof(Peak), Peak, "the learning rate must be positive");
        ArgumentOutOfRangeException.ThrowIfNegative(WarmupSteps);
        if (!(Minimum >= 0 && Minimum <= Peak))
            throw new ArgumentOutOfRangeException(nameof(Minimum), Minimum, "the minimum learning rate must be in [0, peak]");
    }

    /// <summary>
    /// The rate of step <paramref name="step"/> (0-based) of a run of <paramref name="totalSteps"/>. The cosine spans
    /// the steps after warm-up, so step totalSteps−1 gets exactly <see cref="Minimum"/>.
    /// </summary>
    public double At(long step, long totalSteps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        if (!CosineDecay) return Peak;
        long decaySteps = totalSteps - WarmupSteps - 1;
        if (decaySteps <= 0) return Peak;
        double progress = Math.Min(1.0, (double)(step - WarmupSteps) / decaySteps);
        return Minimum + (Peak - Minimum) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>One line for checkpoint metadata (informational: the schedule may change on resume).</summary>
    public string Describe() => FormattableString.Invariant(
        $"peak={Peak:R} warmup={WarmupSteps} cosine={(CosineDecay ? "true" : "false")} min={Minimum:R}");
}
