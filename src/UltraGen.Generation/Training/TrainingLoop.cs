using System.Diagnostics;
using UltraGen.Core;

namespace UltraGen.Generation.Training;

/// <summary>
/// Runs training steps of an <see cref="ITrainingTask"/>: gradients → global-norm clipping → AdamW at the scheduled
/// learning rate → task notified; then a loss-log line, a progress report, and a checkpoint every K steps, at the end
/// and on cancellation. Resuming from a checkpoint into fresh objects continues bit-identically, provided the task is
/// a deterministic function of (weights, step).
/// </summary>
public sealed class TrainingLoop
{
    private readonly ITrainingTask _task;

    public TrainingLoop(ITrainingTask task, TrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _task = task;
        Options = options;
    }

    public TrainingOptions Options { get; }

    /// <summary>
    /// Trains from the resumed step (or 0) to <see cref="TrainingOptions.TotalSteps"/> (or
    /// <see cref="TrainingOptions.StopAtStep"/>). Cancellation is checked between
    /// steps; when it fires, a checkpoint is written and <see cref="TrainingCanceledException"/> thrown. Any other
    /// exception (from the task, or <see cref="TrainingDivergedException"/>) propagates without a new checkpoint, so
    /// the last one written stays the resume point.
    /// </summary>
    public TrainingResult Run(Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var parameters = _task.Parameters ?? throw new InvalidOperationException("the task returned no parameter list");
        using var optimizer = new AdamW(parameters, Options.Optimizer);
        long startStep = 0;
        if (Options.ResumeFrom is string resumeFrom)
        {
            startStep = Checkpoint.Load(resumeFrom, optimizer, Options.Seed, Options.Config);
            _task.ParametersUpdated();
        }

        var gradients = new Dictionary<string, Tensor>(parameters.Count, StringComparer.Ordinal);
        using var lossLog = Options.LossLogPath is string logPath ? LossLog.Open(logPath, startStep) : null;
        try
        {
            var gradientList = new List<Tensor>(parameters.Count); // parameter order: the norm is summed in a fixed order
            foreach (var (name, master) in parameters)
            {
                var gradient = Tensor.Host(DType.F32, master.ShapeArray);
                gradients.Add(name, gradient);
                gradientList.Add(gradient);
            }
            // The step already saved at CheckpointPath (a cancel before any step need not rewrite it).
            bool resumedInPlace = Options.ResumeFrom is string from && Path.GetFullPath(from) == Path.GetFullPath(Options.CheckpointPath);
            long completed = startStep, lastCheckpoint = resumedInPlace ? startStep : -1;
            double? lastLoss = null;
            long endStep = Math.Min(Options.TotalSteps, Options.StopAtStep ?? long.MaxValue);
            var session = Stopwatch.StartNew();
            for (long step = startStep; step < endStep; step++)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (lastCheckpoint != completed) Save(optimizer, completed);
                    throw new TrainingCanceledException(completed, Options.CheckpointPath, cancellationToken);
                }
                long stepStart = Stopwatch.GetTimestamp();
                foreach (var gradient in gradientList) gradient.HostSpan<float>().Fill(float.NaN); // catches unwritten gradients
                double loss = _task.ComputeGradients(step, gradients);
                double norm = Options.MaxGradNorm is double limit
                    ? GradientClipping.ClipByGlobalNorm(gradientList, limit)
                    : GradientClipping.GlobalNorm(gradientList);
                if (!double.IsFinite(loss) || !double.IsFinite(norm)) throw new TrainingDivergedException(step, loss, norm);
                double learningRate = Options.LearningRate.At(step, Options.TotalSteps);
                optimizer.Step(gradients, learningRate);
                _task.ParametersUpdated();
                completed = step + 1;
                lastLoss = loss;
                double seconds = Stopwatch.GetElapsedTime(stepStart).TotalSeconds;

                lossLog?.Append(completed, loss, norm, learningRate, seconds);
                if (completed % Options.CheckpointEvery == 0 || completed == endStep)
                {
                    Save(optimizer, completed);
                    lastCheckpoint = completed;
                }
                if (progress is not null)
                {
                    double rate = (completed - startStep) / Math.Max(session.Elapsed.TotalSeconds, 1e-9);
                    var eta = TimeSpan.FromSeconds(Math.Min((Options.TotalSteps - completed) / rate, TimeSpan.MaxValue.TotalSeconds / 2));
                    progress(new TrainingProgress(completed, Options.TotalSteps, loss, norm, learningRate, rate, eta));
                }
            }
            return new TrainingResult(startStep, completed, lastLoss);
        }
        finally
        {
            foreach (var gradient in gradients.Values) gradient.Dispose();
        }
    }

    private void Save(AdamW optimizer, long completedSteps) =>
        Checkpoint.Save(Options.CheckpointPath, optimizer, completedSteps, Options.Seed, Options.Config, Options.LearningRate);
}
