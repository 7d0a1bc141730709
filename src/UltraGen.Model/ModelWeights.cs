using System.Collections;
using System.Globalization;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using UltraGen.Core;
using UltraGen.Core.Safetensors;

namespace UltraGen.Model;

/// <summary>
/// The model's parameters by checkpoint name (spec §2.3 + UltraGen's additions): one f32 host tensor per
/// <see cref="ParameterCatalog"/> entry of <see cref="Config"/>, the master copies that training updates and that
/// backends upload from. Enumerates in state_dict order. Owns its tensors: <see cref="Dispose"/> frees them.
/// </summary>
public sealed class ModelWeights : IReadOnlyDictionary<string, Tensor>, IDisposable
{
    private readonly IReadOnlyList<ParameterSpec> _specs;
    private readonly Tensor[] _tensors;
    private readonly Dictionary<string, int> _index;
    private bool _disposed;

    private ModelWeights(ModelConfig config, IReadOnlyList<ParameterSpec> specs, Tensor[] tensors, IReadOnlyList<string> initialized)
    {
        Config = config;
        _specs = specs;
        _tensors = tensors;
        _index = new Dictionary<string, int>(specs.Count, StringComparer.Ordinal);
        for (int i = 0; i < specs.Count; i++) _index.Add(specs[i].Name, i);
        InitializedNames = initialized;
    }

    public ModelConfig Config { get; }

    /// <summary>Every parameter's spec, in state_dict order (the order of enumeration and of <see cref="Save"/>).</summary>
    public IReadOnlyList<ParameterSpec> Parameters => _specs;

    /// <summary>Names initialised by the loader (spec §1.7) rather than read from the file.</summary>
    public IReadOnlyList<string> InitializedNames { get; }

    public int Count => _specs.Count;

    /// <summary>Sum of every tensor's element count.</summary>
    public long ParameterCount => _specs.Sum(s => s.ElementCount);

