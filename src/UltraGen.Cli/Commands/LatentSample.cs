using System.Diagnostics;
using System.Globalization;
using System.Text;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Core.Safetensors;
using UltraGen.Cuda.Launchers;
using UltraGen.Generation.Latent;
using UltraGen.Generation.Pipeline;
using UltraGen.Generation.Sampling;
using UltraGen.Model;
using UltraGen.Model.Dit;
using UltraGen.Ops.Backends;

namespace UltraGen.Cli.Commands;

/// <summary>
/// <c>ultragen sample</c> with the real model: a plain DiT file (Wan + UltraGen names, as <c>tools/convert_weights.py</c>
/// or <see cref="ModelWeights.Save"/> writes it), the prompts as text-encoder features (<c>tools/encode_prompts.py</c>),
/// sampled in Wan's latent space and written as a latents file (<c>tools/decode_latents.py</c> makes the MP4).
/// <c>--dry-run</c> prints the memory estimate and the window tables from the weights' header or a preset alone.
/// </summary>
internal static class LatentSample
{
    public const int DefaultFrames = 81, DefaultHeight = 1088, DefaultWidth = 1920;
    public const string DefaultLatentsOut = "latents.safetensors";

    internal sealed record Options
    {
        public string? Weights { get; init; }
        public string? Preset { get; init; }
        public string? TextEmbeddings { get; init; }
        public string? NegativeEmbeddings { get; init; }
        public string? LatentsOut { get; init; }
        public bool DryRun { get; init; }
        public int? Frames { get; init; }
        public int? Height { get; init; }
        public int? Width { get; init; }
        public ulong Seed { get; init; }
        public int Steps { get; init; } = 30;
        public double Cfg { get; init; } = 5;
        public double Shift { get; init; } = 5;
        public string Backend { get; init; } = "auto";
        public AttentionPrecision AttentionPrecision { get; init; } = AttentionPrecision.F32;
    }

    /// <summary>Whether <paramref name="path"/> is a video model of <see cref="VideoModel.Save"/> (pixel space, own text encoder) rather than a plain DiT.</summary>
    public static bool IsVideoModel(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return VideoModel.IsVideoModel(file);
    }

