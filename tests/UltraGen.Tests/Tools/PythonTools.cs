using System.Diagnostics;
using NUnit.Framework;

namespace UltraGen.Tests.Tools;

/// <summary>
/// Finds the repository's <c>tools/</c> folder and a Python interpreter that can import torch, and runs the Python tools
/// from the tests. A machine without such a Python reports the Python-backed tests as skipped, with the reason; CI
/// installs Debian's <c>python3-torch</c>, so there they run.
/// </summary>
internal static class PythonTools
{
    private static readonly Lazy<string> ToolsFolderLazy = new(FindToolsFolder);
    private static readonly Lazy<(string? Path, string Reason)> PythonLazy = new(FindPython);

    /// <summary>Absolute path of the repository's <c>tools/</c> folder.</summary>
    public static string ToolsFolder => ToolsFolderLazy.Value;

    /// <summary>A Python with torch, or skips the calling test (Assert.Ignore) saying why there is none.</summary>
    public static string RequirePython()
    {
        var (path, reason) = PythonLazy.Value;
        if (path is null) Assert.Ignore(reason);
        return path!;
    }

    /// <summary>Runs <c>python args…</c> in <c>tools/</c>; returns the exit code and stdout + stderr together.</summary>
    public static (int ExitCode, string Output) Run(IEnumerable<string> args, TimeSpan? timeout = null)
    {
        string python = RequirePython();
        var start = new ProcessStartInfo(python)
        {
            WorkingDirectory = ToolsFolder,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in args) start.ArgumentList.Add(arg);
        start.Environment["PYTHONDONTWRITEBYTECODE"] = "1"; // no __pycache__ in the working tree
        start.Environment["OMP_NUM_THREADS"] = "2";
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {python}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{python} {string.Join(' ', args)} did not finish within {timeout ?? TimeSpan.FromMinutes(10)}");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    private static string FindToolsFolder()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            string candidate = Path.Combine(folder.FullName, "tools", "ultragen_tools");
            if (Directory.Exists(candidate)) return Path.GetDirectoryName(candidate)!;
        }
        throw new DirectoryNotFoundException("tools/ultragen_tools not found above the test binaries: run the tests from the repository");
    }

    private static (string?, string) FindPython()
    {
        // ULTRAGEN_PYTHON wins; then python3 on PATH (may be a pyenv without torch); then Debian's interpreter, where
        // python3-torch installs.
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("ULTRAGEN_PYTHON") is { Length: > 0 } chosen) candidates.Add(chosen);
        candidates.AddRange(["python3", "/usr/bin/python3"]);
        var tried = new List<string>();
        foreach (string candidate in candidates.Distinct())
        {
            try
            {
                var start = new ProcessStartInfo(candidate, ["-c", "import torch; print(torch.__version__)"])
                {
                    RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
                };
                using var process = Process.Start(start);
                if (process is null) { tried.Add($"{candidate}: did not start"); continue; }
                process.StandardError.ReadToEndAsync();
                string version = process.StandardOutput.ReadToEnd().Trim();
                if (!process.WaitForExit(60_000)) { process.Kill(); tried.Add($"{candidate}: timed out"); continue; }
                if (process.ExitCode == 0) return (candidate, $"torch {version}");
                tried.Add($"{candidate}: cannot import torch");
            }
            catch (System.ComponentModel.Win32Exception)
            {
                tried.Add($"{candidate}: not found");
            }
        }
        return (null, "no Python with torch (tried " + string.Join("; ", tried) +
                      "); install python3-torch (Debian) or set ULTRAGEN_PYTHON");
    }
}
