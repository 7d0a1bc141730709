using System.Globalization;
using UltraGen.Core.Layout;

namespace UltraGen.Model;

/// <summary>The DiT's patch size (frames, rows, columns) of the patch-embedding Conv3d; Wan uses (1, 2, 2).</summary>
public readonly record struct PatchSize(int T, int H, int W)
{
    /// <summary>T·H·W: latent elements per channel folded into one token.</summary>
    public int Volume => T * H * W;

    public override string ToString() => $"({T}, {H}, {W})";
}

/// <summary>
/// The configuration of a Wan2.1-style text-to-video DiT with UltraGen attention: the base model's sizes (spec §2.1) plus
/// UltraGen's settings (spec §1.3): which blocks keep full attention, the window base K, the compression strides, the
/// LoRA rank and the checkpoint-compatibility switches. <see cref="Validate"/> reports every problem in one
/// <see cref="ModelConfigException"/>; presets are in <see cref="Presets"/>.
/// </summary>
/// <remarks>
/// The value equality of this record is structural, including <see cref="FullAttentionBlocks"/> (a <see cref="BlockSet"/>),
/// so a configuration detected from a file compares equal to the preset it was saved from.
/// </remarks>
public sealed record ModelConfig
{
    /// <summary>Name of the Wan2.1-T2V-1.3B preset.</summary>
    public const string Wan21T2V13BName = "wan2.1-t2v-1.3b";

    /// <summary>Name of the tiny test preset.</summary>
    public const string TinyName = "tiny";

    /// <summary>Name of the small preset meant for the bundled CPU model.</summary>
    public const string MiniName = "mini";

    // ---------------------------------------------------------------- base model (spec §2.1)

    /// <summary>Model width D (Wan 1.3B: 1536).</summary>
    public required int Dim { get; init; }

    /// <summary>FFN hidden width (Wan 1.3B: 8960).</summary>
    public required int FfnDim { get; init; }

    /// <summary>Width of the timestep sinusoid fed to the time embedding and to UltraGen's gates (Wan: 256).</summary>
    public required int FreqDim { get; init; }

    /// <summary>Width of the text encoder's features (umT5-XXL: 4096).</summary>
    public required int TextDim { get; init; }

    /// <summary>Text tokens the DiT attends to (Wan: 512, zero rows after the prompt). Not visible in the weights.</summary>
    public required int TextLen { get; init; }

    /// <summary>Attention heads (Wan 1.3B: 12, head dim 128). Not visible in the weights.</summary>
    public required int Heads { get; init; }

    /// <summary>Number of DiT blocks (Wan 1.3B: 30).</summary>
    public required int Layers { get; init; }

    /// <summary>Latent channels in (16).</summary>
    public int InChannels { get; init; } = 16;

    /// <summary>Latent channels out (16).</summary>
    public int OutChannels { get; init; } = 16;

    /// <summary>Patch-embedding kernel and stride, (1, 2, 2).</summary>
    public PatchSize Patch { get; init; } = new(1, 2, 2);

    /// <summary>LayerNorm/RMSNorm epsilon (1e-6).</summary>
    public double Eps { get; init; } = 1e-6;

    /// <summary>RMSNorm on q and k (before the head split) in self- and cross-attention; adds <c>norm_q</c>/<c>norm_k</c> weights.</summary>
    public bool QkNorm { get; init; } = true;

    /// <summary>Affine LayerNorm before cross-attention; adds <c>norm3.weight</c>/<c>norm3.bias</c>.</summary>
    public bool CrossAttnNorm { get; init; } = true;

    // ---------------------------------------------------------------- UltraGen (spec §1.3)

    /// <summary>
    /// Blocks that keep Wan's full attention; every other block is decomposed. The reference plan is
    /// <see cref="BlockSet.Reference"/> ({0,1,2} ∪ the last three), <see cref="BlockSet.Empty"/> decomposes every block and
    /// <see cref="BlockSet.All"/> gives plain Wan.
    /// </summary>
    public required BlockSet FullAttentionBlocks { get; init; }

    /// <summary>K: local windows per side on even blocks (K+1 on odd), hierarchical K/2 (+1); the reference hard-codes 4.</summary>
    public int WindowBase { get; init; } = UltraGenLayoutPlan.DefaultK;

    /// <summary>Stride (and kernel) of the global branch's depthwise compression conv (4).</summary>
    public int GlobalDown { get; init; } = UltraGenLayoutPlan.GlobalDownsample;

    /// <summary>Stride (and kernel) of the hierarchical branch's depthwise compression conv (2).</summary>
    public int HierarchicalDown { get; init; } = UltraGenLayoutPlan.HierarchicalDownsample;