    public static int Run(Options o)
    {
        var clock = Stopwatch.StartNew();
        var invariant = CultureInfo.InvariantCulture;
        if (o.Weights is not null && File.Exists(o.Weights) && IsVideoModel(o.Weights))
            throw new OpParameterException(
                $"{o.Weights} is a pixel-space video model with its own text encoder (sample it with --prompt); " +
                "--text-embeddings, --negative-embeddings, --latents-out, --config and --dry-run are for a plain DiT file");
        if (o.Weights is null && o.Preset is null)
            throw new OpParameterException("the real model needs --weights <dit.safetensors> (or --config <preset> with --dry-run)");
        if (o.Weights is null && !o.DryRun)
            throw new OpParameterException($"sampling needs --weights <dit.safetensors>; --config {o.Preset} alone is only for --dry-run");

        // The configuration: a preset, else detected from the weights' header (no tensor is read).
        using var file = o.Weights is null ? null : SafetensorsFile.Open(o.Weights);
        ModelConfig config;
        IReadOnlyList<string> notes = [];
        if (o.Preset is not null) config = ModelConfig.Preset(o.Preset);
        else
        {
            var detection = ConfigDetector.Detect(file!);
            (config, notes) = (detection.Config, detection.Notes);
        }

        var geometry = LatentGeometry.FromPixels(o.Frames ?? DefaultFrames, o.Height ?? DefaultHeight, o.Width ?? DefaultWidth, config.InChannels);
        FlowMatchSampler.Validate(o.Steps, o.Cfg, o.Shift);
        var grid = geometry.TokenGrid(config.Patch);
        var plans = Plans(config, grid);    // a grid too small for UltraGen attention fails here, before anything is loaded
        bool guided = FlowMatchSampler.IsGuided(o.Cfg);

        // Everything the run reads is checked before the weights are loaded.
        TextEmbeddings? positive = null, negative = null;
        string latentsOut = Path.GetFullPath(o.LatentsOut ?? DefaultLatentsOut);
        try
        {
            if (!o.DryRun)
            {
                if (o.TextEmbeddings is null)
                    throw new OpParameterException("the real model needs --text-embeddings <prompt.safetensors> (write it with tools/encode_prompts.py)");
                if (guided && o.NegativeEmbeddings is null)
                    throw new OpParameterException(
                        $"cfg {Number(o.Cfg)} needs --negative-embeddings <negative.safetensors> (tools/encode_prompts.py --negative-output), or --cfg 1 for no guidance");
                string? folder = Path.GetDirectoryName(latentsOut);
                if (folder is not null && !Directory.Exists(folder))
                    throw new OpParameterException($"--latents-out {o.LatentsOut}: the folder {folder} does not exist");
                positive = TextEmbeddings.Load(o.TextEmbeddings, config);
                if (guided) negative = TextEmbeddings.Load(o.NegativeEmbeddings!, config);
            }

            using var device = SampleCommand.OpenBackend(o.Backend, out string why, config);
            Console.WriteLine(o.Weights is null
                ? $"model: preset {o.Preset!.Trim().ToLowerInvariant()} (no weights read)"
                : $"model: {o.Weights} ({(o.Preset is null ? "config detected from the header" : $"preset {o.Preset.Trim().ToLowerInvariant()}")})");
            foreach (var note in notes) Console.WriteLine($"  note: {note}");
            Console.WriteLine($"  {Describe(config)}");
            Console.WriteLine($"backend: {device.Name} — {why}");
            if (SampleCommand.ConfigureAttention(device, o.AttentionPrecision) is { } attentionNote) Console.WriteLine(attentionNote);
            if (geometry.WasRounded)
                Console.WriteLine(string.Create(invariant,
                    $"note: {geometry.RequestedWidth}×{geometry.RequestedHeight} rounded up to {geometry.Width}×{geometry.Height} (multiples of 16, as the reference pipeline does)"));
            Console.WriteLine(string.Create(invariant,
                $"video: {geometry}; latent {Shape.Format(geometry.LatentShape)}; token grid ({grid.T}, {grid.H}, {grid.W}), N = {grid.TokenCount:N0}"));
            Console.WriteLine(string.Create(invariant,
                $"sampler: {o.Steps} steps, cfg {Number(o.Cfg)}{(guided ? " (prompt and negative as one batch of 2)" : " (no guidance)")}, shift {Number(o.Shift)}, seed {o.Seed}"));
            var memory = LatentSampler.Memory(config, geometry, o.Cfg);
            Console.Write(MemoryReport(memory, device));
            if (o.DryRun)
            {
                Console.Write(WindowReport(config, grid, plans));
                return 0;
            }

            if (positive!.Prompt is { } prompt) Console.WriteLine($"prompt: \"{prompt}\" ({positive.Encoder ?? "encoder not recorded"}, {positive.Tokens?.ToString(invariant) ?? "?"} tokens)");
            if (negative?.Prompt is { } negativePrompt) Console.WriteLine($"negative: \"{negativePrompt}\"");
            var loadClock = Stopwatch.StartNew();
            using var dit = Dit.Load(file!, config, device);
            Console.WriteLine(string.Create(invariant, $"loaded {config.Layers} blocks to {device.Name} in {loadClock.Elapsed.TotalSeconds:F1} s"));
            var request = new LatentRequest
            {
                Context = positive.Context, NegativeContext = negative?.Context, Geometry = geometry,
                Seed = o.Seed, Steps = o.Steps, Cfg = o.Cfg, Shift = o.Shift,
            };
            var bar = new ProgressLine("sample");
            var sampleClock = Stopwatch.StartNew();
            var latents = LatentSampler.Sample(dit, request, p => bar.Update(p.Step, p.Steps,
                FormattableString.Invariant($"t {p.Timestep,7:F2}  {p.Elapsed.TotalSeconds:F1} s")));
            bar.Done();
            double sampleSeconds = sampleClock.Elapsed.TotalSeconds;
            LatentFile.Write(latentsOut, latents, geometry, new LatentRunInfo(positive.Prompt, o.Seed, o.Steps, o.Cfg));
            if (device.Allocations is { } counter)
                Console.WriteLine($"backend memory measured: peak {Bytes(counter.Peak)} (estimate {Bytes(memory.BackendBytes)})");
            Console.WriteLine(string.Create(invariant,
                $"wrote {latentsOut} (latents {Shape.Format(geometry.LatentShape)}); sampling {sampleSeconds:F1} s, total {clock.Elapsed.TotalSeconds:F1} s"));
            Console.WriteLine($"decode: python3 tools/decode_latents.py {Quote(latentsOut)} --vae Wan2.1_VAE.pth --output video.mp4");
            return 0;
        }
        finally
        {
            positive?.Dispose();
            negative?.Dispose();
        }
    }

