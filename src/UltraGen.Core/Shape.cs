namespace UltraGen.Core;

/// <summary>Helpers for shapes held as <c>int[]</c> (row-major, last dim fastest).</summary>
public static class Shape
{
    public static long ElementCount(ReadOnlySpan<int> shape)
    {
        long count = 1;
        foreach (int dim in shape)
        {
            if (dim < 0) throw new ArgumentException($"negative dimension in shape {Format(shape)}", nameof(shape));
            count = checked(count * dim);
        }
        return count;
    }

    public static string Format(ReadOnlySpan<int> shape) => "(" + string.Join(", ", shape.ToArray()) + ")";

    public static bool Equal(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);
}
