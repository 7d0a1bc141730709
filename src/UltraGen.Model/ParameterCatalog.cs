using System.Collections.Immutable;
using System.Globalization;
using UltraGen.Core;

namespace UltraGen.Model;

/// <summary>Which part of the model a parameter belongs to.</summary>
public enum ParameterGroup
{
    /// <summary>A Wan2.1 parameter (spec §2.3): embeddings, blocks, head.</summary>
    Base,

    /// <summary>UltraGen's domain-aware LoRA: <c>{q,k,v}_lora_{1,2}.lora_{A,B}</c>.</summary>
    Lora,

    /// <summary>UltraGen's time gates: <c>alpha_time_embedding{,2}</c>, <c>alpha_time_projection{,2}</c>.</summary>
    Gate,

    /// <summary>UltraGen's depthwise compression and refinement convolutions.</summary>
    Conv,
}

/// <summary>How the released loader initialises a parameter that the loaded file lacks (spec §1.7).</summary>
public enum ParameterInit
{
    /// <summary>A base Wan parameter: it must come from a checkpoint.</summary>
    Pretrained,

    /// <summary>Conv weight set to the constant 1/prod(shape[1:]) (average pooling / box filter).</summary>
    ConvAverage,

    /// <summary><c>kaiming_uniform_(a=√5)</c>: U(−1/√fan_in, 1/√fan_in), fan_in = shape[1].</summary>
    KaimingUniform,

    /// <summary>Zeros (biases, and the gates' last Linear so each gate starts at sigmoid(0) = 0.5).</summary>
    Zero,
}

/// <summary>One named parameter of the model, in the Wan/UltraGen checkpoint naming.</summary>
/// <param name="Name">The checkpoint name, e.g. <c>blocks.3.self_attn.q_lora_1.lora_A.weight</c>.</param>
/// <param name="Shape">Row-major shape as the checkpoint stores it (PyTorch's).</param>
/// <param name="Group">Base or which UltraGen module.</param>
/// <param name="Block">The block index, or −1 outside the blocks.</param>
/// <param name="Init">What the released loader does when the file lacks it.</param>
public sealed record ParameterSpec(string Name, ImmutableArray<int> Shape, ParameterGroup Group, int Block, ParameterInit Init)
{
    /// <summary>True for Wan's own parameters.</summary>
    public bool IsBase => Group == ParameterGroup.Base;

    /// <summary>True for parameters UltraGen adds (LoRA, gates, convs).</summary>
    public bool IsUltraGen => Group != ParameterGroup.Base;

    /// <summary>Trainable in the domain-aware LoRA mode: the base is frozen, LoRA, gates and the down/up convs train.</summary>
    public bool TrainableInLora => IsUltraGen;

    public long ElementCount => Core.Shape.ElementCount(Shape.AsSpan());

    public override string ToString() => $"{Name} {Core.Shape.Format(Shape.AsSpan())}";
}

/// <summary>Tensors and scalar parameters of one group.</summary>
public readonly record struct GroupCount(int Tensors, long Parameters)
{
    public static GroupCount operator +(GroupCount a, GroupCount b) => new(a.Tensors + b.Tensors, a.Parameters + b.Parameters);
}

/// <summary>Parameter totals of a configuration, per group.</summary>
public readonly record struct ParameterCounts(GroupCount Base, GroupCount Lora, GroupCount Gate, GroupCount Conv)
{
    /// <summary>Everything UltraGen adds: LoRA + gates + convs.</summary>
    public GroupCount UltraGen => Lora + Gate + Conv;

    public GroupCount Total => Base + UltraGen;

    /// <summary>What trains in the domain-aware LoRA mode (base frozen): the UltraGen parameters.</summary>
    public GroupCount TrainableInLora => UltraGen;

    public GroupCount this[ParameterGroup group] => group switch
    {
        ParameterGroup.Base => Base,
        ParameterGroup.Lora => Lora,
        ParameterGroup.Gate => Gate,
        ParameterGroup.Conv => Conv,
        _ => throw new ArgumentOutOfRangeException(nameof(group), group, "unknown group"),
    };
}

