using UltraGen.Generation.Data;

namespace UltraGen.Generation.Eval;

/// <summary>
/// What <see cref="PromptAdherence.Measure"/> read from a video, next to what the prompt asked for. Shape is not
/// measured (at 16×16 a circle, a square and a triangle differ by a few pixels).
/// </summary>
/// <param name="Expected">The prompt the video was generated for.</param>
/// <param name="BackgroundRgb">Per-channel median of the border pixels over all frames.</param>
/// <param name="MeasuredBackground">The grammar background nearest to <paramref name="BackgroundRgb"/>.</param>
/// <param name="ObjectRgb">Mean colour of the object's core pixels; null when no object was found.</param>
/// <param name="MeasuredColor">The grammar colour nearest to <paramref name="ObjectRgb"/>; null when no object was found.</param>
/// <param name="MeasuredDirection">Dominant motion of the object's centroid; null for "none" (no object, too little
/// motion, or no dominant axis).</param>
/// <param name="DisplacementX">Fitted centroid travel over the clip, in frame widths (positive = right).</param>
/// <param name="DisplacementY">Fitted centroid travel over the clip, in frame heights (positive = down).</param>
/// <param name="FramesWithObject">Frames in which object pixels were found.</param>
public sealed record AdherenceResult(
    VideoPrompt Expected,
    Rgb BackgroundRgb,
    BackgroundColor MeasuredBackground,
    Rgb? ObjectRgb,
    ObjectColor? MeasuredColor,
    MotionDirection? MeasuredDirection,
    double DisplacementX,
    double DisplacementY,
    int FramesWithObject)
{
    public bool ColorMatches => MeasuredColor == Expected.Color;
    public bool DirectionMatches => MeasuredDirection == Expected.Direction;
    public bool BackgroundMatches => MeasuredBackground == Expected.Background;

    /// <summary>Colour, direction and background all as prompted.</summary>
    public bool Passed => ColorMatches && DirectionMatches && BackgroundMatches;

    public override string ToString() =>
        $"{Expected.Text}: colour {(MeasuredColor is { } c ? PromptGrammar.Word(c) : "none")} {Mark(ColorMatches)}, " +
        $"direction {(MeasuredDirection is { } d ? PromptGrammar.Word(d) : "none")} {Mark(DirectionMatches)} " +
        $"(dx {DisplacementX:+0.00;-0.00}, dy {DisplacementY:+0.00;-0.00}), " +
        $"background {PromptGrammar.Word(MeasuredBackground)} {Mark(BackgroundMatches)}";

    private static string Mark(bool ok) => ok ? "✓" : "✗";
}

/// <summary>Fractions of a set of videos whose colour, direction, background, and all three, match their prompts.</summary>
public sealed record AdherenceSummary(int Count, double ColorRate, double DirectionRate, double BackgroundRate, double PassRate)
{
    public static AdherenceSummary Of(IReadOnlyCollection<AdherenceResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        if (results.Count == 0) throw new ArgumentException("no results to summarise", nameof(results));
        double n = results.Count;
        return new AdherenceSummary(results.Count, results.Count(r => r.ColorMatches) / n, results.Count(r => r.DirectionMatches) / n,
            results.Count(r => r.BackgroundMatches) / n, results.Count(r => r.Passed) / n);
    }
}

/// <summary>
/// Prompt adherence without a learned model, possible because the prompt language is closed: measure the background,
/// the object's colour and its motion from the pixels, and compare with the prompt.
/// </summary>
/// <remarks>
/// Steps and the constants they use:
/// <list type="number">
/// <item>Pixels on the 0–255 scale, clamped, not rounded.</item>
/// <item>Background: the per-channel median of the outermost ring of pixels of every frame. The renderer keeps the object
/// one 16×16 pixel away from the edges, and a median ignores an object that touches the border in a few frames anyway.
/// Classified as the nearest grammar background (Euclidean RGB).</item>
/// <item>Object mask: pixels farther than <see cref="ObjectThreshold"/> (70, half of the grammar's guaranteed
/// object–background distance of 140) from the measured background — anti-aliased edge pixels with less than about
/// half coverage fall outside; noise in a generated video must be that strong to count.</item>
/// <item>Colour: the mean of the mask's core — mask pixels at least 80 % as far from the background as the 95th
/// percentile of mask distances (so mostly fully covered pixels, not edge blends) — classified as the nearest grammar
/// colour. Colours are ≥ 100 apart, so a core that is 10 % blended with the background is still classified right.</item>
/// <item>Motion: per frame with at least one mask pixel, the centroid of the mask weighted by distance from the background
/// (sub-pixel accurate for anti-aliased edges), in frame widths/heights; a least-squares line through the centroids
/// against clip time t ∈ [0, 1] gives the displacement over the clip (robust to one bad frame, unlike last − first).
/// The dominant axis gives the direction if its displacement is at least <see cref="MinimumDisplacement"/> (0.15 of the
/// frame; the renderer moves 0.36–0.5) and the other axis moved at most half as much; otherwise "none".</item>
/// </list>
/// </remarks>
public static class PromptAdherence
{
    /// <summary>Distance from the background (0–255 RGB) beyond which a pixel belongs to the object.</summary>
    public const double ObjectThreshold = PromptGrammar.MinimumObjectBackgroundDistance / 2;

