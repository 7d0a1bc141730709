using UltraGen.Core;

namespace UltraGen.Generation.Data;

/// <summary>A prompt text does not follow the grammar; the message names the offending word and the accepted ones.</summary>
public class PromptParseException : UltraGenException
{
    public PromptParseException(string message) : base(message) { }
}

/// <summary>
/// The closed prompt language of the bundled miniature model: "a {colour} {shape} moving {direction} on a {background}
/// background", 8 × 3 × 4 × 3 = 288 combinations. Eight of them are held out of training (never returned by
/// <see cref="Sample(long, long)"/>) so that generalisation to unseen combinations of seen words can be measured.
/// </summary>
/// <remarks>
/// Palette: the colours are saturated or bright, the backgrounds dark or mid-gray, so that every object colour is at
/// least <see cref="MinimumObjectBackgroundDistance"/> from every background and at least
/// <see cref="MinimumObjectColorDistance"/> from every other object colour (Euclidean, 0–255 RGB; checked by the
/// tests). That keeps the objects visible at 16×16 and lets <c>PromptAdherence</c> classify colours by nearest
/// neighbour even after anti-aliasing pulls edge pixels toward the background.
/// </remarks>
public static class PromptGrammar
{
    /// <summary>Lower bound on |object colour − background| over all pairs (the smallest pair is green on gray, ≈ 155).</summary>
    public const double MinimumObjectBackgroundDistance = 140;

    /// <summary>Lower bound on |colour − colour| between two object colours (the smallest pair is red/orange, ≈ 108).</summary>
    public const double MinimumObjectColorDistance = 100;

    private static readonly (ObjectColor Value, string Word, Rgb Rgb)[] ColorTable =
    [
        (ObjectColor.Red, "red", new Rgb(235, 35, 35)),
        (ObjectColor.Green, "green", new Rgb(30, 225, 40)),
        (ObjectColor.Blue, "blue", new Rgb(45, 100, 255)),
        (ObjectColor.Yellow, "yellow", new Rgb(245, 240, 40)),
        (ObjectColor.White, "white", new Rgb(255, 255, 255)),
        (ObjectColor.Magenta, "magenta", new Rgb(235, 40, 235)),
        (ObjectColor.Cyan, "cyan", new Rgb(30, 235, 235)),
        (ObjectColor.Orange, "orange", new Rgb(255, 135, 0)),
    ];

    private static readonly (ObjectShape Value, string Word)[] ShapeTable =
        [(ObjectShape.Square, "square"), (ObjectShape.Circle, "circle"), (ObjectShape.Triangle, "triangle")];

    private static readonly (MotionDirection Value, string Word)[] DirectionTable =
        [(MotionDirection.Left, "left"), (MotionDirection.Right, "right"), (MotionDirection.Up, "up"), (MotionDirection.Down, "down")];

    private static readonly (BackgroundColor Value, string Word, Rgb Rgb)[] BackgroundTable =
    [
        (BackgroundColor.Black, "black", new Rgb(0, 0, 0)),
        (BackgroundColor.Gray, "gray", new Rgb(100, 100, 100)),
        (BackgroundColor.Navy, "navy", new Rgb(15, 20, 90)),
    ];

    /// <summary>The fixed words of the template, in order of appearance.</summary>
    public static IReadOnlyList<string> TemplateWords { get; } = ["a", "moving", "on", "background"];

    public static IReadOnlyList<ObjectColor> Colors { get; } = ColorTable.Select(e => e.Value).ToArray();
    public static IReadOnlyList<ObjectShape> Shapes { get; } = ShapeTable.Select(e => e.Value).ToArray();
    public static IReadOnlyList<MotionDirection> Directions { get; } = DirectionTable.Select(e => e.Value).ToArray();
    public static IReadOnlyList<BackgroundColor> Backgrounds { get; } = BackgroundTable.Select(e => e.Value).ToArray();

    /// <summary>
    /// Every word the grammar can produce, each once, in a fixed order (template words, colours, shapes, directions,
    /// backgrounds): the tokenizer's vocabulary is built from this list, so its order is part of the model's weights.
    /// </summary>
    public static IReadOnlyList<string> Words { get; } = TemplateWords
        .Concat(ColorTable.Select(e => e.Word)).Concat(ShapeTable.Select(e => e.Word))
        .Concat(DirectionTable.Select(e => e.Word)).Concat(BackgroundTable.Select(e => e.Word))
        .Distinct(StringComparer.Ordinal).ToArray();

