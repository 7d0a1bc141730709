using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using UltraGen.Core;
using UltraGen.Cuda;
using UltraGen.Cuda.Launchers;
using UltraGen.Generation.Pipeline;
using UltraGen.Generation.Video;
using UltraGen.Model;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Cli.Commands;

/// <summary>
/// <c>ultragen sample</c>: text → video. With no arguments it samples the bundled high-resolution UltraGen miniature
/// (<see cref="BundledModelName"/>) with a default prompt and writes an MP4 when ffmpeg is on PATH, else a GIF. With
/// <c>--weights</c> naming a plain DiT file (no video-model metadata) it samples the real model in latent space
/// (<see cref="LatentSample"/>).
/// </summary>
public static class SampleCommand
{
    /// <summary>The bundled UltraGen model (64×64×8, UltraGen attention in every block), under <c>models/</c>.</summary>
    public const string BundledModelName = "ultragen-mini.safetensors";

    public const string DefaultPrompt = "a yellow square moving right on a navy background";

    public static Command Create()
    {
        var prompt = new Option<string>("--prompt", "-p") { Description = "what to generate (the procedural grammar: 'a <colour> <shape> moving <direction> on a <background> background')", DefaultValueFactory = _ => DefaultPrompt };
        var negative = new Option<string>("--negative-prompt") { Description = "negative prompt for guidance (default: empty = unconditional)", DefaultValueFactory = _ => "" };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0 };
        var steps = new Option<int>("--steps") { Description = "Euler steps (spec: 30)", DefaultValueFactory = _ => 30 };
        var cfg = new Option<double>("--cfg") { Description = "classifier-free guidance scale (spec: 5; 1 = no guidance, half the work)", DefaultValueFactory = _ => 5.0 };
        var shift = new Option<double>("--shift") { Description = "σ-schedule shift (spec: 5)", DefaultValueFactory = _ => 5.0 };
        var frames = new Option<int?>("--frames") { Description = "frames (default: the model's)" };
        var height = new Option<int?>("--height") { Description = "height in pixels (default: the model's)" };
        var width = new Option<int?>("--width") { Description = "width in pixels (default: the model's)" };
        var backend = new Option<string>("--backend", "-b") { Description = "auto, cpu, ilgpu, cuda or reference", DefaultValueFactory = _ => "auto" };
        var weights = new Option<string?>("--weights", "-w") { Description = $"a video model file (default: the bundled models/{BundledModelName})" };
        var output = new Option<string?>("--output", "-o") { Description = "output file (default: sample.mp4, or sample.gif without ffmpeg; a folder for png)" };
        var format = new Option<string?>("--format") { Description = "mp4, gif or png (frames); default from --output's extension, else mp4 when ffmpeg is present, else gif" };
        var upscale = new Option<int?>("--upscale") { Description = "integer nearest-neighbour enlargement of the written video (default: to at least 256 px)" };
        var fps = new Option<double>("--fps") { DefaultValueFactory = _ => 8 };
        var textEmbeddings = new Option<string?>("--text-embeddings") { Description = "real model: the prompt's umT5 features (tools/encode_prompts.py; tensor 'context' [text_len, text_dim])" };
        var negativeEmbeddings = new Option<string?>("--negative-embeddings") { Description = "real model: the negative prompt's features (required when --cfg is not 1)" };
        var latentsOut = new Option<string?>("--latents-out") { Description = $"real model: the latents file to write (default {LatentSample.DefaultLatentsOut}; decode with tools/decode_latents.py)" };
        var dryRun = new Option<bool>("--dry-run") { Description = "real model: print the memory estimate and the window tables only (reads the weights' header, or --config alone)" };
        var attentionPrecision = new Option<string>("--attention-precision")
        {
            Description = "cuda only: f32 (default; SIMT kernels, exact to f32) or bf16 (tensor-core kernels: q, k, v rounded to bf16, " +
                          "f32 accumulation, the reference pipeline's attention precision; far faster on a GPU)",
            DefaultValueFactory = _ => "f32",
        };
        var preset = new Option<string?>("--config") { Description = $"real model: a preset ({string.Join(", ", ModelConfig.Presets.Keys)}) instead of the config detected from --weights" };

