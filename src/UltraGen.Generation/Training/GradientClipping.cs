using System.Numerics;
using UltraGen.Core;

namespace UltraGen.Generation.Training;

/// <summary>
/// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_: the L2 norm over all gradients together, and if it
/// exceeds the limit every gradient is scaled by limit / (norm + 1e-6).
/// </summary>
public static class GradientClipping
{
    /// <summary>
    /// Clips <paramref name="gradients"/> (host f32) in place to global norm <paramref name="maxNorm"/> and returns
    /// the norm before clipping. A non-finite norm is returned without touching the gradients (the caller decides).
    /// </summary>
    public static double ClipByGlobalNorm(IEnumerable<Tensor> gradients, double maxNorm)
    {
        ArgumentNullException.ThrowIfNull(gradients);
        if (!(maxNorm > 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "the clipping norm must be positive");
        var list = gradients as IReadOnlyList<Tensor> ?? gradients.ToList();
        double norm = GlobalNorm(list);
        if (!double.IsFinite(norm)) return norm;
        double coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
        {
            float scale = (float)coefficient;
            foreach (var gradient in list) Scale(gradient.HostSpan<float>(), scale);
        }
        return norm;
    }

    private static void Scale(Span<float> values, float scale)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var factor = new Vector<float>(scale);
            for (; i <= values.Length - Vector<float>.Count; i += Vector<float>.Count)
                (new Vector<float>(values[i..]) * factor).CopyTo(values[i..]);
        }
        for (; i < values.Length; i++) values[i] *= scale;
    }

    /// <summary>√(Σ g²) over every element of every gradient, accumulated in double in a fixed order.</summary>
    public static double GlobalNorm(IEnumerable<Tensor> gradients)
    {
        ArgumentNullException.ThrowIfNull(gradients);
        double sum = 0;
        foreach (var gradient in gradients) sum += SumOfSquares(gradient.HostSpan<float>());
        return Math.Sqrt(sum);
    }

    /// <summary>
    /// Σ x² in double with eight interleaved accumulators (fast on one core, and the same bits on every machine
    /// because the order does not depend on the vector width).
    /// </summary>
    public static double SumOfSquares(ReadOnlySpan<float> values)
    {
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        int i = 0;
        for (; i <= values.Length - 8; i += 8)
        {
            double x0 = values[i], x1 = values[i + 1], x2 = values[i + 2], x3 = values[i + 3];
            double x4 = values[i + 4], x5 = values[i + 5], x6 = values[i + 6], x7 = values[i + 7];
            a0 += x0 * x0; a1 += x1 * x1; a2 += x2 * x2; a3 += x3 * x3;
            a4 += x4 * x4; a5 += x5 * x5; a6 += x6 * x6; a7 += x7 * x7;
        }
        for (; i < values.Length; i++) a0 += (double)values[i] * values[i];
        return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    }
}
