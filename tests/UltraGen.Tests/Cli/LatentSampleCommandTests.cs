using NUnit.Framework;
using UltraGen.Cli;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Generation.Latent;
using UltraGen.Model;

namespace UltraGen.Tests.Cli;

/// <summary>
/// <c>ultragen sample</c> on the real-model path, in process: a tiny Wan-named DiT file (as <see cref="ModelWeights.Save"/> and
/// tools/convert_weights.py write it), text embeddings in the file contract, the latents file it writes, its errors and
/// <c>--dry-run</c>.
/// </summary>
[TestFixture]
[NonParallelizable]
public class LatentSampleCommandTests
{
    private static readonly ModelConfig Config = ModelConfig.Tiny;    // 16 latent channels, blocks 1–2 decomposed
    private string _directory = "";

    [SetUp]
    public void SetUp() => _directory = Directory.CreateTempSubdirectory("ultragen-latent-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_directory, recursive: true);

    private string PathOf(string name) => Path.Combine(_directory, name);

    private string Weights(DType storage = DType.BF16)
    {
        string path = PathOf("dit.safetensors");
        using var weights = ModelWeights.Random(Config, seed: 31);
        weights.Save(path, new WeightsSaveOptions { Storage = storage });
        return path;
    }

    private string Embeddings(string name, int seed, int rows = -1, int columns = -1)
    {
        string path = PathOf(name);
        var random = new Random(seed);
        using var context = Tensor.Host(DType.F32, rows < 0 ? Config.TextLen : rows, columns < 0 ? Config.TextDim : columns);
        foreach (ref float value in context.HostSpan<float>()) value = (float)(random.NextDouble() * 2 - 1);
        TextEmbeddings.Save(path, context, "test-encoder", $"prompt {seed}", 5);
        return path;
    }

    /// <summary>5 frames of 96×64 pixels (latent 16×2×8×12, tokens 2×4×6), 2 steps, cfg 5, on the Cpu backend.</summary>
    private (int ExitCode, string Out, string Error) Sample(string weights, string latents, params string[] extra) =>
        SampleSized(weights, latents, 5, 64, extra);

    private (int ExitCode, string Out, string Error) SampleSized(string weights, string latents, int frames, int height, params string[] extra) =>
        CliRunner.Invoke(["sample", "--weights", weights, "--text-embeddings", Embeddings("prompt.safetensors", 1),
            "--negative-embeddings", Embeddings("negative.safetensors", 2), "--frames", $"{frames}", "--height", $"{height}", "--width", "96",
            "--steps", "2", "--backend", "cpu", "--latents-out", latents, .. extra]);

    private static float[] ReadLatents(string path, out IReadOnlyDictionary<string, string> metadata, out int[] shape, out DType? dtype)
    {
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { LatentFile.TensorName }));
        var info = file.GetInfo(LatentFile.TensorName);
        (metadata, shape, dtype) = (file.Metadata, info.Shape, info.DType);
        using var tensor = file.ReadTensor(LatentFile.TensorName);
        return tensor.HostSpan<float>().ToArray();
    }

    [Test]
    public void Writes_the_latents_contract_deterministically_per_seed()
    {
        string weights = Weights(), first = PathOf("a.safetensors"), again = PathOf("b.safetensors"), other = PathOf("c.safetensors");
        var run = Sample(weights, first, "--seed", "3");
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Error);
        TestContext.Out.WriteLine(run.Out);
        Assert.That(run.Out, Does.Contain("token grid (2, 4, 6)").And.Contain("memory estimate").And.Contain("backend memory measured"));
        var latents = ReadLatents(first, out var metadata, out var shape, out var dtype);
        Assert.That(shape, Is.EqualTo(new[] { 16, 2, 8, 12 }), "(16, (F−1)/4+1, H/8, W/8)");
        Assert.That(dtype, Is.EqualTo(DType.F32));
        Assert.That(latents, Has.All.Matches<float>(float.IsFinite));
        Assert.That(metadata[LatentFile.FormatKey], Is.EqualTo("wan2.1-vae"));
        Assert.That(metadata[LatentFile.FramesKey], Is.EqualTo("5"));
        Assert.That(metadata[LatentFile.HeightKey], Is.EqualTo("64"));
        Assert.That(metadata[LatentFile.WidthKey], Is.EqualTo("96"));
        Assert.That(metadata[LatentFile.FpsKey], Is.EqualTo("15"));
        Assert.That(metadata[LatentFile.PromptKey], Is.EqualTo("prompt 1"));
        Assert.That(metadata[LatentFile.SeedKey], Is.EqualTo("3"));
        Assert.That(metadata[LatentFile.StepsKey], Is.EqualTo("2"));
        Assert.That(metadata[LatentFile.CfgKey], Is.EqualTo("5"));

        Assert.That(Sample(weights, again, "--seed", "3").ExitCode, Is.EqualTo(0));
        Assert.That(ReadLatents(again, out _, out _, out _), Is.EqualTo(latents), "same seed, same latents");
        Assert.That(Sample(weights, other, "--seed", "4").ExitCode, Is.EqualTo(0));
        var different = ReadLatents(other, out _, out _, out _);
        Assert.That(different.Zip(latents).Count(p => p.First != p.Second), Is.GreaterThan(latents.Length * 9 / 10), "another seed, other latents");
        Assert.That(Directory.GetFiles(_directory).Where(f => f.EndsWith(".tmp", StringComparison.Ordinal)), Is.Empty);
    }

    [Test]
    public void Height_and_width_round_up_to_multiples_of_16_with_a_note()
    {
        string latents = PathOf("l.safetensors");
        var run = CliRunner.Invoke("sample", "--weights", Weights(DType.F32), "--text-embeddings", Embeddings("p.safetensors", 1), "--cfg", "1",
            "--frames", "1", "--height", "60", "--width", "70", "--steps", "1", "--backend", "cpu", "--latents-out", latents);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Error);
        Assert.That(run.Out, Does.Contain("70×60 rounded up to 80×64"));
        ReadLatents(latents, out var metadata, out var shape, out _);
        Assert.That(shape, Is.EqualTo(new[] { 16, 1, 8, 10 }));
        Assert.That((metadata[LatentFile.HeightKey], metadata[LatentFile.WidthKey]), Is.EqualTo(("64", "80")));
    }

    private void AssertBadInput((int ExitCode, string Out, string Error) run, string latents, params string[] words)
    {
        Assert.That(run.ExitCode, Is.EqualTo(Program.BadInputExitCode), run.Out + run.Error);
        var lines = run.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), run.Error);
        Assert.That(lines[0], Does.StartWith("error: "));
        foreach (var word in words) Assert.That(lines[0], Does.Contain(word));
        Assert.That(File.Exists(latents), Is.False, "nothing written");
    }

    [Test]
    public void Bad_input_is_one_line_exit_code_2_and_writes_nothing()
    {
        string weights = Weights(), latents = PathOf("out.safetensors");
        AssertBadInput(SampleSized(weights, latents, 80, 64), latents, "4k+1", "77 or 81");
        AssertBadInput(CliRunner.Invoke("sample", "--weights", weights, "--text-embeddings", Embeddings("wide.safetensors", 1, columns: Config.TextDim + 1),
            "--negative-embeddings", Embeddings("n.safetensors", 2), "--frames", "1", "--height", "64", "--width", "64", "--backend", "cpu",
            "--latents-out", latents), latents, "'context'", $"[{Config.TextLen}, {Config.TextDim + 1}]", $"expected [{Config.TextLen}, {Config.TextDim}]");
        AssertBadInput(CliRunner.Invoke("sample", "--weights", weights, "--frames", "1", "--height", "64", "--width", "64", "--backend", "cpu",
            "--latents-out", latents), latents, "--text-embeddings");
        AssertBadInput(CliRunner.Invoke("sample", "--weights", weights, "--text-embeddings", Embeddings("p.safetensors", 1), "--frames", "1",
            "--height", "64", "--width", "64", "--backend", "cpu", "--latents-out", latents), latents, "--negative-embeddings");
        AssertBadInput(CliRunner.Invoke("sample", "--config", "wan2.2-nonexistent", "--dry-run", "--latents-out", latents), latents,
            "unknown model preset", "wan2.1-t2v-1.3b");
        AssertBadInput(Sample(weights, latents, "--prompt", "a cat"), latents, "--prompt", "--text-embeddings");
        AssertBadInput(CliRunner.Invoke("sample", "--weights", PathOf("absent.safetensors"), "--text-embeddings", Embeddings("p.safetensors", 1),
            "--latents-out", latents), latents, "absent.safetensors");
        AssertBadInput(SampleSized(weights, latents, 5, 32), latents, "too small");
        AssertBadInput(Sample(weights, latents, "--attention-precision", "bf16"), latents, "--attention-precision bf16 needs the cuda backend");
    }

    [TestCase(1080, 1920, "(21, 68, 120)", "N = 171,360", "70×120, window 14×24, 7,056 tokens/window")]
    [TestCase(2160, 3840, "(21, 135, 240)", "N = 680,400", "135×240 → 136×240, window 34×60, 42,840 tokens/window")]
    public void Dry_run_of_the_wan_preset_prints_the_estimate_and_the_window_tables(int height, int width, string grid, string tokens, string row)
    {
        string latents = PathOf("never.safetensors");
        var run = CliRunner.Invoke("sample", "--config", "wan2.1-t2v-1.3b", "--dry-run", "--height", $"{height}", "--width", $"{width}",
            "--backend", "cpu", "--latents-out", latents);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Error);
        TestContext.Out.WriteLine(run.Out);
        Assert.That(run.Out, Does.Contain($"token grid {grid}").And.Contain(tokens).And.Contain(row));
        Assert.That(run.Out, Does.Contain("weights             6.32 GiB"), "1,696,002,112 parameters × 4 bytes");
        Assert.That(run.Out, Does.Contain("even blocks (12)").And.Contain("odd blocks (12)").And.Contain("attention FLOPs"));
        Assert.That(File.Exists(latents), Is.False);
    }

    [Test]
    public void Dry_run_from_a_weights_header_reads_no_embeddings()
    {
        string latents = PathOf("never.safetensors");
        var run = CliRunner.Invoke("sample", "--weights", Weights(), "--dry-run", "--frames", "5", "--height", "64", "--width", "96",
            "--backend", "cpu", "--latents-out", latents);
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Error);
        Assert.That(run.Out, Does.Contain("config detected from the header").And.Contain("token grid (2, 4, 6)").And.Contain("UltraGen windows"));
        Assert.That(File.Exists(latents), Is.False);
    }
}
