using NUnit.Framework;
using UltraGen.Generation.Data;

namespace UltraGen.Tests.Generation;

public class PromptGrammarTests
{
    [Test]
    public void EveryCombinationFormatsAndParsesBack()
    {
        Assert.That(PromptGrammar.All, Has.Count.EqualTo(8 * 3 * 4 * 3));
        Assert.That(PromptGrammar.All.Distinct().Count(), Is.EqualTo(288));
        foreach (var prompt in PromptGrammar.All)
            Assert.That(PromptGrammar.Parse(prompt.Text), Is.EqualTo(prompt), prompt.Text);
        Assert.That(new VideoPrompt(ObjectColor.Red, ObjectShape.Circle, MotionDirection.Left, BackgroundColor.Black).Text,
            Is.EqualTo("a red circle moving left on a black background"));
    }

    [Test]
    public void ParseIgnoresCaseAndExtraWhitespace()
    {
        var prompt = PromptGrammar.Parse("  A  Magenta\tTRIANGLE moving   Up on a navy   Background \n");
        Assert.That(prompt, Is.EqualTo(new VideoPrompt(ObjectColor.Magenta, ObjectShape.Triangle, MotionDirection.Up, BackgroundColor.Navy)));
    }

    [TestCase("a purple circle moving left on a black background", "purple", "colour")]
    [TestCase("a red hexagon moving left on a black background", "hexagon", "shape")]
    [TestCase("a red circle moving sideways on a black background", "sideways", "direction")]
    [TestCase("a red circle moving left on a pink background", "pink", "background")]
    [TestCase("a red circle sliding left on a black background", "sliding", "moving")]
    public void ParseNamesTheUnknownWord(string text, string word, string expectedHint)
    {
        var error = Assert.Throws<PromptParseException>(() => PromptGrammar.Parse(text))!;
        Assert.That(error.Message, Does.Contain($"'{word}'"));
        Assert.That(error.Message, Does.Contain(expectedHint));
        Assert.That(PromptGrammar.TryParse(text, out var none), Is.False);
        Assert.That(none, Is.Null);
    }

    [Test]
    public void ParseRejectsWrongWordCount()
    {
        var error = Assert.Throws<PromptParseException>(() => PromptGrammar.Parse("a red circle moving left"))!;
        Assert.That(error.Message, Does.Contain("5 words"));
    }

    [Test]
    public void PaletteIsWellSeparated()
    {
        foreach (var color in PromptGrammar.Colors)
        {
            foreach (var background in PromptGrammar.Backgrounds)
                Assert.That(PromptGrammar.RgbOf(color).DistanceTo(PromptGrammar.RgbOf(background)),
                    Is.GreaterThanOrEqualTo(PromptGrammar.MinimumObjectBackgroundDistance), $"{color} on {background}");
            foreach (var other in PromptGrammar.Colors.Where(o => o != color))
                Assert.That(PromptGrammar.RgbOf(color).DistanceTo(PromptGrammar.RgbOf(other)),
                    Is.GreaterThanOrEqualTo(PromptGrammar.MinimumObjectColorDistance), $"{color} vs {other}");
        }
    }

    [Test]
    public void HeldOutCoversEveryDirectionAndColour()
    {
        var heldOut = PromptGrammar.HeldOut;
        Assert.That(heldOut.Distinct().Count(), Is.EqualTo(8));
        Assert.That(heldOut.Select(p => p.Direction).Distinct().Count(), Is.EqualTo(4));
        Assert.That(heldOut.Select(p => p.Color).Distinct().Count(), Is.EqualTo(8));
        Assert.That(heldOut.Select(p => p.Shape).Distinct().Count(), Is.EqualTo(3));
        Assert.That(heldOut.Select(p => p.Background).Distinct().Count(), Is.EqualTo(3));
        Assert.That(PromptGrammar.Training, Has.Count.EqualTo(280));
        Assert.That(PromptGrammar.Training.Intersect(heldOut), Is.Empty);
        Assert.That(heldOut.All(PromptGrammar.IsHeldOut), Is.True);
    }

