namespace UltraGen.Generation.Data;

/// <summary>
/// Where the object is over a clip, in relative units (fractions of the frame's width and height, origin top-left):
/// independent of resolution, so one seed gives the same motion at 16×16 and at 64×64.
/// </summary>
/// <param name="Size">Side of the object's bounding square (a square's side, a circle's diameter, a triangle's base and height).</param>
/// <param name="StartX">Centre of the bounding square in the first frame, horizontal.</param>
/// <param name="StartY">Centre in the first frame, vertical (downwards).</param>
/// <param name="EndX">Centre in the last frame, horizontal; the object moves at constant speed between the two.</param>
/// <param name="EndY">Centre in the last frame, vertical.</param>
public sealed record ObjectTrack(double Size, double StartX, double StartY, double EndX, double EndY)
{
    /// <summary>Centre at clip time <paramref name="t"/> ∈ [0, 1].</summary>
    public (double X, double Y) CentreAt(double t) => (StartX + (EndX - StartX) * t, StartY + (EndY - StartY) * t);

    /// <summary>Length of the straight path from the first to the last frame, in relative units.</summary>
    public double Displacement => Math.Sqrt((EndX - StartX) * (EndX - StartX) + (EndY - StartY) * (EndY - StartY));
}

/// <summary>
/// Renders a <see cref="VideoPrompt"/> as a pixel-space video: a plain background and one anti-aliased object moving in a
/// straight line at constant speed. The layout is (3, F, H, W) planar RGB in [−1, 1] (−1 ↔ 0, +1 ↔ 255), the model's own
/// video layout.
/// </summary>
/// <remarks>
/// <para>Geometry (seeded by <see cref="Track"/>): object size 0.22–0.3 of the frame side, so it covers 3.5–5 pixels at
/// 16×16; it stays at least <see cref="Margin"/> (one 16×16 pixel) inside every edge so the border pixels that
/// <c>PromptAdherence</c> reads as background stay clean; it travels edge to edge along the stated axis (0.57–0.65 of the
/// frame, from the margin on the side it leaves to the margin on the side it heads for); the other coordinate is
/// uniform.</para>
/// <para>Anti-aliasing: each pixel's colour is background + coverage·(object − background), with coverage counted on a
/// regular grid of sub-samples. The sub-sample count per pixel is chosen so that the whole frame always has
/// <see cref="SubsampleGridSide"/> (256) sub-samples per side (at least 2 per pixel): the 64×64 render (4×4 per pixel) and
/// the 16×16 render (16×16 per pixel) test exactly the same points, so a 4× area-downsample of the 64×64 video equals
/// the 16×16 video up to float rounding. Larger frames use 2×2 per pixel.</para>
/// </remarks>
public static class ProceduralVideo
{
    /// <summary>Minimum gap between the object's bounding square and each frame edge, relative (1 pixel at 16×16).</summary>
    public const double Margin = 1.0 / 16;

    public const double MinSize = 0.22;
    public const double MaxSize = 0.3;

    /// <summary>Sub-samples per frame side used for coverage (see the remarks).</summary>
    public const int SubsampleGridSide = 256;

