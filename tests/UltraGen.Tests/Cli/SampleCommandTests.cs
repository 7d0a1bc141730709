using NUnit.Framework;
using SkiaSharp;
using UltraGen.Cli;
using UltraGen.Generation.Pipeline;
using UltraGen.Tests.Generation;

namespace UltraGen.Tests.Cli;

/// <summary><c>ultragen sample</c> and <c>ultragen train</c> in process, on a tiny model.</summary>
[TestFixture]
[NonParallelizable]
public class SampleCommandTests
{
    private string _directory = "";

    [SetUp]
    public void SetUp() => _directory = Directory.CreateTempSubdirectory("ultragen-sample-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_directory, recursive: true);

    private string PathOf(string name) => Path.Combine(_directory, name);

    private static (int ExitCode, string Out, string Error) Invoke(params string[] args) => CliRunner.Invoke(args);

    private string TinyModel()
    {
        string path = PathOf("tiny.safetensors");
        using var model = PipelineTests.RandomModel(21);
        model.Save(path);
        return path;
    }

    [Test]
    public void Writes_a_looping_gif_with_every_frame_and_reports_the_run()
    {
        string weights = TinyModel(), gif = PathOf("out.gif");
        var (code, output, error) = Invoke("sample", "--weights", weights, "--steps", "3", "--backend", "cpu", "--output", gif,
            "--prompt", "a green square moving up on a navy background");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("backend: cpu").And.Contain("16×16 pixels, 2 frames").And.Contain("3 steps").And.Contain("wrote"));
        using var codec = SKCodec.Create(gif);
        Assert.That(codec, Is.Not.Null, "the GIF decodes");
        Assert.That(codec.FrameCount, Is.EqualTo(2));
        Assert.That(codec.Info.Width, Is.EqualTo(16 * 16), "tiny videos are enlarged to ≥ 256 px by default");
        Assert.That(Directory.GetFiles(_directory).Where(f => f.Contains(".tmp", StringComparison.Ordinal)), Is.Empty);
    }

    /// <summary>
    /// README command 1 as a newcomer runs it (bundled model, default prompt and sampler), with only the output moved
    /// into the test folder: with ffmpeg present it writes an MP4 that ffprobe reads as 8 H.264 frames of 256×256.
    /// </summary>
    [Test]
    public void The_default_command_writes_a_playable_mp4_when_ffmpeg_is_present()
    {
        if (UltraGen.Generation.Video.Mp4Writer.FindFfmpeg() is null) Assert.Ignore("ffmpeg is not on PATH: the default output is a GIF (tested above)");
        string? ffprobe = UltraGen.Generation.Video.Mp4Writer.FindFfmpeg()!.Replace("ffmpeg", "ffprobe", StringComparison.Ordinal);
        if (!File.Exists(ffprobe)) Assert.Ignore($"ffprobe not found beside ffmpeg ({ffprobe})");
        string mp4 = PathOf("sample.mp4");
        var (code, output, error) = Invoke("sample", "--output", mp4);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("64×64 pixels, 8 frames").And.Contain("30 steps"));

        var probe = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(ffprobe,
            ["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", mp4])
        { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string probed = probe.StandardOutput.ReadToEnd().Trim();
        string probeError = probe.StandardError.ReadToEnd();
        probe.WaitForExit();
        Assert.That(probe.ExitCode, Is.EqualTo(0), probeError);
        Assert.That(probed, Is.EqualTo("h264,256,256,8"), "codec, size (64 px enlarged ×4) and frame count as ffprobe reads them");
    }

    [Test]
    public void Png_frames_go_to_a_folder()
    {
        string weights = TinyModel(), folder = PathOf("frames");
        var (code, _, error) = Invoke("sample", "--weights", weights, "--steps", "2", "--backend", "cpu", "--format", "png", "--output", folder, "--upscale", "1");
        Assert.That(code, Is.EqualTo(0), error);
        var files = Directory.GetFiles(folder, "frame_*.png").Order().ToList();
        Assert.That(files, Has.Count.EqualTo(2));
        using var bitmap = SKBitmap.Decode(files[0]);
        Assert.That((bitmap.Width, bitmap.Height), Is.EqualTo((16, 16)));
    }

