using System.CommandLine;
using UltraGen.Cli.Commands;

namespace UltraGen.Cli;

public static class Program
{
    /// <summary>Exit code for bad input (a malformed file, wrong shapes, an unknown op or parameter).</summary>
    public const int BadInputExitCode = 2;

    public static int Main(string[] args)
    {
        var root = new RootCommand("UltraGen.Kernels: native high-resolution video generation with hierarchical attention");
        root.Subcommands.Add(OpsCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(SampleCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(PlotCommand.Create());
        return root.Parse(args).Invoke();
    }
}