    /// <summary>
    /// Held out of training: every direction twice, every colour once, shapes 3/3/2 and backgrounds 3/3/2, so each word
    /// still appears in hundreds of training prompts and only the combination is new.
    /// </summary>
    public static IReadOnlyList<VideoPrompt> HeldOut { get; } =
    [
        new(ObjectColor.Red, ObjectShape.Triangle, MotionDirection.Right, BackgroundColor.Navy),
        new(ObjectColor.Green, ObjectShape.Circle, MotionDirection.Left, BackgroundColor.Black),
        new(ObjectColor.Blue, ObjectShape.Square, MotionDirection.Down, BackgroundColor.Gray),
        new(ObjectColor.Yellow, ObjectShape.Triangle, MotionDirection.Up, BackgroundColor.Black),
        new(ObjectColor.White, ObjectShape.Circle, MotionDirection.Down, BackgroundColor.Navy),
        new(ObjectColor.Magenta, ObjectShape.Triangle, MotionDirection.Left, BackgroundColor.Gray),
        new(ObjectColor.Cyan, ObjectShape.Square, MotionDirection.Up, BackgroundColor.Navy),
        new(ObjectColor.Orange, ObjectShape.Circle, MotionDirection.Right, BackgroundColor.Gray),
    ];

    private static readonly HashSet<VideoPrompt> HeldOutSet = [.. HeldOut];

    /// <summary>All 288 combinations, colour-major (colour, shape, direction, background), in enum order.</summary>
    public static IReadOnlyList<VideoPrompt> All { get; } =
        (from c in ColorTable from s in ShapeTable from d in DirectionTable from b in BackgroundTable
         select new VideoPrompt(c.Value, s.Value, d.Value, b.Value)).ToArray();

    /// <summary>The 280 combinations the training sampler draws from: <see cref="All"/> minus <see cref="HeldOut"/>.</summary>
    public static IReadOnlyList<VideoPrompt> Training { get; } = All.Where(p => !HeldOutSet.Contains(p)).ToArray();

    public static bool IsHeldOut(VideoPrompt prompt) => HeldOutSet.Contains(prompt);

    public static string Word(ObjectColor color) => ColorTable[(int)color].Word;
    public static string Word(ObjectShape shape) => ShapeTable[(int)shape].Word;
    public static string Word(MotionDirection direction) => DirectionTable[(int)direction].Word;
    public static string Word(BackgroundColor background) => BackgroundTable[(int)background].Word;

    public static Rgb RgbOf(ObjectColor color) => ColorTable[(int)color].Rgb;
    public static Rgb RgbOf(BackgroundColor background) => BackgroundTable[(int)background].Rgb;

    /// <summary>The canonical text: "a red circle moving left on a black background".</summary>
    public static string Format(VideoPrompt prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        return $"a {Word(prompt.Color)} {Word(prompt.Shape)} moving {Word(prompt.Direction)} on a {Word(prompt.Background)} background";
    }

