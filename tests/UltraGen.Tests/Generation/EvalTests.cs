using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Generation.Data;
using UltraGen.Generation.Eval;

namespace UltraGen.Tests.Generation;

public class HdMseTests
{
    private static float[] Video(int frames, int height, int width, Func<int, int, int, int, float> value)
    {
        var video = new float[3 * frames * height * width];
        for (int c = 0; c < 3; c++)
        for (int f = 0; f < frames; f++)
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            video[((c * frames + f) * height + y) * width + x] = value(c, f, y, x);
        return video;
    }

    [Test]
    public void PixelCheckerboardLosesAllItsEnergyAtEveryScale()
    {
        // ±1 alternating pixels are 0/255 bytes: every k×k block (k even) averages to 127.5, bilinear gives 127.5
        // everywhere, and the MSE is 127.5² at each of the three scales.
        var video = Video(2, 64, 64, (c, f, y, x) => (x + y + f + c) % 2 == 0 ? -1f : 1f);
        var result = HdMse.Compute(video, 2, 64, 64);
        Assert.That(result.Factors, Is.EqualTo(new[] { 8, 16, 32 }));
        Assert.That(result.SkippedFactors, Is.Empty);
        Assert.That(result.PerFactor, Has.All.EqualTo(127.5 * 127.5).Within(1e-9));
        Assert.That(result.Value, Is.EqualTo(3 * 127.5 * 127.5).Within(1e-9));
    }

    [Test]
    public void ConstantVideoHasNone()
    {
        var result = HdMse.Compute(Video(3, 32, 32, (c, _, _, _) => 0.2f * c - 0.3f), 3, 32, 32);
        Assert.That(result.Value, Is.EqualTo(0).Within(1e-12));
        Assert.That(result.Factors, Is.EqualTo(new[] { 8, 16, 32 }));
    }

    [Test]
    public void FactorsThatDoNotDivideAreSkippedAndReported()
    {
        var video16 = Video(1, 16, 16, (c, f, y, x) => (x * 7 + y * 3 + c) % 5 * 0.3f - 0.6f);
        var result = HdMse.Compute(video16, 1, 16, 16);
        Assert.That(result.Factors, Is.EqualTo(new[] { 8, 16 }));
        Assert.That(result.SkippedFactors, Is.EqualTo(new[] { 32 }));
        Assert.That(result.ToString(), Does.Contain("skipped 32"));
        Assert.That(HdMse.Compute(Video(1, 24, 48, (_, _, y, x) => (x + y) % 2 * 0.5f), 1, 24, 48).Factors, Is.EqualTo(new[] { 8 }));
        Assert.Throws<UnsupportedConfigurationException>(() => HdMse.Compute(Video(1, 20, 20, (_, _, _, _) => 0.5f), 1, 20, 20));
        Assert.Throws<ShapeMismatchException>(() => HdMse.Compute(new float[10], 1, 16, 16));
    }

    [Test]
    public void BilinearUsesHalfPixelCentresAndClampsAtTheEdges()
    {
        var up = HdMse.BilinearResize([0.0, 1.0], 1, 2, 1, 16);
        double[] expected = [0, 0, 0, 0, 0.0625, 0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375, 1, 1, 1, 1];
        Assert.That(up, Is.EqualTo(expected).Within(1e-12));
        var down = HdMse.BoxDownsample([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], 4, 4, 2);
        Assert.That(down, Is.EqualTo(new[] { 3.5, 5.5, 11.5, 13.5 }));
    }

    [Test]
    public void NoiseRaisesIt()
    {
        var prompt = new VideoPrompt(ObjectColor.Yellow, ObjectShape.Square, MotionDirection.Down, BackgroundColor.Navy);
        var clean = ProceduralVideo.Render(prompt, 64, 64, 4, seed: 2);
        var random = new Random(4);
        var noisy = clean.Select(v => Math.Clamp(v + (float)(random.NextDouble() - 0.5) * 0.2f, -1f, 1f)).ToArray();
        double cleanValue = HdMse.Compute(clean, 4, 64, 64).Value, noisyValue = HdMse.Compute(noisy, 4, 64, 64).Value;
        Assert.That(cleanValue, Is.GreaterThan(100), "a sharp square has high-frequency content");
        // Uniform noise of ±0.1 is ±12.75 levels: variance 12.75²/3 ≈ 54 per pixel, nearly all of it lost by each of the
        // three scales, so about +160 in total.
        Assert.That(noisyValue - cleanValue, Is.EqualTo(3 * 12.75 * 12.75 / 3).Within(20));
    }
}

public class TemporalConsistencyTests
{
    [Test]
    public void KnownValues()
    {
        const int Frames = 3, Side = 8;
        var still = Enumerable.Repeat(0.3f, 3 * Frames * Side * Side).ToArray();
        Assert.That(TemporalConsistency.Compute(still, Frames, Side, Side), Is.EqualTo(1.0));

        // Every value steps by 0.2 in [−1, 1] units per frame: 0.1 on the 0–1 scale.
        var ramp = new float[3 * Frames * Side * Side];
        for (int c = 0; c < 3; c++)
        for (int f = 0; f < Frames; f++)
            ramp.AsSpan((c * Frames + f) * Side * Side, Side * Side).Fill(-0.5f + 0.2f * f);
        Assert.That(TemporalConsistency.Compute(ramp, Frames, Side, Side), Is.EqualTo(0.9).Within(1e-6));

        var flip = new float[3 * 2 * 4];
        for (int c = 0; c < 3; c++)
        for (int i = 0; i < 4; i++) (flip[c * 8 + i], flip[c * 8 + 4 + i]) = (-1f, 1f);
        Assert.That(TemporalConsistency.Compute(flip, 2, 2, 2), Is.EqualTo(0).Within(1e-12));
        Assert.Throws<ArgumentOutOfRangeException>(() => TemporalConsistency.Compute(new float[3 * 4], 1, 2, 2));
    }

