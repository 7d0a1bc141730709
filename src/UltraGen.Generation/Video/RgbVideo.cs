using UltraGen.Core;

namespace UltraGen.Generation.Video;

/// <summary>
/// A video as 8-bit RGB frames, interleaved (frame, row, column, channel): the form every writer here consumes, made
/// once from the model's planar float video so the clamping and rounding rule lives in one place.
/// </summary>
public sealed class RgbVideo
{
    /// <summary>Wraps existing pixels (not copied): <paramref name="pixels"/> holds frames·height·width·3 bytes.</summary>
    public RgbVideo(int width, int height, int frameCount, byte[] pixels)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(frameCount, 1);
        ArgumentNullException.ThrowIfNull(pixels);
        if (pixels.LongLength != 3L * width * height * frameCount)
            throw new ShapeMismatchException(
                $"{pixels.Length} bytes do not hold {frameCount} RGB frames of {width}×{height}");
        Width = width;
        Height = height;
        FrameCount = frameCount;
        Pixels = pixels;
    }

    public int Width { get; }
    public int Height { get; }
    public int FrameCount { get; }

    /// <summary>All frames, (frame, row, column, RGB).</summary>
    public byte[] Pixels { get; }

    public int FrameBytes => 3 * Width * Height;

    public ReadOnlySpan<byte> Frame(int index) => Pixels.AsSpan(checked(index * FrameBytes), FrameBytes);

    /// <summary>
    /// Converts a planar (3, F, H, W) video in [−1, 1] to bytes: v ↦ round((v + 1)·127.5), clamped to [0, 255] (NaN
    /// becomes 0), so −1 ↔ 0 and +1 ↔ 255 exactly. <paramref name="upscale"/> repeats every pixel
    /// <paramref name="upscale"/>×<paramref name="upscale"/> times (nearest neighbour): a 16×16 sample is unreadable at
    /// its own size, and an integer factor keeps its pixels sharp instead of blurring them.
    /// </summary>
    public static RgbVideo FromPlanar(ReadOnlySpan<float> video, int frames, int height, int width, int upscale = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(upscale, 1);
        if (video.Length != 3L * frames * height * width)
            throw new ShapeMismatchException(
                $"{video.Length} values do not make a (3, {frames}, {height}, {width}) video");
        int outWidth = checked(width * upscale), outHeight = checked(height * upscale);
        var pixels = new byte[checked(3 * frames * outWidth * outHeight)];
        int plane = height * width;
        for (int f = 0; f < frames; f++)
        for (int y = 0; y < outHeight; y++)
        {
            int sourceRow = (y / upscale) * width;
            int destinationRow = (f * outHeight + y) * outWidth * 3;
            for (int x = 0; x < outWidth; x++)
            {
                int source = sourceRow + x / upscale;
                for (int c = 0; c < 3; c++)
                    pixels[destinationRow + 3 * x + c] = ToByte(video[(c * frames + f) * plane + source]);
            }
        }
        return new RgbVideo(outWidth, outHeight, frames, pixels);
    }

    /// <summary>The byte for a value in [−1, 1] (see <see cref="FromPlanar"/>).</summary>
    public static byte ToByte(float value)
    {
        float scaled = (value + 1f) * 127.5f;
        if (!(scaled > 0f)) return 0; // also NaN
        return scaled >= 255f ? (byte)255 : (byte)MathF.Round(scaled, MidpointRounding.AwayFromZero);
    }
}
