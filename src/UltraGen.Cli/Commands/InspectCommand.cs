using System.CommandLine;
using System.Globalization;
using System.Text;
using UltraGen.Core.Safetensors;
using UltraGen.Generation.Pipeline;
using UltraGen.Model;

namespace UltraGen.Cli.Commands;

/// <summary>
/// <c>ultragen inspect &lt;weights.safetensors&gt;</c>: the configuration detected from a weights file, its parameter counts
/// (base, UltraGen, trainable in LoRA mode), the dtypes it holds, which blocks are full or decomposed, and what is missing
/// or unexpected against that configuration. Reads only the header.
/// </summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("weights") { Description = "A safetensors file of DiT weights (Wan names, optionally with UltraGen's)" };
        var heads = new Option<int?>("--heads") { Description = "attention heads, when the file does not say (default: metadata ultragen.heads, else dim/128)" };
        var preset = new Option<string?>("--config") { Description = $"check against a preset ({string.Join(", ", ModelConfig.Presets.Keys)}) instead of the detected config" };
        var inspect = new Command("inspect", "Show the model config, parameter counts, dtypes and layer plan of a weights file, and what does not match");
        inspect.Arguments.Add(file);
        inspect.Options.Add(heads);
        inspect.Options.Add(preset);
        inspect.SetAction(result => CommandGuard.Run(() =>
        {
            Console.Out.Write(Describe(result.GetValue(file)!, result.GetValue(heads), result.GetValue(preset)));
            return 0;
        }));
        return inspect;
    }

    /// <summary>The report <c>inspect</c> prints.</summary>
    public static string Describe(string path, int? heads = null, string? presetName = null)
    {
        using var file = SafetensorsFile.Open(path);
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        text.AppendLine(invariant, $"file: {path} ({file.Count} tensors, {new FileInfo(path).Length:N0} bytes)");

        ModelConfig config;
        if (presetName is not null)
        {
            config = ModelConfig.Preset(presetName);
            if (heads is { } h) config = (config with { Heads = h }).Validate();
            text.AppendLine(invariant, $"config: preset {presetName.Trim().ToLowerInvariant()}");
        }
        else
        {
            var detection = ConfigDetector.Detect(file, heads);
            config = detection.Config;
            text.AppendLine("config: detected from the tensor shapes");
            foreach (var note in detection.Notes) text.AppendLine(invariant, $"  note: {note}");
        }
        text.AppendLine(invariant,
            $"  dim {config.Dim}, heads {config.Heads} (head dim {config.HeadDim}), ffn {config.FfnDim}, layers {config.Layers}, freq {config.FreqDim}, " +
            $"text {config.TextDim}×{config.TextLen}, in {config.InChannels}, out {config.OutChannels}, patch {config.Patch}, " +
            $"eps {config.Eps.ToString("G", invariant).ToLowerInvariant()}, qk_norm {Lower(config.QkNorm)}, cross_attn_norm {Lower(config.CrossAttnNorm)}");
        text.AppendLine(invariant,
            $"  UltraGen: K {config.WindowBase} (local {config.WindowBase}/{config.WindowBase + 1}, hierarchical {config.WindowBase / 2}/{config.WindowBase / 2 + 1} by block parity), " +
            $"global down {config.GlobalDown}, hierarchical down {config.HierarchicalDown}, LoRA rank {config.LoraRank}, " +
            $"global K uses W_q {Lower(config.GlobalKUsesWq)}, windows {config.WindowMode}");

        var decomposed = config.DecomposedBlocks.ToList();
        text.AppendLine(invariant,
            $"blocks: {config.Layers}; full attention {config.FullAttentionBlocks.ToRangeString()} ({config.FullAttentionBlocks.Count}); " +
            $"decomposed {BlockSet.FormatRanges(decomposed)} ({decomposed.Count})");

        var dtypes = file.Tensors.GroupBy(t => t.DTypeName).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal);
        text.AppendLine(invariant, $"dtypes: {string.Join(", ", dtypes.Select(g => $"{g.Key} ×{g.Count()}"))}");

        var counts = ParameterCatalog.Count(config);
        var perBlock = ParameterCatalog.UltraGenPerBlock(config);
        long total = counts.Total.Parameters;
        text.AppendLine("parameters (config):");
        Row(text, "base", counts.Base);
        Row(text, "UltraGen", counts.UltraGen,
            $"LoRA {counts.Lora.Parameters:N0}, gates {counts.Gate.Parameters:N0}, convs {counts.Conv.Parameters:N0}");
        if (decomposed.Count > 0)
            text.AppendLine(invariant,
                $"    per decomposed block {perBlock.UltraGen.Parameters:N0} in {perBlock.UltraGen.Tensors} tensors " +
                $"(LoRA {perBlock.Lora.Parameters:N0}, gates {perBlock.Gate.Parameters:N0}, convs {perBlock.Conv.Parameters:N0})");
        Row(text, "total", counts.Total);
        Row(text, "trainable (LoRA mode)", counts.TrainableInLora,
            total == 0 ? null : $"{100.0 * counts.TrainableInLora.Parameters / total:F2}% of total; base frozen");
        text.AppendLine(invariant, $"parameters in the file: {file.Tensors.Sum(t => t.ElementCount):N0} in {file.Count:N0} tensors");

        // A bundled video model (VideoModel) carries its word-level text encoder beside the DiT: those tensors belong.
        bool videoModel = VideoModel.IsVideoModel(file);
        if (videoModel)
        {
            string format = file.Metadata.TryGetValue(VideoModel.FormatKey, out var f) ? f : "?";
            string notes = file.Metadata.TryGetValue(VideoModel.NotesKey, out var n) && n.Length > 0 ? n : "(none)";
            text.AppendLine(invariant, $"video model: format {format}; text encoder tensors {file.Tensors.Count(t => VideoModel.IsTextEncoderTensor(t.Name))}; notes: {notes}");
        }
        var check = WeightsCheck.Run(file, config);
        bool onlyTextEncoderExtra = videoModel && check.Missing.Count == 0 && check.Misshaped.Count == 0 && check.UnsupportedDTypes.Count == 0 &&
                                    check.Unexpected.All(t => VideoModel.IsTextEncoderTensor(t.Name));
        if (check.IsMatch || onlyTextEncoderExtra)
            text.AppendLine(videoModel
                ? "check: OK — every tensor the config needs is present with the expected shape (plus the video model's text encoder)"
                : "check: OK — every tensor the config needs is present with the expected shape");
        else
        {
            text.AppendLine("check: MISMATCH");
            foreach (var line in check.Describe().Split('\n').Skip(1)) text.AppendLine(line);
        }
        return text.ToString();
    }

    private static void Row(StringBuilder text, string title, GroupCount count, string? detail = null) =>
        text.AppendLine(CultureInfo.InvariantCulture,
            $"  {title,-22} {count.Parameters,15:N0} in {count.Tensors,6:N0} tensors{(detail is null ? "" : $"  ({detail})")}");

    private static string Lower(bool value) => value ? "true" : "false";
}
