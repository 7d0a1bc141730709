using UltraGen.Core;
using UltraGen.Generation.Video;

namespace UltraGen.Generation.Eval;

/// <summary>HD-MSE of one video: the total, the factors that entered it, and each factor's share.</summary>
/// <param name="Value">Σ over <paramref name="Factors"/> of the per-factor MSE (each averaged over frames).</param>
/// <param name="Factors">Downsampling factors used (those that divide both sides).</param>
/// <param name="SkippedFactors">Requested factors that were skipped because they do not divide the frame.</param>
/// <param name="PerFactor">MSE per used factor, in the order of <paramref name="Factors"/>.</param>
public sealed record HdMseResult(double Value, IReadOnlyList<int> Factors, IReadOnlyList<int> SkippedFactors, IReadOnlyList<double> PerFactor)
{
    public override string ToString() =>
        $"HD-MSE {Value:F2} over factors {string.Join("/", Factors)}" +
        (SkippedFactors.Count > 0 ? $" (skipped {string.Join("/", SkippedFactors)})" : "");
}

/// <summary>
/// HD-MSE (spec §3.4, UltraGen paper §5.1): how much of a video lives above the frequencies a 8/16/32× smaller video can
/// hold — higher means more high-frequency detail (and, as the spec notes, noise counts too).
/// </summary>
/// <remarks>
/// The paper leaves the details open; the choices here:
/// <list type="bullet">
/// <item>Pixels on the 0–255 scale of the video as written to disk: each value is mapped by
/// <see cref="RgbVideo.ToByte"/> (clamped to [0, 255] and rounded), so the metric sees exactly what a viewer sees;
/// the paper's magnitudes (≈ 30–390) fit this scale.</item>
/// <item>Down: box (area) averaging over k×k blocks, k ∈ {8, 16, 32} by default. A factor that does not divide both
/// the height and the width (which includes any factor larger than a side, leaving &lt; 1 pixel) is skipped and
/// reported in <see cref="HdMseResult.SkippedFactors"/>; at 64×64 all three are used (8×8, 4×4, 2×2 grids), at 16×16
/// only 8 and 16. Totals over different factor sets are not comparable.</item>
/// <item>Up: bilinear back to full size with half-pixel centres (PyTorch <c>interpolate(mode="bilinear",
/// align_corners=False)</c>: source = (i + 0.5)/k − 0.5, clamped to the edge pixels).</item>
/// <item>MSE: mean over every pixel and channel of one frame; the per-factor MSEs are summed (the paper's Σ), and the
/// sum is averaged over frames — equal to summing the frame-averaged per-factor values in
/// <see cref="HdMseResult.PerFactor"/>.</item>
/// </list>
/// </remarks>
public static class HdMse
{
    public static IReadOnlyList<int> DefaultFactors { get; } = [8, 16, 32];

    /// <summary>HD-MSE of a planar (3, F, H, W) video in [−1, 1].</summary>
    /// <exception cref="UnsupportedConfigurationException">No requested factor divides the frame.</exception>
    public static HdMseResult Compute(ReadOnlySpan<float> video, int frames, int height, int width, IReadOnlyList<int>? factors = null)
    {
        VideoPixels.Check(video, frames, height, width, "HD-MSE");
        factors ??= DefaultFactors;
        var used = factors.Where(k => k >= 1 && height % k == 0 && width % k == 0).ToArray();
        var skipped = factors.Where(k => !used.Contains(k)).ToArray();
        if (used.Length == 0)
            throw new UnsupportedConfigurationException(
                $"HD-MSE: none of the factors {string.Join("/", factors)} divides a {width}×{height} frame");

        int plane = height * width;
        var perFactor = new double[used.Length];
        var pixels = new double[plane];
        for (int c = 0; c < 3; c++)
        for (int f = 0; f < frames; f++)
        {
            var source = video.Slice((c * frames + f) * plane, plane);
            for (int i = 0; i < plane; i++) pixels[i] = RgbVideo.ToByte(source[i]);
            for (int s = 0; s < used.Length; s++)
            {
                int k = used[s];
                var down = BoxDownsample(pixels, height, width, k);
                var up = BilinearResize(down, height / k, width / k, height, width);
                double sum = 0;
                for (int i = 0; i < plane; i++)
                {
                    double e = pixels[i] - up[i];
                    sum += e * e;
                }
                perFactor[s] += sum;
            }
        }
        for (int s = 0; s < used.Length; s++) perFactor[s] /= 3.0 * plane * frames;
        return new HdMseResult(perFactor.Sum(), used, skipped, perFactor);
    }

    /// <summary>Means of the k×k blocks of an H×W plane (k must divide both sides).</summary>
    public static double[] BoxDownsample(ReadOnlySpan<double> plane, int height, int width, int factor)
    {
        if (factor < 1 || height % factor != 0 || width % factor != 0 || plane.Length != height * width)
            throw new ArgumentException($"factor {factor} does not divide a {width}×{height} plane of {plane.Length} values");
        int outHeight = height / factor, outWidth = width / factor;
        var result = new double[outHeight * outWidth];
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            result[(y / factor) * outWidth + x / factor] += plane[y * width + x];
        double scale = 1.0 / (factor * factor);
        for (int i = 0; i < result.Length; i++) result[i] *= scale;
        return result;
    }

    /// <summary>Bilinear resize with half-pixel centres and edge clamping (PyTorch's align_corners=False).</summary>
    public static double[] BilinearResize(ReadOnlySpan<double> plane, int height, int width, int outHeight, int outWidth)
    {
        if (plane.Length != height * width) throw new ArgumentException($"{plane.Length} values are not a {width}×{height} plane");
        var (y0, y1, wy) = Taps(height, outHeight);
        var (x0, x1, wx) = Taps(width, outWidth);
        var result = new double[outHeight * outWidth];
        for (int y = 0; y < outHeight; y++)
        for (int x = 0; x < outWidth; x++)
        {
            double top = plane[y0[y] * width + x0[x]] * (1 - wx[x]) + plane[y0[y] * width + x1[x]] * wx[x];
            double bottom = plane[y1[y] * width + x0[x]] * (1 - wx[x]) + plane[y1[y] * width + x1[x]] * wx[x];
            result[y * outWidth + x] = top * (1 - wy[y]) + bottom * wy[y];
        }
        return result;
    }

    private static (int[] Low, int[] High, double[] Weight) Taps(int inSize, int outSize)
    {
        var low = new int[outSize];
        var high = new int[outSize];
        var weight = new double[outSize];
        double scale = (double)inSize / outSize;
        for (int i = 0; i < outSize; i++)
        {
            double source = Math.Max(0, (i + 0.5) * scale - 0.5);
            int index = Math.Min((int)source, inSize - 1);
            low[i] = index;
            high[i] = Math.Min(index + 1, inSize - 1);
            weight[i] = source - index;
        }
        return (low, high, weight);
    }
}