    /// <summary>Rank r of the domain-aware LoRA on q, k, v of the global and hierarchical branches (64).</summary>
    public int LoraRank { get; init; } = 64;

    /// <summary>Checkpoint compatibility (spec §4.4): the global branch's K projection uses W_q, as the released code does.</summary>
    public bool GlobalKUsesWq { get; init; } = true;

    /// <summary>Checkpoint compatibility (spec §4.2): resize to the nearest divisible grid as the released code, or exact ragged windows.</summary>
    public WindowMode WindowMode { get; init; } = WindowMode.ResizeToDivisible;

    // ---------------------------------------------------------------- derived

    /// <summary>D / heads.</summary>
    public int HeadDim => Heads > 0 ? Dim / Heads : 0;

    /// <summary>True when block <paramref name="block"/> uses UltraGen's decomposed attention (it is not a full-attention block).</summary>
    public bool IsDecomposed(int block)
    {
        if ((uint)block >= (uint)Layers)
            throw new ArgumentOutOfRangeException(nameof(block), block, $"block index outside 0..{Layers - 1}");
        return !FullAttentionBlocks.Contains(block);
    }

    /// <summary>How many blocks are decomposed (blocks in range that are not full attention).</summary>
    public int DecomposedBlockCount
    {
        get
        {
            int count = 0;
            for (int block = 0; block < Layers; block++)
                if (!FullAttentionBlocks.Contains(block)) count++;
            return count;
        }
    }

    /// <summary>The decomposed block indices, ascending.</summary>
    public IEnumerable<int> DecomposedBlocks => Enumerable.Range(0, Math.Max(Layers, 0)).Where(b => !FullAttentionBlocks.Contains(b));

    /// <summary>This configuration with the released code's layer plan ({0,1,2} ∪ the last three blocks full).</summary>
    public ModelConfig WithReferencePlan() => this with { FullAttentionBlocks = BlockSet.Reference(Layers) };

    /// <summary>This configuration with every block decomposed (the paper's analysis).</summary>
    public ModelConfig WithAllDecomposed() => this with { FullAttentionBlocks = BlockSet.Empty };

    /// <summary>This configuration with every block keeping full attention: plain Wan, no UltraGen parameters.</summary>
    public ModelConfig WithAllFull() => this with { FullAttentionBlocks = BlockSet.All(Layers) };

    // ---------------------------------------------------------------- presets

    /// <summary>Wan2.1-T2V-1.3B exactly as spec §2.1, with the released UltraGen plan (blocks 3–26 decomposed, rank 64).</summary>
    public static ModelConfig Wan21T2V13B { get; } = new()
    {
        Dim = 1536,
        FfnDim = 8960,
        FreqDim = 256,
        TextDim = 4096,
        TextLen = 512,
        Heads = 12,
        Layers = 30,
        FullAttentionBlocks = BlockSet.Reference(30),
    };

    /// <summary>
    /// A tiny model for tests: dim 48, 4 heads (head dim 12), FFN 96, 4 layers with blocks 0 and 3 full and 1–2 decomposed
    /// (one odd, one even), text dim 32 × 8 tokens, sinusoid 32, LoRA rank 4.
    /// </summary>
    public static ModelConfig Tiny { get; } = new()
    {
        Dim = 48,
        FfnDim = 96,
        FreqDim = 32,
        TextDim = 32,
        TextLen = 8,
        Heads = 4,
        Layers = 4,
        LoraRank = 4,
        FullAttentionBlocks = BlockSet.Of(0, 3),
    };

    /// <summary>
    /// A small model sized for the bundled CPU model: dim 128, 4 heads (head dim 32), FFN 384, 8 layers with the first and
    /// last full and 1–6 decomposed, text dim 64 × 16 tokens, sinusoid 64, LoRA rank 8.
    /// </summary>
    public static ModelConfig Mini { get; } = new()
    {
        Dim = 128,
        FfnDim = 384,
        FreqDim = 64,
        TextDim = 64,
        TextLen = 16,
        Heads = 4,
        Layers = 8,
        LoraRank = 8,
        FullAttentionBlocks = BlockSet.Of(0, 7),
    };

    /// <summary>Every preset by name.</summary>
    public static IReadOnlyDictionary<string, ModelConfig> Presets { get; } = new Dictionary<string, ModelConfig>(StringComparer.OrdinalIgnoreCase)
    {
        [Wan21T2V13BName] = Wan21T2V13B,
        [TinyName] = Tiny,
        [MiniName] = Mini,
    };

