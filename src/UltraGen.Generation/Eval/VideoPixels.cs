using UltraGen.Core;

namespace UltraGen.Generation.Eval;

/// <summary>Shape checks and pixel-scale conversion shared by the metrics.</summary>
internal static class VideoPixels
{
    public static void Check(ReadOnlySpan<float> video, int frames, int height, int width, string metric)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        if (video.Length != 3L * frames * height * width)
            throw new ShapeMismatchException(
                $"{metric}: {video.Length} values do not make a (3, {frames}, {height}, {width}) video");
    }

    /// <summary>A model value in [−1, 1] on the 0–255 scale, clamped (NaN → 0) but not rounded.</summary>
    public static double To255(float value)
    {
        double scaled = (value + 1.0) * 127.5;
        return scaled > 0 ? Math.Min(scaled, 255.0) : 0.0;
    }
}