    private static string Quote(string path) => path.Contains(' ', StringComparison.Ordinal) ? $"\"{path}\"" : path;

    private static string Describe(ModelConfig c)
    {
        var decomposed = c.DecomposedBlocks.ToList();
        return string.Create(CultureInfo.InvariantCulture,
            $"dim {c.Dim}, {c.Heads} heads, ffn {c.FfnDim}, {c.Layers} blocks ({decomposed.Count} UltraGen: {(decomposed.Count == 0 ? "none" : BlockSet.FormatRanges(decomposed))}; " +
            $"full: {(c.FullAttentionBlocks.Count == 0 ? "none" : c.FullAttentionBlocks.ToRangeString())}), text {c.TextLen}×{c.TextDim}, latent channels {c.InChannels}");
    }

    /// <summary>The layout plan of the first decomposed block of each parity (the plan depends only on the parity).</summary>
    private static List<UltraGenLayoutPlan> Plans(ModelConfig config, Grid3 grid) =>
        config.DecomposedBlocks.GroupBy(b => b % 2).OrderBy(g => g.Key)
            .Select(g => UltraGenLayoutPlan.Create(grid, g.First(), config.WindowMode, config.WindowBase)).ToList();

    /// <summary>The memory estimate: backend weights, activations at the forward's peak, text context, sampler state; the total against the backend's memory.</summary>
    internal static string MemoryReport(SamplingMemory m, IBackend backend)
    {
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        var f = m.Forward;
        bool host = backend is HostKernelBackend;
        text.AppendLine(invariant, $"memory estimate (inference, batch {m.Batch}; weights and activations f32 on the backend):");
        text.AppendLine(invariant, $"  weights          {Bytes(m.WeightBytes),11}  every parameter as f32 (a bf16 file is widened on upload)");
        text.AppendLine(invariant,
            $"  activations      {Bytes(f.ActivationBytes),11}  at the forward's peak ({f.PeakAt}): the running block's tensors {Bytes(f.BlockBytes)}, " +
            $"token buffers, latent and embeddings {Bytes(f.PassBytes)}");
        text.AppendLine(invariant,
            $"  text context     {Bytes(f.TextBytes + m.HostTextBytes),11}  backend {Bytes(f.TextBytes)} (embeddings and text_embedding outputs), host {Bytes(m.HostTextBytes)}");
        text.AppendLine(invariant, $"  sampler state    {Bytes(m.HostSamplerBytes),11}  host: latent, guided velocity, batched input and velocity");
        text.AppendLine(invariant,
            $"  total            {Bytes(m.TotalBytes),11}  (backend {Bytes(m.BackendBytes)}, host {Bytes(m.HostBytes)}; kernels' scratch and the runtime come on top)");
        if (backend.MemoryCapacity is long capacity)
        {
            long needed = host ? m.TotalBytes : m.BackendBytes;
            string where = host ? "host memory available" : $"{backend.Name} device memory";
            text.AppendLine(needed <= capacity
                ? $"  fits: {Bytes(needed)} of {Bytes(capacity)} {where}"
                : $"  does NOT fit: {Bytes(needed)} needed, {Bytes(capacity)} {where}");
        }
        return text.ToString();
    }

