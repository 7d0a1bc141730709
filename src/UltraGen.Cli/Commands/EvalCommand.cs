using System.CommandLine;
using System.Globalization;
using System.Text;
using UltraGen.Generation.Data;
using UltraGen.Generation.Pipeline;
using UltraGen.Generation.Video;

namespace UltraGen.Cli.Commands;

/// <summary>
/// <c>ultragen eval</c>: the miniature of the paper's Table 1 on the procedural prompts the models never saw in training
/// (<see cref="PromptGrammar.HeldOut"/>): (a) the UltraGen fine-tune at its native resolution, (b) the low-resolution
/// base + bilinear ×k upscaling (two-stage), (c) the base run natively at the high resolution with full attention.
/// Writes <c>table.md</c> and <c>contact-sheet.png</c> to the output folder.
/// </summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var weights = new Option<string?>("--weights") { Description = $"the UltraGen model (default: the bundled models/{SampleCommand.BundledModelName})" };
        var baseWeights = new Option<string?>("--base") { Description = "the low-resolution base model (default: the bundled models/ultragen-mini-base.safetensors)" };
        var seeds = new Option<int>("--seeds") { Description = "seeds per prompt (0, 1, …)", DefaultValueFactory = _ => 1 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 30 };
        var cfg = new Option<double>("--cfg") { DefaultValueFactory = _ => 5.0 };
        var shift = new Option<double>("--shift") { DefaultValueFactory = _ => 5.0 };
        var skipNative = new Option<bool>("--skip-native") { Description = "leave out (c), the slow full-attention run at high resolution" };
        var backend = new Option<string>("--backend", "-b") { DefaultValueFactory = _ => "auto" };
        var output = new Option<string>("--output", "-o") { Description = "folder for table.md and contact-sheet.png", DefaultValueFactory = _ => "eval" };

        var command = new Command("eval", "Miniature Table 1: UltraGen vs two-stage upscaling vs native full attention on held-out prompts");
        foreach (var option in new Option[] { weights, baseWeights, seeds, steps, cfg, shift, skipNative, backend, output }) command.Options.Add(option);
        command.SetAction(result => CommandGuard.Run(() =>
        {
            using var ultragen = VideoModel.Load(result.GetValue(weights) ?? SampleCommand.FindBundledModel(SampleCommand.BundledModelName));
            using var baseModel = VideoModel.Load(result.GetValue(baseWeights) ?? SampleCommand.FindBundledModel("ultragen-mini-base.safetensors"));
            var high = ultragen.Format;
            int factor = high.Height / baseModel.Format.Height;
            if (factor < 1 || baseModel.Format.Height * factor != high.Height || baseModel.Format.Width * factor != high.Width)
                throw new Core.ShapeMismatchException($"the base's {baseModel.Format} does not scale by an integer to the UltraGen model's {high}");
            var methods = new List<EvalMethod>
            {
                new("(a) UltraGen", ultragen, high),
                new($"(b) base {baseModel.Format.Height}px + bilinear ×{factor}", baseModel, baseModel.Format, factor),
            };
            if (!result.GetValue(skipNative)) methods.Add(new("(c) base native, full attention", baseModel, high));
            var seedList = Enumerable.Range(0, result.GetValue(seeds)).Select(s => (ulong)s).ToList();
            using var device = SampleCommand.OpenBackend(result.GetValue(backend)!, out string why, ultragen.Config, baseModel.Config);
            Console.WriteLine($"backend: {device.Name} — {why}");
            var (rows, videos) = TableOneEval.Run(methods, PromptGrammar.HeldOut, seedList, (m, b) => new VideoSampler(m, b), device,
                result.GetValue(steps), result.GetValue(cfg), result.GetValue(shift), Console.WriteLine);

            string folder = Path.GetFullPath(result.GetValue(output)!);
            Directory.CreateDirectory(folder);
            string table = Table(rows, videos, result.GetValue(steps), result.GetValue(cfg), result.GetValue(shift), seedList.Count, device.Name);
            AtomicFile.Write(Path.Combine(folder, "table.md"), stream => stream.Write(Encoding.UTF8.GetBytes(table)));
            var sheetRows = videos.Where(v => v.Seed == 0).OrderBy(v => PromptGrammar.HeldOut.ToList().IndexOf(v.Prompt)).ThenBy(v => v.Method)
                .Select(v => new ContactSheetRow($"{v.Method}: {v.Prompt.Text} — measured {Describe(v)}",
                    RgbVideo.FromPlanar(v.Pixels, v.Format.Frames, v.Format.Height, v.Format.Width, Math.Max(1, 96 / v.Format.Height))))
                .ToList();
            ContactSheet.Write(Path.Combine(folder, "contact-sheet.png"), sheetRows);
            Console.WriteLine();
            Console.Write(table);
            Console.WriteLine($"wrote {Path.Combine(folder, "table.md")} and {Path.Combine(folder, "contact-sheet.png")}");
            return 0;
        }));
        return command;
    }

    private static string Describe(EvalVideo video) =>
        $"{video.Adherence.MeasuredColor?.ToString().ToLowerInvariant() ?? "?"}, {video.Adherence.MeasuredDirection?.ToString().ToLowerInvariant() ?? "none"}";

    /// <summary>The markdown table (one row per method) with the run's settings.</summary>
    public static string Table(IReadOnlyList<EvalRow> rows, IReadOnlyList<EvalVideo> videos, int steps, double cfg, double shift, int seeds, string backend)
    {
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        text.AppendLine(invariant, $"Held-out prompts: {PromptGrammar.HeldOut.Count} × {seeds} seed(s); {steps} Euler steps, CFG {cfg}, shift {shift}; backend {backend}.");
        text.AppendLine();
        text.AppendLine("| method | output | colour ✓ | direction ✓ | colour+direction ✓ | HD-MSE ↑ | temporal consistency ↑ | self-attn GFLOP / forward | cross-attn GFLOP | s / video |");
        text.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var row in rows)
        {
            var mine = videos.Where(v => v.Method == row.Method).ToList();
            double both = mine.Count(v => v.Adherence.ColorMatches && v.Adherence.DirectionMatches) / (double)Math.Max(1, mine.Count);
            text.AppendLine(invariant,
                $"| {row.Method} | {row.OutputFormat.Width}×{row.OutputFormat.Height}×{row.OutputFormat.Frames} | {row.Adherence.ColorRate:P0} | {row.Adherence.DirectionRate:P0} | {both:P0} | {row.HdMse:F1} | {row.TemporalConsistency:F4} | {row.SelfAttentionGflops:F2} | {row.CrossAttentionGflops:F3} | {row.SecondsPerVideo:F1} |");
        }
        return text.ToString();
    }
}
