using System.Globalization;
using System.Text;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Cuda;
using UltraGen.Cuda.Interop;
using UltraGen.Cuda.Launchers;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Bench;

/// <summary>
/// <c>dotnet UltraGen.GpuBench.dll --csv out.csv</c>: the cuda backend's attention timed with CUDA events on the shapes of
/// bench/gpu/sdpa_peer.py (same row names and shape strings, so bench/gpu/run.sh puts the two side by side), plus the
/// whole self-attention layer at 1080P, UltraGen's against Wan's full attention. Not a BenchmarkDotNet job: each row is
/// a median of device-timed calls (warm-up first), with the inputs rotated over enough copies that no call starts from
/// a cache the previous one warmed (together at least twice the L2).
/// <list type="bullet">
/// <item>attention rows: <c>window_attention</c>, bf16 storage (the tensor-core kernels), d = 128, 12 heads, RoPE on
///   (applied inside the kernel; SDPA gets no RoPE). Useful FLOPs 4·N²·d per window and head forward, 2.5× that
///   backward; our backward entry also recomputes the forward (o, lse) it needs, inside the timed call. Each forward is
///   timed twice, with the 64-query kernel (row <c>.fwd</c>, the default) and the 128-query one (<c>.fwd_m128</c>).</item>
/// <item>layer rows: <c>ultragen_self_attention</c> (block 4) and <c>wan_self_attention</c> at T = 21, 68×120, D = 1536,
///   forward, f32 (the composites run in f32 on this backend): <c>_f32</c> with the SIMT f32 attention kernels,
///   <c>_bf16attn</c> with attention through the bf16 tensor-core kernels (<c>CudaBackend.F32AttentionPrecision</c>).</item>
/// </list>
/// <c>--smoke</c> runs every row on a small grid once (a check of this command's code on any cuda backend, including the
/// CUDA emulator in CI); its numbers mean nothing.
/// </summary>
public static class GpuAttention
{
    private const int Heads = 12;
    private const int HeadDim = 128;

    /// <summary>One attention row: the token grid the kernel walks and the windows per side (1 = full attention).</summary>
    private sealed record AttentionRow(string Name, int T, int H, int W, int Windows, bool Backward);

    // Same names and per-window token counts as sdpa_peer.py; the 1080P grids are the ones the model's layouts walk
    // (spec §1.4: odd 5×5 windows on the grid resized to 70×120, global 4× down to 17×30, hierarchical 2× down to 34×60
    // with 2×2 windows or 33×60 with 3×3).
    private static readonly AttentionRow[] s_attention =
    [
        new("full_N8K", 1, 64, 128, 1, true),
        new("full_N16K", 1, 128, 128, 1, true),
        new("full_N32K", 2, 128, 128, 1, true),
        new("1080p_local_even", 21, 68, 120, 4, true),
        new("1080p_local_odd", 21, 70, 120, 5, true),
        new("1080p_global", 21, 17, 30, 1, true),
        new("1080p_hier_even", 21, 34, 60, 2, true),
        new("1080p_hier_odd", 21, 33, 60, 3, true),
        new("1080p_full", 21, 68, 120, 1, false),
    ];

    private sealed record Options(string Csv, HashSet<string> Only, bool Smoke, int Warmup, int Iterations, bool Layers);

    public static int Main(string[] args)
    {
        Options options;
        try
        {
            options = Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"UltraGen.GpuBench: {e.Message}");
            Console.Error.WriteLine("usage: UltraGen.GpuBench --csv <file> [--only name,name] [--warmup N] [--iterations N] [--no-layers] [--smoke]");
            return 2;
        }

        var probe = BackendRegistry.Get("cuda").Probe();
        if (probe.Backend is not CudaBackend cuda)
        {
            probe.Backend?.Dispose();
            Console.Error.WriteLine($"UltraGen.GpuBench: the cuda backend is not available here: {probe.UnavailableReason}");
            return 2;
        }
        using var backend = cuda;
        Console.WriteLine($"device: {backend.Description}");
        Console.WriteLine(options.Smoke
            ? "smoke run: small grids, one timed call each; the numbers are not measurements"
            : $"median of {options.Iterations} calls after {options.Warmup} warm-up calls, CUDA events");
        long l2 = L2Bytes(backend);

        var rows = new List<(string Layer, string Shape, double Tflops, double Ms)>();
        void Report(string layer, string shape, double flops, double ms)
        {
            rows.Add((layer, shape, flops / ms / 1e9, ms));
            Console.WriteLine(FormattableString.Invariant($"{layer,-30} {shape,-30} {flops / ms / 1e9,9:F1} TFLOP/s {ms,11:F3} ms"));
            WriteCsv(options.Csv, rows);  // after every row: a run stopped by a time limit keeps what it measured
        }

