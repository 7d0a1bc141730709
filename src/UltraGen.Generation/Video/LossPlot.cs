using System.Globalization;
using SkiaSharp;

namespace UltraGen.Generation.Video;

/// <summary>One curve of a loss plot: its legend name and its (step, loss) points in step order.</summary>
public sealed record LossSeries(string Name, IReadOnlyList<double> Steps, IReadOnlyList<double> Losses);

/// <summary>Size, labels and scale of a <see cref="LossPlot"/>.</summary>
public sealed record LossPlotOptions
{
    public int Width { get; init; } = 800;
    public int Height { get; init; } = 480;
    public string? Title { get; init; }
    public string XLabel { get; init; } = "step";
    public string YLabel { get; init; } = "loss";

    /// <summary>Logarithmic y axis: training losses fall over decades, which a linear axis flattens into an L.</summary>
    public bool LogY { get; init; }
}

/// <summary>
/// A line plot of one or more loss curves as a PNG for the README: axes with tick labels (1-2-5 steps on linear axes,
/// decades — with 2 and 5 in between when the range is short — on a log axis), grid lines, a legend, distinct colours.
/// </summary>
public static class LossPlot
{
    // Colour-blind-friendly qualitative palette (the Okabe–Ito colours, black last since the axes are dark).
    private static readonly SKColor[] SeriesColors =
    [
        new(0, 114, 178), new(213, 94, 0), new(0, 158, 115), new(204, 121, 167),
        new(230, 159, 0), new(86, 180, 233), new(240, 228, 66), new(0, 0, 0),
    ];

    /// <summary>The colour of series number <paramref name="index"/> (cycling after eight).</summary>
    public static SKColor SeriesColor(int index) => SeriesColors[index % SeriesColors.Length];

    /// <summary>Renders the plot and writes it to <paramref name="path"/> atomically.</summary>
    public static void Write(string path, IReadOnlyList<LossSeries> series, LossPlotOptions? options = null)
    {
        using var bitmap = Render(series, options);
        SkiaImages.WritePng(bitmap, path);
    }

    /// <summary>The plot as a bitmap the caller disposes.</summary>
    /// <exception cref="ArgumentException">No series or no points; steps and losses differ in length; a value is not
    /// finite; a loss is not positive on a log axis.</exception>
    public static SKBitmap Render(IReadOnlyList<LossSeries> series, LossPlotOptions? options = null)
    {
        options ??= new LossPlotOptions();
        Validate(series, options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Width, 200);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Height, 150);

        double xMin = series.SelectMany(s => s.Steps).Min(), xMax = series.SelectMany(s => s.Steps).Max();
        double yMin = series.SelectMany(s => s.Losses).Min(), yMax = series.SelectMany(s => s.Losses).Max();
        var xTicks = PlotTicks.Linear(xMin, xMax);
        var yTicks = options.LogY ? PlotTicks.Log(yMin, yMax) : PlotTicks.Linear(yMin, yMax);
        double xLow = Math.Min(xMin, xTicks[0]), xHigh = Math.Max(xMax, xTicks[^1]);
        double yLow = Math.Min(yMin, yTicks[0]), yHigh = Math.Max(yMax, yTicks[^1]);
        Func<double, double> yScale = options.LogY ? Math.Log10 : v => v;

        using var tickFont = PlotFonts.Font(12);
        using var labelFont = PlotFonts.Font(14);
        float tickLabelWidth = yTicks.Max(t => tickFont.MeasureText(PlotTicks.Format(t)));
        float left = 30 + tickLabelWidth + 8, right = options.Width - 20;
        float top = options.Title is null ? 20 : 44, bottom = options.Height - 50;
        float MapX(double x) => (float)(left + (x - xLow) / (xHigh - xLow) * (right - left));
        float MapY(double y) => (float)(bottom - (yScale(y) - yScale(yLow)) / (yScale(yHigh) - yScale(yLow)) * (bottom - top));

