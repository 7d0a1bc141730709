using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Model;

namespace UltraGen.Generation.Latent;

/// <summary>
/// A prompt's text-encoder features for the real model (file contract 2, written by <c>tools/encode_prompts.py</c>): one
/// safetensors file holding tensor <c>context</c> [text_len, text_dim] ([512, 4096] for umT5-XXL), F32 (BF16 and F16
/// accepted), zero rows after the prompt's tokens, and metadata naming the encoder, the prompt and its token count.
/// </summary>
public sealed class TextEmbeddings : IDisposable
{
    public const string TensorName = "context";
    public const string EncoderKey = "ultragen.embeddings.encoder";
    public const string PromptKey = "ultragen.embeddings.prompt";
    public const string TokensKey = "ultragen.embeddings.tokens";

    private TextEmbeddings(string path, Tensor context, string? encoder, string? prompt, int? tokens)
    {
        Path = path;
        Context = context;
        Encoder = encoder;
        Prompt = prompt;
        Tokens = tokens;
    }

    public string Path { get; }

    /// <summary>[text_len, text_dim], host f32.</summary>
    public Tensor Context { get; }

    /// <summary>The encoder that made them (metadata), when recorded.</summary>
    public string? Encoder { get; }

    /// <summary>The prompt text (metadata), when recorded.</summary>
    public string? Prompt { get; }

    /// <summary>The prompt's real token count, EOS included (metadata), when recorded.</summary>
    public int? Tokens { get; }

    /// <summary>
    /// Reads <paramref name="path"/> and checks it against <paramref name="config"/>: the tensor must be
    /// [<see cref="ModelConfig.TextLen"/>, <see cref="ModelConfig.TextDim"/>] and finite; otherwise one
    /// <see cref="ShapeMismatchException"/> naming the file, the tensor and what was expected.
    /// </summary>
    public static TextEmbeddings Load(string path, ModelConfig config)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(config);
        using var file = SafetensorsFile.Open(path);
        string expected = $"[{config.TextLen}, {config.TextDim}] (the model's text_len × text_dim)";
        if (!file.TryGetInfo(TensorName, out var info))
            throw new ShapeMismatchException(
                $"{path}: no tensor '{TensorName}' (text embeddings hold '{TensorName}' {expected}; write them with tools/encode_prompts.py)");
        if (!info.ShapeSpan.SequenceEqual([config.TextLen, config.TextDim]))
            throw new ShapeMismatchException($"{path}: '{TensorName}' is [{string.Join(", ", info.Shape)}], expected {expected}");
        if (info.DType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ShapeMismatchException($"{path}: '{TensorName}' is {info.DTypeName}, expected F32 (BF16 or F16 accepted)");
        var context = file.ReadTensor(TensorName, DType.F32);
        var values = context.HostSpan<float>();
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
            {
                context.Dispose();
                throw new ShapeMismatchException(
                    $"{path}: '{TensorName}' has a non-finite value ({values[i].ToString(CultureInfo.InvariantCulture)}) at row {i / config.TextDim}, column {i % config.TextDim}");
            }
        string? Meta(string key) => file.Metadata.TryGetValue(key, out var value) ? value : null;
        int? tokens = int.TryParse(Meta(TokensKey), NumberStyles.None, CultureInfo.InvariantCulture, out int count) ? count : null;
        return new TextEmbeddings(path, context, Meta(EncoderKey), Meta(PromptKey), tokens);
    }

    /// <summary>Writes embeddings in the contract's format (for tests and tools), atomically.</summary>
    public static void Save(string path, Tensor context, string encoder, string prompt, int tokens) =>
        SafetensorsWriter.Write(path, [new(TensorName, context)], new Dictionary<string, string>
        {
            [EncoderKey] = encoder,
            [PromptKey] = prompt,
            [TokensKey] = tokens.ToString(CultureInfo.InvariantCulture),
        });

    public void Dispose() => Context.Dispose();
}
