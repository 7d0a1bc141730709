using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Safetensors;

namespace UltraGen.Generation.Latent;

/// <summary>What a latents file records about the run that made it (informational metadata).</summary>
public sealed record LatentRunInfo(string? Prompt, ulong Seed, int Steps, double Cfg);

/// <summary>
/// The sampled latent video (file contract 3; input of <c>tools/decode_latents.py</c>): tensor <c>latents</c>
/// [16, T, H/8, W/8] F32 in the DiT's normalised latent space (the decoder undoes spec §2.5's per-channel
/// normalisation), with metadata giving the format, the pixel frames, height and width, the fps, and the run.
/// </summary>
public static class LatentFile
{
    public const string TensorName = "latents";
    public const string FormatKey = "ultragen.latents.format";
    public const string Format = "wan2.1-vae";
    public const string FramesKey = "ultragen.latents.frames";
    public const string HeightKey = "ultragen.latents.height";
    public const string WidthKey = "ultragen.latents.width";
    public const string FpsKey = "ultragen.latents.fps";

    /// <summary>The reference pipeline saves its videos at 15 fps (spec §2.6).</summary>
    public const string Fps = "15";

    public const string PromptKey = "ultragen.latents.prompt";
    public const string SeedKey = "ultragen.latents.seed";
    public const string StepsKey = "ultragen.latents.steps";
    public const string CfgKey = "ultragen.latents.cfg";

    /// <summary>Writes <paramref name="latents"/> (<see cref="LatentGeometry.LatentShape"/>) to <paramref name="path"/> atomically.</summary>
    public static void Write(string path, ReadOnlySpan<float> latents, LatentGeometry geometry, LatentRunInfo run)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(geometry);
        ArgumentNullException.ThrowIfNull(run);
        if (latents.Length != geometry.LatentElementCount)
            throw new ShapeMismatchException($"latents: {latents.Length} values do not fill {Shape.Format(geometry.LatentShape)}");
        var invariant = CultureInfo.InvariantCulture;
        var metadata = new Dictionary<string, string>
        {
            [FormatKey] = Format,
            [FramesKey] = geometry.Frames.ToString(invariant),
            [HeightKey] = geometry.Height.ToString(invariant),
            [WidthKey] = geometry.Width.ToString(invariant),
            [FpsKey] = Fps,
            [SeedKey] = run.Seed.ToString(invariant),
            [StepsKey] = run.Steps.ToString(invariant),
            [CfgKey] = run.Cfg.ToString("R", invariant),
        };
        if (run.Prompt is not null) metadata[PromptKey] = run.Prompt;
        using var tensor = Tensor.Host(DType.F32, geometry.LatentShape);
        latents.CopyTo(tensor.HostSpan<float>());
        SafetensorsWriter.Write(path, [new(TensorName, tensor)], metadata);
    }
}