        var bitmap = new SKBitmap(new SKImageInfo(options.Width, options.Height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        try
        {
            using var canvas = new SKCanvas(bitmap);
            canvas.Clear(SKColors.White);
            using var grid = new SKPaint { Color = new SKColor(225, 225, 225), StrokeWidth = 1, IsAntialias = false, Style = SKPaintStyle.Stroke };
            using var axis = new SKPaint { Color = new SKColor(40, 40, 40), StrokeWidth = 1.5f, IsAntialias = true, Style = SKPaintStyle.Stroke };
            using var text = new SKPaint { Color = new SKColor(30, 30, 30), IsAntialias = true };

            foreach (double tick in xTicks)
            {
                float x = MapX(tick);
                canvas.DrawLine(x, top, x, bottom, grid);
                canvas.DrawLine(x, bottom, x, bottom + 5, axis);
                canvas.DrawText(PlotTicks.Format(tick), x, bottom + 19, SKTextAlign.Center, tickFont, text);
            }
            foreach (double tick in yTicks)
            {
                float y = MapY(tick);
                canvas.DrawLine(left, y, right, y, grid);
                canvas.DrawLine(left - 5, y, left, y, axis);
                canvas.DrawText(PlotTicks.Format(tick), left - 8, y + 4, SKTextAlign.Right, tickFont, text);
            }
            canvas.DrawRect(left, top, right - left, bottom - top, axis);
            canvas.DrawText(options.XLabel, (left + right) / 2, options.Height - 12, SKTextAlign.Center, labelFont, text);
            canvas.Save();
            canvas.RotateDegrees(-90, 16, (top + bottom) / 2);
            canvas.DrawText(options.YLabel + (options.LogY ? " (log)" : ""), 16, (top + bottom) / 2 + 5, SKTextAlign.Center, labelFont, text);
            canvas.Restore();
            if (options.Title is not null)
                canvas.DrawText(options.Title, (left + right) / 2, 28, SKTextAlign.Center, labelFont, text);

            canvas.Save();
            canvas.ClipRect(new SKRect(left, top, right, bottom));
            for (int s = 0; s < series.Count; s++)
            {
                using var line = new SKPaint { Color = SeriesColor(s), StrokeWidth = 2, IsAntialias = true, Style = SKPaintStyle.Stroke, StrokeJoin = SKStrokeJoin.Round };
                using var path = new SKPath();
                path.MoveTo(MapX(series[s].Steps[0]), MapY(series[s].Losses[0]));
                for (int i = 1; i < series[s].Steps.Count; i++) path.LineTo(MapX(series[s].Steps[i]), MapY(series[s].Losses[i]));
                if (series[s].Steps.Count == 1)
                {
                    using var dot = new SKPaint { Color = SeriesColor(s), IsAntialias = true };
                    canvas.DrawCircle(MapX(series[s].Steps[0]), MapY(series[s].Losses[0]), 3, dot);
                }
                canvas.DrawPath(path, line);
            }
            canvas.Restore();
            DrawLegend(canvas, series, tickFont, text, right, top);
            canvas.Flush();
            return bitmap;
        }
        catch
        {
            bitmap.Dispose();
            throw;
        }
    }

    private static void DrawLegend(SKCanvas canvas, IReadOnlyList<LossSeries> series, SKFont font, SKPaint text, float right, float top)
    {
        const float RowHeight = 18, Swatch = 22;
        float width = series.Max(s => font.MeasureText(s.Name)) + Swatch + 20;
        float height = series.Count * RowHeight + 8;
        float x = right - width - 8, y = top + 8;
        using var box = new SKPaint { Color = new SKColor(255, 255, 255, 235), Style = SKPaintStyle.Fill };
        using var border = new SKPaint { Color = new SKColor(160, 160, 160), Style = SKPaintStyle.Stroke, StrokeWidth = 1 };
        canvas.DrawRect(x, y, width, height, box);
        canvas.DrawRect(x, y, width, height, border);
        for (int s = 0; s < series.Count; s++)
        {
            float rowY = y + 4 + s * RowHeight + RowHeight / 2;
            using var line = new SKPaint { Color = SeriesColor(s), StrokeWidth = 3, IsAntialias = true };
            canvas.DrawLine(x + 6, rowY, x + 6 + Swatch, rowY, line);
            canvas.DrawText(series[s].Name, x + Swatch + 12, rowY + 4, SKTextAlign.Left, font, text);
        }
    }

    private static void Validate(IReadOnlyList<LossSeries> series, LossPlotOptions options)
    {
        ArgumentNullException.ThrowIfNull(series);
        if (series.Count == 0) throw new ArgumentException("a loss plot needs at least one series", nameof(series));
        foreach (var s in series)
        {
            ArgumentNullException.ThrowIfNull(s, nameof(series));
            if (s.Steps is null || s.Losses is null || s.Steps.Count != s.Losses.Count)
                throw new ArgumentException($"series '{s.Name}': steps and losses must be non-null and of equal length", nameof(series));
            if (s.Steps.Count == 0) throw new ArgumentException($"series '{s.Name}' has no points", nameof(series));
            for (int i = 0; i < s.Steps.Count; i++)
            {
                if (!double.IsFinite(s.Steps[i]) || !double.IsFinite(s.Losses[i]))
                    throw new ArgumentException(
                        $"series '{s.Name}': point {i} (step {s.Steps[i]}, loss {s.Losses[i]}) is not finite", nameof(series));
                if (options.LogY && s.Losses[i] <= 0)
                    throw new ArgumentException(
                        $"series '{s.Name}': loss {s.Losses[i]} at point {i} cannot be shown on a log axis", nameof(series));
            }
        }
    }
}

/// <summary>Tick positions and labels for plot axes.</summary>
public static class PlotTicks
{
    /// <summary>
    /// Round ticks covering [<paramref name="min"/>, <paramref name="max"/>]: a step of 1, 2 or 5 × 10^k giving 4–10
    /// ticks, from the largest multiple of the step ≤ min to the smallest ≥ max. A zero-width range is widened to ±1
    /// (or ±10 % of the value) around it.
    /// </summary>
    public static double[] Linear(double min, double max)
    {
        if (!double.IsFinite(min) || !double.IsFinite(max) || min > max)
            throw new ArgumentException($"bad axis range [{min}, {max}]");
        if (min == max)
        {
            double pad = min == 0 ? 1 : Math.Abs(min) * 0.1;
            min -= pad;
            max += pad;
        }
        double raw = (max - min) / 5, magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1.0, 2.0, 5.0, 10.0 }.Select(m => m * magnitude).First(s => (max - min) / s <= 8);
        double first = Math.Floor(min / step + 1e-9) * step, last = Math.Ceiling(max / step - 1e-9) * step;
        int count = (int)Math.Round((last - first) / step) + 1;
        return Enumerable.Range(0, count).Select(i => Clean(first + i * step, step)).ToArray();
    }