    /// <summary>
    /// The window tables of spec §1.4 for this grid, per block parity among the decomposed blocks, and the attention FLOPs
    /// of one forward against full attention in every block.
    /// </summary>
    internal static string WindowReport(ModelConfig config, Grid3 grid, IReadOnlyList<UltraGenLayoutPlan> plans)
    {
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        string Tokens(long count) => count.ToString("N0", invariant);
        var decomposed = config.DecomposedBlocks.ToList();
        text.AppendLine(invariant,
            $"UltraGen windows on the token grid ({grid.T}, {grid.H}, {grid.W}) ({config.WindowMode}; block parity = absolute index mod 2):");
        if (plans.Count == 0) text.AppendLine("  no decomposed blocks: full attention everywhere");
        foreach (var plan in plans)
        {
            int count = decomposed.Count(b => b % 2 == plan.Parity);
            var (local, global, hier) = (plan.Local, plan.Global, plan.Hierarchical);
            text.AppendLine(invariant, $"  {(plan.Parity == 0 ? "even" : "odd")} blocks ({count}):");
            text.AppendLine(invariant,
                $"    local         {local.WindowsPerSide}×{local.WindowsPerSide} windows, grid {Side(local.InputGrid)}{Resized(local)}, window {local.WindowH}×{local.WindowW}, " +
                $"{Tokens(local.TokensPerWindow)} tokens/window");
            text.AppendLine(invariant,
                $"    hierarchical  {hier.WindowsPerSide}×{hier.WindowsPerSide} windows, grid {Side(hier.InputGrid)} (÷{hier.Downsample}){Resized(hier)}, window {hier.WindowH}×{hier.WindowW}, " +
                $"{Tokens(hier.TokensPerWindow)} tokens/window");
            text.AppendLine(invariant,
                $"    global        1 window, grid {global.InputGrid.T}×{global.InputGrid.H}×{global.InputGrid.W} (÷{global.Downsample}), {Tokens(global.TokensPerWindow)} tokens");
            text.AppendLine(invariant, $"    attention maps {plan.AttentionCostRatio:F4} of full attention's (Σ windows·tokens² / N²)");
        }
        var (self, cross) = AttentionFlops.PerForward(config, grid);
        var (fullSelf, _) = AttentionFlops.PerForward(config.WithAllFull(), grid);
        text.AppendLine(invariant,
            $"attention FLOPs per forward of one video: self-attention {self / 1e12:N1} TFLOP with this plan vs {fullSelf / 1e12:N1} TFLOP with full attention in every block " +
            $"({fullSelf / self:F2}× less); cross-attention {cross / 1e12:N1} TFLOP (a video costs this × 2 with guidance × steps)");
        return text.ToString();
    }

    private static string Side(Grid3 g) => $"{g.H}×{g.W}";

    private static string Resized(BranchLayout branch) => branch.IsResized ? $" → {branch.ResizedH}×{branch.ResizedW}" : "";

    private static string Number(double value) => value.ToString("G", CultureInfo.InvariantCulture);

    /// <summary>Bytes in binary units: GiB from 1 GiB up, else MiB, else KiB.</summary>
    internal static string Bytes(long bytes) =>
        bytes >= 1L << 30 ? string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F2} GiB")
        : bytes >= 1L << 20 ? string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F1} MiB")
        : string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F1} KiB");
}
