using NUnit.Framework;
using SkiaSharp;
using UltraGen.Generation.Data;
using UltraGen.Generation.Video;

namespace UltraGen.Tests.Generation;

public class FigureTests
{
    private string _folder = null!;

    [SetUp]
    public void CreateFolder()
    {
        _folder = Path.Combine(Path.GetTempPath(), "ultragen-figures-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_folder);
    }

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_folder, recursive: true);

    private static ContactSheetRow Row(VideoPrompt prompt, int side, int upscale) =>
        new(prompt.Text, RgbVideo.FromPlanar(ProceduralVideo.Render(prompt, side, side, 8, seed: 3), 8, side, side, upscale));

    [Test]
    public void ContactSheetPlacesEveryFrame()
    {
        var rows = new[]
        {
            Row(new(ObjectColor.Red, ObjectShape.Circle, MotionDirection.Left, BackgroundColor.Black), 16, 4),
            Row(new(ObjectColor.Cyan, ObjectShape.Square, MotionDirection.Up, BackgroundColor.Gray), 64, 1),
        };
        string path = Path.Combine(_folder, "sheet.png");
        ContactSheet.Write(path, rows);
        using var sheet = SKBitmap.Decode(path);
        // Padding 8, gap 4, label band 20: 8 frames of 64 px → 8·68 − 4 + 16 wide; two rows of 20 + 64 + 8, plus 8.
        Assert.That(sheet.Width, Is.EqualTo(Math.Max(8 * 68 - 4, LabelWidth(rows)) + 16));
        Assert.That(sheet.Height, Is.EqualTo(8 + 2 * (20 + 64 + 8)));
        int top = 8;
        foreach (var row in rows)
        {
            top += 20;
            for (int f = 0; f < 8; f++)
            for (int y = 0; y < row.Video.Height; y += 7)
            for (int x = 0; x < row.Video.Width; x += 5)
            {
                var pixel = sheet.GetPixel(8 + f * (row.Video.Width + 4) + x, top + y);
                var expected = row.Video.Frame(f).Slice(3 * (y * row.Video.Width + x), 3);
                Assert.That(new[] { pixel.Red, pixel.Green, pixel.Blue }, Is.EqualTo(expected.ToArray()), $"{row.Label} frame {f} ({x}, {y})");
            }
            top += row.Video.Height + 8;
        }
    }

    [Test]
    public void ContactSheetLabelsAreDrawn()
    {
        TestContext.Out.WriteLine($"typeface: {PlotFonts.Source}");
        if (!PlotFonts.CanDrawText) Assert.Ignore($"no font with glyphs on this machine ({PlotFonts.Source}); labels are blank");
        var row = Row(PromptGrammar.HeldOut[0], 16, 2);
        using var sheet = ContactSheet.Render([row]);
        int dark = 0;
        for (int y = 8; y < 28; y++)
        for (int x = 8; x < sheet.Width - 8; x++)
            if (sheet.GetPixel(x, y).Red < 100) dark++;
        Assert.That(dark, Is.GreaterThan(100), "ink in the label band");
        using var unlabeled = ContactSheet.Render([row with { Label = "" }]);
        for (int y = 8; y < 28; y++)
        for (int x = 0; x < unlabeled.Width; x++)
            Assert.That(unlabeled.GetPixel(x, y), Is.EqualTo(SKColors.White));
    }

    private static int LabelWidth(IEnumerable<ContactSheetRow> rows)
    {
        using var font = PlotFonts.Font(14);
        return rows.Max(r => (int)Math.Ceiling(font.MeasureText(r.Label)));
    }

    [Test]
    public void LinearTicksAreRoundAndCoverTheRange()
    {
        Assert.That(PlotTicks.Linear(0, 1000), Is.EqualTo(new double[] { 0, 200, 400, 600, 800, 1000 }));
        Assert.That(PlotTicks.Linear(0.13, 0.87), Is.EqualTo(new[] { 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 }));
        Assert.That(PlotTicks.Linear(-3, 17), Is.EqualTo(new double[] { -5, 0, 5, 10, 15, 20 }));
        Assert.That(PlotTicks.Linear(2, 2), Is.EqualTo(new[] { 1.8, 1.9, 2.0, 2.1, 2.2 }));
    }

