using System.Collections;
using System.Collections.Frozen;
using System.Globalization;
using System.Text;

namespace UltraGen.Model;

/// <summary>
/// An immutable, sorted set of block indices with value equality: the blocks that keep Wan's full attention in a
/// <see cref="ModelConfig"/> (every other block is decomposed, spec §1.1). <see cref="Contains"/> does not allocate.
/// </summary>
public sealed class BlockSet : IReadOnlyCollection<int>, IEquatable<BlockSet>
{
    private readonly int[] _sorted;

    private BlockSet(int[] sorted) => _sorted = sorted;

    /// <summary>No blocks: with this as the full-attention set every block is decomposed.</summary>
    public static BlockSet Empty { get; } = new([]);

    /// <summary>The given indices (duplicates collapse). Negative indices are refused.</summary>
    public static BlockSet Of(IEnumerable<int> blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        var sorted = blocks.Distinct().Order().ToArray();
        if (sorted.Length > 0 && sorted[0] < 0)
            throw new ArgumentOutOfRangeException(nameof(blocks), sorted[0], "block indices must be non-negative");
        return sorted.Length == 0 ? Empty : new BlockSet(sorted);
    }

    /// <summary>The given indices.</summary>
    public static BlockSet Of(params ReadOnlySpan<int> blocks) => Of((IEnumerable<int>)blocks.ToArray());

    /// <summary>0 … <paramref name="layers"/>−1: every block keeps full attention (plain Wan).</summary>
    public static BlockSet All(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layers);
        return Of(Enumerable.Range(0, layers));
    }

    /// <summary>
    /// The released code's plan generalised to any depth: the first three and the last three blocks keep full attention
    /// ({0, 1, 2, 27, 28, 29} for 30 layers, spec §1.1).
    /// </summary>
    public static BlockSet Reference(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layers);
        return Of(new[] { 0, 1, 2, layers - 3, layers - 2, layers - 1 }.Where(b => b >= 0 && b < layers));
    }

    /// <summary>
    /// Parses "0,1,2,27,28,29", ranges such as "0-2,27-29", or "none"/"" for the empty set.
    /// </summary>
    /// <exception cref="FormatException">An item is not an index or a range.</exception>
    public static BlockSet Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string trimmed = text.Trim();
        if (trimmed.Length == 0 || string.Equals(trimmed, "none", StringComparison.OrdinalIgnoreCase)) return Empty;
        var blocks = new List<int>();
        foreach (var item in trimmed.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = item.IndexOf('-', 1);
            if (dash > 0
                && int.TryParse(item.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out int first)
                && int.TryParse(item.AsSpan(dash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int last)
                && first <= last)
            {
                for (int b = first; b <= last; b++) blocks.Add(b);
            }
            else if (dash < 0 && int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int single))
            {
                blocks.Add(single);
            }
            else
            {
                throw new FormatException($"'{item}' is not a block index or a range such as 27-29 (use e.g. 0,1,2,27,28,29 or none)");
            }
        }
        return Of(blocks);
    }

    public int Count => _sorted.Length;

    /// <summary>The largest index, or −1 for the empty set.</summary>
    public int Max => _sorted.Length == 0 ? -1 : _sorted[^1];

    public bool Contains(int block) => Array.BinarySearch(_sorted, block) >= 0;

    /// <summary>A frozen set of the same indices, for APIs that take <see cref="IReadOnlySet{T}"/> (layout plans, ops).</summary>
    public IReadOnlySet<int> ToSet() => _sorted.ToFrozenSet();

    /// <summary>Compact form with ranges, e.g. "0-2, 27-29", or "none".</summary>
    public string ToRangeString() => FormatRanges(_sorted);

    /// <summary>Compact form of ascending distinct indices with ranges ("3-26", "0-2, 27-29"), or "none".</summary>
    public static string FormatRanges(IEnumerable<int> ascending)
    {
        ArgumentNullException.ThrowIfNull(ascending);
        var text = new StringBuilder();
        int start = -1, previous = -1;
        void Flush()
        {
            if (start < 0) return;
            if (text.Length > 0) text.Append(", ");
            text.Append(start.ToString(CultureInfo.InvariantCulture));
            if (previous > start) text.Append('-').Append(previous.ToString(CultureInfo.InvariantCulture));
        }
        foreach (int block in ascending)
        {
            if (start >= 0 && block == previous + 1)
            {
                previous = block;
                continue;
            }
            Flush();
            start = previous = block;
        }
        Flush();
        return text.Length == 0 ? "none" : text.ToString();
    }

    public bool Equals(BlockSet? other) => other is not null && _sorted.AsSpan().SequenceEqual(other._sorted);

    public override bool Equals(object? obj) => Equals(obj as BlockSet);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (int block in _sorted) hash.Add(block);
        return hash.ToHashCode();
    }

    /// <summary>"0,1,2,27,28,29" or "none": the form the <c>full_blocks</c> op parameter takes.</summary>
    public override string ToString() =>
        _sorted.Length == 0 ? "none" : string.Join(',', _sorted.Select(b => b.ToString(CultureInfo.InvariantCulture)));

    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)_sorted).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
