using System.CommandLine;
using System.Globalization;
using UltraGen.Core;
using UltraGen.Generation.Video;

namespace UltraGen.Cli.Commands;

/// <summary>
/// <c>ultragen plot-loss</c>: a PNG of one or more training loss logs (the CSV <c>ultragen train</c> writes), each
/// smoothed by a moving average so the trend is readable; steps of later logs can be offset to continue earlier ones.
/// </summary>
public static class PlotCommand
{
    public static Command Create()
    {
        var logs = new Option<string[]>("--log") { Description = "name=path.csv[@offset] (repeatable); offset is added to the log's steps", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--output", "-o") { Required = true };
        var window = new Option<int>("--smooth") { Description = "moving-average window in steps", DefaultValueFactory = _ => 50 };
        var title = new Option<string?>("--title");
        var command = new Command("plot-loss", "Plot training loss logs (CSV from ultragen train) to a PNG");
        foreach (var option in new Option[] { logs, output, window, title }) command.Options.Add(option);
        command.SetAction(result => CommandGuard.Run(() =>
        {
            var series = result.GetValue(logs)!.Select(spec => Read(spec, result.GetValue(window))).ToList();
            string path = Path.GetFullPath(result.GetValue(output)!);
            LossPlot.Write(path, series, new LossPlotOptions { LogY = true, Title = result.GetValue(title) });
            Console.WriteLine($"wrote {path}");
            return 0;
        }));
        return command;
    }

    private static LossSeries Read(string spec, int window)
    {
        int equals = spec.IndexOf('=');
        if (equals <= 0) throw new OpParameterException($"--log '{spec}': use name=path.csv[@offset]");
        string name = spec[..equals], rest = spec[(equals + 1)..];
        long offset = 0;
        int at = rest.LastIndexOf('@');
        if (at > 0 && long.TryParse(rest[(at + 1)..], NumberStyles.Integer, CultureInfo.InvariantCulture, out offset)) rest = rest[..at];
        var steps = new List<double>();
        var losses = new List<double>();
        foreach (var line in File.ReadLines(rest).Skip(1))
        {
            var fields = line.Split(',');
            if (fields.Length < 2
                || !double.TryParse(fields[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double step)
                || !double.TryParse(fields[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double loss))
                throw new OpParameterException($"{rest}: '{line}' is not a 'step,loss,…' line");
            steps.Add(step + offset);
            losses.Add(loss);
        }
        if (steps.Count == 0) throw new OpParameterException($"{rest}: no loss lines");
        var smoothed = new List<double>(losses.Count);
        double sum = 0;
        for (int i = 0; i < losses.Count; i++)
        {
            sum += losses[i];
            if (i >= window) sum -= losses[i - window];
            smoothed.Add(sum / Math.Min(i + 1, window));
        }
        return new LossSeries(name, steps, smoothed);
    }
}