    [Test]
    public void LogTicksAreDecadesWithFineTicksOnShortRanges()
    {
        Assert.That(PlotTicks.Log(0.003, 2.5), Is.EqualTo(new[] { 0.001, 0.01, 0.1, 1, 10 }));
        Assert.That(PlotTicks.Log(0.2, 0.9), Is.EqualTo(new[] { 0.2, 0.5, 1 }));
        Assert.That(PlotTicks.Log(0.25, 0.3), Is.EqualTo(new[] { 0.2, 0.5 }));
        Assert.Throws<ArgumentException>(() => PlotTicks.Log(0, 1));
        Assert.That(PlotTicks.Format(0.0001), Is.EqualTo("1e-4"));
        Assert.That(PlotTicks.Format(2500), Is.EqualTo("2500"));
        Assert.That(PlotTicks.Format(0.05), Is.EqualTo("0.05"));
    }

    [Test]
    public void LossPlotDrawsEverySeriesInItsColour()
    {
        var steps = Enumerable.Range(0, 200).Select(i => (double)(i * 10)).ToArray();
        var series = new[]
        {
            new LossSeries("base 16×16", steps, steps.Select(s => 1.0 / (1 + s / 100)).ToArray()),
            new LossSeries("UltraGen 64×64", steps, steps.Select(s => 0.5 / (1 + s / 300) + 0.01).ToArray()),
        };
        string path = Path.Combine(_folder, "loss.png");
        LossPlot.Write(path, series, new LossPlotOptions { LogY = true, Title = "training loss", Width = 640, Height = 400 });
        using var plot = SKBitmap.Decode(path);
        Assert.That((plot.Width, plot.Height), Is.EqualTo((640, 400)));
        for (int s = 0; s < series.Length; s++)
            Assert.That(CountColor(plot, LossPlot.SeriesColor(s)), Is.GreaterThan(150), $"series {s}");
        Assert.That(CountColor(plot, LossPlot.SeriesColor(2)), Is.EqualTo(0), "no third series");

        using var linear = LossPlot.Render(series, new LossPlotOptions { Width = 640, Height = 400, Title = "training loss" });
        Assert.That(VideoWriterTests.ReadRgb(linear), Is.Not.EqualTo(VideoWriterTests.ReadRgb(plot)), "log and linear axes differ");
    }

    [Test]
    public void LossPlotRejectsBadSeries()
    {
        var bad = new LossSeries("bad", [0, 1], [0.5, 0]);
        var error = Assert.Throws<ArgumentException>(() => LossPlot.Render([bad], new LossPlotOptions { LogY = true }))!;
        Assert.That(error.Message, Does.Contain("'bad'").And.Contain("log"));
        Assert.Throws<ArgumentException>(() => LossPlot.Render([new LossSeries("nan", [0, 1], [0.5, double.NaN])]));
        Assert.Throws<ArgumentException>(() => LossPlot.Render([new LossSeries("short", [0, 1], [0.5])]));
        Assert.Throws<ArgumentException>(() => LossPlot.Render([]));
        Assert.That(Directory.GetFiles(_folder), Is.Empty);
    }

    private static int CountColor(SKBitmap bitmap, SKColor color)
    {
        int count = 0;
        for (int y = 0; y < bitmap.Height; y++)
        for (int x = 0; x < bitmap.Width; x++)
        {
            var p = bitmap.GetPixel(x, y);
            if (Math.Abs(p.Red - color.Red) + Math.Abs(p.Green - color.Green) + Math.Abs(p.Blue - color.Blue) <= 6) count++;
        }
        return count;
    }
}