/// <summary>
/// The complete list of a configuration's parameters with their shapes, in the Wan naming of spec §2.3 plus UltraGen's
/// additions for decomposed blocks (spec §1.3), in Wan2.1's <c>state_dict</c> order with each decomposed block's UltraGen
/// tensors after its Wan ones (the released UltraGen code registers <c>norm_q</c>/<c>norm_k</c> after its own modules
/// and <c>norm3</c> after <c>cross_attn</c>; loading matches by name, so only file order differs). <see cref="Count"/> walks
/// the same table arithmetically and allocates nothing, so it can size the 1.3B model without building its names.
/// </summary>
public static class ParameterCatalog
{
    /// <summary>Prefix of every block parameter: <c>blocks.{i}.</c>.</summary>
    public const string BlockPrefix = "blocks.";

    /// <summary>The six LoRA modules of a decomposed block's <c>self_attn</c>: <c>_1</c> global branch, <c>_2</c> hierarchical.</summary>
    /// <remarks>Declared before the tables: static initialisers run in textual order and the tables are built from it.</remarks>
    public static IReadOnlyList<string> UltraGenLoraModules { get; } = ["q_lora_1", "k_lora_1", "v_lora_1", "q_lora_2", "k_lora_2", "v_lora_2"];

    /// <summary>
    /// Name prefixes (after <c>blocks.{i}.self_attn.</c>) of every UltraGen module; a tensor under one of them marks its
    /// block as decomposed.
    /// </summary>
    public static IReadOnlyList<string> UltraGenModulePrefixes { get; } =
        ["q_lora_", "k_lora_", "v_lora_", "alpha_time_embedding", "alpha_time_projection", "downsample_conv", "upsample_conv"];

    /// <summary>A shape of rank ≤ 5 held inline, so the counting path allocates nothing.</summary>
    private readonly struct Dims
    {
        private readonly int _d0, _d1, _d2, _d3, _d4;

        public Dims(int d0) : this(1, d0, 0, 0, 0, 0) { }
        public Dims(int d0, int d1) : this(2, d0, d1, 0, 0, 0) { }
        public Dims(int d0, int d1, int d2) : this(3, d0, d1, d2, 0, 0) { }
        public Dims(int d0, int d1, int d2, int d3) : this(4, d0, d1, d2, d3, 0) { }
        public Dims(int d0, int d1, int d2, int d3, int d4) : this(5, d0, d1, d2, d3, d4) { }

        private Dims(int rank, int d0, int d1, int d2, int d3, int d4)
        {
            Rank = rank;
            (_d0, _d1, _d2, _d3, _d4) = (d0, d1, d2, d3, d4);
        }

        public int Rank { get; }

        public int this[int axis] => axis switch { 0 => _d0, 1 => _d1, 2 => _d2, 3 => _d3, 4 => _d4, _ => throw new ArgumentOutOfRangeException(nameof(axis)) };

        public long Elements
        {
            get
            {
                long count = 1;
                for (int axis = 0; axis < Rank; axis++) count = checked(count * this[axis]);
                return count;
            }
        }

        public ImmutableArray<int> ToImmutable()
        {
            var builder = ImmutableArray.CreateBuilder<int>(Rank);
            for (int axis = 0; axis < Rank; axis++) builder.Add(this[axis]);
            return builder.MoveToImmutable();
        }
    }

    /// <summary>One row of the table: a name (suffix after <c>blocks.{i}.</c> for block rows), its shape rule and group.</summary>
    private sealed class Row
    {
        public Row(string suffix, ParameterGroup group, Func<ModelConfig, Dims> shape, Func<ModelConfig, bool>? when = null)
        {
            Suffix = suffix;
            Group = group;
            Shape = shape;
            When = when;
        }

        public string Suffix { get; }
        public ParameterGroup Group { get; }
        public Func<ModelConfig, Dims> Shape { get; }
        public Func<ModelConfig, bool>? When { get; }

        public bool IsPresent(ModelConfig config) => When is null || When(config);
    }