        foreach (var row in s_attention)
        {
            if (options.Only.Count > 0 && !options.Only.Contains(row.Name)) continue;
            var (t, h, w, heads) = options.Smoke ? (2, Math.Max(2 * row.Windows, row.H / 8), Math.Max(2 * row.Windows, row.W / 8), 2) : (row.T, row.H, row.W, Heads);
            var layout = WindowLayout.Ragged(new Grid3(t, h, w), row.Windows);
            // sdpa_peer.py's shape string (windows as a batch of equal sequences); a ragged smoke grid names its largest window.
            string shape = $"B{layout.WindowCount} H{heads} N{layout.MaxTokensInWindow} d{HeadDim}";
            double flops = 4.0 * layout.AttentionPairs * HeadDim * heads;
            var parameters = OpParams.Of(("heads", heads), ("windows", row.Windows), ("ragged", !layout.IsUniform));
            int[] dims = [1, t, h, w, heads * HeadDim];
            long setBytes = 4L * dims.Aggregate(1L, (a, b) => a * b) * 2;  // q, k, v, dO in bf16
            int sets = (int)Math.Clamp((2 * l2 + setBytes - 1) / setBytes, 1, 8);
            using var inputs = new RotatedInputs(backend, dims, sets, seed: row.Name.GetHashCode(StringComparison.Ordinal));
            var op = OpCatalog.Get("window_attention");
            using var o = backend.Allocate(DType.BF16, dims);
            double forwardMs = Time(backend, options, call => backend.Forward(op, inputs.Qkv(call), new Dictionary<string, Tensor> { ["o"] = o }, parameters));
            Report($"{row.Name}.fwd", shape, flops, forwardMs);
            // The same forward with the 128-query kernel (same function; which tile is faster is this run's question).
            backend.AttentionForwardTile = AttentionForwardTile.Queries128;
            try
            {
                double m128Ms = Time(backend, options, call => backend.Forward(op, inputs.Qkv(call), new Dictionary<string, Tensor> { ["o"] = o }, parameters));
                Report($"{row.Name}.fwd_m128", shape, flops, m128Ms);
            }
            finally { backend.AttentionForwardTile = AttentionForwardTile.Queries64; }
            if (!row.Backward) continue;
            using var dq = backend.Allocate(DType.BF16, dims);
            using var dk = backend.Allocate(DType.BF16, dims);
            using var dv = backend.Allocate(DType.BF16, dims);
            var gradients = new Dictionary<string, Tensor> { ["q"] = dq, ["k"] = dk, ["v"] = dv };
            double backwardMs = Time(backend, options, call =>
                backend.Backward(op, inputs.Qkv(call), new Dictionary<string, Tensor> { ["o"] = inputs.DO(call) }, gradients, parameters));
            Report($"{row.Name}.bwd", shape, 2.5 * flops, backwardMs);
        }

        if (options.Layers && (options.Only.Count == 0 || options.Only.Contains("1080p_layers")))
        {
            var grid = options.Smoke ? new Grid3(2, 16, 16) : new Grid3(21, 68, 120);
            int heads = options.Smoke ? 2 : Heads;
            var layerOptions = options.Smoke ? options : options with { Warmup = 1, Iterations = Math.Min(options.Iterations, 3) };
            // f32 layers with the SIMT f32 attention kernels (the default), then with attention through the bf16 tensor
            // cores (--attention-precision bf16).
            foreach (var (name, opName, flops, precision) in new[]
                     {
                         ("1080p_ultragen_layer_f32", "ultragen_self_attention", LayerSetup.UltraGenFlops(grid, heads, HeadDim), AttentionPrecision.F32),
                         ("1080p_full_layer_f32", "wan_self_attention", LayerSetup.FullFlops(grid, heads, HeadDim), AttentionPrecision.F32),
                         ("1080p_ultragen_layer_bf16attn", "ultragen_self_attention", LayerSetup.UltraGenFlops(grid, heads, HeadDim), AttentionPrecision.Bf16),
                         ("1080p_full_layer_bf16attn", "wan_self_attention", LayerSetup.FullFlops(grid, heads, HeadDim), AttentionPrecision.Bf16),
                     })
            {
                using var layer = LayerSetup.Prepare(backend, opName, grid, heads, HeadDim, ownsBackend: false);
                backend.F32AttentionPrecision = precision;
                try
                {
                    double ms = Time(backend, layerOptions, _ => layer.Forward());
                    Report($"{name}.fwd", $"T{grid.T} {grid.H}x{grid.W} D{heads * HeadDim}", flops, ms);
                }
                finally { backend.F32AttentionPrecision = AttentionPrecision.F32; }
            }
        }

