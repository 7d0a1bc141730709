using System.Globalization;
using System.Text.Json;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Core.Safetensors;
using UltraGen.Generation.Text;
using UltraGen.Model;

namespace UltraGen.Generation.Pipeline;

/// <summary>The video a model generates natively: frames × height × width pixels, RGB in [−1, 1].</summary>
public readonly record struct VideoFormat(int Frames, int Height, int Width)
{
    public const int Channels = 3;

    public long ElementCount => (long)Channels * Frames * Height * Width;

    public int[] Shape(int batch) => [batch, Channels, Frames, Height, Width];

    public override string ToString() => $"{Frames}×{Height}×{Width}";
}

/// <summary>
/// A complete text-to-video model in one safetensors file: the DiT (Wan names, plus UltraGen's in decomposed blocks),
/// the word-level text encoder (<see cref="TextEncoder"/>), the vocabulary, the configuration and the native video
/// format. The bundled miniature works in pixel space (no VAE): the DiT's "latent" is the RGB video itself
/// (<see cref="ModelConfig.OutChannels"/> = 3). A model may take <see cref="CoordinateChannels"/> = 3 more input channels:
/// fixed x, y and t ramps concatenated to the video (<see cref="AppendCoordinates"/>), as Wan's I2V model concatenates its
/// conditioning channels to the latent. They give the DiT, whose RoPE attention sees only relative positions, the absolute
/// frame and position that tie a direction word to the motion it names.
/// </summary>
public sealed class VideoModel : IDisposable
{
    public const string ConfigKey = "ultragen.video.config";
    public const string FormatKey = "ultragen.video.format";
    public const string NotesKey = "ultragen.video.notes";

    /// <summary>Whether <paramref name="file"/> is a video model (pixel space, own text encoder) rather than a plain DiT.</summary>
    public static bool IsVideoModel(SafetensorsFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        return file.Metadata.ContainsKey(ConfigKey);
    }

    /// <summary>Whether <paramref name="name"/> is one of the text encoder's tensors a video model file carries beside the DiT.</summary>
    public static bool IsTextEncoderTensor(string name) =>
        name is TextEncoder.TokenEmbeddingName or TextEncoder.PositionEmbeddingName;

    private VideoModel(ModelConfig config, VideoFormat format, WordTokenizer tokenizer, TextEncoder textEncoder,
        Dictionary<string, Tensor> ditWeights, string notes)
    {
        Config = config;
        Format = format;
        Tokenizer = tokenizer;
        TextEncoder = textEncoder;
        DitWeights = ditWeights;
        Notes = notes;
    }

    public ModelConfig Config { get; }

    /// <summary>Extra input channels beyond the video's 3: 0, or 3 (x, y, t coordinate ramps).</summary>
    public int CoordinateChannels => Config.InChannels - Config.OutChannels;

    private static void CheckChannels(ModelConfig config)
    {
        if (config.OutChannels != VideoFormat.Channels || config.InChannels is not (VideoFormat.Channels or 2 * VideoFormat.Channels))
            throw new ModelConfigException(
                $"a pixel-space video model has 3 output channels and 3 or 6 (with x/y/t coordinates) input channels, got {config.InChannels}/{config.OutChannels}");
    }

    /// <summary>
    /// The DiT input for a batch of videos (B, 3, F, H, W): the videos themselves, or with <see cref="CoordinateChannels"/>
    /// the videos followed by three planes per sample holding x, y and t in [−1, 1] (pixel and frame centres, so the
    /// ramps mean the same at every resolution).
    /// </summary>
    public void AppendCoordinates(ReadOnlySpan<float> videos, int batch, VideoFormat format, Span<float> destination)
    {
        int size = checked((int)format.ElementCount), inputSize = size / VideoFormat.Channels * Config.InChannels;
        if (videos.Length != batch * size || destination.Length != batch * inputSize)
            throw new ShapeMismatchException($"coordinates: {videos.Length} video values / {destination.Length} input values do not fit batch {batch} of {format}");
        int plane = format.Height * format.Width, framePlanes = format.Frames * plane;
        for (int b = 0; b < batch; b++)
        {
            var target = destination.Slice(b * inputSize, inputSize);
            videos.Slice(b * size, size).CopyTo(target);
            if (CoordinateChannels == 0) continue;
            for (int f = 0; f < format.Frames; f++)
            {
                float t = Centre(f, format.Frames);
                for (int y = 0; y < format.Height; y++)
                {
                    float yc = Centre(y, format.Height);
                    for (int x = 0; x < format.Width; x++)
                    {
                        int offset = f * plane + y * format.Width + x;
                        target[size + offset] = Centre(x, format.Width);
                        target[size + framePlanes + offset] = yc;
                        target[size + 2 * framePlanes + offset] = t;
                    }
                }
            }
        }
    }