    [Test]
    public void SamplerIsDeterministicEpochBalancedAndNeverHeldOut()
    {
        const long Seed = 31;
        var firstEpoch = Enumerable.Range(0, 280).Select(i => PromptGrammar.Sample(Seed, i)).ToList();
        Assert.That(firstEpoch.Distinct().Count(), Is.EqualTo(280), "one epoch visits every training combination once");
        for (long i = 280; i < 280 * 5; i += 7)
            Assert.That(PromptGrammar.IsHeldOut(PromptGrammar.Sample(Seed, i)), Is.False, $"index {i}");
        Assert.That(PromptGrammar.Sample(Seed, 123), Is.EqualTo(firstEpoch[123]));

        var secondEpoch = Enumerable.Range(280, 280).Select(i => PromptGrammar.Sample(Seed, i)).ToList();
        var otherSeed = Enumerable.Range(0, 280).Select(i => PromptGrammar.Sample(Seed + 1, i)).ToList();
        Assert.That(secondEpoch, Is.Not.EqualTo(firstEpoch), "each epoch is shuffled anew");
        Assert.That(otherSeed, Is.Not.EqualTo(firstEpoch), "the seed changes the order");
        Assert.That(PromptGrammar.SampleRenderSeed(Seed, 5), Is.Not.EqualTo(PromptGrammar.SampleRenderSeed(Seed, 6)));
    }

    [Test]
    public void SubsetSelectsTheMatchingTrainingPromptsAndSamplesThemBalanced()
    {
        var redSquares = PromptGrammar.Subset("color=red, shape=square ,background=black");
        Assert.That(redSquares.Select(p => p.Text), Is.EquivalentTo(new[] { "left", "right", "up", "down" }
            .Select(d => $"a red square moving {d} on a black background")));

        var twoColours = PromptGrammar.Subset("colour=green|blue,direction=up");
        Assert.That(twoColours.All(p => p.Direction == MotionDirection.Up && p.Color is ObjectColor.Green or ObjectColor.Blue), Is.True);
        int expected = PromptGrammar.Training.Count(p => p.Direction == MotionDirection.Up && p.Color is ObjectColor.Green or ObjectColor.Blue);
        Assert.That(twoColours, Has.Count.EqualTo(expected));
        Assert.That(twoColours.Any(PromptGrammar.IsHeldOut), Is.False, "held-out prompts never enter a subset");
        Assert.That(PromptGrammar.Subset(""), Has.Count.EqualTo(PromptGrammar.Training.Count), "an empty filter keeps everything");

        // Sampling over a pool: every epoch visits the pool once, in a per-epoch order.
        var epochs = Enumerable.Range(0, 3).Select(e => Enumerable.Range(e * 4, 4).Select(i => PromptGrammar.Sample(7, i, redSquares)).ToList()).ToList();
        foreach (var epoch in epochs) Assert.That(epoch, Is.EquivalentTo(redSquares));
        Assert.That(epochs.Distinct(new SequenceComparer()).Count(), Is.GreaterThan(1), "epochs are shuffled anew");
        Assert.That(Enumerable.Range(0, 280).Select(i => PromptGrammar.Sample(7, i, PromptGrammar.Training)),
            Is.EqualTo(Enumerable.Range(0, 280).Select(i => PromptGrammar.Sample(7, i))), "the full pool is the default sampler");
    }

    [TestCase("color=purple", "unknown color 'purple'")]
    [TestCase("size=big", "unknown field 'size'")]
    [TestCase("color", "not field=word")]
    [TestCase("color=red,color=blue", "given twice")]
    [TestCase("color=red,shape=triangle,background=navy,direction=right", "matches no training prompt")] // held out
    public void SubsetRejectsBadFiltersWithTheReason(string filter, string reason)
    {
        var error = Assert.Throws<PromptParseException>(() => PromptGrammar.Subset(filter))!;
        Assert.That(error.Message, Does.Contain(reason));
    }

    private sealed class SequenceComparer : IEqualityComparer<List<VideoPrompt>>
    {
        public bool Equals(List<VideoPrompt>? x, List<VideoPrompt>? y) => x!.SequenceEqual(y!);
        public int GetHashCode(List<VideoPrompt> obj) => obj.Count;
    }
}
