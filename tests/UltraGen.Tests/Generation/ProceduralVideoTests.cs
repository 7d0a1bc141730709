using NUnit.Framework;
using UltraGen.Generation.Data;

namespace UltraGen.Tests.Generation;

public class ProceduralVideoTests
{
    private const int Frames = 8;

    private static readonly VideoPrompt[] Cases =
    [
        new(ObjectColor.Red, ObjectShape.Circle, MotionDirection.Left, BackgroundColor.Black),
        new(ObjectColor.Cyan, ObjectShape.Triangle, MotionDirection.Up, BackgroundColor.Gray),
        new(ObjectColor.Orange, ObjectShape.Square, MotionDirection.Right, BackgroundColor.Navy),
        new(ObjectColor.White, ObjectShape.Triangle, MotionDirection.Down, BackgroundColor.Navy),
    ];

    [Test]
    public void TracksStayInsideAndTravelFarEnough()
    {
        foreach (var direction in PromptGrammar.Directions)
        for (long seed = 1; seed <= 200; seed++)
        {
            var prompt = new VideoPrompt(ObjectColor.Red, ObjectShape.Square, direction, BackgroundColor.Black);
            var track = ProceduralVideo.Track(prompt, seed);
            double half = track.Size / 2, low = ProceduralVideo.Margin + half - 1e-12, high = 1 - ProceduralVideo.Margin - half + 1e-12;
            Assert.That(track.Size, Is.InRange(ProceduralVideo.MinSize, ProceduralVideo.MaxSize));
            foreach (double v in new[] { track.StartX, track.StartY, track.EndX, track.EndY })
                Assert.That(v, Is.InRange(low, high), $"{direction} seed {seed}");
            Assert.That(track.Displacement, Is.GreaterThanOrEqualTo(1.0 / 3), $"{direction} seed {seed}");
            double dx = track.EndX - track.StartX, dy = track.EndY - track.StartY;
            var (along, across) = direction switch
            {
                MotionDirection.Left => (-dx, dy),
                MotionDirection.Right => (dx, dy),
                MotionDirection.Up => (-dy, dx),
                _ => (dy, dx),
            };
            Assert.That(along, Is.EqualTo(high - low - 2e-12).Within(1e-9), "edge to edge along the motion");
            Assert.That(across, Is.EqualTo(0));
        }
    }

    [Test]
    public void RenderIsDeterministicBoundedAndHasCleanBorders()
    {
        foreach (var prompt in Cases)
        foreach (int side in new[] { 16, 64 })
        {
            var video = ProceduralVideo.Render(prompt, side, side, Frames, seed: 9);
            Assert.That(video, Has.Length.EqualTo(3 * Frames * side * side));
            Assert.That(ProceduralVideo.Render(prompt, side, side, Frames, seed: 9), Is.EqualTo(video));
            Assert.That(ProceduralVideo.Render(prompt, side, side, Frames, seed: 10), Is.Not.EqualTo(video));
            Assert.That(video.Min(), Is.GreaterThanOrEqualTo(-1f));
            Assert.That(video.Max(), Is.LessThanOrEqualTo(1f));

            var background = PromptGrammar.RgbOf(prompt.Background);
            float[] expected = [background.R / 127.5f - 1, background.G / 127.5f - 1, background.B / 127.5f - 1];
            for (int c = 0; c < 3; c++)
            for (int f = 0; f < Frames; f++)
            for (int i = 0; i < side; i++)
            {
                int plane = (c * Frames + f) * side * side;
                Assert.That(video[plane + i], Is.EqualTo(expected[c]), "top row");
                Assert.That(video[plane + (side - 1) * side + i], Is.EqualTo(expected[c]), "bottom row");
                Assert.That(video[plane + i * side], Is.EqualTo(expected[c]), "left column");
                Assert.That(video[plane + i * side + side - 1], Is.EqualTo(expected[c]), "right column");
            }
        }
    }

