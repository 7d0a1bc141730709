using System.Diagnostics;
using NUnit.Framework;
using SkiaSharp;
using UltraGen.Generation.Data;
using UltraGen.Generation.Video;

namespace UltraGen.Tests.Generation;

public class VideoWriterTests
{
    private string _folder = null!;

    [SetUp]
    public void CreateFolder()
    {
        _folder = Path.Combine(Path.GetTempPath(), "ultragen-video-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_folder);
    }

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_folder, recursive: true);

    private static readonly VideoPrompt Prompt = new(ObjectColor.Orange, ObjectShape.Circle, MotionDirection.Right, BackgroundColor.Navy);

    private static RgbVideo Procedural(int side, int upscale = 1) =>
        RgbVideo.FromPlanar(ProceduralVideo.Render(Prompt, side, side, 8, seed: 21), 8, side, side, upscale);

    /// <summary>Uniform random RGB: thousands of distinct colours (forces median cut) and long LZW streams with table resets.</summary>
    private static RgbVideo Noise(int width, int height, int frames, int seed)
    {
        var pixels = new byte[3 * width * height * frames];
        new Random(seed).NextBytes(pixels);
        return new RgbVideo(width, height, frames, pixels);
    }

    private string[] LeftoverTemps() => Directory.GetFiles(_folder, "*.tmp*");

    [Test]
    public void PlanarFloatsBecomeClampedRoundedBytes()
    {
        // (3, F=2, H=1, W=3): channel-major input, interleaved output.
        float[] planar =
        [
            -1f, 1f, 0f, /* R f0 */ 1.5f, -2f, float.NaN, /* R f1 */
            0.5f, -0.5f, 0.002f, /* G f0 */ 0.998f, -0.998f, 0.25f, /* G f1 */
            -0.25f, 0.75f, -0.75f, /* B f0 */ 0.1f, -0.1f, 0.9f, /* B f1 */
        ];
        var video = RgbVideo.FromPlanar(planar, frames: 2, height: 1, width: 3);
        Assert.That(video.Pixels, Is.EqualTo(new byte[]
        {
            0, 191, 96, 255, 64, 223, 128, 128, 32, // frame 0: (R, G, B) per pixel
            255, 255, 140, 0, 0, 115, 0, 159, 242,  // frame 1
        }));
        var up = RgbVideo.FromPlanar(planar, frames: 2, height: 1, width: 3, upscale: 2);
        Assert.That((up.Width, up.Height), Is.EqualTo((6, 2)));
        for (int f = 0; f < 2; f++)
        for (int y = 0; y < 2; y++)
        for (int x = 0; x < 6; x++)
            Assert.That(up.Frame(f).Slice(3 * (y * 6 + x), 3).ToArray(), Is.EqualTo(video.Frame(f).Slice(3 * (x / 2), 3).ToArray()));
    }

    [Test]
    public void PngFramesRoundTripExactly()
    {
        var video = Procedural(16, upscale: 2);
        var paths = PngFrames.Write(video, _folder, "clip");
        Assert.That(paths.Select(Path.GetFileName), Is.EqualTo(Enumerable.Range(0, 8).Select(i => $"clip_{i:000}.png")));
        for (int f = 0; f < 8; f++)
        {
            using var bitmap = SKBitmap.Decode(paths[f]);
            Assert.That((bitmap.Width, bitmap.Height), Is.EqualTo((32, 32)));
            Assert.That(ReadRgb(bitmap), Is.EqualTo(video.Frame(f).ToArray()), $"frame {f}");
        }
        Assert.That(LeftoverTemps(), Is.Empty);
        Assert.Throws<DirectoryNotFoundException>(() => PngFrames.Write(video, Path.Combine(_folder, "missing"), "clip"));
    }

