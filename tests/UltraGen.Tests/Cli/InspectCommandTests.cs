using NUnit.Framework;
using UltraGen.Cli;
using UltraGen.Core.Safetensors;
using UltraGen.Generation.Pipeline;
using UltraGen.Model;
using UltraGen.Tests.Model;

namespace UltraGen.Tests.Cli;

/// <summary><c>ultragen inspect</c> in process.</summary>
[TestFixture]
[NonParallelizable]
public class InspectCommandTests
{
    private string _directory = "";

    [SetUp]
    public void SetUp() => _directory = Directory.CreateTempSubdirectory("ultragen-inspect-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_directory, recursive: true);

    private string PathOf(string name) => Path.Combine(_directory, name);

    private static (int ExitCode, string Out, string Error) Invoke(params string[] args) => CliRunner.Invoke(args);

    [Test]
    public void Prints_config_counts_dtypes_and_plan_of_a_tiny_checkpoint()
    {
        using (var weights = ModelWeights.Random(ModelConfig.Tiny, seed: 1))
            weights.Save(PathOf("tiny.safetensors"), new WeightsSaveOptions { Storage = UltraGen.Core.DType.BF16 });
        var counts = ParameterCatalog.Count(ModelConfig.Tiny);

        var (exit, output, error) = Invoke("inspect", PathOf("tiny.safetensors"));
        Assert.That(exit, Is.Zero, error);
        Assert.That(output, Does.Contain("dim 48, heads 4 (head dim 12), ffn 96, layers 4")
            .And.Contain("heads 4: from metadata ultragen.heads")
            .And.Contain($"BF16 ×{counts.Total.Tensors}")
            .And.Contain("full attention 0, 3 (2); decomposed 1-2 (2)")
            .And.Contain($"{counts.Base.Parameters:N0} in {counts.Base.Tensors,6:N0} tensors")
            .And.Contain($"{counts.UltraGen.Parameters:N0} in {counts.UltraGen.Tensors,6:N0} tensors")
            .And.Contain("trainable (LoRA mode)")
            .And.Contain("check: OK"));
    }

    [Test]
    public void A_video_model_is_checked_with_its_text_encoder_and_shows_its_format_and_notes()
    {
        var config = ModelConfig.Tiny with { InChannels = 3, OutChannels = 3, TextLen = 12 };
        using (var model = VideoModel.CreateRandom(config, new VideoFormat(2, 8, 8), seed: 4))
        {
            model.Notes = "made by a test";
            model.Save(PathOf("video.safetensors"));
        }
        var (exit, output, error) = Invoke("inspect", PathOf("video.safetensors"));
        Assert.That(exit, Is.Zero, error);
        Assert.That(output, Does.Contain("video model: format 2x8x8").And.Contain("notes: made by a test")
            .And.Contain("check: OK").And.Contain("plus the video model's text encoder").And.Not.Contain("MISMATCH"));

        // A video model missing a DiT tensor is still a mismatch, and the text encoder is not blamed for it.
        using (var file = UltraGen.Core.Safetensors.SafetensorsFile.Open(PathOf("video.safetensors")))
        {
            var tensors = file.Tensors.Where(t => t.Name != "head.head.bias")
                .Select(t => new KeyValuePair<string, UltraGen.Core.Tensor>(t.Name, file.ReadTensor(t.Name, UltraGen.Core.DType.F32))).ToList();
            SafetensorsWriter.Write(PathOf("damaged-video.safetensors"), tensors, file.Metadata);
            foreach (var (_, tensor) in tensors) tensor.Dispose();
        }
        (exit, output, _) = Invoke("inspect", PathOf("damaged-video.safetensors"));
        Assert.That(exit, Is.Zero);
        Assert.That(output, Does.Contain("check: MISMATCH").And.Contain("head.head.bias"));
    }

    [Test]
    public void Reports_what_is_missing_against_the_detected_config()
    {
        using (var weights = ModelWeights.Random(ModelConfig.Tiny, seed: 1))
            SafetensorsWriter.Write(PathOf("damaged.safetensors"),
                weights.Where(kv => kv.Key != "blocks.2.self_attn.upsample_conv.bias"), ModelWeights.MetadataOf(ModelConfig.Tiny));
        var (exit, output, _) = Invoke("inspect", PathOf("damaged.safetensors"));
        Assert.That(exit, Is.Zero);
        Assert.That(output, Does.Contain("check: MISMATCH").And.Contain("missing (1):").And.Contain("blocks.2.self_attn.upsample_conv.bias (48)"));

        (exit, output, _) = Invoke("inspect", PathOf("damaged.safetensors"), "--config", "mini");
        Assert.That(exit, Is.Zero);
        Assert.That(output, Does.Contain("config: preset mini").And.Contain("mis-shaped"));
    }

    [Test]
    public void Truncated_file_is_a_one_line_error_with_exit_code_2()
    {
        using (var weights = ModelWeights.Random(ModelConfig.Tiny, seed: 1))
            weights.Save(PathOf("tiny.safetensors"));
        var bytes = File.ReadAllBytes(PathOf("tiny.safetensors"));
        File.WriteAllBytes(PathOf("truncated.safetensors"), bytes[..(bytes.Length / 2)]);

        var (exit, output, error) = Invoke("inspect", PathOf("truncated.safetensors"));
        Assert.That(exit, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(output, Is.Empty);
        Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(error, Does.StartWith("error: ").And.Contain("truncated.safetensors"));

        (exit, _, error) = Invoke("inspect", PathOf("absent.safetensors"));
        Assert.That(exit, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(error, Does.Contain("file not found"));
    }

    [Test]
    public void Undetectable_file_is_exit_code_2()
    {
        using (var weights = ModelWeights.Random(ModelConfig.Tiny, seed: 1))
            SafetensorsWriter.Write(PathOf("bare.safetensors"), weights.Where(kv => kv.Key.StartsWith("blocks.", StringComparison.Ordinal)));
        var (exit, _, error) = Invoke("inspect", PathOf("bare.safetensors"));
        Assert.That(exit, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(error, Does.Contain("cannot detect the model config").And.Contain("patch_embedding.weight"));
    }

    /// <summary>
    /// A header-only Wan2.1-T2V-1.3B UltraGen checkpoint: the header lists every tensor in F32 and the data region is a
    /// sparse hole, so the exact full-size counts are checked without 6.8 GB of disk or memory.
    /// </summary>
    [Test]
    public void Prints_the_exact_wan_1_3b_counts_from_a_header_only_file()
    {
        var config = ModelConfig.Wan21T2V13B;
        string path = PathOf("wan-1.3b.safetensors");
        HeaderOnlyFile.Write(path, ParameterCatalog.List(config));

        var (exit, output, error) = Invoke("inspect", path);
        TestContext.Out.WriteLine(output);
        Assert.That(exit, Is.Zero, error);
        Assert.That(output, Does.Contain("heads 12: assumed dim/128")
            .And.Contain("dim 1536, heads 12 (head dim 128), ffn 8960, layers 30, freq 256, text 4096×512")
            .And.Contain("full attention 0-2, 27-29 (6); decomposed 3-26 (24)")
            .And.Contain("F32 ×1881")
            .And.Contain("1,418,996,800 in    825 tensors")
            .And.Contain("277,005,312 in  1,056 tensors")
            .And.Contain("per decomposed block 11,541,888 in 44 tensors")
            .And.Contain("1,696,002,112 in  1,881 tensors")
            .And.Contain("parameters in the file: 1,696,002,112 in 1,881 tensors")
            .And.Contain("check: OK"));
    }
}
