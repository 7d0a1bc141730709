using UltraGen.Core;

namespace UltraGen.Generation.Training;

/// <summary>
/// A training checkpoint cannot be resumed into this run: it is not a training checkpoint, or its config string,
/// seed, optimizer settings, tensor names, dtypes or shapes differ from the run's. Nothing was modified when this is
/// thrown. (A file that is not valid safetensors at all raises <see cref="SafetensorsFormatException"/>.)
/// </summary>
public class CheckpointMismatchException : UltraGenException
{
    public string FilePath { get; }

    /// <summary>The tensor involved, if the problem is about one.</summary>
    public string? TensorName { get; }

    public CheckpointMismatchException(string filePath, string? tensorName, string problem)
        : base(tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}")
    {
        FilePath = filePath;
        TensorName = tensorName;
    }
}

/// <summary>
/// A training step produced a non-finite loss or gradient norm; the update was not applied, so the weights are
/// those after the previous step (and the last checkpoint is intact).
/// </summary>
public class TrainingDivergedException : UltraGenException
{
    /// <summary>The 0-based index of the step that failed (the number of completed steps before it).</summary>
    public long Step { get; }

    public TrainingDivergedException(long step, double loss, double gradientNorm)
        : base($"training step {step + 1} produced loss {loss} and gradient norm {gradientNorm}; the update was skipped and training stopped")
    {
        Step = step;
    }
}

/// <summary>
/// Training stopped because its cancellation token fired; a checkpoint of <see cref="CompletedSteps"/> steps was
/// written to <see cref="CheckpointPath"/> first, so resuming from it continues exactly where this run stopped.
/// </summary>
public class TrainingCanceledException : OperationCanceledException
{
    public long CompletedSteps { get; }

    public string CheckpointPath { get; }

    public TrainingCanceledException(long completedSteps, string checkpointPath, CancellationToken token)
        : base($"training canceled after {completedSteps} steps; checkpoint at {checkpointPath}", token)
    {
        CompletedSteps = completedSteps;
        CheckpointPath = checkpointPath;
    }
}