    /// <summary>
    /// Log-axis ticks: every power of ten from 10^floor(log min) to 10^ceil(log max); when that spans fewer than two
    /// decades, also 2 and 5 times each power, so a short range still has labelled ticks.
    /// </summary>
    public static double[] Log(double min, double max)
    {
        if (!(min > 0) || !double.IsFinite(max) || min > max)
            throw new ArgumentException($"bad log axis range [{min}, {max}]");
        int low = (int)Math.Floor(Math.Log10(min) + 1e-12), high = (int)Math.Ceiling(Math.Log10(max) - 1e-12);
        if (high == low) high++;
        var ticks = new List<double>();
        bool fine = high - low < 2;
        for (int k = low; k <= high; k++)
        {
            double power = Math.Pow(10, k);
            ticks.Add(power);
            if (fine && k < high)
            {
                ticks.Add(2 * power);
                ticks.Add(5 * power);
            }
        }
        if (fine)
        {
            // Trim fine ticks well outside the data, keeping one tick at or beyond each end.
            int start = ticks.FindLastIndex(t => t <= min * (1 + 1e-12));
            int end = ticks.FindIndex(t => t >= max * (1 - 1e-12));
            ticks = ticks.GetRange(Math.Max(0, start), end - Math.Max(0, start) + 1);
        }
        return ticks.ToArray();
    }

    /// <summary>A short label: plain digits between 1e-3 and 1e5, otherwise scientific ("2e-05").</summary>
    public static string Format(double value)
    {
        double magnitude = Math.Abs(value);
        if (value == 0) return "0";
        if (magnitude >= 1e5 || magnitude < 1e-3) return value.ToString("0.##e+0", CultureInfo.InvariantCulture);
        return value.ToString("0.####", CultureInfo.InvariantCulture);
    }

    /// <summary>Removes the float noise of first + i·step (0.30000000000000004 → 0.3).</summary>
    private static double Clean(double value, double step) =>
        Math.Abs(value) < step * 1e-9 ? 0 : Math.Round(value, Math.Clamp(1 - (int)Math.Floor(Math.Log10(step)), 0, 15));
}
