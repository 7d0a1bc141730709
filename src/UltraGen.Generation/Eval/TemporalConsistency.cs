namespace UltraGen.Generation.Eval;

/// <summary>
/// Temporal consistency in the style of VBench's "temporal flickering": 1 − the mean absolute difference between
/// consecutive frames, with pixels on the 0–1 scale (values clamped to [−1, 1], then (v + 1)/2), averaged over every
/// pixel, channel and consecutive pair. VBench computes (255 − MAE)/255 on 8-bit frames, the same number up to rounding.
/// </summary>
/// <remarks>
/// 1 means nothing changes; frame-to-frame noise lowers it. So does real motion: a moving object changes the pixels it
/// leaves and enters, so on this dataset a perfect video scores a little below 1 (the tests check a procedural clip stays
/// above 0.97 while independent noise frames fall to ≈ 2/3). Read it as a flicker score for videos with similar motion,
/// not as a quality score on its own — a frozen video scores best. The paper does not say which VBench dimension its
/// "temporal consistency" column is (spec §3.4); this is the one that needs no learned model.
/// </remarks>
public static class TemporalConsistency
{
    /// <summary>The score of a planar (3, F, H, W) video in [−1, 1]; needs at least two frames.</summary>
    public static double Compute(ReadOnlySpan<float> video, int frames, int height, int width)
    {
        VideoPixels.Check(video, frames, height, width, "temporal consistency");
        if (frames < 2) throw new ArgumentOutOfRangeException(nameof(frames), frames, "temporal consistency needs at least two frames");
        int plane = height * width;
        double sum = 0;
        for (int c = 0; c < 3; c++)
        for (int f = 0; f + 1 < frames; f++)
        {
            var current = video.Slice((c * frames + f) * plane, plane);
            var next = video.Slice((c * frames + f + 1) * plane, plane);
            for (int i = 0; i < plane; i++) sum += Math.Abs(VideoPixels.To255(next[i]) - VideoPixels.To255(current[i]));
        }
        return 1.0 - sum / 255.0 / (3.0 * plane * (frames - 1));
    }
}