    /// <summary>The preset called <paramref name="name"/> (case-insensitive); <see cref="ModelConfigException"/> listing the presets otherwise.</summary>
    public static ModelConfig Preset(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Presets.TryGetValue(name.Trim(), out var config) ? config
            : throw new ModelConfigException($"unknown model preset '{name}' (presets: {string.Join(", ", Presets.Keys)})");
    }

    // ---------------------------------------------------------------- validation

    /// <summary>
    /// Checks every rule and throws one <see cref="ModelConfigException"/> listing all violations. Allocates nothing when
    /// the configuration is valid.
    /// </summary>
    public ModelConfig Validate()
    {
        List<string>? problems = null;
        void Problem(string text) => (problems ??= []).Add(text);

        if (Dim < 1) Problem($"dim must be >= 1, got {Dim}");
        if (Heads < 1) Problem($"heads must be >= 1, got {Heads}");
        if (Dim >= 1 && Heads >= 1)
        {
            if (Dim % Heads != 0) Problem($"dim {Dim} is not divisible by heads {Heads}");
            else if (HeadDim % 2 != 0 || HeadDim < 6)
                Problem($"head dim {HeadDim} (dim {Dim} / heads {Heads}) must be even and >= 6 (3-D RoPE splits it into time/row/column pairs)");
        }
        if (FfnDim < 1) Problem($"ffn dim must be >= 1, got {FfnDim}");
        if (FreqDim < 2 || FreqDim % 2 != 0) Problem($"freq dim must be even and >= 2 (cos half, sin half), got {FreqDim}");
        if (TextDim < 1) Problem($"text dim must be >= 1, got {TextDim}");
        if (TextLen < 1) Problem($"text len must be >= 1, got {TextLen}");
        if (Layers < 1) Problem($"layers must be >= 1, got {Layers}");
        if (InChannels < 1) Problem($"in channels must be >= 1, got {InChannels}");
        if (OutChannels < 1) Problem($"out channels must be >= 1, got {OutChannels}");
        if (Patch.T < 1 || Patch.H < 1 || Patch.W < 1) Problem($"patch size {Patch} must be positive in every dimension");
        if (!(Eps > 0) || double.IsInfinity(Eps)) Problem($"eps must be a positive finite number, got {Eps.ToString("R", CultureInfo.InvariantCulture)}");
        if (FullAttentionBlocks is null) Problem("full-attention blocks must be given (BlockSet.Reference(layers), BlockSet.Empty, …)");
        else if (Layers >= 1 && FullAttentionBlocks.Max >= Layers)
            Problem($"full-attention block {FullAttentionBlocks.Max} is past the last block {Layers - 1}");
        if (WindowBase < 2 || WindowBase % 2 != 0)
            Problem($"window base K must be even and >= 2 (hierarchical windows are K/2 per side), got {WindowBase}");
        if (GlobalDown != UltraGenLayoutPlan.GlobalDownsample)
            Problem($"global down must be {UltraGenLayoutPlan.GlobalDownsample} (the attention layouts support only the reference stride), got {GlobalDown}");
        if (HierarchicalDown != UltraGenLayoutPlan.HierarchicalDownsample)
            Problem($"hierarchical down must be {UltraGenLayoutPlan.HierarchicalDownsample} (the attention layouts support only the reference stride), got {HierarchicalDown}");
        if (LoraRank < 1 || (Dim >= 1 && LoraRank > Dim)) Problem($"LoRA rank must be in 1..dim ({Dim}), got {LoraRank}");
        if (WindowMode is not (WindowMode.ResizeToDivisible or WindowMode.Ragged)) Problem($"unknown window mode {WindowMode}");

        if (problems is not null)
            throw new ModelConfigException($"invalid model config: {string.Join("; ", problems)}");
        return this;
    }

    /// <summary>One line: the sizes, the layer plan and the UltraGen settings.</summary>
    public override string ToString() =>
        $"dim {Dim}, heads {Heads} (head dim {HeadDim}), ffn {FfnDim}, layers {Layers}, freq {FreqDim}, text {TextDim}×{TextLen}, " +
        $"in {InChannels}, out {OutChannels}, patch {Patch}, eps {Eps.ToString("G", CultureInfo.InvariantCulture).ToLowerInvariant()}, " +
        $"qk_norm {Lower(QkNorm)}, cross_attn_norm {Lower(CrossAttnNorm)}; full attention {FullAttentionBlocks?.ToRangeString()}, " +
        $"K {WindowBase}, global down {GlobalDown}, hierarchical down {HierarchicalDown}, LoRA rank {LoraRank}, " +
        $"global K uses W_q {Lower(GlobalKUsesWq)}, windows {WindowMode}";

    private static string Lower(bool value) => value ? "true" : "false";
}