    [Test]
    public void GifOfFewColoursDecodesLosslessly()
    {
        var video = Procedural(64);
        string path = Path.Combine(_folder, "clip.gif");
        GifWriter.Write(video, path, fps: 8);
        byte[] bytes = File.ReadAllBytes(path);
        Assert.That(System.Text.Encoding.ASCII.GetString(bytes, 0, 6), Is.EqualTo("GIF89a"));
        Assert.That(System.Text.Encoding.ASCII.GetString(bytes).Contains("NETSCAPE2.0"), Is.True);
        var frames = DecodeGif(path, out int loops, out int durationMs);
        Assert.That(frames, Has.Count.EqualTo(8));
        Assert.That(loops, Is.EqualTo(-1), "NETSCAPE2.0 loop count 0 reads as infinite repetition");
        Assert.That(durationMs, Is.EqualTo(130).Within(10)); // 100/8 = 12.5 → 13 hundredths
        for (int f = 0; f < 8; f++) Assert.That(frames[f], Is.EqualTo(video.Frame(f).ToArray()), $"frame {f}");
        Assert.That(LeftoverTemps(), Is.Empty);
    }

    [Test]
    public void GifOfManyColoursDecodesToTheNearestPaletteColour()
    {
        // 96×96 noise: ~27k distinct colours per frame and several LZW table resets per frame.
        var video = Noise(96, 96, 3, seed: 8);
        var palette = GifWriter.FitPalette(video.Pixels, 256);
        Assert.That(palette, Has.Count.InRange(250, 256));
        string path = Path.Combine(_folder, "noise.gif");
        GifWriter.Write(video, path);
        var frames = DecodeGif(path, out _, out _);
        Assert.That(frames, Has.Count.EqualTo(3));
        for (int f = 0; f < 3; f++)
        {
            var original = video.Frame(f);
            for (int i = 0; i < 96 * 96; i++)
            {
                int decoded = frames[f][3 * i] << 16 | frames[f][3 * i + 1] << 8 | frames[f][3 * i + 2];
                Assert.That(palette, Does.Contain(decoded), $"frame {f} pixel {i}");
                byte[] pixel = original.Slice(3 * i, 3).ToArray();
                double got = Distance(pixel, decoded);
                double best = palette.Min(p => Distance(pixel, p));
                Assert.That(got, Is.EqualTo(best).Within(1e-9), $"frame {f} pixel {i} is not mapped to its nearest colour");
                if (i > 400) break; // the nearest-colour check is O(256) per pixel; the first rows suffice
            }
        }
    }

    [Test]
    public void GifOfASmoothGradientStaysWithinQuantisationError()
    {
        const int Side = 128;
        var pixels = new byte[3 * Side * Side];
        for (int y = 0; y < Side; y++)
        for (int x = 0; x < Side; x++)
        {
            pixels[3 * (y * Side + x)] = (byte)(2 * x);
            pixels[3 * (y * Side + x) + 1] = (byte)(2 * y);
            pixels[3 * (y * Side + x) + 2] = (byte)(x + y);
        }
        var video = new RgbVideo(Side, Side, 1, pixels);
        string path = Path.Combine(_folder, "gradient.gif");
        GifWriter.Write(video, path);
        var decoded = DecodeGif(path, out _, out _)[0];
        double sum = 0;
        int worst = 0;
        for (int i = 0; i < pixels.Length; i++)
        {
            int error = Math.Abs(decoded[i] - pixels[i]);
            sum += error;
            worst = Math.Max(worst, error);
        }
        TestContext.Out.WriteLine($"gradient GIF: mean error {sum / pixels.Length:F2}, worst {worst}");
        // 16384 colours on a plane into 256 boxes: about 16×16 values of (R, G) per box, so R and G errors of up to ~8
        // (mean ~4) and smaller B errors; 3.5 mean and 9 worst measured.
        Assert.That(sum / pixels.Length, Is.LessThan(4.5));
        Assert.That(worst, Is.LessThanOrEqualTo(12));
    }

