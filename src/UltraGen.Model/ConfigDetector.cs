using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Core.Safetensors;

namespace UltraGen.Model;

/// <summary>A configuration inferred from a weights file, with notes on what was assumed rather than read.</summary>
public sealed record ModelConfigDetection(ModelConfig Config, IReadOnlyList<string> Notes);

/// <summary>
/// Infers a <see cref="ModelConfig"/> from tensor shapes: dim, input channels and patch from <c>patch_embedding.weight</c>,
/// layers from the largest block index, FFN width from <c>ffn.0.weight</c>, sinusoid and text widths from the embeddings,
/// output channels from <c>head.head.weight</c>, q/k and cross-attention norms from their presence, decomposed blocks from
/// the presence of UltraGen tensors, LoRA rank from <c>lora_A</c>, compression strides from the conv kernels. What shapes
/// cannot tell (heads, text length, eps, K, the compatibility switches) comes from <see cref="WeightsMetadata"/> keys, else
/// defaults: heads = dim/128 (Wan's head dim) when 128 divides dim.
/// </summary>
public static class ConfigDetector
{
    /// <summary>Wan's head dim, used to assume the head count of a file without <see cref="WeightsMetadata.Heads"/>.</summary>
    public const int WanHeadDim = 128;

    /// <summary>Detects the configuration; <paramref name="heads"/> overrides the head count.</summary>
    /// <exception cref="ModelConfigException">A tensor the detection needs is absent or ill-shaped, or the result is invalid.</exception>
    public static ModelConfigDetection Detect(SafetensorsFile file, int? heads = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        var problems = new List<string>();
        var notes = new List<string>();
        var defaults = new List<string>();

        int[]? Need(string name, int rank)
        {
            if (!file.TryGetInfo(name, out var info)) { problems.Add($"no tensor '{name}'"); return null; }
            if (info.ShapeSpan.Length != rank) { problems.Add($"'{name}' has shape {Shape.Format(info.ShapeSpan)}, expected rank {rank}"); return null; }
            return info.Shape;
        }

        var patch = Need("patch_embedding.weight", 5);
        var text = Need("text_embedding.0.weight", 2);
        var time = Need("time_embedding.0.weight", 2);
        var head = Need("head.head.weight", 2);

        int maxBlock = -1;
        var decomposed = new SortedSet<int>();
        bool qkNorm = false, crossAttnNorm = false;
        int[]? ffn = null, loraA = null, globalConv = null, hierarchicalConv = null;
        foreach (var info in file.Tensors)
        {
            if (!ParameterCatalog.TryParseBlockName(info.Name, out int block, out var rest)) continue;
            maxBlock = Math.Max(maxBlock, block);
            if (ParameterCatalog.IsUltraGenName(info.Name)) decomposed.Add(block);
            switch (rest)
            {
                case "self_attn.norm_q.weight": qkNorm = true; break;
                case "norm3.weight": crossAttnNorm = true; break;
                case "ffn.0.weight" when ffn is null && info.ShapeSpan.Length == 2: ffn = info.Shape; break;
                case "self_attn.q_lora_1.lora_A.weight" when loraA is null && info.ShapeSpan.Length == 2: loraA = info.Shape; break;
                case "self_attn.downsample_conv.weight" when globalConv is null && info.ShapeSpan.Length == 4: globalConv = info.Shape; break;
                case "self_attn.downsample_conv_hierachcal.weight" when hierarchicalConv is null && info.ShapeSpan.Length == 4: hierarchicalConv = info.Shape; break;
            }
        }
        if (maxBlock < 0) problems.Add("no 'blocks.{i}.' tensors");
        else if (ffn is null) problems.Add("no 'blocks.{i}.ffn.0.weight' of rank 2");

        int dim = patch?[0] ?? 0;
        int resolvedHeads = 0;
        if (heads is { } given)
        {
            resolvedHeads = given;
            notes.Add($"heads {given}: given");
        }
        else if (file.Metadata.TryGetValue(WeightsMetadata.Heads, out var stored))
        {
            resolvedHeads = ParseInt(stored, WeightsMetadata.Heads, problems);
            notes.Add($"heads {resolvedHeads}: from metadata {WeightsMetadata.Heads}");
        }
        else if (dim > 0 && dim % WanHeadDim == 0)
        {
            resolvedHeads = dim / WanHeadDim;
            notes.Add($"heads {resolvedHeads}: assumed dim/{WanHeadDim} (Wan's head dim; not stored in the file)");
        }
        else if (patch is not null)
        {
            problems.Add($"cannot infer the head count of dim {dim}: give it explicitly (--heads) or save with metadata '{WeightsMetadata.Heads}'");
        }

        if (problems.Count > 0)
            throw new ModelConfigException($"{file.Path}: cannot detect the model config: {string.Join("; ", problems)}");

        var patchSize = new PatchSize(patch![2], patch[3], patch[4]);
        int headRows = head![0];
        if (patchSize.Volume <= 0 || headRows % patchSize.Volume != 0)
            throw new ModelConfigException(
                $"{file.Path}: cannot detect the model config: head.head.weight has {headRows} rows, not a multiple of the patch volume {patchSize.Volume}");

        int textLen = MetadataInt(file, WeightsMetadata.TextLen, 512, defaults, problems);
        double eps = 1e-6;
        if (file.Metadata.TryGetValue(WeightsMetadata.Eps, out var epsText))
        {
            if (!double.TryParse(epsText, NumberStyles.Float, CultureInfo.InvariantCulture, out eps))
                problems.Add($"metadata {WeightsMetadata.Eps} = '{epsText}' is not a number");
        }
        else defaults.Add("eps 1e-6");
        int windowBase = MetadataInt(file, WeightsMetadata.WindowBase, UltraGenLayoutPlan.DefaultK, defaults, problems);
        bool kUsesWq = true;
        if (file.Metadata.TryGetValue(WeightsMetadata.GlobalKUsesWq, out var kText) && !bool.TryParse(kText, out kUsesWq))
            problems.Add($"metadata {WeightsMetadata.GlobalKUsesWq} = '{kText}' is not true/false");
        var windowMode = WindowMode.ResizeToDivisible;
        if (file.Metadata.TryGetValue(WeightsMetadata.WindowMode, out var modeText)
            && (!Enum.TryParse(modeText, ignoreCase: true, out windowMode) || !Enum.IsDefined(windowMode)))
            problems.Add($"metadata {WeightsMetadata.WindowMode} = '{modeText}' is not {WindowMode.ResizeToDivisible} or {WindowMode.Ragged}");

        int loraRank;
        if (loraA is not null) loraRank = loraA[0];
        else if (decomposed.Count == 0) loraRank = MetadataInt(file, WeightsMetadata.LoraRank, 64, defaults, problems);
        else
        {
            problems.Add($"block {decomposed.Min} has UltraGen tensors but no self_attn.q_lora_1.lora_A.weight of rank 2 to read the LoRA rank from");
            loraRank = 0;
        }
        if (problems.Count > 0)
            throw new ModelConfigException($"{file.Path}: cannot detect the model config: {string.Join("; ", problems)}");
        if (defaults.Count > 0) notes.Add($"not stored in the file, defaults used: {string.Join(", ", defaults)}");

        int layers = maxBlock + 1;
        var config = new ModelConfig
        {
            Dim = dim,
            FfnDim = ffn![0],
            FreqDim = time![1],
            TextDim = text![1],
            TextLen = textLen,
            Heads = resolvedHeads,
            Layers = layers,
            InChannels = patch[1],
            OutChannels = headRows / patchSize.Volume,
            Patch = patchSize,
            Eps = eps,
            QkNorm = qkNorm,
            CrossAttnNorm = crossAttnNorm,
            FullAttentionBlocks = BlockSet.Of(Enumerable.Range(0, layers).Where(b => !decomposed.Contains(b))),
            WindowBase = windowBase,
            GlobalDown = globalConv?[2] ?? UltraGenLayoutPlan.GlobalDownsample,
            HierarchicalDown = hierarchicalConv?[2] ?? UltraGenLayoutPlan.HierarchicalDownsample,
            LoraRank = loraRank,
            GlobalKUsesWq = kUsesWq,
            WindowMode = windowMode,
        };
        try
        {
            config.Validate();
        }
        catch (ModelConfigException e)
        {
            throw new ModelConfigException($"{file.Path}: the detected config is not valid: {e.Message}");
        }
        return new ModelConfigDetection(config, notes.AsReadOnly());
    }

    private static int MetadataInt(SafetensorsFile file, string key, int fallback, List<string> defaults, List<string> problems)
    {
        if (!file.Metadata.TryGetValue(key, out var text))
        {
            defaults.Add($"{key["ultragen.".Length..]} {fallback}");
            return fallback;
        }
        return ParseInt(text, key, problems);
    }

    private static int ParseInt(string text, string key, List<string> problems)
    {
        if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value)) return value;
        problems.Add($"metadata {key} = '{text}' is not an integer");
        return 0;
    }
}