    public Tensor this[string name]
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ArgumentNullException.ThrowIfNull(name);
            return _index.TryGetValue(name, out int i) ? _tensors[i]
                : throw new KeyNotFoundException($"the model ({Config.Dim} dim, {Config.Layers} layers) has no parameter '{name}'");
        }
    }

    public IEnumerable<string> Keys => _specs.Select(s => s.Name);

    public IEnumerable<Tensor> Values => this.Select(kv => kv.Value);

    public bool ContainsKey(string name) => _index.ContainsKey(name);

    public bool TryGetValue(string name, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out Tensor tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_index.TryGetValue(name, out int i)) { tensor = _tensors[i]; return true; }
        tensor = null;
        return false;
    }

    /// <summary>The spec of <paramref name="name"/>.</summary>
    public ParameterSpec SpecOf(string name) =>
        _index.TryGetValue(name, out int i) ? _specs[i] : throw new KeyNotFoundException($"the model has no parameter '{name}'");

    public IEnumerator<KeyValuePair<string, Tensor>> GetEnumerator()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        for (int i = 0; i < _specs.Count; i++) yield return new(_specs[i].Name, _tensors[i]);
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    // ---------------------------------------------------------------- load

    /// <summary>Opens <paramref name="path"/> and loads it; see <see cref="Load(SafetensorsFile, ModelConfig, WeightsLoadOptions?)"/>.</summary>
    public static ModelWeights Load(string path, ModelConfig config, WeightsLoadOptions? options = null)
    {
        using var file = SafetensorsFile.Open(path);
        return Load(file, config, options);
    }

    /// <summary>
    /// Loads every parameter of <paramref name="config"/> from <paramref name="file"/> by name, converting F32/BF16/F16/F64
    /// to f32. The header is checked first (<see cref="WeightsCheck"/>); any problem throws one
    /// <see cref="WeightsMismatchException"/> listing all of them, before any tensor is allocated.
    /// </summary>
    public static ModelWeights Load(SafetensorsFile file, ModelConfig config, WeightsLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(config);
        options ??= WeightsLoadOptions.Strict;
        var check = WeightsCheck.Run(file, config, options);
        if (!check.IsMatch) throw check.ToException();
        var specs = ParameterCatalog.List(config);
        var initialise = check.ToInitialize.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        var tensors = Build(specs, spec => initialise.Contains(spec.Name)
            ? Initialize(spec, options.InitSeed, options.ZeroInitLoraB)
            : ReadAsF32(file, spec.Name));
        return new ModelWeights(config, specs, tensors, check.ToInitialize.Select(s => s.Name).ToList().AsReadOnly());
    }

    /// <summary>A tensor of the file as f32: a copy for F32, a widening (exact for BF16/F16, rounded for F64) otherwise.</summary>
    private static Tensor ReadAsF32(SafetensorsFile file, string name)
    {
        var info = file.GetInfo(name);
        if (info.DType == DType.F32 || info.ByteCount > int.MaxValue) return file.ReadTensor(name, DType.F32);
        var tensor = Tensor.Host(DType.F32, info.Shape);
        try
        {
            var source = file.GetBytes(name);
            var target = tensor.HostSpan<float>();
            switch (info.DType)
            {
                case DType.BF16:
                {
                    var bits = MemoryMarshal.Cast<byte, ushort>(source);
                    for (int i = 0; i < bits.Length; i++) target[i] = FloatConversions.BFloat16ToFloat(bits[i]);
                    break;
                }
                case DType.F16:
                {
                    var bits = MemoryMarshal.Cast<byte, ushort>(source);
                    for (int i = 0; i < bits.Length; i++) target[i] = FloatConversions.HalfBitsToFloat(bits[i]);
                    break;
                }
                case DType.F64:
                {
                    var values = MemoryMarshal.Cast<byte, double>(source);
                    for (int i = 0; i < values.Length; i++) target[i] = (float)values[i];
                    break;
                }
                default:
                    throw new UnsupportedConfigurationException($"{file.Path}: tensor '{name}' has dtype {info.DTypeName}, which cannot be loaded as f32");
            }
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
        return tensor;
    }

    /// <summary>Creates one tensor per spec (in parallel; each tensor's values depend only on its own spec), or none on failure.</summary>
    private static Tensor[] Build(IReadOnlyList<ParameterSpec> specs, Func<ParameterSpec, Tensor> create)
    {
        var tensors = new Tensor?[specs.Count];
        try
        {
            Parallel.For(0, specs.Count, i => tensors[i] = create(specs[i]));
        }
        catch (AggregateException e)
        {
            foreach (var tensor in tensors) tensor?.Dispose();
            ExceptionDispatchInfo.Capture(e.Flatten().InnerExceptions[0]).Throw();
            throw; // unreachable
        }
        return tensors!;
    }

    // ---------------------------------------------------------------- initialisation and random checkpoints

    /// <summary>
    /// The released loader's value for a parameter the file lacks (spec §1.7): conv weights 1/prod(shape[1:]), 2-D weights
    /// U(−1/√fan_in, 1/√fan_in) (kaiming_uniform with a = √5), <c>alpha_time_projection</c> weights and all biases 0.
    /// LoRA B follows the 2-D rule unless <paramref name="zeroInitLoraB"/>.
    /// </summary>
    public static Tensor Initialize(ParameterSpec spec, long seed, bool zeroInitLoraB)
    {
        var tensor = Tensor.Host(DType.F32, [.. spec.Shape]);
        var values = tensor.HostSpan<float>();
        var init = spec.Init;
        if (zeroInitLoraB && spec.Group == ParameterGroup.Lora && spec.Name.EndsWith(".lora_B.weight", StringComparison.Ordinal))
            init = ParameterInit.Zero;
        switch (init)
        {
            case ParameterInit.ConvAverage:
                values.Fill((float)(1.0 / Shape.ElementCount(spec.Shape.AsSpan()[1..])));
                break;
            case ParameterInit.KaimingUniform:
            {
                double bound = 1.0 / Math.Sqrt(spec.Shape[1]);
                var random = new WeightRandom(seed, spec.Name);
                for (int i = 0; i < values.Length; i++) values[i] = random.NextSymmetric(bound);
                break;
            }
            case ParameterInit.Zero:
                values.Clear();
                break;
            default:
                tensor.Dispose();
                throw new InvalidOperationException($"'{spec.Name}' is a pretrained parameter and has no initialisation rule");
        }
        return tensor;
    }

    /// <summary>
    /// A complete random checkpoint for tests and benchmarks, reproducible from <paramref name="seed"/> (each tensor has its
    /// own stream). Weights of rank ≥ 2 are U(±1/√fan_in) (fan_in = prod(shape[1:])), conv weights scatter ±50% around
    /// average pooling, modulations U(±1/√dim), norm weights 1 ± 0.1, biases ±0.05; gates are random, not 0.5.
    /// </summary>
    public static ModelWeights Random(ModelConfig config, long seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        var specs = ParameterCatalog.List(config);
        var tensors = Build(specs, spec =>
        {
            var tensor = Tensor.Host(DType.F32, [.. spec.Shape]);
            var values = tensor.HostSpan<float>();
            var random = new WeightRandom(seed, spec.Name);
            bool isBias = spec.Name.EndsWith("bias", StringComparison.Ordinal);
            bool isModulation = spec.Name.EndsWith("modulation", StringComparison.Ordinal);
            if (isModulation)
            {
                double bound = 1.0 / Math.Sqrt(config.Dim);
                for (int i = 0; i < values.Length; i++) values[i] = random.NextSymmetric(bound);
            }
            else if (isBias)
            {
                for (int i = 0; i < values.Length; i++) values[i] = random.NextSymmetric(0.05);
            }
            else if (spec.Shape.Length == 1)
            {
                for (int i = 0; i < values.Length; i++) values[i] = 1 + random.NextSymmetric(0.1);
            }
            else
            {
                long fanIn = Shape.ElementCount(spec.Shape.AsSpan()[1..]);
                if (spec.Init == ParameterInit.ConvAverage)
                    for (int i = 0; i < values.Length; i++) values[i] = (float)((1 + random.NextSymmetric(0.5)) / fanIn);
                else
                {
                    double bound = 1.0 / Math.Sqrt(fanIn);
                    for (int i = 0; i < values.Length; i++) values[i] = random.NextSymmetric(bound);
                }
            }
            return tensor;
        });
        return new ModelWeights(config, specs, tensors, []);
    }

    // ---------------------------------------------------------------- save

    /// <summary>
    /// Writes every parameter under its checkpoint name, atomically (<see cref="SafetensorsWriter"/>), with
    /// <see cref="WeightsMetadata"/> recording what shapes cannot tell. F32 storage is bit-exact; BF16/F16 round to
    /// nearest even.
    /// </summary>
    public void Save(string path, WeightsSaveOptions? options = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new WeightsSaveOptions();
        if (options.Storage is not (DType.F32 or DType.BF16 or DType.F16))
            throw new UnsupportedConfigurationException($"weights are saved as f32, bf16 or f16, not {DTypes.Lower(options.Storage)}");
        var selected = Enumerable.Range(0, _specs.Count).Where(i => !options.BaseOnly || _specs[i].IsBase).ToList();
        var converted = new List<Tensor>();
        try
        {
            var entries = new List<KeyValuePair<string, Tensor>>(selected.Count);
            foreach (int i in selected)
            {
                var tensor = _tensors[i];
                if (options.Storage != DType.F32)
                {
                    tensor = Narrow(tensor, options.Storage);
                    converted.Add(tensor);
                }
                entries.Add(new(_specs[i].Name, tensor));
            }
            SafetensorsWriter.Write(path, entries, MetadataOf(Config));
        }
        finally
        {
            foreach (var tensor in converted) tensor.Dispose();
        }
    }

    private static Tensor Narrow(Tensor source, DType storage)
    {
        var target = Tensor.Host(storage, source.ShapeArray);
        var values = source.HostSpan<float>();
        var bits = target.HostSpan<ushort>();
        if (storage == DType.BF16)
            for (int i = 0; i < values.Length; i++) bits[i] = FloatConversions.FloatToBFloat16(values[i]);
        else
            for (int i = 0; i < values.Length; i++) bits[i] = FloatConversions.FloatToHalfBits(values[i]);
        return target;
    }

    /// <summary>The <c>__metadata__</c> <see cref="Save"/> writes for <paramref name="config"/>.</summary>
    public static IReadOnlyDictionary<string, string> MetadataOf(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var invariant = CultureInfo.InvariantCulture;
        return new Dictionary<string, string>
        {
            ["format"] = "pt",
            [WeightsMetadata.Heads] = config.Heads.ToString(invariant),
            [WeightsMetadata.TextLen] = config.TextLen.ToString(invariant),
            [WeightsMetadata.Eps] = config.Eps.ToString("R", invariant),
            [WeightsMetadata.WindowBase] = config.WindowBase.ToString(invariant),
            [WeightsMetadata.LoraRank] = config.LoraRank.ToString(invariant),
            [WeightsMetadata.GlobalKUsesWq] = config.GlobalKUsesWq ? "true" : "false",
            [WeightsMetadata.WindowMode] = config.WindowMode.ToString(),
            [WeightsMetadata.FullBlocks] = config.FullAttentionBlocks.ToString(),
        };
    }

    // ---------------------------------------------------------------- detection

    /// <summary>Infers the configuration a file was saved from; see <see cref="ConfigDetector"/>.</summary>
    public static ModelConfig DetectConfig(SafetensorsFile file, int? heads = null) => ConfigDetector.Detect(file, heads).Config;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var tensor in _tensors) tensor.Dispose();
    }
}
