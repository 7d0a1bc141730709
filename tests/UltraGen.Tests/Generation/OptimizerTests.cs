using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Generation.Sampling;
using UltraGen.Generation.Training;

namespace UltraGen.Tests.Generation;

public class OptimizerTests
{
    [Test]
    public void AdamW_two_steps_match_the_hand_computation()
    {
        // lr 0.1, λ 0.01, β (0.9, 0.999), ε 1e-8. Step 1, element 0 (p 1, g 0.5): p·(1 − 0.001) = 0.999;
        // m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25; p = 0.999 − 0.1·0.5/(0.5 + 1e-8) = 0.899000002.
        // Step 2, element 2 (g 0.25 twice): m = 0.0475, v = 0.0001249375; m̂ = 0.0475/0.19 = 0.25,
        // v̂ = 0.0001249375/0.001999 = 0.0625; p = 1.898000004·0.999 − 0.1·0.25/0.25 = 1.796102008.
        // Elements 0 and 1 of step 2 from the same formulas in float64.
        using var weight = Tensor.FromDoubles(DType.F32, [3], [1.0, -0.5, 2.0]);
        using var gradient = Tensor.Host(DType.F32, 3);
        var gradients = new Dictionary<string, Tensor> { ["w"] = gradient };
        using var adam = new AdamW([("w", weight)], new AdamWSettings(WeightDecay: 0.01));

        gradient.CopyFrom([0.5, -1.0, 0.25]);
        adam.Step(gradients, 0.1);
        Assert.That(weight.ToDoubles(), Is.EqualTo(new[] { 0.899000002, -0.399500001, 1.898000004 }).Within(1e-6));
        Assert.That(adam.FirstMoment("w").ToDoubles(), Is.EqualTo(new[] { 0.05, -0.1, 0.025 }).Within(1e-8));
        Assert.That(adam.SecondMoment("w").ToDoubles(), Is.EqualTo(new[] { 0.00025, 0.001, 0.0000625 }).Within(1e-10));

        gradient.CopyFrom([-0.25, 0.5, 0.25]);
        adam.Step(gradients, 0.1);
        Assert.That(adam.StepCount, Is.EqualTo(2));
        Assert.That(weight.ToDoubles(), Is.EqualTo(new[] { 0.8714672987058463, -0.3724667973699032, 1.796102008 }).Within(1e-6));
    }

    [Test]
    public void AdamW_matches_a_float64_reimplementation_on_random_data()
    {
        const int N = 1003; // vector body plus a scalar tail on every vector width
        var settings = new AdamWSettings(Beta1: 0.85, Beta2: 0.99, Epsilon: 1e-6, WeightDecay: 0.05);
        var initial = GaussianNoise.Sample(N, 21, 0);
        using var weight = Tensor.Host(DType.F32, 17, 59);
        initial.CopyTo(weight.HostSpan<float>());
        using var gradient = Tensor.Host(DType.F32, 17, 59);
        using var adam = new AdamW([("w", weight)], settings);
        double[] p = Array.ConvertAll(initial, x => (double)x), m = new double[N], v = new double[N], mScale = new double[N];
        double[] rates = [1e-3, 3e-3, 1e-2, 2e-3, 5e-4, 1e-3, 1e-3, 4e-3];
        for (int t = 1; t <= rates.Length; t++)
        {
            var g = GaussianNoise.Sample(N, 21, (ulong)t);
            for (int i = 0; i < N; i += 7) g[i] *= 1e-3f; // small gradients stress the ε and √v path
            g.CopyTo(gradient.HostSpan<float>());
            adam.Step(new Dictionary<string, Tensor> { ["w"] = gradient }, rates[t - 1]);
            double lr = rates[t - 1];
            for (int i = 0; i < N; i++)
            {
                p[i] *= 1 - lr * settings.WeightDecay;
                m[i] = settings.Beta1 * m[i] + (1 - settings.Beta1) * g[i];
                mScale[i] = settings.Beta1 * mScale[i] + (1 - settings.Beta1) * Math.Abs(g[i]); // m without cancellation
                v[i] = settings.Beta2 * v[i] + (1 - settings.Beta2) * g[i] * g[i];
                double mHat = m[i] / (1 - Math.Pow(settings.Beta1, t)), vHat = v[i] / (1 - Math.Pow(settings.Beta2, t));
                p[i] -= lr * mHat / (Math.Sqrt(vHat) + settings.Epsilon);
            }
        }
        // Per step f32 adds ~1 ulp of |p| (6e-8·|p|) and ~1e-6 relative of the update (≤ lr·(1+small)); summed over
        // the steps the bound is 1e-6·Σlr + 8·6e-8·|p|, far below a missed bias correction (×6 on step 1).
        var actual = weight.HostSpan<float>();
        double updateBound = 1e-6 * rates.Sum();
        for (int i = 0; i < N; i++)
            Assert.That(actual[i], Is.EqualTo(p[i]).Within(updateBound + 8 * 6e-8 * Math.Abs(p[i])), $"element {i}");
        var mActual = adam.FirstMoment("w").HostSpan<float>();
        // m's rounding error is relative to the magnitude of its terms (it cancels), ~2 ulp per step of mScale.
        for (int i = 0; i < N; i++) Assert.That(mActual[i], Is.EqualTo(m[i]).Within(1e-6 * mScale[i]), $"m of element {i}");
    }

