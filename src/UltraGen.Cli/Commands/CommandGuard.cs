using UltraGen.Core;

namespace UltraGen.Cli.Commands;

/// <summary>Turns bad input into one line on stderr and <see cref="Program.BadInputExitCode"/>, for every command.</summary>
internal static class CommandGuard
{
    /// <summary>Runs <paramref name="action"/>; a <see cref="UltraGenException"/> or an I/O error becomes "error: …" and exit code 2.</summary>
    public static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (UltraGenException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return Program.BadInputExitCode;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return Program.BadInputExitCode;
        }
    }
}
