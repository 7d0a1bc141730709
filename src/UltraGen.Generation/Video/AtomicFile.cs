namespace UltraGen.Generation.Video;

/// <summary>
/// Writes a file so that readers see either the old file or the complete new one: the content goes to a hidden
/// temporary file in the target's folder (same file system, so the final rename is atomic), which is renamed over the
/// target only after it is complete; on any exception the temporary file is deleted and an existing target is untouched.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes through a stream.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        WriteVia(path, temp =>
        {
            using var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
            write(stream);
            stream.Flush(flushToDisk: true);
        });
    }

    /// <summary>
    /// Lets <paramref name="produce"/> create the file at the temporary path it is given (an external tool, say), then
    /// renames it. The temporary name keeps <paramref name="path"/>'s extension, for tools that pick a format from it.
    /// </summary>
    public static void WriteVia(string path, Action<string> produce)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(produce);
        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? ".";
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"cannot write {fullPath}: the folder {directory} does not exist");
        string temp = Path.Combine(directory,
            $".{Path.GetFileNameWithoutExtension(fullPath)}.{Guid.NewGuid():N}.tmp{Path.GetExtension(fullPath)}");
        try
        {
            produce(temp);
            if (!File.Exists(temp))
                throw new IOException($"writing {fullPath} produced no file");
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    internal static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { } // best effort; the original exception matters more
        catch (UnauthorizedAccessException) { }
    }
}
