using UltraGen.Core;

namespace UltraGen.Generation.Training;

/// <summary>
/// The flow-matching training loss (spec §2.6): loss = w·mean((v̂ − v)²) with v = ε − x0 and w the timestep's bell
/// weight, and its gradient w.r.t. the prediction, dloss/dv̂ = 2w(v̂ − v)/N, which is what the DiT's backward starts from.
/// Accumulated in double: with N in the millions (a 1080P latent is 2.7M values) f32 sums lose digits.
/// </summary>
public static class FlowMatchingLoss
{
    /// <summary>The weighted MSE; fills <paramref name="gradient"/> (same length, may alias neither input) with dloss/dv̂.</summary>
    public static double Compute(ReadOnlySpan<float> predicted, ReadOnlySpan<float> target, double weight, Span<float> gradient)
    {
        Validate(predicted, target, weight);
        if (gradient.Length != predicted.Length)
            throw new ShapeMismatchException($"gradient has {gradient.Length} elements, expected {predicted.Length}");
        double sum = 0;
        double scale = 2 * weight / predicted.Length;
        for (int i = 0; i < predicted.Length; i++)
        {
            double difference = (double)predicted[i] - target[i];
            sum += difference * difference;
            gradient[i] = (float)(scale * difference);
        }
        return weight * sum / predicted.Length;
    }

    /// <summary>The weighted MSE alone (validation, logging).</summary>
    public static double Compute(ReadOnlySpan<float> predicted, ReadOnlySpan<float> target, double weight)
    {
        Validate(predicted, target, weight);
        double sum = 0;
        for (int i = 0; i < predicted.Length; i++)
        {
            double difference = (double)predicted[i] - target[i];
            sum += difference * difference;
        }
        return weight * sum / predicted.Length;
    }

    private static void Validate(ReadOnlySpan<float> predicted, ReadOnlySpan<float> target, double weight)
    {
        if (predicted.Length != target.Length)
            throw new ShapeMismatchException($"prediction has {predicted.Length} elements, target {target.Length}");
        if (predicted.IsEmpty) throw new ShapeMismatchException("the loss of an empty prediction is undefined");
        if (!(weight >= 0 && double.IsFinite(weight)))
            throw new ArgumentOutOfRangeException(nameof(weight), weight, "the loss weight must be finite and ≥ 0");
    }
}