    // Wan's module registration order, as a state_dict lists it: a module's own parameters first, then its children.
    private static readonly Row[] s_head =
    [
        new("patch_embedding.weight", ParameterGroup.Base, static c => new(c.Dim, c.InChannels, c.Patch.T, c.Patch.H, c.Patch.W)),
        new("patch_embedding.bias", ParameterGroup.Base, static c => new(c.Dim)),
        new("text_embedding.0.weight", ParameterGroup.Base, static c => new(c.Dim, c.TextDim)),
        new("text_embedding.0.bias", ParameterGroup.Base, static c => new(c.Dim)),
        new("text_embedding.2.weight", ParameterGroup.Base, static c => new(c.Dim, c.Dim)),
        new("text_embedding.2.bias", ParameterGroup.Base, static c => new(c.Dim)),
        new("time_embedding.0.weight", ParameterGroup.Base, static c => new(c.Dim, c.FreqDim)),
        new("time_embedding.0.bias", ParameterGroup.Base, static c => new(c.Dim)),
        new("time_embedding.2.weight", ParameterGroup.Base, static c => new(c.Dim, c.Dim)),
        new("time_embedding.2.bias", ParameterGroup.Base, static c => new(c.Dim)),
        new("time_projection.1.weight", ParameterGroup.Base, static c => new(6 * c.Dim, c.Dim)),
        new("time_projection.1.bias", ParameterGroup.Base, static c => new(6 * c.Dim)),
    ];

    private static readonly Row[] s_blockSelfAttention = BuildBlockSelfAttention();

    private static readonly Row[] s_blockUltraGen = BuildBlockUltraGen();

    private static readonly Row[] s_blockRest = BuildBlockRest();

    private static readonly Row[] s_tail =
    [
        new("head.modulation", ParameterGroup.Base, static c => new(1, 2, c.Dim)),
        new("head.head.weight", ParameterGroup.Base, static c => new(c.OutChannels * c.Patch.Volume, c.Dim)),
        new("head.head.bias", ParameterGroup.Base, static c => new(c.OutChannels * c.Patch.Volume)),
    ];

    private static Row[] BuildBlockSelfAttention()
    {
        var rows = new List<Row> { new("modulation", ParameterGroup.Base, static c => new(1, 6, c.Dim)) };
        AddAttention(rows, "self_attn");
        return [.. rows];
    }

    private static void AddAttention(List<Row> rows, string module)
    {
        foreach (var projection in new[] { "q", "k", "v", "o" })
        {
            rows.Add(new($"{module}.{projection}.weight", ParameterGroup.Base, static c => new(c.Dim, c.Dim)));
            rows.Add(new($"{module}.{projection}.bias", ParameterGroup.Base, static c => new(c.Dim)));
        }
        rows.Add(new($"{module}.norm_q.weight", ParameterGroup.Base, static c => new(c.Dim), static c => c.QkNorm));
        rows.Add(new($"{module}.norm_k.weight", ParameterGroup.Base, static c => new(c.Dim), static c => c.QkNorm));
    }

