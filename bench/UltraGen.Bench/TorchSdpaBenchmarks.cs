using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace UltraGen.Bench;

/// <summary>
/// The peer: TorchSharp-cpu (libtorch) <c>scaled_dot_product_attention</c> on the same window batches as
/// <see cref="WindowAttentionBenchmarks"/>: q, k, v (B, T, H, W, heads·headDim) are gathered window by window into
/// (windows·B, heads, tokens, headDim) once in setup, and only SDPA is timed (no RoPE: compare with Rope = False).
/// libtorch uses as many threads as this process has processors.
/// </summary>
public class TorchSdpaBenchmarks : IFlopCounted
{
    private Tensor? _q, _k, _v;

    /// <summary>Every case when libtorch loads here; none (with the reason on the console) when it does not.</summary>
    public static IEnumerable<string> Cases => TorchLoads(out string? reason)
        ? AttentionCase.Names
        : Skip(reason!);

    private static IEnumerable<string> Skip(string reason)
    {
        Console.WriteLine($"// UltraGen.Bench: skipping TorchSdpaBenchmarks: {reason}");
        return [];
    }

    /// <summary>
    /// Whether TorchSharp's native backend loads in this process. TorchSharp 0.107.0's libLibTorchSharp.so needs
    /// GLIBCXX_3.4.32 (libstdc++ of GCC 13 or newer); on older distributions (Debian 12) it cannot load, and the loader's
    /// own message is reported.
    /// </summary>
    public static bool TorchLoads(out string? reason)
    {
        try
        {
            torch.set_num_threads(Environment.ProcessorCount);
            reason = null;
            return true;
        }
        catch (TypeInitializationException)
        {
            string why = "TorchSharp's native backend does not load";
            foreach (var path in Directory.EnumerateFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories))
            {
                try { System.Runtime.InteropServices.NativeLibrary.Free(System.Runtime.InteropServices.NativeLibrary.Load(path)); }
                catch (DllNotFoundException e)
                {
                    var lines = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    why += ": " + (lines.FirstOrDefault(l => l.Contains("not found", StringComparison.Ordinal)) ?? lines.FirstOrDefault() ?? "");
                    break;
                }
            }
            reason = why;
            return false;
        }
    }

    [ParamsSource(nameof(Cases))]
    public string Case { get; set; } = AttentionCase.All[0].Name;

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(Environment.ProcessorCount);
        var c = AttentionCase.Get(Case);
        var layout = c.Layout;
        if (!layout.IsUniform) throw new InvalidOperationException($"case '{c.Name}' has ragged windows; SDPA needs equal window sizes");
        var random = new Random(1234);
        _q = Gathered(c, Random(c, random));
        _k = Gathered(c, Random(c, random));
        _v = Gathered(c, Random(c, random));
    }

    private static float[] Random(AttentionCase c, Random random)
    {
        var values = new float[c.Shape.Aggregate(1, (a, b) => a * b)];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(2 * random.NextDouble() - 1);
        return values;
    }

    /// <summary>(1, T, H, W, heads·headDim) channels-last → (windows, heads, tokens, headDim) by the layout's token order.</summary>
    private static Tensor Gathered(AttentionCase c, float[] video)
    {
        var layout = c.Layout;
        int windows = layout.WindowCount, tokens = layout.MaxTokensInWindow, d = c.HeadDim, channels = c.Heads * d;
        var gathered = new float[(long)windows * c.Heads * tokens * d];
        for (int g = 0; g < windows; g++)
            for (int i = 0; i < tokens; i++)
            {
                long token = layout.TokenIndex(g, i);
                for (int h = 0; h < c.Heads; h++)
                    Array.Copy(video, token * channels + h * d, gathered, (((long)g * c.Heads + h) * tokens + i) * d, d);
            }
        return torch.tensor(gathered, [windows, c.Heads, tokens, d]);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _q?.Dispose();
        _k?.Dispose();
        _v?.Dispose();
    }

    [Benchmark]
    public void Sdpa()
    {
        using var o = nn.functional.scaled_dot_product_attention(_q!, _k!, _v!);
    }

    public double CountFlops(string method)
    {
        var c = AttentionCase.Get(Case);
        return Flops.AttentionForward(c.Layout.AttentionPairs, c.HeadDim, c.Heads);
    }
}
