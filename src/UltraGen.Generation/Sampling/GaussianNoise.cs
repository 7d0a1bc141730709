namespace UltraGen.Generation.Sampling;

/// <summary>
/// Seeded standard-normal noise that is bit-identical on every machine, OS, vector width and thread count: element i
/// of stream (seed, stream) is a pure function of (seed, stream, i). Used for the initial latent of sampling and for
/// the ε of every training step, so a run can be reproduced (and resumed) exactly.
/// </summary>
/// <remarks>
/// <para>Construction: a key = mix(seed, stream); counter n gives 64 random bits SplitMix64(key + (n+1)·γ) (the
/// SplitMix64 output function, which passes BigCrush); element pair (2p, 2p+1) takes counters 2p and 2p+1 as two
/// uniforms and Box–Muller turns them into two normals in double, each rounded once to float. Different (seed, stream)
/// keys land at unrelated points of SplitMix's 2⁶⁴ cycle; two streams of length N overlap with probability ≈ 2N/2⁶⁴.</para>
/// <para>Platform independence: Math.Log/Sin/Cos come from the C runtime and may differ by an ulp between platforms,
/// which after rounding to float would change about one element in 10⁹. So the logarithm and the sine/cosine here
/// are evaluated with +, −, ×, ÷ and √ only (all correctly rounded in IEEE 754, and .NET never contracts them into
/// FMAs), to about 1e-15 relative accuracy.</para>
/// <para>The values are not those of torch.randn; the spec's seed-0 videos therefore cannot be reproduced bit-for-bit
/// (torch's CPU generator is a Mersenne Twister with its own normal transform).</para>
/// </remarks>
public static class GaussianNoise
{
    private const ulong Gamma = 0x9E3779B97F4A7C15UL;

    /// <summary>
    /// Fills <paramref name="destination"/> with elements <paramref name="offset"/>, offset+1, … of stream
    /// (<paramref name="seed"/>, <paramref name="stream"/>). Filling a buffer in chunks with consecutive offsets
    /// gives the same values as one call.
    /// </summary>
    public static void Fill(Span<float> destination, ulong seed, ulong stream = 0, long offset = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ulong key = Key(seed, stream);
        int i = 0;
        long element = offset;
        if (destination.Length > 0 && (element & 1) == 1)
        {
            // Odd start: the second half of a pair.
            Pair(key, element >> 1, out _, out double second);
            destination[i++] = (float)second;
            element++;
        }
        for (; i + 1 < destination.Length; i += 2, element += 2)
        {
            Pair(key, element >> 1, out double first, out double second);
            destination[i] = (float)first;
            destination[i + 1] = (float)second;
        }
        if (i < destination.Length)
        {
            Pair(key, element >> 1, out double first, out _);
            destination[i] = (float)first;
        }
    }

    /// <summary>A fresh array of <paramref name="count"/> normals from stream (<paramref name="seed"/>, <paramref name="stream"/>).</summary>
    public static float[] Sample(int count, ulong seed, ulong stream = 0)
    {
        var values = new float[count];
        Fill(values, seed, stream);
        return values;
    }

    /// <summary>Pair <paramref name="pairIndex"/> of the stream with key <paramref name="key"/> as two doubles.</summary>
    private static void Pair(ulong key, long pairIndex, out double first, out double second)
    {
        ulong counter = (ulong)pairIndex * 2;
        ulong a = Mix(key + (counter + 1) * Gamma);
        ulong b = Mix(key + (counter + 2) * Gamma);
        double u1 = ((a >> 11) + 1) * (1.0 / (1UL << 53)); // (0, 1]: the log never sees 0
        ulong quarterTurns = b >> 62;                      // the top two bits pick the quadrant...
        double fraction = ((b << 2) >> 11) * (1.0 / (1UL << 53)); // ...the next 53 the angle inside it, in [0, 1)
        double radius = Math.Sqrt(-2.0 * Log(u1));
        SinCosQuarterTurn(fraction, out double sin, out double cos);
        // Angle θ = (quarterTurns + fraction)·π/2, uniform over [0, 2π).
        (double c, double s) = quarterTurns switch
        {
            0 => (cos, sin),
            1 => (-sin, cos),
            2 => (-cos, -sin),
            _ => (sin, -cos),
        };
        first = radius * c;
        second = radius * s;
    }

    /// <summary>The key of stream (seed, stream): two SplitMix rounds so nearby seeds and streams are unrelated.</summary>
    private static ulong Key(ulong seed, ulong stream) => Mix(Mix(seed + Gamma) ^ (stream * 0xD1B54A32D192ED03UL + 0x632BE59BD9B4E019UL));

    /// <summary>A well-mixed 64-bit hash of three words (for deterministic draws such as timestep indices).</summary>
    public static ulong Hash(ulong a, ulong b, ulong c) => Mix(Key(a, b) + (c + 1) * Gamma);

    /// <summary>The SplitMix64 output function (Steele, Lea, Flood 2014).</summary>
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>
    /// ln(u) for u in (0, 1] from basic operations only (public so tests can hold it against Math.Log): u = m·2^e with m in [√½, √2), ln m = 2·atanh(s),
    /// s = (m−1)/(m+1), |s| ≤ 0.172, by its odd series to s²¹ (truncation below 1e-17).
    /// </summary>
    public static double Log(double u)
    {
        ulong bits = BitConverter.DoubleToUInt64Bits(u);
        int exponent = (int)((bits >> 52) & 0x7FF) - 1023; // u ≥ 2⁻⁵³ here, never subnormal
        double m = BitConverter.UInt64BitsToDouble((bits & 0x000F_FFFF_FFFF_FFFFUL) | 0x3FF0_0000_0000_0000UL); // [1, 2)
        if (m > 1.4142135623730951)
        {
            m *= 0.5;
            exponent++;
        }
        double s = (m - 1) / (m + 1);
        double s2 = s * s;
        // Horner over 1/(2k+1), k = 10..0.
        double series = 1.0 / 21;
        for (int k = 9; k >= 0; k--) series = series * s2 + 1.0 / (2 * k + 1);
        const double Ln2 = 0.69314718055994530942;
        return exponent * Ln2 + 2 * s * series;
    }

    /// <summary>
    /// sin and cos of φ = f·π/2 for f in [0, 1): reduced to |ψ| ≤ π/4 around 0 or π/2, then Taylor series to ψ²¹
    /// (truncation below 1e-18 at π/4).
    /// </summary>
    public static void SinCosQuarterTurn(double fraction, out double sin, out double cos)
    {
        bool upperHalf = fraction >= 0.5;
        // ψ = (f − 0 or 1)·π/2 with f − 1 exact (Sterbenz), so ψ ∈ [0, π/4) or [−π/4, 0).
        double psi = (upperHalf ? fraction - 1.0 : fraction) * 1.5707963267948966;
        double p2 = psi * psi;
        double sinSeries = 1, cosSeries = 1;
        // sin ψ = ψ·Σ (−ψ²)^k/(2k+1)!, cos ψ = Σ (−ψ²)^k/(2k)!, evaluated by Horner from k = 10.
        for (int k = 10; k >= 1; k--)
        {
            sinSeries = 1 - p2 / ((2 * k) * (2 * k + 1)) * sinSeries;
            cosSeries = 1 - p2 / ((2 * k - 1) * (2 * k)) * cosSeries;
        }
        double sinPsi = psi * sinSeries, cosPsi = cosSeries;
        if (upperHalf)
        {
            // φ = ψ + π/2.
            sin = cosPsi;
            cos = -sinPsi;
        }
        else
        {
            sin = sinPsi;
            cos = cosPsi;
        }
    }
}