        WriteCsv(options.Csv, rows);
        Console.WriteLine($"wrote {options.Csv} ({rows.Count} rows)");
        return 0;
    }

    /// <summary>Median device milliseconds of <paramref name="call"/>(i) for i = 0, 1, … (warm-up calls first).</summary>
    private static double Time(CudaBackend backend, Options options, Action<int> call)
    {
        using var timer = backend.CreateTimer();
        int index = 0;
        var (median, _) = timer.Median(() => call(index++), options.Warmup, options.Iterations);
        return median;
    }

    /// <summary>The device's L2 size (CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE), or 64 MiB (more than an H100's 50 MB) if unknown.</summary>
    private static long L2Bytes(CudaBackend backend)
    {
        try
        {
            return CudaDriver.Attribute(backend.Device.Handle, 38);
        }
        catch (CudaException)
        {
            return 64L << 20;
        }
    }

    /// <summary><c>sets</c> copies of q, k, v and dO (bf16, uniform in [−1, 1)), used round-robin.</summary>
    private sealed class RotatedInputs : IDisposable
    {
        private readonly List<Tensor[]> _sets = [];

        public RotatedInputs(IBackend backend, int[] dims, int sets, int seed)
        {
            var random = new Random(seed);
            using var host = Tensor.Host(DType.BF16, dims);
            var values = new double[host.ElementCount];
            for (int s = 0; s < sets; s++)
            {
                var set = new Tensor[4];
                for (int i = 0; i < 4; i++)
                {
                    for (int e = 0; e < values.Length; e++) values[e] = 2 * random.NextDouble() - 1;
                    host.CopyFrom(values);
                    set[i] = backend.Allocate(DType.BF16, dims);
                    backend.CopyFromHost(host, set[i]);
                }
                _sets.Add(set);
            }
        }

        public Dictionary<string, Tensor> Qkv(int call)
        {
            var set = _sets[call % _sets.Count];
            return new Dictionary<string, Tensor> { ["q"] = set[0], ["k"] = set[1], ["v"] = set[2] };
        }

        public Tensor DO(int call) => _sets[call % _sets.Count][3];

        public void Dispose()
        {
            foreach (var set in _sets)
                foreach (var tensor in set) tensor.Dispose();
        }
    }

    private static Options Parse(string[] args)
    {
        string? csv = null;
        var only = new HashSet<string>(StringComparer.Ordinal);
        bool smoke = false, layers = true;
        int warmup = 3, iterations = 10;
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int Count(int min) => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= min
                ? n : throw new ArgumentException($"{args[i - 1]} takes a whole number ≥ {min}");
            switch (args[i])
            {
                case "--csv": csv = Value(); break;
                case "--only": foreach (var name in Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)) only.Add(name); break;
                case "--warmup": warmup = Count(0); break;
                case "--iterations": iterations = Count(1); break;
                case "--no-layers": layers = false; break;
                case "--smoke": smoke = true; break;
                default: throw new ArgumentException($"unknown argument '{args[i]}'");
            }
        }
        if (csv is null) throw new ArgumentException("--csv <file> is required");
        var known = s_attention.Select(r => r.Name).Append("1080p_layers").ToHashSet(StringComparer.Ordinal);
        if (only.FirstOrDefault(n => !known.Contains(n)) is { } unknown)
            throw new ArgumentException($"--only: unknown row '{unknown}' (rows: {string.Join(", ", known)})");
        return smoke ? new Options(csv, only, true, 0, 1, layers) : new Options(csv, only, false, warmup, iterations, layers);
    }

    /// <summary>layer,shape,tflops,ms — the columns of sdpa_peer.py's CSV; written to a temporary file, then renamed.</summary>
    private static void WriteCsv(string path, IEnumerable<(string Layer, string Shape, double Tflops, double Ms)> rows)
    {
        var text = new StringBuilder("layer,shape,tflops,ms\n");
        foreach (var (layer, shape, tflops, ms) in rows)
            text.Append(FormattableString.Invariant($"{layer},{shape},{tflops:F2},{ms:F4}\n"));
        string full = Path.GetFullPath(path);
        string temporary = full + ".tmp";
        File.WriteAllText(temporary, text.ToString());
        File.Move(temporary, full, overwrite: true);
    }
}
