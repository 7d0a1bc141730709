using SkiaSharp;

namespace UltraGen.Generation.Video;

/// <summary>
/// The typeface for labels, found once. Headless machines often lack fontconfig or its cache, so a family-name lookup
/// can come back empty: the lookup is tried first, then common font files, then <see cref="SKTypeface.Default"/>.
/// <see cref="Source"/> says which won, <see cref="CanDrawText"/> whether it actually has glyphs.
/// </summary>
public static class PlotFonts
{
    private static readonly string[] Families = ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica", "Noto Sans"];

    private static readonly string[] Files =
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Helvetica.ttc",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];

    private static readonly Lazy<(SKTypeface Typeface, string Source)> Chosen = new(Choose);

    public static SKTypeface Typeface => Chosen.Value.Typeface;

    /// <summary>Where the typeface came from: "family 'DejaVu Sans'", "file …" or "SKTypeface.Default".</summary>
    public static string Source => Chosen.Value.Source;

    /// <summary>Whether the chosen typeface maps letters to real glyphs (false: labels will be blank).</summary>
    public static bool CanDrawText => HasGlyphs(Typeface);

    public static SKFont Font(float size) => new(Typeface, size) { Edging = SKFontEdging.Antialias, Subpixel = true };

    private static (SKTypeface, string) Choose()
    {
        foreach (string family in Families)
        {
            var typeface = SKTypeface.FromFamilyName(family);
            if (typeface is not null && string.Equals(typeface.FamilyName, family, StringComparison.OrdinalIgnoreCase) && HasGlyphs(typeface))
                return (typeface, $"family '{family}'");
        }
        foreach (string file in Files)
        {
            if (!File.Exists(file)) continue;
            var typeface = SKTypeface.FromFile(file);
            if (typeface is not null && HasGlyphs(typeface)) return (typeface, $"file {file}");
        }
        return (SKTypeface.Default, "SKTypeface.Default");
    }

    private static bool HasGlyphs(SKTypeface typeface) =>
        typeface.GlyphCount > 0 && typeface.GetGlyphs("Aa0").All(glyph => glyph != 0);
}
