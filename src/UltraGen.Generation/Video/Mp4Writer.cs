using System.Diagnostics;
using System.Globalization;
using UltraGen.Core;

namespace UltraGen.Generation.Video;

/// <summary>An external program this library drives (ffmpeg) is not installed or not on PATH.</summary>
public class ExternalToolNotFoundException : UltraGenException
{
    public ExternalToolNotFoundException(string tool, string message) : base(message) => Tool = tool;

    public string Tool { get; }
}

/// <summary>An external program ran but failed; the message carries the end of its error output.</summary>
public class ExternalToolFailedException : UltraGenException
{
    public ExternalToolFailedException(string message) : base(message) { }
}

/// <summary>
/// Writes H.264 MP4 through the <c>ffmpeg</c> executable: raw RGB frames piped to its stdin, libx264, yuv420p (the pixel
/// format every player decodes), <c>+faststart</c> so browsers can play it while loading. yuv420p halves the chroma
/// resolution, so odd widths or heights are padded by repeating the last column / row to even sizes. ffmpeg is optional:
/// without it <see cref="Write"/> throws <see cref="ExternalToolNotFoundException"/> saying so, and GIF or PNG frames
/// remain available.
/// </summary>
public static class Mp4Writer
{
    /// <summary>
    /// The full path of <c>ffmpeg</c> on <paramref name="searchPath"/> (a PATH-style list; the process's PATH when null),
    /// or null when absent.
    /// </summary>
    public static string? FindFfmpeg(string? searchPath = null)
    {
        searchPath ??= Environment.GetEnvironmentVariable("PATH") ?? "";
        string executable = OperatingSystem.IsWindows() ? "ffmpeg.exe" : "ffmpeg";
        foreach (string folder in searchPath.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(folder, executable);
            if (File.Exists(candidate)) return Path.GetFullPath(candidate);
        }
        return null;
    }

    /// <summary>
    /// Encodes <paramref name="video"/> to <paramref name="path"/> atomically (ffmpeg writes a temporary file in the same
    /// folder, renamed on success, deleted on failure). <paramref name="ffmpegPath"/> overrides the PATH lookup.
    /// </summary>
    /// <exception cref="ExternalToolNotFoundException">ffmpeg is not on PATH (or not at <paramref name="ffmpegPath"/>).</exception>
    /// <exception cref="ExternalToolFailedException">ffmpeg exited with an error.</exception>
    public static void Write(RgbVideo video, string path, double fps = 8, int crf = 18, string? ffmpegPath = null)
    {
        ArgumentNullException.ThrowIfNull(video);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!(fps > 0) || double.IsInfinity(fps)) throw new ArgumentOutOfRangeException(nameof(fps), fps, "fps must be positive and finite");
        ArgumentOutOfRangeException.ThrowIfNegative(crf);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(crf, 51);
        string ffmpeg = ffmpegPath is not null
            ? File.Exists(ffmpegPath) ? ffmpegPath : throw new ExternalToolNotFoundException("ffmpeg", $"ffmpeg not found at {ffmpegPath}")
            : FindFfmpeg() ?? throw new ExternalToolNotFoundException("ffmpeg",
                "ffmpeg not found on PATH: install ffmpeg to write MP4, or write a GIF or PNG frames instead");

        var even = PadToEven(video);
        AtomicFile.WriteVia(path, temp => RunFfmpeg(ffmpeg, even, temp, fps, crf));
    }

    /// <summary>The video with its last column and/or row repeated once where the width / height is odd.</summary>
    public static RgbVideo PadToEven(RgbVideo video)
    {
        ArgumentNullException.ThrowIfNull(video);
        int width = video.Width + (video.Width & 1), height = video.Height + (video.Height & 1);
        if (width == video.Width && height == video.Height) return video;
        var pixels = new byte[3 * width * height * video.FrameCount];
        for (int f = 0; f < video.FrameCount; f++)
        {
            var frame = video.Frame(f);
            for (int y = 0; y < height; y++)
            {
                var source = frame.Slice(3 * video.Width * Math.Min(y, video.Height - 1), 3 * video.Width);
                var destination = pixels.AsSpan(3 * width * (f * height + y), 3 * width);
                source.CopyTo(destination);
                if (width != video.Width) source[^3..].CopyTo(destination[^3..]);
            }
        }
        return new RgbVideo(width, height, video.FrameCount, pixels);
    }

    private static void RunFfmpeg(string ffmpeg, RgbVideo video, string output, double fps, int crf)
    {
        var start = new ProcessStartInfo(ffmpeg)
        {
            RedirectStandardInput = true,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        string[] arguments =
        [
            "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", $"{video.Width}x{video.Height}",
            "-r", fps.ToString("R", CultureInfo.InvariantCulture),
            "-i", "-",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", crf.ToString(CultureInfo.InvariantCulture),
            "-movflags", "+faststart", "-f", "mp4",
            output,
        ];
        foreach (string argument in arguments) start.ArgumentList.Add(argument);

        using var process = Process.Start(start) ?? throw new ExternalToolFailedException($"could not start {ffmpeg}");
        var errors = process.StandardError.ReadToEndAsync();
        var ignoredOutput = process.StandardOutput.ReadToEndAsync();
        try
        {
            using (var stdin = process.StandardInput.BaseStream)
                stdin.Write(video.Pixels);
        }
        catch (IOException)
        {
            // ffmpeg closed its input early (bad arguments, say): its exit code and stderr below say why.
        }
        process.WaitForExit();
        string stderr = errors.GetAwaiter().GetResult();
        ignoredOutput.GetAwaiter().GetResult();
        if (process.ExitCode != 0)
        {
            string tail = stderr.Length > 2000 ? stderr[^2000..] : stderr;
            throw new ExternalToolFailedException($"ffmpeg exited with code {process.ExitCode}: {tail.Trim()}");
        }
    }
}