    private static Row[] BuildBlockUltraGen()
    {
        var rows = new List<Row>();
        foreach (var lora in UltraGenLoraModules)
        {
            rows.Add(new($"self_attn.{lora}.lora_A.weight", ParameterGroup.Lora, static c => new(c.LoraRank, c.Dim)));
            rows.Add(new($"self_attn.{lora}.lora_A.bias", ParameterGroup.Lora, static c => new(c.LoraRank)));
            rows.Add(new($"self_attn.{lora}.lora_B.weight", ParameterGroup.Lora, static c => new(c.Dim, c.LoraRank)));
            rows.Add(new($"self_attn.{lora}.lora_B.bias", ParameterGroup.Lora, static c => new(c.Dim)));
        }
        foreach (var gate in new[] { "", "2" })
        {
            rows.Add(new($"self_attn.alpha_time_embedding{gate}.0.weight", ParameterGroup.Gate, static c => new(c.Dim, c.FreqDim)));
            rows.Add(new($"self_attn.alpha_time_embedding{gate}.0.bias", ParameterGroup.Gate, static c => new(c.Dim)));
            rows.Add(new($"self_attn.alpha_time_embedding{gate}.2.weight", ParameterGroup.Gate, static c => new(c.Dim, c.Dim)));
            rows.Add(new($"self_attn.alpha_time_embedding{gate}.2.bias", ParameterGroup.Gate, static c => new(c.Dim)));
            rows.Add(new($"self_attn.alpha_time_projection{gate}.1.weight", ParameterGroup.Gate, static c => new(c.Dim, c.Dim)));
            rows.Add(new($"self_attn.alpha_time_projection{gate}.1.bias", ParameterGroup.Gate, static c => new(c.Dim)));
        }
        rows.Add(new("self_attn.downsample_conv.weight", ParameterGroup.Conv, static c => new(c.Dim, 1, c.GlobalDown, c.GlobalDown)));
        rows.Add(new("self_attn.downsample_conv.bias", ParameterGroup.Conv, static c => new(c.Dim)));
        rows.Add(new("self_attn.upsample_conv.weight", ParameterGroup.Conv, static c => new(c.Dim, 1, 3, 3, 3)));
        rows.Add(new("self_attn.upsample_conv.bias", ParameterGroup.Conv, static c => new(c.Dim)));
        rows.Add(new("self_attn.downsample_conv_hierachcal.weight", ParameterGroup.Conv, static c => new(c.Dim, 1, c.HierarchicalDown, c.HierarchicalDown)));
        rows.Add(new("self_attn.downsample_conv_hierachcal.bias", ParameterGroup.Conv, static c => new(c.Dim)));
        rows.Add(new("self_attn.upsample_conv_hierachcal.weight", ParameterGroup.Conv, static c => new(c.Dim, 1, 3, 3, 3)));
        rows.Add(new("self_attn.upsample_conv_hierachcal.bias", ParameterGroup.Conv, static c => new(c.Dim)));
        return [.. rows];
    }

    private static Row[] BuildBlockRest()
    {
        var rows = new List<Row>
        {
            new("norm3.weight", ParameterGroup.Base, static c => new(c.Dim), static c => c.CrossAttnNorm),
            new("norm3.bias", ParameterGroup.Base, static c => new(c.Dim), static c => c.CrossAttnNorm),
        };
        AddAttention(rows, "cross_attn");
        rows.Add(new("ffn.0.weight", ParameterGroup.Base, static c => new(c.FfnDim, c.Dim)));
        rows.Add(new("ffn.0.bias", ParameterGroup.Base, static c => new(c.FfnDim)));
        rows.Add(new("ffn.2.weight", ParameterGroup.Base, static c => new(c.Dim, c.FfnDim)));
        rows.Add(new("ffn.2.bias", ParameterGroup.Base, static c => new(c.Dim)));
        return [.. rows];
    }

    /// <summary>
    /// The full parameter list of <paramref name="config"/> in the catalogue order above. Validates the configuration first.
    /// </summary>
    public static IReadOnlyList<ParameterSpec> List(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        var list = new List<ParameterSpec>(CountCore(config).Total.Tensors);
        foreach (var row in s_head) Add(list, config, row, -1, row.Suffix);
        for (int block = 0; block < config.Layers; block++)
        {
            string prefix = BlockPrefix + block.ToString(CultureInfo.InvariantCulture) + ".";
            foreach (var row in s_blockSelfAttention) Add(list, config, row, block, prefix + row.Suffix);
            if (config.IsDecomposed(block))
                foreach (var row in s_blockUltraGen) Add(list, config, row, block, prefix + row.Suffix);
            foreach (var row in s_blockRest) Add(list, config, row, block, prefix + row.Suffix);
        }
        foreach (var row in s_tail) Add(list, config, row, -1, row.Suffix);
        return list.AsReadOnly();
    }

    private static void Add(List<ParameterSpec> list, ModelConfig config, Row row, int block, string name)
    {
        if (!row.IsPresent(config)) return;
        var dims = row.Shape(config);
        var init = row.Group == ParameterGroup.Base ? ParameterInit.Pretrained : ReferenceInit(name, dims.Rank);
        list.Add(new ParameterSpec(name, dims.ToImmutable(), row.Group, block, init));
    }

