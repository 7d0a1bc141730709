using System.Text.RegularExpressions;
using NUnit.Framework;
using UltraGen.Cuda.Interop;
using UltraGen.Cuda.Launchers;

namespace UltraGen.Tests.Cuda;

/// <summary>
/// The cross-attention launcher without a GPU: launch geometry and dK/dV splits against hand-computed values (the same
/// numbers kernels/tests checks for launch.cuh), and every argument list against the parameter list nvcc emitted into the
/// PTX (count, and each argument's offset at its natural alignment) when the PTX has been built.
/// </summary>
[TestFixture]
public class CrossAttentionLauncherTests
{
    [Test]
    public void Grids_cover_queries_or_keys_times_splits()
    {
        Assert.That(LaunchGeometry.CrossAttentionGrid(rows: 100, heads: 12, batch: 2, splits: 1), Is.EqualTo(new Dim3(4, 12, 2)));
        Assert.That(LaunchGeometry.CrossAttentionGrid(rows: 512, heads: 12, batch: 1, splits: 3), Is.EqualTo(new Dim3(48, 12, 1)));
        // 1080P-class query count: 21·68·120 tokens.
        Assert.That(LaunchGeometry.CrossAttentionGrid(rows: 21 * 68 * 120, heads: 12, batch: 1, splits: 1), Is.EqualTo(new Dim3(5355, 12, 1)));
    }

    [TestCase(1, 171_360, 512, 12, 128, 528, 3)]  // 16 key tiles × 12 heads = 192 blocks → 3 splits for 528
    [TestCase(1, 100, 8, 2, 64, 528, 4)]          // capped by the 4 query tiles
    [TestCase(1, 100_000, 8, 1, 64, 528, 64)]     // capped by CrossAttentionMaxSplits
    [TestCase(4, 100_000, 512, 16, 128, 528, 1)]  // 4·16·16 = 1024 blocks already
    [TestCase(1, 100_000, 512, 2, 128, 10_000, 64)]
    [TestCase(8, 100_000, 512, 4, 128, 100_000, 16)] // capped by the partials: 2^25 / (8·512·512)
    public void Splits_follow_the_target_the_query_tiles_and_the_caps(int batch, int queries, int keys, int heads, int headDim, int target,
        int expected) =>
        Assert.That(LaunchGeometry.CrossAttentionSplits(batch, queries, keys, heads, headDim, target), Is.EqualTo(expected));

    [Test]
    public void Head_dims_64_and_128_only()
    {
        Assert.That(CrossAttentionLauncher.Limitation(64), Is.Null);
        Assert.That(CrossAttentionLauncher.Limitation(128), Is.Null);
        Assert.That(CrossAttentionLauncher.Limitation(40), Does.Contain("cross_attention").And.Contain("got 40"));
    }

    /// <summary>Each launcher argument list against the PTX entry's .param list: same count, same offsets.</summary>
    [Test]
    public void Launcher_arguments_match_the_ptx_parameter_lists()
    {
        string ptx = File.ReadAllText(FindPtx("cross_attention"));
        var shape = new CrossAttentionLauncher.Shape(2, 100, 77, 2, 64);
        var p = new IntPtr(0x1000);
        var lists = new Dictionary<string, KernelArgs>
        {
            ["cross_attention_fwd_f32"] = CrossAttentionLauncher.ForwardArgs(p, p, p, p, p, shape),
            ["cross_attention_bwd_dkdv_f32"] = CrossAttentionLauncher.KeyValueArgs(p, p, p, p, p, p, p, p, shape, 3),
            ["cross_attention_bwd_dq_f32"] = CrossAttentionLauncher.QueryArgs(p, p, p, p, p, p, p, shape),
        };
        foreach (var (entry, args) in lists)
        {
            var offsets = PtxParameterOffsets(ptx, entry);
            Assert.That(args.Offsets, Is.EqualTo(offsets), $"{entry}: launcher offsets vs PTX parameters");
        }
        Assert.That(Regex.Matches(ptx, @"\.entry\s+cross_attention_").Count, Is.EqualTo(lists.Count), "an entry point without a launcher check");
    }

    /// <summary>Offsets of an entry's parameters packed at natural alignment (the rule <see cref="KernelArgs"/> follows).</summary>
    private static List<int> PtxParameterOffsets(string ptx, string entry)
    {
        var match = Regex.Match(ptx, @"\.entry\s+" + Regex.Escape(entry) + @"\s*\((?<params>[^)]*)\)");
        Assert.That(match.Success, $"entry {entry} not in the PTX");
        var offsets = new List<int>();
        int used = 0;
        foreach (Match param in Regex.Matches(match.Groups["params"].Value,
                     @"\.param\s+(?:\.align\s+(?<align>\d+)\s+)?\.(?<type>[a-z]+)(?<bits>\d+)\s+\w+(?:\[(?<count>\d+)\])?"))
        {
            int size = int.Parse(param.Groups["bits"].Value) / 8 * (param.Groups["count"].Success ? int.Parse(param.Groups["count"].Value) : 1);
            int align = param.Groups["align"].Success ? int.Parse(param.Groups["align"].Value) : size;
            int offset = (used + align - 1) / align * align;
            offsets.Add(offset);
            used = offset + size;
        }
        return offsets;
    }

    /// <summary>
    /// The sm80 PTX of <paramref name="module"/>: from $ULTRAGEN_PTX_DIR, or build/ptx or build/ci-ptx/ptx of the repository;
    /// ignored (with the build command) when none has been built.
    /// </summary>
    private static string FindPtx(string module)
    {
        var folders = new List<string>();
        if (Environment.GetEnvironmentVariable("ULTRAGEN_PTX_DIR") is { Length: > 0 } fromEnvironment) folders.Add(fromEnvironment);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "CMakeLists.txt")) && Directory.Exists(Path.Combine(dir.FullName, "kernels")))
            {
                folders.Add(Path.Combine(dir.FullName, "build", "ptx"));
                folders.Add(Path.Combine(dir.FullName, "build", "ci-ptx", "ptx"));
                break;
            }
        foreach (var folder in folders)
        {
            string path = Path.Combine(folder, $"{module}.sm80.ptx");
            if (File.Exists(path)) return path;
        }
        Assert.Ignore($"no {module}.sm80.ptx in {string.Join(", ", folders)}; build it with `cmake -S . -B build && cmake --build build`");
        return "";
    }
}
