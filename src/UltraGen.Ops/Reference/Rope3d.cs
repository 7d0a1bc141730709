using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// Wan's 3-D rotary position embedding on one head vector (spec §1.5), in float64 as the reference computes it.
/// </summary>
/// <remarks>
/// The head dim d (even, ≥ 6) is cut into three consecutive real slices: time dT = d − 4·⌊d/6⌋, height dH = 2·⌊d/6⌋,
/// width dW = 2·⌊d/6⌋ (d = 128: 44/42/42; d = 64: 24/20/20). Inside the slice of an axis of size dA, the real pair
/// (2j, 2j+1) is the complex number x₀ + i·x₁ and is multiplied by e^{i·pos·ω_j} with ω_j = θ^(−2j/dA), θ = 10000, where pos
/// is the token's coordinate on that axis. This is Wan's <c>rope_params(1024, d − 4·(d//6))</c> and
/// <c>rope_params(1024, 2·(d//6))</c> table followed by <c>rope_apply</c>.
/// </remarks>
public static class Rope3d
{
    /// <summary>Wan's RoPE base.</summary>
    public const double DefaultTheta = 10000;

    /// <summary>
    /// Real dims given to time, height and width for head dim <paramref name="headDim"/>. Throws
    /// <see cref="UnsupportedConfigurationException"/> unless the head dim is even and at least 6.
    /// </summary>
    public static (int TimeDims, int HeightDims, int WidthDims) Split(int headDim)
    {
        if (headDim < 6 || headDim % 2 != 0)
            throw new UnsupportedConfigurationException(
                $"3-D RoPE needs an even head dim of at least 6 (time/height/width pairs), got head dim {headDim}");
        int spatial = 2 * (headDim / 6);
        return (headDim - 2 * spatial, spatial, spatial);
    }

    /// <summary>Rotates <paramref name="headVector"/> in place for the token at (t, row, col).</summary>
    public static void Apply(Span<double> headVector, int t, int row, int col, double theta = DefaultTheta) =>
        Rotate(headVector, t, row, col, theta, +1.0);

    /// <summary>
    /// The inverse rotation (by −angle, the transpose of <see cref="Apply"/>): maps a gradient with respect to the rotated
    /// vector to the gradient with respect to the vector before rotation.
    /// </summary>
    public static void ApplyInverse(Span<double> headVector, int t, int row, int col, double theta = DefaultTheta) =>
        Rotate(headVector, t, row, col, theta, -1.0);

    private static void Rotate(Span<double> v, int t, int row, int col, double theta, double sign)
    {
        var (timeDims, heightDims, widthDims) = Split(v.Length);
        RotateAxis(v.Slice(0, timeDims), t, theta, sign);
        RotateAxis(v.Slice(timeDims, heightDims), row, theta, sign);
        RotateAxis(v.Slice(timeDims + heightDims, widthDims), col, theta, sign);
    }

    private static void RotateAxis(Span<double> slice, int position, double theta, double sign)
    {
        int axisDims = slice.Length;
        for (int j = 0; j < axisDims / 2; j++)
        {
            // Wan: freqs = outer(pos, 1 / θ^(arange(0, dA, 2) / dA)) in float64.
            double inverseFrequency = 1.0 / Math.Pow(theta, (double)(2 * j) / axisDims);
            double angle = position * inverseFrequency;
            double cos = Math.Cos(angle), sin = sign * Math.Sin(angle);
            double x0 = slice[2 * j], x1 = slice[2 * j + 1];
            slice[2 * j] = x0 * cos - x1 * sin;
            slice[2 * j + 1] = x0 * sin + x1 * cos;
        }
    }
}