    [Test]
    public void ObjectAreaAndCentroidFollowTheTrack()
    {
        const int Side = 64;
        foreach (var prompt in Cases)
        {
            var track = ProceduralVideo.Track(prompt, seed: 4);
            var video = ProceduralVideo.Render(prompt, Side, Side, Frames, seed: 4);
            var background = PromptGrammar.RgbOf(prompt.Background);
            var color = PromptGrammar.RgbOf(prompt.Color);
            // Coverage from the channel with the largest object/background difference.
            int channel = Enumerable.Range(0, 3).MaxBy(c => Math.Abs(Component(color, c) - Component(background, c)));
            double bg = Component(background, channel) / 127.5 - 1, fg = Component(color, channel) / 127.5 - 1;
            double expectedArea = prompt.Shape switch
            {
                ObjectShape.Square => track.Size * track.Size,
                ObjectShape.Circle => Math.PI * track.Size * track.Size / 4,
                _ => track.Size * track.Size / 2,
            };
            double perimeter = prompt.Shape switch
            {
                ObjectShape.Square => 4 * track.Size,
                ObjectShape.Circle => Math.PI * track.Size,
                _ => (1 + Math.Sqrt(5)) * track.Size,
            };
            // Point sampling on a grid of spacing 1/256 misplaces the boundary by up to half a spacing.
            double areaTolerance = perimeter * 0.5 / ProceduralVideo.SubsampleGridSide;
            for (int f = 0; f < Frames; f++)
            {
                double area = 0, sumX = 0, sumY = 0;
                for (int y = 0; y < Side; y++)
                for (int x = 0; x < Side; x++)
                {
                    double coverage = (video[((channel * Frames + f) * Side + y) * Side + x] - bg) / (fg - bg);
                    area += coverage;
                    sumX += coverage * (x + 0.5) / Side;
                    sumY += coverage * (y + 0.5) / Side;
                }
                area /= Side * Side;
                Assert.That(area, Is.EqualTo(expectedArea).Within(areaTolerance), $"{prompt} frame {f}");
                var (cx, cy) = track.CentreAt(f / (Frames - 1.0));
                // The triangle's centroid sits 1/6 of its height below the box centre.
                double offsetY = prompt.Shape == ObjectShape.Triangle ? track.Size / 6 : 0;
                Assert.That(sumX / (area * Side * Side), Is.EqualTo(cx).Within(0.005), $"{prompt} frame {f} x");
                Assert.That(sumY / (area * Side * Side), Is.EqualTo(cy + offsetY).Within(0.005), $"{prompt} frame {f} y");
            }
        }
    }

    [Test]
    public void AreaDownsampleOfTheFineRenderEqualsTheCoarseRender()
    {
        foreach (var prompt in Cases)
        {
            var fine = ProceduralVideo.Render(prompt, 64, 64, Frames, seed: 77);
            var coarse = ProceduralVideo.Render(prompt, 16, 16, Frames, seed: 77);
            double worst = 0;
            for (int plane = 0; plane < 3 * Frames; plane++)
            for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
            {
                double sum = 0;
                for (int dy = 0; dy < 4; dy++)
                for (int dx = 0; dx < 4; dx++)
                    sum += fine[(plane * 64 + 4 * y + dy) * 64 + 4 * x + dx];
                worst = Math.Max(worst, Math.Abs(sum / 16 - coarse[(plane * 16 + y) * 16 + x]));
            }
            // Both renders test the same 256×256 sub-sample grid, so only float rounding separates them.
            Assert.That(worst, Is.LessThan(1e-5), prompt.Text);
        }
    }

    [Test]
    public void FineRenderHasCrispEdges()
    {
        var prompt = Cases[2]; // a square: away from its edges, pixels are pure object or pure background
        var video = ProceduralVideo.Render(prompt, 64, 64, Frames, seed: 5);
        var background = PromptGrammar.RgbOf(prompt.Background).R / 127.5f - 1;
        var color = PromptGrammar.RgbOf(prompt.Color).R / 127.5f - 1;
        int pure = 0, mixed = 0;
        for (int i = 0; i < Frames * 64 * 64; i++)
        {
            if (video[i] == background || Math.Abs(video[i] - color) < 1e-6) pure++;
            else mixed++;
        }
        // A square of side ~18 px has ~4·18 edge pixels per frame, a few percent of the frame.
        Assert.That(mixed, Is.GreaterThan(0));
        Assert.That(mixed, Is.LessThan(Frames * 4 * 24));
    }

    private static int Component(Rgb rgb, int channel) => channel switch { 0 => rgb.R, 1 => rgb.G, _ => rgb.B };
}
