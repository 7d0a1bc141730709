using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Model;

namespace UltraGen.Generation.Latent;

/// <summary>
/// The shapes of a Wan2.1 latent video (spec §1.1, §2.5): F = 4k+1 pixel frames of H×W pixels (multiples of 16) become a
/// latent of C × ((F−1)/4+1) × H/8 × W/8 (VAE stride 4×8×8, C = 16) and, through the (1, 2, 2) patch, a token grid of
/// (T, H/16, W/16).
/// </summary>
public sealed record LatentGeometry
{
    /// <summary>Pixel frames per latent frame after the first (the VAE's temporal stride).</summary>
    public const int TemporalStride = 4;

    /// <summary>Pixels per latent row or column (the VAE's spatial stride).</summary>
    public const int SpatialStride = 8;

    /// <summary>Pixel sizes are rounded up to a multiple of this (VAE stride 8 × patch 2), as the reference pipeline does.</summary>
    public const int PixelMultiple = 16;

    /// <summary>Wan2.1's latent channels (the VAE's z_dim).</summary>
    public const int WanChannels = 16;

    private LatentGeometry(int channels, int frames, int height, int width, int requestedHeight, int requestedWidth)
    {
        Channels = channels;
        Frames = frames;
        Height = height;
        Width = width;
        RequestedHeight = requestedHeight;
        RequestedWidth = requestedWidth;
    }

    public int Channels { get; }

    /// <summary>Pixel frames F = 4(T−1)+1.</summary>
    public int Frames { get; }

    /// <summary>Pixel height (a multiple of 16).</summary>
    public int Height { get; }

    /// <summary>Pixel width (a multiple of 16).</summary>
    public int Width { get; }

    /// <summary>The height asked for, before rounding up.</summary>
    public int RequestedHeight { get; }

    /// <summary>The width asked for, before rounding up.</summary>
    public int RequestedWidth { get; }

    public bool WasRounded => Height != RequestedHeight || Width != RequestedWidth;

    /// <summary>Latent frames T = (F−1)/4 + 1.</summary>
    public int LatentFrames => (Frames - 1) / TemporalStride + 1;

    public int LatentHeight => Height / SpatialStride;

    public int LatentWidth => Width / SpatialStride;

    /// <summary>The latent's shape (C, T, H/8, W/8), no batch axis (the latents file's tensor).</summary>
    public int[] LatentShape => [Channels, LatentFrames, LatentHeight, LatentWidth];

    public long LatentElementCount => (long)Channels * LatentFrames * LatentHeight * LatentWidth;

    /// <summary>The DiT's token grid for patch size <paramref name="patch"/>: (T/pt, (H/8)/ph, (W/8)/pw).</summary>
    public Grid3 TokenGrid(PatchSize patch) => new(LatentFrames / patch.T, LatentHeight / patch.H, LatentWidth / patch.W);

    /// <summary>
    /// The geometry of <paramref name="frames"/> × <paramref name="height"/> × <paramref name="width"/> pixels. Frames must be
    /// 4k+1 (else a <see cref="ShapeMismatchException"/> naming the two nearest valid counts); height and width are rounded up
    /// to multiples of 16 (1080 → 1088), see <see cref="WasRounded"/>.
    /// </summary>
    public static LatentGeometry FromPixels(int frames, int height, int width, int channels = WanChannels)
    {
        if (frames < 1) throw new ShapeMismatchException($"frames must be at least 1 (4k+1: 1, 5, 9, …, 81), got {frames}");
        if ((frames - 1) % TemporalStride != 0)
        {
            int below = frames - (frames - 1) % TemporalStride;
            throw new ShapeMismatchException(
                $"frames must be 4k+1 (the VAE encodes the first frame alone, then groups of 4), got {frames}: use {below} or {below + TemporalStride}");
        }
        if (height < 1 || width < 1) throw new ShapeMismatchException($"height and width must be positive, got {height}×{width}");
        if (channels < 1) throw new ShapeMismatchException($"latent channels must be positive, got {channels}");
        return new LatentGeometry(channels, frames, RoundUp(height), RoundUp(width), height, width);
    }

    private static int RoundUp(int pixels) => checked((pixels + PixelMultiple - 1) / PixelMultiple * PixelMultiple);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Width}×{Height} pixels, {Frames} frames");
}
