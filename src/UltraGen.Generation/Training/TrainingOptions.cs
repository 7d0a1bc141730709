namespace UltraGen.Generation.Training;

/// <summary>Everything <see cref="TrainingLoop"/> needs besides the task.</summary>
public sealed record TrainingOptions
{
    /// <summary>Run until this many updates have been applied (counting those of a resumed checkpoint).</summary>
    public required long TotalSteps { get; init; }

    /// <summary>
    /// End this session after this many completed steps (with a checkpoint) although the run is planned for
    /// <see cref="TotalSteps"/>; null runs to the end. The learning-rate schedule always spans TotalSteps, so training
    /// in sessions gives the same result as one session (stopping by lowering TotalSteps would change a cosine decay).
    /// </summary>
    public long? StopAtStep { get; init; }

    public required LearningRateSchedule LearningRate { get; init; }

    public AdamWSettings Optimizer { get; init; } = new();

    /// <summary>Global gradient-norm limit; null disables clipping (the norm is still logged).</summary>
    public double? MaxGradNorm { get; init; } = 1.0;

    /// <summary>Write a checkpoint after every this many completed steps (and always at the end and on cancel).</summary>
    public long CheckpointEvery { get; init; } = 500;

    /// <summary>Where checkpoints go; each one replaces the previous atomically.</summary>
    public required string CheckpointPath { get; init; }

    /// <summary>A checkpoint to resume from (often the same file as <see cref="CheckpointPath"/>); null starts at step 0.</summary>
    public string? ResumeFrom { get; init; }

    /// <summary>The CSV loss log (see <see cref="LossLog"/>); null writes none.</summary>
    public string? LossLogPath { get; init; }

    /// <summary>The run's seed, stored in the checkpoint and required to match on resume (the task draws its data from it).</summary>
    public ulong Seed { get; init; }

    /// <summary>
    /// A caller-defined description of everything that must not change across a resume (model config, data set,
    /// resolution, ...). Stored verbatim in the checkpoint and compared byte for byte on resume.
    /// </summary>
    public string Config { get; init; } = "";

    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegative(TotalSteps);
        if (StopAtStep is long stop) ArgumentOutOfRangeException.ThrowIfNegative(stop, nameof(StopAtStep));
        ArgumentNullException.ThrowIfNull(LearningRate);
        LearningRate.Validate();
        ArgumentNullException.ThrowIfNull(Optimizer);
        Optimizer.Validate();
        if (MaxGradNorm is double limit && !(limit > 0))
            throw new ArgumentOutOfRangeException(nameof(MaxGradNorm), limit, "the clipping norm must be positive");
        ArgumentOutOfRangeException.ThrowIfLessThan(CheckpointEvery, 1);
        ArgumentException.ThrowIfNullOrEmpty(CheckpointPath);
        ArgumentNullException.ThrowIfNull(Config);
    }
}

/// <summary>What the loop reports after each step; the CLI turns it into a progress line.</summary>
/// <param name="Step">Completed steps (1-based number of the step just done).</param>
/// <param name="TotalSteps">The run's target step count.</param>
/// <param name="Loss">The step's loss as the task returned it.</param>
/// <param name="GradNorm">Global gradient norm before clipping.</param>
/// <param name="LearningRate">The rate the update used.</param>
/// <param name="StepsPerSecond">Average rate over the steps this session ran.</param>
/// <param name="Eta">Time left to TotalSteps at that rate.</param>
public sealed record TrainingProgress(long Step, long TotalSteps, double Loss, double GradNorm, double LearningRate,
    double StepsPerSecond, TimeSpan Eta);

/// <summary>How a completed run went.</summary>
/// <param name="StartStep">Completed steps when the run began (the resumed checkpoint's step, or 0).</param>
/// <param name="CompletedSteps">Completed steps at the end (TotalSteps, or StopAtStep if that came first).</param>
/// <param name="LastLoss">The loss of the last step this run took; null if it took none.</param>
public sealed record TrainingResult(long StartStep, long CompletedSteps, double? LastLoss);