    /// <summary>The seeded track of the object; depends only on the direction and the seed, not on resolution.</summary>
    public static ObjectTrack Track(VideoPrompt prompt, long seed)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var random = new SeededRandom(seed, 0x7AC4);
        double size = random.NextDouble(MinSize, MaxSize);
        double low = Margin + size / 2, high = 1 - Margin - size / 2;
        // Edge to edge along the motion (0.57–0.65 of the frame): the direction word then fixes where the object is in
        // every frame, a signal a small model learns far faster than "some shift of about a third" (measured: with a
        // random start and 0.36–0.5 travel the miniature ignored the direction word after 4,000 steps).
        double travel = high - low;
        double start = low; // along the motion, measured in the positive direction
        double across = random.NextDouble(low, high);
        return prompt.Direction switch
        {
            MotionDirection.Right => new ObjectTrack(size, start, across, start + travel, across),
            MotionDirection.Left => new ObjectTrack(size, 1 - start, across, 1 - start - travel, across),
            MotionDirection.Down => new ObjectTrack(size, across, start, across, start + travel),
            MotionDirection.Up => new ObjectTrack(size, across, 1 - start, across, 1 - start - travel),
            _ => throw new ArgumentOutOfRangeException(nameof(prompt), prompt.Direction, "unknown direction"),
        };
    }

    /// <summary>Renders the clip: float[3·F·H·W], planar (channel, frame, row, column), values in [−1, 1].</summary>
    public static float[] Render(VideoPrompt prompt, int width, int height, int frames, long seed)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        var track = Track(prompt, seed);
        Rgb background = PromptGrammar.RgbOf(prompt.Background), color = PromptGrammar.RgbOf(prompt.Color);
        ReadOnlySpan<float> backgroundValue = [ToUnit(background.R), ToUnit(background.G), ToUnit(background.B)];
        ReadOnlySpan<float> deltaValue =
        [
            ToUnit(color.R) - ToUnit(background.R), ToUnit(color.G) - ToUnit(background.G), ToUnit(color.B) - ToUnit(background.B),
        ];

        int plane = height * width;
        var video = new float[checked(3 * frames * plane)];
        for (int c = 0; c < 3; c++) video.AsSpan(c * frames * plane, frames * plane).Fill(backgroundValue[c]);

        int subX = Math.Max(2, (SubsampleGridSide + width - 1) / width);
        int subY = Math.Max(2, (SubsampleGridSide + height - 1) / height);
        var coverage = new float[plane];
        for (int f = 0; f < frames; f++)
        {
            double t = frames == 1 ? 0 : (double)f / (frames - 1);
            var (cx, cy) = track.CentreAt(t);
            Array.Clear(coverage);
            Rasterize(prompt.Shape, cx, cy, track.Size / 2, width, height, subX, subY, coverage);
            for (int c = 0; c < 3; c++)
            {
                var channel = video.AsSpan((c * frames + f) * plane, plane);
                for (int i = 0; i < plane; i++)
                    if (coverage[i] > 0) channel[i] = backgroundValue[c] + coverage[i] * deltaValue[c];
            }
        }
        return video;
    }

    private static float ToUnit(byte value) => value / 127.5f - 1f;

    /// <summary>Fraction of each pixel's sub-samples inside the shape, only over the pixels its bounding box touches.</summary>
    private static void Rasterize(ObjectShape shape, double cx, double cy, double half, int width, int height,
        int subX, int subY, Span<float> coverage)
    {
        int x0 = Math.Max(0, (int)Math.Floor((cx - half) * width)), x1 = Math.Min(width - 1, (int)Math.Ceiling((cx + half) * width));
        int y0 = Math.Max(0, (int)Math.Floor((cy - half) * height)), y1 = Math.Min(height - 1, (int)Math.Ceiling((cy + half) * height));
        float perSample = 1f / (subX * subY);
        for (int py = y0; py <= y1; py++)
        for (int px = x0; px <= x1; px++)
        {
            int inside = 0;
            for (int j = 0; j < subY; j++)
            {
                double dy = (py + (j + 0.5) / subY) / height - cy;
                for (int i = 0; i < subX; i++)
                {
                    double dx = (px + (i + 0.5) / subX) / width - cx;
                    if (Contains(shape, dx, dy, half)) inside++;
                }
            }
            coverage[py * width + px] = inside * perSample;
        }
    }

    /// <summary>Point-in-shape for an offset (dx, dy) from the centre; the triangle points up (apex at −half).</summary>
    private static bool Contains(ObjectShape shape, double dx, double dy, double half) => shape switch
    {
        ObjectShape.Square => Math.Abs(dx) < half && Math.Abs(dy) < half,
        ObjectShape.Circle => dx * dx + dy * dy < half * half,
        ObjectShape.Triangle => dy < half && Math.Abs(dx) < (dy + half) / 2,
        _ => throw new ArgumentOutOfRangeException(nameof(shape), shape, "unknown shape"),
    };
}