    /// <summary>Least centroid travel over the clip, in frame sides, that counts as motion.</summary>
    public const double MinimumDisplacement = 0.15;

    /// <summary>The largest ratio of off-axis to on-axis travel that still counts as moving along the axis.</summary>
    public const double MaximumCrossRatio = 0.5;

    private const double CoreFraction = 0.8;
    private const double CorePercentile = 0.95;

    /// <summary>Measures a planar (3, F, H, W) video in [−1, 1] against <paramref name="prompt"/>.</summary>
    public static AdherenceResult Measure(ReadOnlySpan<float> video, int frames, int height, int width, VideoPrompt prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        VideoPixels.Check(video, frames, height, width, "prompt adherence");
        int plane = height * width;
        var rgb = new double[3][];
        for (int c = 0; c < 3; c++)
        {
            rgb[c] = new double[frames * plane];
            var channel = video.Slice(c * frames * plane, frames * plane);
            for (int i = 0; i < rgb[c].Length; i++) rgb[c][i] = VideoPixels.To255(channel[i]);
        }

        var background = MedianBorder(rgb, frames, height, width);
        var distance = new double[frames * plane];
        for (int i = 0; i < distance.Length; i++)
        {
            double dr = rgb[0][i] - background[0], dg = rgb[1][i] - background[1], db = rgb[2][i] - background[2];
            distance[i] = Math.Sqrt(dr * dr + dg * dg + db * db);
        }
        var backgroundRgb = ToRgb(background);
        var measuredBackground = PromptGrammar.Backgrounds.MinBy(b => PromptGrammar.RgbOf(b).DistanceTo(backgroundRgb));

        // Colour from the core of the mask.
        var maskDistances = distance.Where(d => d > ObjectThreshold).Order().ToArray();
        Rgb? objectRgb = null;
        ObjectColor? measuredColor = null;
        if (maskDistances.Length > 0)
        {
            double core = CoreFraction * maskDistances[(int)Math.Floor(CorePercentile * (maskDistances.Length - 1))];
            double[] sum = new double[3];
            int count = 0;
            for (int i = 0; i < distance.Length; i++)
            {
                if (distance[i] <= ObjectThreshold || distance[i] < core) continue;
                for (int c = 0; c < 3; c++) sum[c] += rgb[c][i];
                count++;
            }
            var mean = ToRgb([sum[0] / count, sum[1] / count, sum[2] / count]);
            objectRgb = mean;
            measuredColor = PromptGrammar.Colors.MinBy(c => PromptGrammar.RgbOf(c).DistanceTo(mean));
        }

        // Motion from the weighted centroids.
        var times = new List<double>();
        var xs = new List<double>();
        var ys = new List<double>();
        for (int f = 0; f < frames; f++)
        {
            double weight = 0, sx = 0, sy = 0;
            for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                double d = distance[f * plane + y * width + x];
                if (d <= ObjectThreshold) continue;
                weight += d;
                sx += d * (x + 0.5) / width;
                sy += d * (y + 0.5) / height;
            }
            if (weight == 0) continue;
            times.Add(frames == 1 ? 0 : (double)f / (frames - 1));
            xs.Add(sx / weight);
            ys.Add(sy / weight);
        }
        double dx = Slope(times, xs), dy = Slope(times, ys);
        MotionDirection? direction = null;
        double major = Math.Max(Math.Abs(dx), Math.Abs(dy)), minor = Math.Min(Math.Abs(dx), Math.Abs(dy));
        if (times.Count >= 2 && major >= MinimumDisplacement && minor <= MaximumCrossRatio * major)
            direction = Math.Abs(dx) >= Math.Abs(dy)
                ? dx > 0 ? MotionDirection.Right : MotionDirection.Left
                : dy > 0 ? MotionDirection.Down : MotionDirection.Up;

        return new AdherenceResult(prompt, backgroundRgb, measuredBackground, objectRgb, measuredColor, direction, dx, dy, times.Count);
    }

    private static double[] MedianBorder(double[][] rgb, int frames, int height, int width)
    {
        var indices = new List<int>();
        int plane = height * width;
        for (int f = 0; f < frames; f++)
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            if (y == 0 || x == 0 || y == height - 1 || x == width - 1) indices.Add(f * plane + y * width + x);
        var median = new double[3];
        for (int c = 0; c < 3; c++)
        {
            var values = indices.Select(i => rgb[c][i]).Order().ToArray();
            int n = values.Length;
            median[c] = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
        }
        return median;
    }

    /// <summary>Least-squares slope of <paramref name="values"/> against <paramref name="times"/>; 0 with fewer than two points.</summary>
    private static double Slope(List<double> times, List<double> values)
    {
        if (times.Count < 2) return 0;
        double meanT = times.Average(), meanV = values.Average(), covariance = 0, variance = 0;
        for (int i = 0; i < times.Count; i++)
        {
            covariance += (times[i] - meanT) * (values[i] - meanV);
            variance += (times[i] - meanT) * (times[i] - meanT);
        }
        return variance == 0 ? 0 : covariance / variance;
    }

    private static Rgb ToRgb(double[] values) =>
        new((byte)Math.Round(Math.Clamp(values[0], 0, 255)), (byte)Math.Round(Math.Clamp(values[1], 0, 255)),
            (byte)Math.Round(Math.Clamp(values[2], 0, 255)));
}