    private static float Centre(int index, int count) => count == 1 ? 0f : (float)((2.0 * index + 1) / count - 1);

    /// <summary>The resolution and length the model was trained at (sampling defaults to it).</summary>
    public VideoFormat Format { get; }

    public WordTokenizer Tokenizer { get; }

    /// <summary>Owns its two host f32 tables (they are the master weights while training).</summary>
    public TextEncoder TextEncoder { get; }

    /// <summary>Host f32 DiT weights by checkpoint name (the master weights while training).</summary>
    public IReadOnlyDictionary<string, Tensor> DitWeights { get; }

    /// <summary>Free text recorded with the weights (how they were trained).</summary>
    public string Notes { get; set; }

    /// <summary>Every tensor of the model (DiT, then text encoder) by checkpoint name.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> AllWeights => DitWeights.Concat(TextEncoder.Parameters);

    /// <summary>
    /// A freshly initialised model: DiT weights from <see cref="ModelWeights.Random"/> with the output head zeroed (the
    /// untrained model predicts zero velocity, a stable start), a random text encoder over the grammar's vocabulary.
    /// </summary>
    public static VideoModel CreateRandom(ModelConfig config, VideoFormat format, long seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        CheckChannels(config);
        var tokenizer = WordTokenizer.FromGrammar();
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using (var random = ModelWeights.Random(config, seed))
            foreach (var (name, tensor) in random)
            {
                var copy = Tensor.Host(DType.F32, tensor.ShapeArray);
                tensor.HostSpan<float>().CopyTo(copy.HostSpan<float>());
                if (name.StartsWith("head.head.", StringComparison.Ordinal)) copy.HostSpan<float>().Clear();
                weights[name] = copy;
            }
        var encoder = TextEncoder.CreateRandom(tokenizer.VocabularySize, config.TextLen, config.TextDim, seed);
        return new VideoModel(config, format, tokenizer, encoder, weights, "");
    }

