using System.Diagnostics;
using System.Globalization;
using NUnit.Framework;
using SkiaSharp;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Generation.Latent;
using UltraGen.Model;
using UltraGen.Tests.Cli;

namespace UltraGen.Tests.Tools;

/// <summary>
/// The README's "Running the real model" chain end to end on tiny synthetic models, each piece through its own entry
/// point: a synthetic UltraGen checkpoint with the real tensor names (<c>tools/tests/make_synthetic_checkpoint.py</c>:
/// dim 32, 2 heads, text_dim 24, 16 latent channels, blocks 1–2 decomposed) → <c>tools/convert_weights.py</c> (BF16,
/// contract 1) → prompt and negative embeddings from a tiny random umT5 with Wan's names whose d_model is the DiT's
/// text_dim (<c>tools/encode_prompts.py</c>'s main with a stand-in tokenizer: Debian has no <c>tokenizers</c> package;
/// see <c>tools/tests/make_pipeline_fixtures.py</c>; contract 2) → <c>ultragen sample</c> in process on the Cpu
/// backend (contract 3) → <c>tools/decode_latents.py</c> with a tiny random Wan-named VAE → PNG frames.
/// What each piece computes is tested on its own elsewhere; this test checks that the files one piece writes are the
/// files the next one reads, and the metadata that travels along. Skipped, with the reason, where no Python has torch.
/// </summary>
[TestFixture]
[NonParallelizable] // Python may use both cores through torch; the CLI runner swaps the console
public sealed class RealModelPipelineTests
{
    // The smallest video the tiny DiT accepts: the global branch compresses the token grid by 4, so the grid's H and W
    // must be at least 4, i.e. 64 pixels (VAE stride 8 × patch 2 × 4). The width is 80 (token grid 4×5), not 64, so that
    // a height/width swap anywhere along the chain shows.
    private const int Frames = 5, Height = 64, Width = 80;
    private const string Prompt = "a red fox “café” runs \"fast\"";  // non-ASCII and quotes: the metadata travels as JSON twice
    private const string NegativePrompt = "blurry, low quality";

    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        PythonTools.RequirePython();
        _dir = Directory.CreateTempSubdirectory("ultragen-pipeline-").FullName;
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static string Invariant(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static string Python(params string[] args)
    {
        var clock = Stopwatch.StartNew();
        var (exitCode, output) = PythonTools.Run(args, TimeSpan.FromMinutes(3));
        TestContext.Out.WriteLine($"$ python {string.Join(' ', args)}  ({clock.Elapsed.TotalSeconds:F1} s)\n{output}");
        Assert.That(exitCode, Is.EqualTo(0), $"python {string.Join(' ', args)} failed:\n{output}");
        return output;
    }

    private (int ExitCode, string Out, string Error) Ultragen(params string[] args)
    {
        var clock = Stopwatch.StartNew();
        var run = CliRunner.Invoke(args);
        TestContext.Out.WriteLine($"$ ultragen {string.Join(' ', args)}  ({clock.Elapsed.TotalSeconds:F1} s)\n{run.Out}{run.Error}");
        return run;
    }

    private static float[] ReadLatents(string path, out IReadOnlyDictionary<string, string> metadata)
    {
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { LatentFile.TensorName }), path);
        var info = file.GetInfo(LatentFile.TensorName);
        Assert.That(info.DType, Is.EqualTo(DType.F32), "contract 3: latents are F32");
        Assert.That(info.Shape, Is.EqualTo(new[] { 16, (Frames - 1) / 4 + 1, Height / 8, Width / 8 }), "contract 3: [16, T, H/8, W/8]");
        metadata = file.Metadata;
        using var tensor = file.ReadTensor(LatentFile.TensorName);
        return tensor.HostSpan<float>().ToArray();
    }

    [Test]
    public void Readme_chain_runs_from_a_checkpoint_to_png_frames()
    {
        var total = Stopwatch.StartNew();
        int seed = Environment.TickCount & 0xFFFF;
        TestContext.Out.WriteLine($"synthetic model seed {seed}");

        // 1. Checkpoint → converted DiT (BF16 by default). The synthetic model's heads and text length are not in its
        //    tensors' shapes: the converter records them in the metadata C# reads.
        string checkpoint = PathOf("ultragen.ckpt"), dit = PathOf("dit.safetensors");
        Python("tests/make_synthetic_checkpoint.py", "--kind", "ultragen", "--seed", Invariant(seed), "--output", checkpoint);
        Python("convert_weights.py", checkpoint, "--output", dit, "--heads", "2", "--text-len", "8");
        ModelConfig config;
        using (var file = SafetensorsFile.Open(dit))
        {
            Assert.That(file.Tensors.Select(t => t.DType).Distinct(), Is.EqualTo(new DType?[] { DType.BF16 }), "the converter's default storage");
            config = ModelWeights.DetectConfig(file);
        }
        Assert.That((config.InChannels, config.OutChannels), Is.EqualTo((16, 16)), "Wan's latent channels, what the VAE takes");
        Assert.That((config.TextLen, config.TextDim, config.Heads), Is.EqualTo((8, 24, 2)));
        Assert.That(config.DecomposedBlocks, Is.EqualTo(new[] { 1, 2 }));

        // 2. Prompt and negative embeddings from a tiny umT5 whose d_model is the DiT's text_dim, at the DiT's text_len.
        //    encode_prompts.py's main() runs with a stand-in tokenizer (make_pipeline_fixtures.py encode): the real
        //    tokenizer needs the `tokenizers` package, which Debian lacks. The negative one is stored BF16 (accepted by
        //    contract 2) through a second call.
        string umt5 = PathOf("umt5-tiny-enc.pth"), positive = PathOf("prompt.safetensors"), negative = PathOf("negative.safetensors");
        Python("tests/make_pipeline_fixtures.py", "umt5", "--dim", Invariant(config.TextDim), "--seed", Invariant(seed), "--output", umt5);
        Python("tests/make_pipeline_fixtures.py", "encode", "--weights", umt5, "--text-len", Invariant(config.TextLen), "--device", "cpu",
            "--prompt", Prompt, "--output", positive);
        Python("tests/make_pipeline_fixtures.py", "encode", "--weights", umt5, "--text-len", Invariant(config.TextLen), "--device", "cpu",
            "--negative-prompt", NegativePrompt, "--negative-output", negative, "--save-dtype", "bf16");
        foreach (var (path, dtype, prompt) in new[] { (positive, DType.F32, Prompt), (negative, DType.BF16, NegativePrompt) })
        {
            using var file = SafetensorsFile.Open(path);
            var info = file.GetInfo(TextEmbeddings.TensorName);
            Assert.That(info.DType, Is.EqualTo(dtype), path);
            Assert.That(info.Shape, Is.EqualTo(new[] { config.TextLen, config.TextDim }), $"{path}: [text_len, text_dim] of the DiT");
            Assert.That(file.Metadata[TextEmbeddings.PromptKey], Is.EqualTo(prompt), "the prompt as given");
            Assert.That(file.Metadata[TextEmbeddings.EncoderKey], Does.StartWith("umt5("), "a tiny umT5 does not pass for umt5-xxl");
        }

        // 3. ultragen sample: the memory estimate first (as the README does), then two runs with one seed and one with another.
        string latents = PathOf("latents.safetensors"), again = PathOf("latents-again.safetensors"), other = PathOf("latents-other.safetensors");
        string[] Sample(string output, int sampleSeed) =>
            ["sample", "--weights", dit, "--text-embeddings", positive, "--negative-embeddings", negative,
             "--height", Invariant(Height), "--width", Invariant(Width), "--frames", Invariant(Frames), "--steps", "2",
             "--seed", Invariant(sampleSeed), "--latents-out", output, "--backend", "cpu"];
        var dry = Ultragen("sample", "--weights", dit, "--dry-run", "--height", Invariant(Height), "--width", Invariant(Width),
            "--frames", Invariant(Frames), "--backend", "cpu");
        Assert.That(dry.ExitCode, Is.EqualTo(0), dry.Error);
        Assert.That(dry.Out, Does.Contain("token grid (2, 4, 5)").And.Contain("UltraGen windows"));

        var run = Ultragen(Sample(latents, 7));
        Assert.That(run.ExitCode, Is.EqualTo(0), run.Out + run.Error);
        Assert.That(run.Out, Does.Contain($"prompt: \"{Prompt}\"").And.Contain($"negative: \"{NegativePrompt}\""));
        var sampled = ReadLatents(latents, out var metadata);
        Assert.That(sampled, Has.All.Matches<float>(float.IsFinite));
        Assert.That(metadata[LatentFile.FormatKey], Is.EqualTo("wan2.1-vae"));
        Assert.That(metadata[LatentFile.FramesKey], Is.EqualTo(Invariant(Frames)));
        Assert.That(metadata[LatentFile.HeightKey], Is.EqualTo(Invariant(Height)));
        Assert.That(metadata[LatentFile.WidthKey], Is.EqualTo(Invariant(Width)));
        Assert.That(metadata[LatentFile.FpsKey], Is.EqualTo("15"));
        Assert.That(metadata[LatentFile.PromptKey], Is.EqualTo(Prompt), "the prompt text travels from the embeddings file");
        Assert.That(metadata[LatentFile.SeedKey], Is.EqualTo("7"));
        Assert.That(metadata[LatentFile.StepsKey], Is.EqualTo("2"));
        Assert.That(metadata[LatentFile.CfgKey], Is.EqualTo("5"));

        Assert.That(Ultragen(Sample(again, 7)).ExitCode, Is.EqualTo(0));
        Assert.That(ReadLatents(again, out _), Is.EqualTo(sampled), "same seed, same latents (bit for bit)");
        Assert.That(Ultragen(Sample(other, 8)).ExitCode, Is.EqualTo(0));
        var different = ReadLatents(other, out _);
        Assert.That(different.Zip(sampled).Count(p => p.First != p.Second), Is.GreaterThan(sampled.Length * 9 / 10), "another seed, other latents");

        // 4. Decode with a tiny random Wan-named VAE (z_dim 16) into PNG frames: 4(T−1)+1 frames of W×H pixels.
        string vae = PathOf("vae-tiny.pth"), frames = PathOf("frames") + "/";
        Python("tests/make_pipeline_fixtures.py", "vae", "--seed", Invariant(seed), "--output", vae);
        Python("decode_latents.py", latents, "--vae", vae, "--format", "png", "-o", frames, "--device", "cpu");
        var files = Directory.GetFiles(frames, "*.png").Order(StringComparer.Ordinal).ToList();
        Assert.That(files.Select(Path.GetFileName), Is.EqualTo(Enumerable.Range(0, Frames).Select(i => $"frame_{i:D5}.png")));
        var pixels = new List<uint[]>();
        foreach (string png in files)
        {
            using var bitmap = SKBitmap.Decode(png);
            Assert.That(bitmap, Is.Not.Null, $"{png} is not a readable PNG");
            Assert.That((bitmap.Width, bitmap.Height), Is.EqualTo((Width, Height)), png);
            pixels.Add(bitmap.Pixels.Select(c => (uint)c).ToArray());
            Assert.That(pixels[^1].Distinct().Count(), Is.GreaterThan(16), $"{png}: a decoded frame, not a flat image");
        }
        Assert.That(pixels[^1], Is.Not.EqualTo(pixels[0]), "the last frame comes from the second latent frame, the first from the first");
        Assert.That(Directory.GetFiles(_dir, "*.tmp*", SearchOption.AllDirectories), Is.Empty, "atomic writes leave no temporary file");
        TestContext.Out.WriteLine($"whole chain: {total.Elapsed.TotalSeconds:F1} s");
    }
}
