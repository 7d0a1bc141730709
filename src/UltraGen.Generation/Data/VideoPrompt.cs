namespace UltraGen.Generation.Data;

/// <summary>The object's colour; the words and RGB values live in <see cref="PromptGrammar"/>.</summary>
public enum ObjectColor { Red, Green, Blue, Yellow, White, Magenta, Cyan, Orange }

public enum ObjectShape { Square, Circle, Triangle }

/// <summary>Screen directions: up is towards row 0 (image rows grow downwards).</summary>
public enum MotionDirection { Left, Right, Up, Down }

public enum BackgroundColor { Black, Gray, Navy }

/// <summary>An 8-bit sRGB triple, the unit every palette in this folder is written in.</summary>
public readonly record struct Rgb(byte R, byte G, byte B)
{
    /// <summary>Euclidean distance in 0–255 RGB space: the one distance the grammar's separation guarantees use.</summary>
    public double DistanceTo(Rgb other)
    {
        int dr = R - other.R, dg = G - other.G, db = B - other.B;
        return Math.Sqrt(dr * dr + dg * dg + db * db);
    }

    public override string ToString() => $"#{R:x2}{G:x2}{B:x2}";
}

/// <summary>
/// One text-to-video training or evaluation prompt: a single object of one colour and shape moving in one direction on a
/// plain background. <see cref="ToString"/> gives the canonical English text that <see cref="PromptGrammar.Parse"/> reads
/// back.
/// </summary>
public sealed record VideoPrompt(ObjectColor Color, ObjectShape Shape, MotionDirection Direction, BackgroundColor Background)
{
    /// <summary>The canonical prompt, e.g. "a red circle moving left on a black background".</summary>
    public string Text => PromptGrammar.Format(this);

    public override string ToString() => Text;
}