    [Test]
    public void Bad_input_is_one_line_and_exit_code_2_with_nothing_written()
    {
        string weights = TinyModel(), gif = PathOf("out.gif");
        var unknownWord = Invoke("sample", "--weights", weights, "--prompt", "a purple circle moving left on a black background", "--output", gif);
        Assert.That(unknownWord.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(unknownWord.Error, Does.Contain("purple"));
        var missing = Invoke("sample", "--weights", PathOf("absent.safetensors"), "--output", gif);
        Assert.That(missing.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(missing.Error, Does.Contain("does not exist"));
        var oddSize = Invoke("sample", "--weights", weights, "--height", "15", "--output", gif, "--backend", "cpu");
        Assert.That(oddSize.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(oddSize.Error, Does.Contain("patch size"));
        var badPrecision = Invoke("sample", "--weights", weights, "--attention-precision", "fp8", "--output", gif);
        Assert.That(badPrecision.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(badPrecision.Error, Does.Contain("--attention-precision takes f32 or bf16"));
        var bf16OnCpu = Invoke("sample", "--weights", weights, "--attention-precision", "bf16", "--backend", "cpu", "--output", gif);
        Assert.That(bf16OnCpu.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(bf16OnCpu.Error, Does.Contain("needs the cuda backend"));
        var badExtension = Invoke("sample", "--weights", weights, "--output", PathOf("out.avi"));
        Assert.That(badExtension.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        if (UltraGen.Generation.Video.Mp4Writer.FindFfmpeg() is null)
        {
            var mp4 = Invoke("sample", "--weights", weights, "--output", PathOf("out.mp4"));
            Assert.That(mp4.ExitCode, Is.EqualTo(Program.BadInputExitCode));
            Assert.That(mp4.Error, Does.Contain("ffmpeg"));
        }
        Assert.That(File.Exists(gif), Is.False);
    }

    [Test]
    public void Train_ultragen_step_can_take_the_global_k_from_w_k_and_a_subset_and_refuses_bad_combinations()
    {
        string basePath = PathOf("base.safetensors"), output = PathOf("ultragen.safetensors");
        var trainBase = Invoke("train", "--output", basePath, "--frames", "2", "--height", "16", "--width", "16", "--batch", "2", "--steps", "1",
            "--warmup", "0", "--backend", "cpu", "--subset", "color=red,shape=square,background=black");
        Assert.That(trainBase.ExitCode, Is.EqualTo(0), trainBase.Error);
        Assert.That(trainBase.Out, Does.Contain("4 training prompts matching color=red,shape=square,background=black"));

        var step = Invoke("train", "--output", output, "--from", basePath, "--ultragen", "--global-k-from-wk", "--frames", "2", "--height", "32",
            "--width", "32", "--batch", "1", "--steps", "1", "--warmup", "0", "--backend", "cpu");
        Assert.That(step.ExitCode, Is.EqualTo(0), step.Error);
        using (var model = VideoModel.Load(output))
        {
            Assert.That(model.Config.GlobalKUsesWq, Is.False, "the choice is stored in the model file");
            Assert.That(model.Config.DecomposedBlockCount, Is.EqualTo(model.Config.Layers));
        }
        using (var model = VideoModel.Load(basePath)) Assert.That(model.Config.GlobalKUsesWq, Is.True, "the default is the released code's W_q");

        var noUltragen = Invoke("train", "--output", PathOf("x.safetensors"), "--from", basePath, "--global-k-from-wk", "--frames", "2",
            "--height", "16", "--width", "16", "--steps", "1", "--backend", "cpu");
        Assert.That(noUltragen.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(noUltragen.Error, Does.Contain("--global-k-from-wk needs UltraGen blocks"));
        var badSubset = Invoke("train", "--output", PathOf("y.safetensors"), "--subset", "color=purple", "--steps", "1", "--backend", "cpu");
        Assert.That(badSubset.ExitCode, Is.EqualTo(Program.BadInputExitCode));
        Assert.That(badSubset.Error, Does.Contain("purple"));
        Assert.That(File.Exists(PathOf("x.safetensors")) || File.Exists(PathOf("y.safetensors")), Is.False, "nothing written on bad input");
    }

    [Test]
    public void Train_runs_checkpoints_resumes_and_writes_a_loadable_model()
    {
        string output = PathOf("trained.safetensors");
        string[] common = ["train", "--output", output, "--frames", "2", "--height", "16", "--width", "16", "--batch", "2", "--steps", "4",
            "--warmup", "1", "--checkpoint-every", "2", "--backend", "cpu"];
        var first = Invoke([.. common, "--stop-at", "2"]);
        Assert.That(first.ExitCode, Is.EqualTo(0), first.Error);
        Assert.That(File.Exists(output + ".ckpt"), "a checkpoint after the session");
        var second = Invoke(common);
        Assert.That(second.ExitCode, Is.EqualTo(0), second.Error);
        Assert.That(second.Out, Does.Contain("resuming from").And.Contain("step 2"));
        var log = File.ReadAllLines(output + ".loss.csv");
        Assert.That(log, Has.Length.EqualTo(5), "header + 4 steps, none repeated");
        using var model = VideoModel.Load(output);
        Assert.That(model.Format, Is.EqualTo(new VideoFormat(2, 16, 16)));
    }
}
