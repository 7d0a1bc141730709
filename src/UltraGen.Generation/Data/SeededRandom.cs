namespace UltraGen.Generation.Data;

/// <summary>
/// SplitMix64: a tiny, fast, well-mixed generator whose whole state is one ulong, so every stream (a training index, a
/// video's jitter, a weight tensor) is a pure function of its seed words — no dependence on call order, thread count or
/// the .NET version's <see cref="Random"/> algorithm.
/// </summary>
public struct SeededRandom
{
    private ulong _state;

    public SeededRandom(long seed) : this(seed, 0) { }

    /// <summary>A stream keyed by two words (e.g. seed and index) mixed so that neighbouring keys give unrelated streams.</summary>
    public SeededRandom(long seed, long stream)
    {
        _state = Mix((ulong)seed * 0x9E3779B97F4A7C15UL ^ Mix((ulong)stream + 0xD1B54A32D192ED03UL));
    }

    /// <summary>The SplitMix64 finaliser: a bijection on 64-bit words with full avalanche.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64() => Mix(_state += 0x9E3779B97F4A7C15UL);

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public double NextDouble(double low, double high) => low + (high - low) * NextDouble();

    /// <summary>Uniform integer in [0, <paramref name="count"/>) by rejection, so no modulo bias.</summary>
    public int NextInt(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ulong bound = (ulong)count;
        ulong limit = ulong.MaxValue - ulong.MaxValue % bound;
        ulong draw;
        do draw = NextUInt64(); while (draw >= limit);
        return (int)(draw % bound);
    }

    /// <summary>Standard normal by Box–Muller (one draw per call; the sine twin is discarded for simplicity).</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble(); // (0, 1]: log is finite
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
