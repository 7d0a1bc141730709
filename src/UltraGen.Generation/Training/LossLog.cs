using System.Globalization;
using System.Text;

namespace UltraGen.Generation.Training;

/// <summary>
/// The training loss log, a CSV with one line per step: <c>step,loss,grad_norm,lr,seconds</c> (step 1-based =
/// completed updates; loss, norm and lr in round-trip form; seconds = wall time of that step). Each line is flushed as
/// it is written, so a kill loses at most the line being written.
/// </summary>
public sealed class LossLog : IDisposable
{
    public const string Header = "step,loss,grad_norm,lr,seconds";

    private readonly StreamWriter _writer;

    private LossLog(StreamWriter writer) => _writer = writer;

    /// <summary>
    /// Opens <paramref name="path"/> for a run that continues after <paramref name="keepThroughStep"/> completed steps:
    /// lines of later steps (written after the checkpoint being resumed, before a kill) and torn or foreign lines are
    /// dropped by rewriting the file atomically; a missing file is created with the header.
    /// </summary>
    public static LossLog Open(string path, long keepThroughStep)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var kept = new StringBuilder(Header + "\n");
        if (File.Exists(path))
        {
            foreach (string line in File.ReadLines(path))
                if (TryParseStep(line, out long step) && step <= keepThroughStep)
                    kept.Append(line).Append('\n');
        }
        string fullPath = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(fullPath) ?? ".", $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllText(temp, kept.ToString(), new UTF8Encoding(false));
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
        var stream = new FileStream(fullPath, FileMode.Append, FileAccess.Write, FileShare.Read);
        return new LossLog(new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n" });
    }

    public void Append(long step, double loss, double gradientNorm, double learningRate, double seconds)
    {
        _writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{step},{loss:R},{gradientNorm:R},{learningRate:R},{seconds:F4}"));
        _writer.Flush();
    }

    /// <summary>A data line has five comma-separated fields and a positive integer step first.</summary>
    private static bool TryParseStep(string line, out long step)
    {
        step = 0;
        var fields = line.Split(',');
        return fields.Length == 5 && fields[4].Length > 0
            && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out step) && step > 0;
    }

    public void Dispose() => _writer.Dispose();
}