    [Test]
    public void AdamW_vector_body_and_scalar_tail_give_identical_bits()
    {
        const int N = 263;
        var settings = new AdamWSettings();
        var p1 = GaussianNoise.Sample(N, 4, 0);
        var g = GaussianNoise.Sample(N, 4, 1);
        var m1 = GaussianNoise.Sample(N, 4, 2);
        var v1 = Array.ConvertAll(GaussianNoise.Sample(N, 4, 3), x => x * x);
        float[] p2 = (float[])p1.Clone(), m2 = (float[])m1.Clone(), v2 = (float[])v1.Clone();
        AdamW.Update(p1, g, m1, v1, 3, 1e-3, settings);
        for (int i = 0; i < N; i++) // one element at a time never enters the vector loop
            AdamW.Update(p2.AsSpan(i, 1), g.AsSpan(i, 1), m2.AsSpan(i, 1), v2.AsSpan(i, 1), 3, 1e-3, settings);
        Assert.That(p1.Select(BitConverter.SingleToUInt32Bits), Is.EqualTo(p2.Select(BitConverter.SingleToUInt32Bits)));
        Assert.That(v1.Select(BitConverter.SingleToUInt32Bits), Is.EqualTo(v2.Select(BitConverter.SingleToUInt32Bits)));
    }

    [Test]
    public void AdamW_rejects_missing_or_misshapen_gradients()
    {
        using var weight = Tensor.FromDoubles(DType.F32, [2], [1.0, 2.0]);
        using var wrong = Tensor.FromDoubles(DType.F32, [3], [1.0, 2.0, 3.0]);
        using var adam = new AdamW([("w", weight)]);
        Assert.Throws<ArgumentException>(() => adam.Step(new Dictionary<string, Tensor>(), 1e-3));
        Assert.Throws<ShapeMismatchException>(() => adam.Step(new Dictionary<string, Tensor> { ["w"] = wrong }, 1e-3));
        Assert.That(adam.StepCount, Is.EqualTo(0));
        Assert.That(weight.ToDoubles(), Is.EqualTo(new[] { 1.0, 2.0 }));
    }

    [Test]
    public void Global_norm_clipping_scales_only_above_the_limit_and_returns_the_norm_before()
    {
        using var a = Tensor.FromDoubles(DType.F32, [2], [3.0, -4.0]);
        using var b = Tensor.FromDoubles(DType.F32, [1], [12.0]);
        double norm = GradientClipping.ClipByGlobalNorm([a, b], 20);
        Assert.That(norm, Is.EqualTo(13).Within(1e-12));
        Assert.That(a.ToDoubles(), Is.EqualTo(new[] { 3.0, -4.0 }), "below the limit nothing changes");
        norm = GradientClipping.ClipByGlobalNorm([a, b], 6.5);
        Assert.That(norm, Is.EqualTo(13).Within(1e-12));
        double scale = 6.5 / (13 + 1e-6);
        Assert.That(a.ToDoubles(), Is.EqualTo(new[] { 3 * scale, -4 * scale }).Within(1e-6));
        Assert.That(b.ToDoubles()[0], Is.EqualTo(12 * scale).Within(1e-6));
        Assert.That(GradientClipping.GlobalNorm([a, b]), Is.EqualTo(6.5).Within(1e-5));
    }

