using UltraGen.Cli;

namespace UltraGen.Tests.Cli;

/// <summary>Runs the <c>ultragen</c> tool in process with its console output captured (the CLI tests are non-parallel).</summary>
internal static class CliRunner
{
    public static (int ExitCode, string Out, string Error) Invoke(params string[] args)
    {
        var (oldOut, oldError) = (Console.Out, Console.Error);
        var (output, error) = (new StringWriter(), new StringWriter());
        Console.SetOut(output);
        Console.SetError(error);
        try { return (Program.Main(args), output.ToString(), error.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldError); }
    }
}
