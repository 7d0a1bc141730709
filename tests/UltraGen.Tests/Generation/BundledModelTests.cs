using NUnit.Framework;
using UltraGen.Generation.Data;
using UltraGen.Generation.Eval;
using UltraGen.Generation.Pipeline;
using UltraGen.Ops.Backends;

namespace UltraGen.Tests.Generation;

/// <summary>
/// The committed models under <c>models/</c>: they load, and the UltraGen model follows held-out prompts (combinations it
/// never saw in training) with <c>ultragen sample</c>'s defaults.
/// </summary>
[TestFixture]
[NonParallelizable]
public class BundledModelTests
{
    private static string ModelPath(string name)
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            string candidate = Path.Combine(folder.FullName, "models", name);
            if (File.Exists(candidate)) return candidate;
        }
        Assert.Fail($"models/{name} is not in the repository: the bundled model must be committed");
        return "";
    }

    [TestCase("ultragen-mini.safetensors", 64, true)]
    [TestCase("ultragen-mini-base.safetensors", 16, false)]
    public void Bundled_models_load_with_their_documented_format(string name, int size, bool ultragen)
    {
        using var model = VideoModel.Load(ModelPath(name));
        Assert.That(model.Format, Is.EqualTo(new VideoFormat(8, size, size)));
        Assert.That(model.Config.DecomposedBlockCount, Is.EqualTo(ultragen ? model.Config.Layers : 0));
        Assert.That(model.Notes, Is.Not.Empty, "the file records how it was trained");
    }

    /// <summary>
    /// The bar, for the UltraGen model (64×64) and for the base it came from (16×16): held-out prompts (combinations never trained on) through <c>ultragen sample</c>'s defaults (30
    /// steps, CFG 5, seed 0) get the object's colour AND its motion direction for at least 7 of 8, measured from the pixels
    /// (<see cref="PromptAdherence"/>: chance is 1/8 for the colour and 1/4 for the direction).
    /// </summary>
    [TestCase(SampleDefaults.ModelName)]
    [TestCase("ultragen-mini-base.safetensors")]
    public void Bundled_models_follow_the_held_out_prompts_colour_and_direction(string name)
    {
        using var model = VideoModel.Load(ModelPath(name));
        using var backend = BackendRegistry.Get("cpu").Probe().Backend!;
        using var sampler = new VideoSampler(model, backend);
        int colour = 0, direction = 0, both = 0;
        foreach (var prompt in PromptGrammar.HeldOut)
        {
            var video = sampler.Sample(new SampleRequest { Prompt = prompt.Text, Seed = 0 });
            var f = model.Format;
            var result = PromptAdherence.Measure(video, f.Frames, f.Height, f.Width, prompt);
            TestContext.Out.WriteLine(result);
            if (result.ColorMatches) colour++;
            if (result.DirectionMatches) direction++;
            if (result.ColorMatches && result.DirectionMatches) both++;
        }
        TestContext.Out.WriteLine($"colour {colour}/8, direction {direction}/8, both {both}/8");
        Assert.That(both, Is.GreaterThanOrEqualTo(7),
            $"{both} of {PromptGrammar.HeldOut.Count} held-out prompts got both their colour and their direction (colour {colour}, direction {direction})");
    }
}

/// <summary>The bundled model's file name, as <c>ultragen sample</c> uses it.</summary>
internal static class SampleDefaults
{
    public const string ModelName = UltraGen.Cli.Commands.SampleCommand.BundledModelName;
}