    [Test]
    public void Sum_of_squares_matches_a_plain_double_loop()
    {
        var values = GaussianNoise.Sample(1001, 8, 0);
        double expected = 0;
        foreach (float x in values) expected += (double)x * x;
        Assert.That(GradientClipping.SumOfSquares(values), Is.EqualTo(expected).Within(1e-12 * expected));
        Assert.That(GradientClipping.SumOfSquares(values.AsSpan(0, 5)), Is.EqualTo(values.Take(5).Sum(x => (double)x * x)).Within(1e-12));
    }

    [Test]
    public void Flow_matching_loss_value_and_gradient()
    {
        // d = (0.5, −1, 0.75): mean d² = 1.8125/3; ×w 2 = 1.2083333; dL/dv̂ = 2·w·d/3 = (2/3, −4/3, 1).
        float[] predicted = [1.5f, -0.5f, 2f];
        float[] target = [1f, 0.5f, 1.25f];
        var gradient = new float[3];
        double loss = FlowMatchingLoss.Compute(predicted, target, 2.0, gradient);
        Assert.That(loss, Is.EqualTo(1.8125 * 2 / 3).Within(1e-12));
        Assert.That(gradient, Is.EqualTo(new[] { 2f / 3, -4f / 3, 1f }).Within(1e-6));
        Assert.That(FlowMatchingLoss.Compute(predicted, target, 2.0), Is.EqualTo(loss));
        Assert.Throws<ShapeMismatchException>(() => FlowMatchingLoss.Compute(predicted, target.AsSpan(1), 1.0));
    }

    [Test]
    public void Flow_matching_loss_gradient_matches_central_differences()
    {
        const int N = 301;
        var predicted = GaussianNoise.Sample(N, 31, 0);
        var target = GaussianNoise.Sample(N, 31, 1);
        var gradient = new float[N];
        const double Weight = 1.37;
        FlowMatchingLoss.Compute(predicted, target, Weight, gradient);
        for (int i = 0; i < N; i += 10)
        {
            float original = predicted[i];
            predicted[i] = original + 1e-2f;
            float up = predicted[i];
            double lossUp = FlowMatchingLoss.Compute(predicted, target, Weight);
            predicted[i] = original - 1e-2f;
            float down = predicted[i];
            double lossDown = FlowMatchingLoss.Compute(predicted, target, Weight);
            predicted[i] = original;
            // The loss is quadratic, so the central difference over the actual float step is exact up to double rounding.
            double numeric = (lossUp - lossDown) / ((double)up - down);
            Assert.That(gradient[i], Is.EqualTo(numeric).Within(1e-6 * Math.Abs(numeric) + 1e-9), $"element {i}");
        }
    }

    [Test]
    public void Learning_rate_warms_up_linearly_then_holds_or_follows_a_cosine()
    {
        var constant = new LearningRateSchedule(1e-3, WarmupSteps: 4);
        Assert.That(constant.At(0, 100), Is.EqualTo(2.5e-4).Within(1e-18));
        Assert.That(constant.At(2, 100), Is.EqualTo(7.5e-4).Within(1e-18));
        Assert.That(constant.At(3, 100), Is.EqualTo(1e-3).Within(1e-18));
        Assert.That(constant.At(99, 100), Is.EqualTo(1e-3).Within(1e-18));
        var cosine = new LearningRateSchedule(1e-3, WarmupSteps: 4, CosineDecay: true, Minimum: 1e-5);
        Assert.That(cosine.At(4, 13), Is.EqualTo(1e-3).Within(1e-15));
        Assert.That(cosine.At(8, 13), Is.EqualTo((1e-3 + 1e-5) / 2).Within(1e-15)); // halfway through 4..12
        Assert.That(cosine.At(12, 13), Is.EqualTo(1e-5).Within(1e-15));
        Assert.That(cosine.At(6, 13), Is.EqualTo(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + Math.Cos(Math.PI / 4))).Within(1e-15));
    }
}
