namespace UltraGen.Model;

/// <summary>
/// A small seeded generator for weight initialisation: SplitMix64, one independent stream per (seed, tensor name), so a
/// tensor's values do not depend on which other tensors were generated first or on how many threads did it.
/// </summary>
internal struct WeightRandom
{
    private ulong _state;

    public WeightRandom(long seed, string name)
    {
        // FNV-1a over the name's UTF-16 code units, mixed with the seed; then one SplitMix round to spread it.
        ulong hash = 14695981039346656037UL;
        foreach (char c in name)
        {
            hash ^= c;
            hash *= 1099511628211UL;
        }
        _state = hash ^ ((ulong)seed * 0x9E3779B97F4A7C15UL);
        NextUInt64();
    }

    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [−bound, bound).</summary>
    public float NextSymmetric(double bound) => (float)((2 * NextDouble() - 1) * bound);
}