    /// <summary>
    /// Tensor and parameter totals per group, computed from the shape rules without building names: allocates nothing.
    /// Validates the configuration first.
    /// </summary>
    public static ParameterCounts Count(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        return CountCore(config);
    }

    private static ParameterCounts CountCore(ModelConfig config)
    {
        Span<GroupCount> groups = stackalloc GroupCount[4];
        Accumulate(groups, config, s_head, 1);
        Accumulate(groups, config, s_blockSelfAttention, config.Layers);
        Accumulate(groups, config, s_blockUltraGen, config.DecomposedBlockCount);
        Accumulate(groups, config, s_blockRest, config.Layers);
        Accumulate(groups, config, s_tail, 1);
        return new ParameterCounts(groups[0], groups[1], groups[2], groups[3]);
    }

    /// <summary>What one decomposed block adds (11,541,888 for Wan 1.3B at rank 64): LoRA + gates + convs, per group.</summary>
    public static ParameterCounts UltraGenPerBlock(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Span<GroupCount> groups = stackalloc GroupCount[4];
        Accumulate(groups, config, s_blockUltraGen, 1);
        return new ParameterCounts(groups[0], groups[1], groups[2], groups[3]);
    }

    private static void Accumulate(Span<GroupCount> groups, ModelConfig config, Row[] rows, int repeat)
    {
        if (repeat == 0) return;
        foreach (var row in rows)
        {
            if (!row.IsPresent(config)) continue;
            long elements = row.Shape(config).Elements;
            ref var group = ref groups[(int)row.Group];
            group = new GroupCount(group.Tensors + repeat, checked(group.Parameters + elements * repeat));
        }
    }

    /// <summary>
    /// The released loader's rule for a parameter missing from the loaded file (spec §1.7), by name as the loader decides:
    /// a name containing <c>conv</c> gets the constant 1/prod(shape[1:]) for its weight and 0 for its bias; any other
    /// <c>weight</c> of rank 2 is kaiming-uniform, except under <c>alpha_time_projection</c> where it is zero; biases are 0.
    /// (LoRA B is therefore kaiming-uniform, not zero: the loader's <c>lora_B</c> branch is unreachable for weights.)
    /// </summary>
    public static ParameterInit ReferenceInit(string name, int rank)
    {
        ArgumentNullException.ThrowIfNull(name);
        bool isWeight = name.EndsWith("weight", StringComparison.Ordinal);
        if (name.Contains("conv", StringComparison.Ordinal)) return isWeight ? ParameterInit.ConvAverage : ParameterInit.Zero;
        if (isWeight && rank == 2)
            return name.Contains("alpha_time_projection", StringComparison.Ordinal) ? ParameterInit.Zero : ParameterInit.KaimingUniform;
        return ParameterInit.Zero;
    }

    /// <summary>
    /// Splits <c>blocks.{i}.{rest}</c> into i and rest. False for names outside the blocks or with a malformed index.
    /// </summary>
    public static bool TryParseBlockName(string name, out int block, out string rest)
    {
        ArgumentNullException.ThrowIfNull(name);
        block = -1;
        rest = "";
        if (!name.StartsWith(BlockPrefix, StringComparison.Ordinal)) return false;
        int dot = name.IndexOf('.', BlockPrefix.Length);
        if (dot <= BlockPrefix.Length) return false;
        var digits = name.AsSpan(BlockPrefix.Length, dot - BlockPrefix.Length);
        if (digits.Length > 1 && digits[0] == '0') return false;
        if (!int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out block)) { block = -1; return false; }
        rest = name[(dot + 1)..];
        return true;
    }

    /// <summary>True when <paramref name="name"/> is a tensor of an UltraGen module of some block (LoRA, gates, convs).</summary>
    public static bool IsUltraGenName(string name)
    {
        if (!TryParseBlockName(name, out _, out var rest)) return false;
        const string selfAttention = "self_attn.";
        if (!rest.StartsWith(selfAttention, StringComparison.Ordinal)) return false;
        var module = rest.AsSpan(selfAttention.Length);
        foreach (var prefix in UltraGenModulePrefixes)
            if (module.StartsWith(prefix, StringComparison.Ordinal)) return true;
        return false;
    }
}