    /// <summary>
    /// Reads a prompt back from text in the canonical template. Case and runs of whitespace (leading, trailing, between
    /// words) are ignored; anything else must match word for word.
    /// </summary>
    /// <exception cref="PromptParseException">A word is not the one the template expects at its position, or is not a
    /// known colour / shape / direction / background; the message names the word, its position and the accepted words.</exception>
    public static VideoPrompt Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] words = text.ToLowerInvariant().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        const string Template = "a {colour} {shape} moving {direction} on a {background} background";
        if (words.Length != 9)
            throw new PromptParseException(
                $"prompt \"{text}\" has {words.Length} words; expected 9, in the form \"{Template}\"");

        Expect(words, 0, "a", text);
        var color = Lookup(ColorTable.Select(e => (e.Value, e.Word)), words, 1, "colour", text);
        var shape = Lookup(ShapeTable, words, 2, "shape", text);
        Expect(words, 3, "moving", text);
        var direction = Lookup(DirectionTable, words, 4, "direction", text);
        Expect(words, 5, "on", text);
        Expect(words, 6, "a", text);
        var background = Lookup(BackgroundTable.Select(e => (e.Value, e.Word)), words, 7, "background colour", text);
        Expect(words, 8, "background", text);
        return new VideoPrompt(color, shape, direction, background);
    }

    /// <summary>Like <see cref="Parse"/> but returns false instead of throwing.</summary>
    public static bool TryParse(string text, out VideoPrompt? prompt)
    {
        try
        {
            prompt = Parse(text);
            return true;
        }
        catch (PromptParseException)
        {
            prompt = null;
            return false;
        }
    }

    private static void Expect(string[] words, int position, string expected, string text)
    {
        if (words[position] != expected)
            throw new PromptParseException(
                $"prompt \"{text}\": word {position + 1} is '{words[position]}', expected '{expected}'");
    }

    private static T Lookup<T>(IEnumerable<(T Value, string Word)> table, string[] words, int position, string kind, string text)
    {
        var entries = table.ToArray();
        foreach (var (value, word) in entries)
            if (word == words[position]) return value;
        throw new PromptParseException(
            $"prompt \"{text}\": unknown {kind} '{words[position]}' (word {position + 1}); known: {string.Join(", ", entries.Select(e => e.Word))}");
    }

    /// <summary>
    /// The training prompt number <paramref name="index"/> of the stream <paramref name="seed"/>. Epoch-balanced: indices
    /// [k·280, (k+1)·280) visit every training combination exactly once, in an order shuffled per (seed, epoch), so a
    /// short run still sees every combination equally often. Never returns a <see cref="HeldOut"/> combination.
    /// </summary>
    public static VideoPrompt Sample(long seed, long index) => Sample(seed, index, Training);

    /// <summary>
    /// As <see cref="Sample(long, long)"/>, over <paramref name="pool"/> (a subset of the training prompts, see
    /// <see cref="Subset"/>): epoch-balanced over the pool, shuffled per (seed, epoch).
    /// </summary>
    public static VideoPrompt Sample(long seed, long index, IReadOnlyList<VideoPrompt> pool)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentNullException.ThrowIfNull(pool);
        if (pool.Count == 0) throw new ArgumentException("the prompt pool is empty", nameof(pool));
        int count = pool.Count;
        long epoch = index / count;
        int position = (int)(index % count);
        // Fisher–Yates on indices, stopped as soon as the requested slot is fixed (slots are filled front to back).
        var order = new int[count];
        for (int i = 0; i < count; i++) order[i] = i;
        var random = new SeededRandom(seed, epoch);
        for (int i = 0; i <= position; i++)
        {
            int j = i + random.NextInt(count - i);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return pool[order[position]];
    }

    /// <summary>
    /// The training prompts whose fields match <paramref name="filter"/>: comma-separated <c>field=word</c> pairs over
    /// <c>color</c>, <c>shape</c>, <c>direction</c> and <c>background</c>, a field's alternatives separated by <c>|</c>
    /// (<c>"color=red,shape=square,background=black"</c> → the four directions of a red square on black). A curriculum
    /// starts on such a subset: the bundled base first learns the direction word on one colour, shape and background, then
    /// the whole grammar (measured: on the whole grammar from the start it never learned the direction word). Held-out
    /// prompts are never returned.
    /// </summary>
    /// <exception cref="PromptParseException">An unknown field or word, a repeated field, or a filter no training prompt matches.</exception>
    public static IReadOnlyList<VideoPrompt> Subset(string filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        var allowed = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (string pair in filter.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int equals = pair.IndexOf('=');
            if (equals <= 0 || equals == pair.Length - 1)
                throw new PromptParseException($"prompt subset \"{filter}\": '{pair}' is not field=word (fields: color, shape, direction, background)");
            string field = pair[..equals].Trim().ToLowerInvariant();
            var known = field switch
            {
                "color" or "colour" => ColorTable.Select(e => e.Word),
                "shape" => ShapeTable.Select(e => e.Word),
                "direction" => DirectionTable.Select(e => e.Word),
                "background" => BackgroundTable.Select(e => e.Word),
                _ => throw new PromptParseException($"prompt subset \"{filter}\": unknown field '{field}' (fields: color, shape, direction, background)"),
            };
            field = field == "colour" ? "color" : field;
            var words = pair[(equals + 1)..].Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal);
            var knownWords = known.ToArray();
            foreach (string word in words)
                if (!knownWords.Contains(word))
                    throw new PromptParseException($"prompt subset \"{filter}\": unknown {field} '{word}'; known: {string.Join(", ", knownWords)}");
            if (!allowed.TryAdd(field, words))
                throw new PromptParseException($"prompt subset \"{filter}\": field '{field}' given twice");
        }
        bool Matches(string field, string word) => !allowed.TryGetValue(field, out var words) || words.Contains(word);
        var subset = Training.Where(p => Matches("color", Word(p.Color)) && Matches("shape", Word(p.Shape)) &&
                                         Matches("direction", Word(p.Direction)) && Matches("background", Word(p.Background))).ToArray();
        if (subset.Length == 0)
            throw new PromptParseException($"prompt subset \"{filter}\" matches no training prompt (held-out prompts are excluded)");
        return subset;
    }

    /// <summary>
    /// The render seed that goes with <see cref="Sample(long, long)"/>(<paramref name="seed"/>, <paramref name="index"/>): a separate
    /// stream, so the geometry jitter is independent of which combination was drawn.
    /// </summary>
    public static long SampleRenderSeed(long seed, long index) =>
        (long)(new SeededRandom(seed ^ 0x5EED_7E1E_7100L, index).NextUInt64() >> 1);
}