        var command = new Command("sample",
            "Generate a video from a text prompt (defaults: the bundled UltraGen miniature, spec §2.6 sampler). With --weights naming a plain " +
            "Wan2.1/UltraGen DiT file, samples the real model in latent space from --text-embeddings (defaults 1920×1088, 81 frames) and writes --latents-out.");
        foreach (var option in new Option[] { prompt, negative, seed, steps, cfg, shift, frames, height, width, backend, weights, output, format, upscale, fps,
                     textEmbeddings, negativeEmbeddings, latentsOut, dryRun, preset, attentionPrecision })
            command.Options.Add(option);
        command.SetAction(result => CommandGuard.Run(() =>
        {
            var precision = ParseAttentionPrecision(result.GetValue(attentionPrecision)!);
            string? weightsPath = result.GetValue(weights);
            bool latentOptions = result.GetValue(dryRun) || result.GetValue(preset) is not null || result.GetValue(textEmbeddings) is not null
                || result.GetValue(negativeEmbeddings) is not null || result.GetValue(latentsOut) is not null;
            bool plainDit = weightsPath is not null && File.Exists(weightsPath) && !LatentSample.IsVideoModel(weightsPath);
            if (plainDit || latentOptions)
            {
                var pixelOnly = new Option[] { prompt, negative, output, format, upscale, fps }.Where(o => result.GetResult(o) is { Implicit: false }).ToList();
                if (pixelOnly.Count > 0)
                    throw new OpParameterException(
                        $"{string.Join(", ", pixelOnly.Select(o => o.Name))}: the real model takes its prompts as --text-embeddings/--negative-embeddings " +
                        "(tools/encode_prompts.py) and writes --latents-out (tools/decode_latents.py makes the MP4)");
                return LatentSample.Run(new LatentSample.Options
                {
                    Weights = weightsPath, Preset = result.GetValue(preset), TextEmbeddings = result.GetValue(textEmbeddings),
                    NegativeEmbeddings = result.GetValue(negativeEmbeddings), LatentsOut = result.GetValue(latentsOut), DryRun = result.GetValue(dryRun),
                    Frames = result.GetValue(frames), Height = result.GetValue(height), Width = result.GetValue(width), Seed = result.GetValue(seed),
                    Steps = result.GetValue(steps), Cfg = result.GetValue(cfg), Shift = result.GetValue(shift), Backend = result.GetValue(backend)!,
                    AttentionPrecision = precision,
                });
            }

            var clock = Stopwatch.StartNew();
            string modelPath = weightsPath ?? FindBundledModel(BundledModelName);
            using var model = VideoModel.Load(modelPath);
            var videoFormat = new VideoFormat(result.GetValue(frames) ?? model.Format.Frames, result.GetValue(height) ?? model.Format.Height,
                result.GetValue(width) ?? model.Format.Width);
            var (kind, outputPath) = ResolveOutput(result.GetValue(output), result.GetValue(format));
            var request = new SampleRequest
            {
                Prompt = result.GetValue(prompt)!, NegativePrompt = result.GetValue(negative)!, Seed = result.GetValue(seed),
                Steps = result.GetValue(steps), Cfg = result.GetValue(cfg), Shift = result.GetValue(shift), Format = videoFormat,
            };
            _ = model.Tokenize([request.Prompt, request.NegativePrompt]);    // unknown words fail before any work

            using var device = OpenBackend(result.GetValue(backend)!, out string why, model.Config);
            Console.WriteLine($"model: {modelPath} (dim {model.Config.Dim}, {model.Config.Layers} layers, {Attention(model)})");
            Console.WriteLine($"backend: {device.Name} — {why}");
            if (ConfigureAttention(device, precision) is { } attentionNote) Console.WriteLine(attentionNote);
            Console.WriteLine(FormattableString.Invariant(
                $"video: {videoFormat.Width}×{videoFormat.Height} pixels, {videoFormat.Frames} frames; {request.Steps} steps, cfg {request.Cfg}, shift {request.Shift}, seed {request.Seed}"));
            Console.WriteLine($"prompt: \"{request.Prompt}\"");
            using var sampler = new VideoSampler(model, device);
            var bar = new ProgressLine("sample");
            var sampleClock = Stopwatch.StartNew();
            var video = sampler.Sample(request, p => bar.Update(p.Step, p.Steps,
                FormattableString.Invariant($"t {p.Timestep,7:F2}  {p.Elapsed.TotalSeconds:F1} s")));
            bar.Done();
            double sampleSeconds = sampleClock.Elapsed.TotalSeconds;
            int scale = result.GetValue(upscale) ?? Math.Max(1, (int)Math.Ceiling(256.0 / Math.Max(videoFormat.Height, videoFormat.Width)));
            string written = WriteVideo(video, videoFormat, kind, outputPath, scale, result.GetValue(fps));
            Console.WriteLine(FormattableString.Invariant(
                $"wrote {written} ({kind}, {videoFormat.Width * scale}×{videoFormat.Height * scale}); sampling {sampleSeconds:F1} s, total {clock.Elapsed.TotalSeconds:F1} s"));
            return 0;
        }));
        return command;
    }

    private static string Attention(VideoModel model) =>
        model.Config.DecomposedBlockCount == model.Config.Layers ? "UltraGen attention in every block"
        : model.Config.DecomposedBlockCount == 0 ? "full attention" : $"UltraGen attention in {model.Config.DecomposedBlockCount} of {model.Config.Layers} blocks";

    /// <summary>
    /// A bundled model: <c>models/&lt;name&gt;</c> under the current folder or any folder above it (a clone's root), else
    /// beside the executable.
    /// </summary>
    public static string FindBundledModel(string name)
    {
        for (var folder = new DirectoryInfo(Directory.GetCurrentDirectory()); folder is not null; folder = folder.Parent)
        {
            string candidate = Path.Combine(folder.FullName, "models", name);
            if (File.Exists(candidate)) return candidate;
        }
        string besideExecutable = Path.Combine(AppContext.BaseDirectory, "models", name);
        if (File.Exists(besideExecutable)) return besideExecutable;
        throw new VideoModelFormatException(Path.Combine("models", name),
            "the bundled model was not found (run from the repository, or pass --weights <model.safetensors>)");
    }

    /// <summary>The output kind (mp4, gif, png) and path from --output/--format; mp4 needs ffmpeg on PATH.</summary>
    internal static (string Kind, string Path) ResolveOutput(string? output, string? format)
    {
        string? kind = format?.Trim().ToLowerInvariant();
        if (kind is null && output is not null)
        {
            string extension = Path.GetExtension(output).TrimStart('.').ToLowerInvariant();
            kind = extension is "mp4" or "gif" ? extension : extension.Length == 0 ? "png" : null;
            if (kind is null) throw new OpParameterException($"--output '{output}': use a .mp4 or .gif file, or a folder for png frames (or give --format)");
        }
        kind ??= Mp4Writer.FindFfmpeg() is not null ? "mp4" : "gif";
        if (kind is not ("mp4" or "gif" or "png")) throw new OpParameterException($"--format must be mp4, gif or png, got '{format}'");
        if (kind == "mp4" && Mp4Writer.FindFfmpeg() is null)
            throw new UnsupportedConfigurationException("mp4 output needs ffmpeg on PATH (install it, or use --format gif / png)");
        return (kind, Path.GetFullPath(output ?? (kind == "png" ? "sample-frames" : "sample." + kind)));
    }

    /// <summary>Writes the video atomically; returns the written file (or the first frame's for png).</summary>
    internal static string WriteVideo(float[] video, VideoFormat format, string kind, string path, int upscale, double fps)
    {
        var rgb = RgbVideo.FromPlanar(video, format.Frames, format.Height, format.Width, upscale);
        switch (kind)
        {
            case "mp4":
                Mp4Writer.Write(rgb, path, fps);
                return path;
            case "gif":
                GifWriter.Write(rgb, path, fps);
                return path;
            default:
                Directory.CreateDirectory(path);
                var files = PngFrames.Write(rgb, path, "frame");
                return files.Count > 0 ? Path.Combine(path, $"frame_*.png ({files.Count} files)") : path;
        }
    }

    /// <summary>
    /// The backend named <paramref name="name"/>, or for "auto" the preferred one that runs the whole DiT of every one of
    /// <paramref name="configs"/> (every primitive, at the model's head dim: <see cref="Model.Dit.Dit.Limitation"/>);
    /// <paramref name="why"/> says how it was chosen.
    /// </summary>
    public static IBackend OpenBackend(string name, out string why, params ModelConfig[] configs)
    {
        if (string.Equals(name, "auto", StringComparison.OrdinalIgnoreCase))
        {
            var (backend, reason) = BackendRegistry.Auto(OpCatalog.Get("cross_attention"),
                limitation: b => configs.Select(c => Model.Dit.Dit.Limitation(b, c)).FirstOrDefault(r => r is not null));
            why = reason;
            return backend;
        }
        var probe = BackendRegistry.Get(name).Probe();
        why = "chosen with --backend";
        return probe.Backend ?? throw new UnsupportedConfigurationException($"backend '{name}' is not available here: {probe.UnavailableReason}");
    }

    /// <summary>--attention-precision: f32 or bf16.</summary>
    internal static AttentionPrecision ParseAttentionPrecision(string value) => value.Trim().ToLowerInvariant() switch
    {
        "f32" => AttentionPrecision.F32,
        "bf16" => AttentionPrecision.Bf16,
        _ => throw new OpParameterException($"--attention-precision takes f32 or bf16, not '{value}'"),
    };

    /// <summary>
    /// Sets the cuda backend's f32 attention precision; bf16 on any other backend is refused (only the cuda kernels have a
    /// tensor-core path). Returns a line for the console when it changes anything.
    /// </summary>
    internal static string? ConfigureAttention(IBackend device, AttentionPrecision precision)
    {
        if (precision == AttentionPrecision.F32) return null;
        if (device is not CudaBackend cuda)
            throw new UnsupportedConfigurationException(
                $"--attention-precision bf16 needs the cuda backend (its tensor-core kernels); '{device.Name}' runs attention in f32 only");
        cuda.F32AttentionPrecision = precision;
        return "attention: bf16 tensor-core kernels (q, k, v rounded to bf16, f32 accumulation and softmax)";
    }

    internal static string Invariant(double value) => value.ToString("G4", CultureInfo.InvariantCulture);
}
