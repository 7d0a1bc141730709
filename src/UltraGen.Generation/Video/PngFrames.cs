using SkiaSharp;

namespace UltraGen.Generation.Video;

/// <summary>Writes a video as one PNG per frame: <c>&lt;name&gt;_000.png</c>, <c>&lt;name&gt;_001.png</c>, ….</summary>
public static class PngFrames
{
    /// <summary>
    /// Writes every frame into <paramref name="directory"/> (which must exist) and returns the paths in frame order. All
    /// frames go to temporary files first and are renamed only once every one is encoded, so an error leaves neither
    /// temporary files nor a partial set of new frames behind.
    /// </summary>
    public static IReadOnlyList<string> Write(RgbVideo video, string directory, string name)
    {
        ArgumentNullException.ThrowIfNull(video);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || name.Contains('/'))
            throw new ArgumentException($"'{name}' is not a valid file name stem", nameof(name));
        string folder = Path.GetFullPath(directory);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"cannot write frames: the folder {folder} does not exist");

        int digits = Math.Max(3, (video.FrameCount - 1).ToString(System.Globalization.CultureInfo.InvariantCulture).Length);
        var targets = new string[video.FrameCount];
        var temps = new List<string>(video.FrameCount);
        try
        {
            for (int f = 0; f < video.FrameCount; f++)
            {
                targets[f] = Path.Combine(folder, $"{name}_{f.ToString(new string('0', digits), System.Globalization.CultureInfo.InvariantCulture)}.png");
                string temp = Path.Combine(folder, $".{name}_{f}.{Guid.NewGuid():N}.tmp.png");
                temps.Add(temp);
                using var bitmap = SkiaImages.FromRgb(video.Frame(f), video.Width, video.Height);
                SkiaImages.SavePng(bitmap, temp);
            }
            for (int f = 0; f < video.FrameCount; f++) File.Move(temps[f], targets[f], overwrite: true);
            return targets;
        }
        catch
        {
            foreach (string temp in temps) AtomicFile.TryDelete(temp);
            throw;
        }
    }
}

/// <summary>Small SkiaSharp glue shared by the PNG-producing writers.</summary>
internal static class SkiaImages
{
    /// <summary>An opaque RGBA bitmap holding interleaved RGB bytes.</summary>
    public static unsafe SKBitmap FromRgb(ReadOnlySpan<byte> rgb, int width, int height)
    {
        var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        var destination = new Span<byte>((void*)bitmap.GetPixels(), bitmap.ByteCount);
        int rowBytes = bitmap.RowBytes;
        for (int y = 0; y < height; y++)
        {
            var row = destination.Slice(y * rowBytes, 4 * width);
            var source = rgb.Slice(3 * width * y, 3 * width);
            for (int x = 0; x < width; x++)
            {
                row[4 * x] = source[3 * x];
                row[4 * x + 1] = source[3 * x + 1];
                row[4 * x + 2] = source[3 * x + 2];
                row[4 * x + 3] = 255;
            }
        }
        bitmap.NotifyPixelsChanged();
        return bitmap;
    }

    /// <summary>Encodes as PNG straight to <paramref name="path"/> (callers pass a temporary path).</summary>
    public static void SavePng(SKBitmap bitmap, string path)
    {
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100)
            ?? throw new IOException($"SkiaSharp could not encode a {bitmap.Width}×{bitmap.Height} PNG");
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        data.SaveTo(stream);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Encodes as PNG to <paramref name="path"/> atomically.</summary>
    public static void WritePng(SKBitmap bitmap, string path) => AtomicFile.WriteVia(path, temp => SavePng(bitmap, temp));
}
