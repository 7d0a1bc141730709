using UltraGen.Core;

namespace UltraGen.Model;

/// <summary>How <see cref="ModelWeights.Load(string, ModelConfig, WeightsLoadOptions?)"/> treats the file.</summary>
public sealed record WeightsLoadOptions
{
    /// <summary>Every parameter must be in the file (the released inference flow's strict <c>load_state_dict</c>).</summary>
    public static WeightsLoadOptions Strict { get; } = new();

    /// <summary>Load a base Wan file into an UltraGen model, initialising the new parameters as the released loader does.</summary>
    public static WeightsLoadOptions FromBaseWan { get; } = new() { InitializeMissingUltraGen = true };

    /// <summary>
    /// Initialise the UltraGen parameters of decomposed blocks the file has none of (a base Wan file) exactly as spec §1.7:
    /// convs 1/prod(shape[1:]), 2-D weights kaiming-uniform (LoRA A and B alike), gate projections and biases zero.
    /// A block holding only some of its UltraGen tensors is still an error.
    /// </summary>
    public bool InitializeMissingUltraGen { get; init; }

    /// <summary>Seed of the kaiming-uniform draws; each tensor gets its own stream from (seed, name).</summary>
    public long InitSeed { get; init; }

    /// <summary>
    /// Zero-initialise LoRA B weights instead of the released loader's kaiming-uniform, so the LoRA starts as an exact
    /// no-op (the usual LoRA practice; spec §1.7, §5).
    /// </summary>
    public bool ZeroInitLoraB { get; init; }
}

/// <summary>How <see cref="ModelWeights.Save"/> writes the file.</summary>
public sealed record WeightsSaveOptions
{
    /// <summary>Storage dtype: F32 (bit-exact master copy), BF16 or F16 (rounded to nearest even).</summary>
    public DType Storage { get; init; } = DType.F32;

    /// <summary>Write only Wan's parameters (a base checkpoint without the UltraGen additions).</summary>
    public bool BaseOnly { get; init; }
}

/// <summary>
/// <c>__metadata__</c> keys <see cref="ModelWeights.Save"/> writes for what tensor shapes cannot tell
/// (<see cref="ModelWeights.DetectConfig"/> reads them back).
/// </summary>
public static class WeightsMetadata
{
    public const string Heads = "ultragen.heads";
    public const string TextLen = "ultragen.text_len";
    public const string Eps = "ultragen.eps";
    public const string WindowBase = "ultragen.window_base";
    public const string LoraRank = "ultragen.lora_rank";
    public const string GlobalKUsesWq = "ultragen.global_k_uses_wq";
    public const string WindowMode = "ultragen.window_mode";

    /// <summary>Informational: the tensors themselves say which blocks are decomposed.</summary>
    public const string FullBlocks = "ultragen.full_blocks";
}