    [Test]
    public void GifOfOnePixelAndOneColourIsValid()
    {
        var video = new RgbVideo(1, 1, 2, [200, 10, 30, 200, 10, 30]);
        string path = Path.Combine(_folder, "dot.gif");
        GifWriter.Write(video, path);
        var frames = DecodeGif(path, out _, out _);
        Assert.That(frames, Has.Count.EqualTo(2));
        Assert.That(frames[1], Is.EqualTo(new byte[] { 200, 10, 30 }));
    }

    [Test]
    public void AtomicWriteLeavesNothingBehindOnError()
    {
        string path = Path.Combine(_folder, "target.bin");
        File.WriteAllText(path, "old");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, stream =>
        {
            stream.Write([1, 2, 3]);
            throw new InvalidOperationException("disk on fire");
        }));
        Assert.That(File.ReadAllText(path), Is.EqualTo("old"));
        Assert.That(Directory.GetFiles(_folder), Is.EqualTo(new[] { path }));
        AtomicFile.Write(path, stream => stream.Write("new"u8));
        Assert.That(File.ReadAllText(path), Is.EqualTo("new"));
        Assert.That(Directory.GetFiles(_folder), Has.Length.EqualTo(1));
    }

    [Test]
    public void Mp4ReportsMissingFfmpegClearly()
    {
        Assert.That(Mp4Writer.FindFfmpeg(_folder), Is.Null, "an empty folder holds no ffmpeg");
        string path = Path.Combine(_folder, "clip.mp4");
        var error = Assert.Throws<ExternalToolNotFoundException>(
            () => Mp4Writer.Write(Procedural(16), path, ffmpegPath: Path.Combine(_folder, "ffmpeg")))!;
        Assert.That(error.Message, Does.Contain("ffmpeg not found"));
        if (Mp4Writer.FindFfmpeg() is null)
        {
            error = Assert.Throws<ExternalToolNotFoundException>(() => Mp4Writer.Write(Procedural(16), path))!;
            Assert.That(error.Message, Does.Contain("ffmpeg not found on PATH"));
        }
        Assert.That(Directory.GetFiles(_folder), Is.Empty);
    }

    [Test]
    public void Mp4PipesEvenSizedRawRgbAndRenamesOnlyOnSuccess()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("the stand-in ffmpeg is a POSIX shell script");
        // A stand-in ffmpeg that records its arguments and how many bytes it was piped, then writes its output file.
        string log = Path.Combine(_folder, "args.txt");
        string fake = WriteScript("ffmpeg", $"""
            #!/bin/sh
            printf '%s\n' "$@" > '{log}'
            bytes=$(wc -c | tr -d ' ')
            echo "$bytes" >> '{log}'
            for last in "$@"; do :; done
            if [ "$FAKE_FAIL" = 1 ]; then echo partial > "$last"; echo "x264 exploded" >&2; exit 3; fi
            echo fake-mp4 > "$last"
            """);
        var video = new RgbVideo(5, 3, 2, Enumerable.Range(0, 90).Select(i => (byte)(i + 1)).ToArray()); // odd sizes
        string target = Path.Combine(_folder, "out.mp4");
        Mp4Writer.Write(video, target, fps: 8, ffmpegPath: fake);
        Assert.That(File.ReadAllText(target).Trim(), Is.EqualTo("fake-mp4"));
        var arguments = File.ReadAllLines(log);
        Assert.That(arguments, Does.Contain("6x4"), "padded to even dimensions");
        Assert.That(arguments, Does.Contain("libx264").And.Contain("yuv420p").And.Contain("rgb24"));
        Assert.That(arguments[^1], Is.EqualTo((6 * 4 * 3 * 2).ToString()), "raw RGB bytes piped to stdin");
        Assert.That(LeftoverTemps(), Is.Empty);

        File.Delete(target);
        Environment.SetEnvironmentVariable("FAKE_FAIL", "1");
        try
        {
            var error = Assert.Throws<ExternalToolFailedException>(() => Mp4Writer.Write(video, target, ffmpegPath: fake))!;
            Assert.That(error.Message, Does.Contain("code 3").And.Contain("x264 exploded"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("FAKE_FAIL", null);
        }
        Assert.That(File.Exists(target), Is.False);
        Assert.That(LeftoverTemps(), Is.Empty, "the partial temporary file is deleted");
    }

    [Test]
    public void PadToEvenRepeatsTheLastRowAndColumn()
    {
        var video = new RgbVideo(3, 1, 1, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        var even = Mp4Writer.PadToEven(video);
        Assert.That((even.Width, even.Height), Is.EqualTo((4, 2)));
        byte[] row = [1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 8, 9];
        Assert.That(even.Pixels, Is.EqualTo(row.Concat(row).ToArray()));
    }

    [Test]
    public void Mp4RoundTripThroughRealFfmpeg()
    {
        string? ffmpeg = Mp4Writer.FindFfmpeg();
        if (ffmpeg is null) Assert.Ignore("ffmpeg not found on PATH; the MP4 round trip needs it (GIF and PNG are tested without it)");
        var video = Procedural(16, upscale: 4);
        string path = Path.Combine(_folder, "clip.mp4");
        Mp4Writer.Write(video, path, crf: 10);
        var start = new ProcessStartInfo(ffmpeg) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-" }) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var output = new MemoryStream();
        process.StandardOutput.BaseStream.CopyTo(output);
        process.WaitForExit();
        byte[] decoded = output.ToArray();
        Assert.That(decoded, Has.Length.EqualTo(video.Pixels.Length));
        double mean = decoded.Zip(video.Pixels, (a, b) => Math.Abs(a - b)).Average();
        // yuv420p halves chroma resolution: edges of a saturated object lose a few levels on average.
        Assert.That(mean, Is.LessThan(6));
    }

    private string WriteScript(string name, string body)
    {
        string path = Path.Combine(_folder, name);
        File.WriteAllText(path, body.Replace("\r\n", "\n") + "\n");
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    private static double Distance(ReadOnlySpan<byte> rgb, int color)
    {
        int dr = rgb[0] - ((color >> 16) & 0xFF), dg = rgb[1] - ((color >> 8) & 0xFF), db = rgb[2] - (color & 0xFF);
        return Math.Sqrt(dr * dr + dg * dg + db * db);
    }

    internal static byte[] ReadRgb(SKBitmap bitmap)
    {
        var rgb = new byte[3 * bitmap.Width * bitmap.Height];
        for (int y = 0; y < bitmap.Height; y++)
        for (int x = 0; x < bitmap.Width; x++)
        {
            var color = bitmap.GetPixel(x, y);
            int i = 3 * (y * bitmap.Width + x);
            (rgb[i], rgb[i + 1], rgb[i + 2]) = (color.Red, color.Green, color.Blue);
        }
        return rgb;
    }

    /// <summary>Every frame decoded by SkiaSharp's own GIF codec, as interleaved RGB.</summary>
    private static List<byte[]> DecodeGif(string path, out int loops, out int firstDurationMs)
    {
        using var codec = SKCodec.Create(path) ?? throw new AssertionException($"SkiaSharp cannot open {path}");
        Assert.That(codec.EncodedFormat, Is.EqualTo(SKEncodedImageFormat.Gif));
        loops = codec.RepetitionCount;
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Premul);
        var frames = new List<byte[]>();
        firstDurationMs = codec.FrameInfo.Length > 0 ? codec.FrameInfo[0].Duration : 0;
        using var bitmap = new SKBitmap(info);
        for (int f = 0; f < Math.Max(1, codec.FrameCount); f++)
        {
            var options = new SKCodecOptions(f, f == 0 ? -1 : f - 1);
            var result = codec.GetPixels(info, bitmap.GetPixels(), options);
            Assert.That(result, Is.EqualTo(SKCodecResult.Success), $"frame {f}");
            frames.Add(ReadRgb(bitmap));
        }
        return frames;
    }
}