    /// <summary>
    /// This model with a new configuration and format: every tensor both configurations have is copied; UltraGen tensors
    /// of newly decomposed blocks are initialised as spec §1.7 (LoRA B zeroed when <paramref name="zeroInitLoraB"/>), so
    /// a low-resolution base becomes the starting point of the UltraGen fine-tune.
    /// </summary>
    /// <param name="config">The new configuration (same base sizes; more input channels or other decomposed blocks allowed).</param>
    /// <param name="format">The new native video format.</param>
    /// <param name="initSeed">Seed of every newly initialised tensor.</param>
    /// <param name="zeroInitLoraB">Zero the new LoRA B weights (the LoRA starts as an exact no-op).</param>
    /// <param name="randomNewInputChannels">
    /// Initialise the patch-embedding weights of added input channels like the existing ones (uniform, the existing
    /// weights' RMS) instead of zero. Zero keeps the widened model exact, but coordinates only help in interaction with
    /// the text (averaged over prompts, every position is equally likely), so from zero both factors of that interaction
    /// start at nothing and training sits at a saddle: measured, the zero-initialised coordinate weights grew to 3 % of the
    /// RGB weights' norm in 1,250 steps and the direction word still changed the velocity by 0.1 %.
    /// </param>
    public VideoModel WithConfig(ModelConfig config, VideoFormat format, long initSeed, bool zeroInitLoraB = true, bool randomNewInputChannels = false)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        CheckChannels(config);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var spec in ParameterCatalog.List(config))
        {
            if (spec.Name == "patch_embedding.weight" && config.InChannels != Config.InChannels)
                weights[spec.Name] = WidenPatchEmbedding(DitWeights[spec.Name], spec, Config.InChannels, randomNewInputChannels ? initSeed : null);
            else if (DitWeights.TryGetValue(spec.Name, out var existing))
            {
                if (!existing.Shape.SequenceEqual(spec.Shape.AsSpan()))
                    throw new ModelConfigException($"'{spec.Name}' is {Shape.Format(existing.Shape)} here but {Shape.Format(spec.Shape.AsSpan())} in the new configuration");
                var copy = Tensor.Host(DType.F32, existing.ShapeArray);
                existing.HostSpan<float>().CopyTo(copy.HostSpan<float>());
                weights[spec.Name] = copy;
            }
            else if (spec.IsUltraGen) weights[spec.Name] = ModelWeights.Initialize(spec, initSeed, zeroInitLoraB);
            else throw new ModelConfigException($"the new configuration needs base parameter '{spec.Name}', which this model lacks");
        }
        var token = Clone(TextEncoder.TokenEmbedding);
        var position = Clone(TextEncoder.PositionEmbedding);
        return new VideoModel(config, format, Tokenizer, TextEncoder.Owning(token, position), weights, Notes);
    }

    /// <summary>
    /// The patch embedding for more input channels: the existing channels' weights copied; the new (coordinate) channels'
    /// weights zero (the widened model computes exactly what the old one did until it trains) or, with a
    /// <paramref name="randomSeed"/>, uniform with the existing weights' RMS.
    /// </summary>
    private static Tensor WidenPatchEmbedding(Tensor existing, ParameterSpec spec, int oldChannels, long? randomSeed)
    {
        int newChannels = spec.Shape[1];
        if (newChannels < oldChannels)
            throw new ModelConfigException($"cannot drop input channels ({oldChannels} → {newChannels})");
        var widened = Tensor.Host(DType.F32, [.. spec.Shape]);
        var target = widened.HostSpan<float>();
        target.Clear();
        var source = existing.HostSpan<float>();
        int perChannel = (int)(existing.ElementCount / existing.Dim(0) / oldChannels);
        for (int o = 0; o < spec.Shape[0]; o++)
            source.Slice(o * oldChannels * perChannel, oldChannels * perChannel).CopyTo(target.Slice(o * newChannels * perChannel));
        if (randomSeed is long seed)
        {
            double sumOfSquares = 0;
            foreach (float value in source) sumOfSquares += (double)value * value;
            double bound = Math.Sqrt(3 * sumOfSquares / source.Length);    // U(±b) has RMS b/√3
            var random = new Data.SeededRandom(seed, 0x636F6F7264 /* "coord" */);
            for (int o = 0; o < spec.Shape[0]; o++)
                for (int i = oldChannels * perChannel; i < newChannels * perChannel; i++)
                    target[o * newChannels * perChannel + i] = (float)random.NextDouble(-bound, bound);
        }
        return widened;
    }

    private static Tensor Clone(Tensor source)
    {
        var copy = Tensor.Host(DType.F32, source.ShapeArray);
        source.HostSpan<float>().CopyTo(copy.HostSpan<float>());
        return copy;
    }

    /// <summary>Writes every tensor (f32) and the metadata atomically.</summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var metadata = new Dictionary<string, string>(ModelWeights.MetadataOf(Config))
        {
            [ConfigKey] = ConfigJson.Write(Config),
            [FormatKey] = string.Create(CultureInfo.InvariantCulture, $"{Format.Frames}x{Format.Height}x{Format.Width}"),
            [WordTokenizer.MetadataKey] = Tokenizer.Serialize(),
            [NotesKey] = Notes,
        };
        SafetensorsWriter.Write(path, AllWeights.ToList(), metadata);
    }

    /// <summary>
    /// Loads a model written by <see cref="Save"/>. Every tensor the configuration needs must be present with its shape,
    /// and nothing else may be: one <see cref="VideoModelFormatException"/> lists every problem.
    /// </summary>
    public static VideoModel Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new VideoModelFormatException(path, "the file does not exist");
        using var file = SafetensorsFile.Open(path);
        string Meta(string key) => file.Metadata.TryGetValue(key, out var value)
            ? value : throw new VideoModelFormatException(path, $"metadata '{key}' is missing: this is not a video model written by UltraGen.Kernels");
        var config = ConfigJson.Read(Meta(ConfigKey), path);
        var format = ParseFormat(Meta(FormatKey), path);
        try
        {
            CheckChannels(config);
        }
        catch (ModelConfigException e)
        {
            throw new VideoModelFormatException(path, e.Message);
        }
        var tokenizer = WordTokenizer.Deserialize(Meta(WordTokenizer.MetadataKey));
        string notes = file.Metadata.TryGetValue(NotesKey, out var n) ? n : "";

        var expected = ParameterCatalog.List(config).Select(s => (s.Name, Shape: s.Shape.ToArray())).ToList();
        expected.Add((TextEncoder.TokenEmbeddingName, [tokenizer.VocabularySize, config.TextDim]));
        expected.Add((TextEncoder.PositionEmbeddingName, [config.TextLen, config.TextDim]));
        var problems = new List<string>();
        foreach (var (name, shape) in expected)
        {
            if (!file.TryGetInfo(name, out var info)) problems.Add($"missing '{name}' {Shape.Format(shape)}");
            else if (!info.ShapeSpan.SequenceEqual(shape)) problems.Add($"'{name}' is {Shape.Format(info.ShapeSpan)}, expected {Shape.Format(shape)}");
        }
        var expectedNames = expected.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        problems.AddRange(file.Names.Where(name => !expectedNames.Contains(name)).Select(name => $"unexpected '{name}'"));
        if (problems.Count > 0) throw new VideoModelFormatException(path, string.Join("; ", problems));

        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (name, _) in expected.Take(expected.Count - 2)) weights[name] = file.ReadTensor(name, DType.F32);
            var encoder = TextEncoder.Owning(file.ReadTensor(TextEncoder.TokenEmbeddingName, DType.F32),
                file.ReadTensor(TextEncoder.PositionEmbeddingName, DType.F32));
            return new VideoModel(config, format, tokenizer, encoder, weights, notes);
        }
        catch
        {
            foreach (var tensor in weights.Values) tensor.Dispose();
            throw;
        }
    }

    private static VideoFormat ParseFormat(string text, string path)
    {
        var parts = text.Split('x');
        if (parts.Length == 3 && parts.All(p => int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0))
            return new VideoFormat(int.Parse(parts[0], CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture),
                int.Parse(parts[2], CultureInfo.InvariantCulture));
        throw new VideoModelFormatException(path, $"format '{text}' is not frames×height×width (e.g. 8x64x64)");
    }

    /// <summary>
    /// Token ids (batch, textLen) of the prompts; an empty prompt is all padding (the unconditional context). A word the
    /// vocabulary lacks is a <see cref="TokenizerException"/> naming it: the model never learned it, so sampling it would
    /// silently ignore part of the prompt.
    /// </summary>
    public int[] Tokenize(IReadOnlyList<string> prompts)
    {
        var ids = new int[prompts.Count * Config.TextLen];
        for (int b = 0; b < prompts.Count; b++)
        {
            var unknown = WordTokenizer.SplitWords(prompts[b]).Where(word => Tokenizer.IdOf(word) == WordTokenizer.UnknownId).ToList();
            if (unknown.Count > 0)
                throw new TokenizerException(
                    $"prompt \"{prompts[b]}\": the model does not know {string.Join(", ", unknown.Select(w => $"'{w}'"))} " +
                    $"(its words: {string.Join(" ", Tokenizer.Vocabulary.Skip(2))})");
            Tokenizer.Encode(prompts[b], Config.TextLen).CopyTo(ids, b * Config.TextLen);
        }
        return ids;
    }

    public void Dispose()
    {
        foreach (var tensor in DitWeights.Values) tensor.Dispose();
        TextEncoder.Dispose();
    }
}

