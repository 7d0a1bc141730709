using UltraGen.Core;

namespace UltraGen.Generation.Training;

/// <summary>
/// What <see cref="TrainingLoop"/> trains: a set of host f32 master weights and a way to get the loss and gradients
/// for a step. The loop owns optimisation, clipping, logging and checkpoints; the task owns the model, the backend and
/// the data. For exact resumption, everything a step computes must be a function of the master weights and the step
/// number (data, timestep and noise drawn from (seed, step), e.g. with GaussianNoise streams).
/// </summary>
public interface ITrainingTask
{
    /// <summary>The trainable master weights (host f32, unique names), in a fixed order. The loop updates them in place.</summary>
    IReadOnlyList<(string Name, Tensor Master)> Parameters { get; }

    /// <summary>
    /// Computes the loss of step <paramref name="step"/> (0-based) at the current master weights and writes the
    /// gradient of every parameter into <paramref name="gradients"/> (host f32 tensors shaped like the parameters,
    /// keyed by name; their previous contents are NaN, so every element must be written). Returns the loss.
    /// </summary>
    double ComputeGradients(long step, IReadOnlyDictionary<string, Tensor> gradients);

    /// <summary>The master weights changed (after an update or a checkpoint load); a device model re-uploads them.</summary>
    void ParametersUpdated();
}
