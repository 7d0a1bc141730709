using NUnit.Framework;
using UltraGen.Generation.Sampling;

namespace UltraGen.Tests.Generation;

public class GaussianNoiseTests
{
    [Test]
    public void Moments_and_tails_are_standard_normal()
    {
        const int N = 1 << 20;
        var values = GaussianNoise.Sample(N, seed: 1234, stream: 5);
        double sum = 0, sumSquares = 0, sumCubes = 0, sumFourth = 0;
        int belowOne = 0, beyondThree = 0;
        foreach (float value in values)
        {
            double x = value;
            sum += x;
            sumSquares += x * x;
            sumCubes += x * x * x;
            sumFourth += x * x * x * x;
            if (x < 1) belowOne++;
            if (Math.Abs(x) > 3) beyondThree++;
        }
        double mean = sum / N, variance = sumSquares / N - mean * mean;
        // Bounds are 5 standard errors: mean σ/√N, variance √(2/N), skewness √(6/N), kurtosis √(24/N).
        Assert.That(mean, Is.EqualTo(0).Within(5 / Math.Sqrt(N)));
        Assert.That(variance, Is.EqualTo(1).Within(5 * Math.Sqrt(2.0 / N)));
        Assert.That(sumCubes / N, Is.EqualTo(0).Within(5 * Math.Sqrt(6.0 / N)));
        Assert.That(sumFourth / N, Is.EqualTo(3).Within(5 * Math.Sqrt(96.0 / N)));
        // Φ(1) = 0.841345; P(|x| > 3) = 0.0026998.
        Assert.That(belowOne / (double)N, Is.EqualTo(0.841345).Within(5 * Math.Sqrt(0.841345 * 0.158655 / N)));
        Assert.That(beyondThree / (double)N, Is.EqualTo(0.0026998).Within(5 * Math.Sqrt(0.0027 / N)));
    }

    [Test]
    public void Same_seed_and_stream_give_the_same_bits_and_the_values_are_pinned()
    {
        var a = GaussianNoise.Sample(4097, seed: 42, stream: 3);
        var b = GaussianNoise.Sample(4097, seed: 42, stream: 3);
        Assert.That(a.Select(BitConverter.SingleToUInt32Bits), Is.EqualTo(b.Select(BitConverter.SingleToUInt32Bits)));
        // Pinned bit patterns: any change of the generator, or a platform that computes differently, fails here.
        var first = GaussianNoise.Sample(6, seed: 0, stream: 0).Select(BitConverter.SingleToUInt32Bits).ToArray();
        Assert.That(first, Is.EqualTo(PinnedSeed0Stream0));
    }

    /// <summary>
    /// Seed 0, stream 0, elements 0..5 (−1.2695078, 0.26729714, 1.1180695, 1.3648850, −0.26731630, 0.051611062),
    /// computed by an independent Python re-implementation of the same construction with libm's log/sin/cos.
    /// </summary>
    private static readonly uint[] PinnedSeed0Stream0 = [3215097659u, 1049156396u, 1066343655u, 1068414093u, 3196640687u, 1028875807u];

    [Test]
    public void Streams_and_seeds_are_independent()
    {
        var s0 = GaussianNoise.Sample(10000, seed: 9, stream: 0);
        var s1 = GaussianNoise.Sample(10000, seed: 9, stream: 1);
        var t0 = GaussianNoise.Sample(10000, seed: 10, stream: 0);
        // Correlation of independent normals has standard error 1/√N = 0.01.
        Assert.That(Correlation(s0, s1), Is.EqualTo(0).Within(0.05));
        Assert.That(Correlation(s0, t0), Is.EqualTo(0).Within(0.05));
        // Neighbouring elements of one stream are independent too (catches a pair whose halves are related).
        Assert.That(Correlation(s0.AsSpan(0, 9999).ToArray(), s0.AsSpan(1).ToArray()), Is.EqualTo(0).Within(0.05));
        Assert.That(s0.Zip(s1).Count(p => p.First == p.Second), Is.LessThan(5));
    }

    [Test]
    public void Chunked_fill_with_offsets_equals_one_fill()
    {
        var whole = GaussianNoise.Sample(1001, seed: 77, stream: 2);
        var chunked = new float[1001];
        int[] cuts = [0, 1, 4, 7, 500, 501, 1001];
        for (int c = 0; c + 1 < cuts.Length; c++)
            GaussianNoise.Fill(chunked.AsSpan(cuts[c], cuts[c + 1] - cuts[c]), 77, 2, offset: cuts[c]);
        Assert.That(chunked, Is.EqualTo(whole));
    }

    [Test]
    public void Basic_operation_log_and_sincos_match_the_runtime_to_1e_14()
    {
        var values = GaussianNoise.Sample(20000, seed: 5, stream: 0);
        for (int i = 0; i < values.Length; i += 2)
        {
            // Arguments spread over the whole (0, 1] range including tiny ones.
            double u = Math.Pow(Math.Abs(values[i]) / 5 % 1 + 1e-9, 1 + Math.Abs(values[i + 1]) * 10);
            u = Math.Clamp(u, 1.0 / (1UL << 53), 1.0);
            Assert.That(GaussianNoise.Log(u), Is.EqualTo(Math.Log(u)).Within(1e-14 * Math.Max(1, Math.Abs(Math.Log(u)))), $"log({u:R})");
            double f = Math.Abs(values[i]) / 4 % 1;
            GaussianNoise.SinCosQuarterTurn(f, out double sin, out double cos);
            Assert.That(sin, Is.EqualTo(Math.Sin(f * Math.PI / 2)).Within(1e-15), $"sin at f = {f:R}");
            Assert.That(cos, Is.EqualTo(Math.Cos(f * Math.PI / 2)).Within(1e-15), $"cos at f = {f:R}");
        }
        Assert.That(GaussianNoise.Log(1.0), Is.EqualTo(0.0));
        Assert.That(GaussianNoise.Log(1.0 / (1UL << 53)), Is.EqualTo(-53 * Math.Log(2)).Within(1e-13));
    }

    private static double Correlation(float[] a, float[] b)
    {
        double ma = a.Average(x => (double)x), mb = b.Average(x => (double)x);
        double sab = 0, saa = 0, sbb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            sab += (a[i] - ma) * (b[i] - mb);
            saa += (a[i] - ma) * (a[i] - ma);
            sbb += (b[i] - mb) * (b[i] - mb);
        }
        return sab / Math.Sqrt(saa * sbb);
    }
}