/// <summary>A video model file that cannot be used, with the file and every problem named.</summary>
public sealed class VideoModelFormatException(string path, string problem) : UltraGenException($"{path}: {problem}")
{
    public string FilePath { get; } = path;
}

/// <summary>The <see cref="ModelConfig"/> fields a video model file records, as JSON.</summary>
internal static class ConfigJson
{
    private sealed record Dto(int Dim, int FfnDim, int FreqDim, int TextDim, int TextLen, int Heads, int Layers, int InChannels, int OutChannels,
        int[] Patch, double Eps, string FullAttentionBlocks, int WindowBase, int LoraRank, bool GlobalKUsesWq, string WindowMode);

    public static string Write(ModelConfig c) => JsonSerializer.Serialize(new Dto(c.Dim, c.FfnDim, c.FreqDim, c.TextDim, c.TextLen, c.Heads, c.Layers,
        c.InChannels, c.OutChannels, [c.Patch.T, c.Patch.H, c.Patch.W], c.Eps, c.FullAttentionBlocks.ToString(), c.WindowBase, c.LoraRank,
        c.GlobalKUsesWq, c.WindowMode.ToString()));

    public static ModelConfig Read(string json, string path)
    {
        Dto dto;
        try
        {
            dto = JsonSerializer.Deserialize<Dto>(json) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new VideoModelFormatException(path, $"config metadata is not valid: {e.Message}");
        }
        if (dto.Patch is not { Length: 3 }) throw new VideoModelFormatException(path, "config metadata: patch must have 3 entries");
        if (!Enum.TryParse<WindowMode>(dto.WindowMode, out var mode)) throw new VideoModelFormatException(path, $"config metadata: unknown window mode '{dto.WindowMode}'");
        try
        {
            return new ModelConfig
            {
                Dim = dto.Dim, FfnDim = dto.FfnDim, FreqDim = dto.FreqDim, TextDim = dto.TextDim, TextLen = dto.TextLen, Heads = dto.Heads,
                Layers = dto.Layers, InChannels = dto.InChannels, OutChannels = dto.OutChannels, Patch = new PatchSize(dto.Patch[0], dto.Patch[1], dto.Patch[2]),
                Eps = dto.Eps, FullAttentionBlocks = BlockSet.Parse(dto.FullAttentionBlocks), WindowBase = dto.WindowBase,
                LoraRank = dto.LoraRank, GlobalKUsesWq = dto.GlobalKUsesWq, WindowMode = mode,
            }.Validate();
        }
        catch (Exception e) when (e is ModelConfigException or FormatException)
        {
            throw new VideoModelFormatException(path, $"config metadata: {e.Message}");
        }
    }
}