    [Test]
    public void ProceduralClipScoresHighAndNoiseLow()
    {
        // A white square of side s on black moving δ per frame changes an area 2·s·δ by 1.0 in every channel.
        var prompt = new VideoPrompt(ObjectColor.White, ObjectShape.Square, MotionDirection.Right, BackgroundColor.Black);
        var clip = ProceduralVideo.Render(prompt, 64, 64, 8, seed: 6);
        var track = ProceduralVideo.Track(prompt, seed: 6);
        double expected = 1 - 2 * track.Size * track.Displacement / 7;
        Assert.That(TemporalConsistency.Compute(clip, 8, 64, 64), Is.EqualTo(expected).Within(0.002));
        var random = new Random(9);
        var noise = Enumerable.Range(0, clip.Length).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        // |U − U'| of two independent uniforms on [0, 1] has mean 1/3.
        Assert.That(TemporalConsistency.Compute(noise, 8, 64, 64), Is.EqualTo(2.0 / 3).Within(0.01));
    }
}

public class PromptAdherenceTests
{
    [TestCase(16)]
    [TestCase(64)]
    public void EveryCombinationIsMeasuredCorrectly(int side)
    {
        double smallestTravel = double.MaxValue, largestColorError = 0;
        for (int i = 0; i < PromptGrammar.All.Count; i++)
        {
            var prompt = PromptGrammar.All[i];
            var video = ProceduralVideo.Render(prompt, side, side, 8, seed: 1000 + i);
            var result = PromptAdherence.Measure(video, 8, side, side, prompt);
            Assert.That(result.Passed, Is.True, result.ToString());
            Assert.That(result.FramesWithObject, Is.EqualTo(8));
            Assert.That(result.BackgroundRgb, Is.EqualTo(PromptGrammar.RgbOf(prompt.Background)));
            smallestTravel = Math.Min(smallestTravel, Math.Max(Math.Abs(result.DisplacementX), Math.Abs(result.DisplacementY)));
            largestColorError = Math.Max(largestColorError, result.ObjectRgb!.Value.DistanceTo(PromptGrammar.RgbOf(prompt.Color)));

            // Deliberately wrong prompts: another colour, the opposite direction, another background.
            var wrongColor = prompt with { Color = (ObjectColor)(((int)prompt.Color + 1 + i % 7) % 8) };
            var wrongDirection = prompt with { Direction = Opposite(prompt.Direction) };
            var wrongBackground = prompt with { Background = (BackgroundColor)(((int)prompt.Background + 1 + i % 2) % 3) };
            // The measurement does not depend on the prompt, only the comparison does: reuse it.
            foreach (var wrong in new[] { wrongColor, wrongDirection, wrongBackground })
                Assert.That((result with { Expected = wrong }).Passed, Is.False, $"{prompt} measured against '{wrong}'");
            Assert.That((result with { Expected = wrongColor }).ColorMatches, Is.False);
            Assert.That((result with { Expected = wrongDirection }).DirectionMatches, Is.False);
            Assert.That((result with { Expected = wrongBackground }).BackgroundMatches, Is.False);
        }
        TestContext.Out.WriteLine($"{side}×{side}: smallest measured travel {smallestTravel:F3}, largest core colour error {largestColorError:F1}");
        Assert.That(smallestTravel, Is.GreaterThan(0.3), "renders move ≥ 0.36; the measurement is within a few hundredths");
        Assert.That(largestColorError, Is.LessThan(PromptGrammar.MinimumObjectColorDistance / 2));
    }

    [Test]
    public void StillOrEmptyVideosHaveNoDirection()
    {
        var prompt = new VideoPrompt(ObjectColor.Green, ObjectShape.Square, MotionDirection.Left, BackgroundColor.Gray);
        var moving = ProceduralVideo.Render(prompt, 16, 16, 8, seed: 3);
        // Repeat the first frame eight times: right object, no motion.
        var still = new float[moving.Length];
        for (int c = 0; c < 3; c++)
        for (int f = 0; f < 8; f++)
            moving.AsSpan(c * 8 * 256, 256).CopyTo(still.AsSpan((c * 8 + f) * 256, 256));
        var stillResult = PromptAdherence.Measure(still, 8, 16, 16, prompt);
        Assert.That(stillResult.ColorMatches, Is.True);
        Assert.That(stillResult.MeasuredDirection, Is.Null);
        Assert.That(stillResult.Passed, Is.False);

        var gray = PromptGrammar.RgbOf(BackgroundColor.Gray).R / 127.5f - 1;
        var empty = Enumerable.Repeat(gray, moving.Length).ToArray();
        var emptyResult = PromptAdherence.Measure(empty, 8, 16, 16, prompt);
        Assert.That(emptyResult.MeasuredColor, Is.Null);
        Assert.That(emptyResult.MeasuredDirection, Is.Null);
        Assert.That(emptyResult.BackgroundMatches, Is.True);
        Assert.That(emptyResult.FramesWithObject, Is.EqualTo(0));

        var summary = AdherenceSummary.Of([stillResult, emptyResult]);
        Assert.That((summary.ColorRate, summary.DirectionRate, summary.BackgroundRate, summary.PassRate), Is.EqualTo((0.5, 0.0, 1.0, 0.0)));
    }

    private static MotionDirection Opposite(MotionDirection direction) => direction switch
    {
        MotionDirection.Left => MotionDirection.Right,
        MotionDirection.Right => MotionDirection.Left,
        MotionDirection.Up => MotionDirection.Down,
        _ => MotionDirection.Up,
    };
}
