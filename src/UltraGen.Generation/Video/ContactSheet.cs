using SkiaSharp;

namespace UltraGen.Generation.Video;

/// <summary>One row of a contact sheet: a label (the prompt, say) and the video whose frames fill the row.</summary>
public sealed record ContactSheetRow(string Label, RgbVideo Video);

/// <summary>
/// A PNG that shows several videos at once for the README: one row per video, its frames left to right, the row's label
/// above it. Videos keep their own size (upscale tiny ones with <see cref="RgbVideo.FromPlanar"/> first).
/// </summary>
public static class ContactSheet
{
    private const int Padding = 8, Gap = 4, FontSize = 14, LabelHeight = 20;

    /// <summary>Renders the sheet and writes it to <paramref name="path"/> atomically.</summary>
    public static void Write(string path, IReadOnlyList<ContactSheetRow> rows)
    {
        using var bitmap = Render(rows);
        SkiaImages.WritePng(bitmap, path);
    }

    /// <summary>The sheet as a bitmap (white background, black labels) that the caller disposes.</summary>
    public static SKBitmap Render(IReadOnlyList<ContactSheetRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new ArgumentException("a contact sheet needs at least one row", nameof(rows));
        using var font = PlotFonts.Font(FontSize);
        int width = 0, height = Padding;
        foreach (var row in rows)
        {
            ArgumentNullException.ThrowIfNull(row, nameof(rows));
            ArgumentNullException.ThrowIfNull(row.Video, nameof(rows));
            int framesWidth = row.Video.FrameCount * (row.Video.Width + Gap) - Gap;
            int labelWidth = (int)Math.Ceiling(font.MeasureText(row.Label ?? ""));
            width = Math.Max(width, Math.Max(framesWidth, labelWidth));
            height += LabelHeight + row.Video.Height + Padding;
        }
        width += 2 * Padding;

        var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        try
        {
            using var canvas = new SKCanvas(bitmap);
            canvas.Clear(SKColors.White);
            using var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true };
            int top = Padding;
            foreach (var row in rows)
            {
                canvas.DrawText(row.Label ?? "", Padding, top + LabelHeight - 5, SKTextAlign.Left, font, ink);
                top += LabelHeight;
                for (int f = 0; f < row.Video.FrameCount; f++)
                {
                    using var frame = SkiaImages.FromRgb(row.Video.Frame(f), row.Video.Width, row.Video.Height);
                    canvas.DrawBitmap(frame, Padding + f * (row.Video.Width + Gap), top);
                }
                top += row.Video.Height + Padding;
            }
            canvas.Flush();
            return bitmap;
        }
        catch
        {
            bitmap.Dispose();
            throw;
        }
    }
}
