using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Generation.Sampling;

namespace UltraGen.Tests.Generation;

public class FlowMatchSchedulerTests
{
    /// <summary>The 30 timesteps listed in spec §2.6 (shift 5), rounded to 0.01 there.</summary>
    private static readonly double[] SpecTimesteps30 =
    [
        1000, 993.15, 985.92, 978.26, 970.15, 961.54, 952.38, 942.62, 932.2, 921.05, 909.09, 896.23, 882.35,
        867.35, 851.06, 833.33, 813.95, 792.68, 769.23, 743.24, 714.29, 681.82, 645.16, 603.45, 555.56, 500,
        434.78, 357.14, 263.16, 147.06,
    ];

    [Test]
    public void Thirty_steps_shift_5_match_the_spec_table()
    {
        var scheduler = new FlowMatchScheduler();
        scheduler.SetTimesteps(30, shift: 5);
        Assert.That(scheduler.StepCount, Is.EqualTo(30));
        Assert.That(scheduler.Timesteps, Has.Count.EqualTo(30));
        for (int j = 0; j < 30; j++)
            Assert.That(scheduler.Timesteps[j], Is.EqualTo(SpecTimesteps30[j]).Within(0.01), $"t_{j}");
        Assert.That(scheduler.Sigmas, Has.Count.EqualTo(31));
        Assert.That(scheduler.Sigmas[30], Is.EqualTo(0.0), "σ'_S = 0 appended");
        for (int j = 0; j < 30; j++)
            Assert.That(scheduler.Sigmas[j] * 1000, Is.EqualTo(scheduler.Timesteps[j]).Within(1e-9));
    }

    [Test]
    public void Shift_one_is_the_plain_linspace_and_shift_is_remembered()
    {
        var scheduler = new FlowMatchScheduler(shift: 3);
        scheduler.SetTimesteps(4, shift: 1);
        Assert.That(scheduler.Sigmas, Is.EqualTo(new[] { 1.0, 0.75, 0.5, 0.25, 0.0 }).Within(1e-15));
        Assert.That(scheduler.Shift, Is.EqualTo(1));
        scheduler.SetTimesteps(2);
        Assert.That(scheduler.Sigmas, Is.EqualTo(new[] { 1.0, 0.5, 0.0 }).Within(1e-15), "shift 1 kept from the previous call");
    }

    [Test]
    public void Euler_step_moves_by_velocity_times_sigma_difference()
    {
        var scheduler = new FlowMatchScheduler();
        scheduler.SetTimesteps(30, 5);
        float[] x = [1.5f, -2.25f, 0.75f, 3f, -1f, 0.5f, 2f, -0.125f, 1.25f, -3.5f, 0.875f];
        float[] v = [0.5f, 1f, -2f, 0.25f, -1.5f, 3f, -0.75f, 1.75f, -0.5f, 2.5f, -1.25f];
        var before = (float[])x.Clone();
        scheduler.EulerStep(x, v, 28);
        // σ'_29 − σ'_28 = 0.14706 − 0.26316 (from the table's t / 1000).
        double dSigma = scheduler.Sigmas[29] - scheduler.Sigmas[28];
        Assert.That(dSigma, Is.EqualTo(-0.1161).Within(1e-4));
        for (int i = 0; i < x.Length; i++)
            Assert.That(x[i], Is.EqualTo(before[i] + v[i] * dSigma).Within(1e-6), $"element {i}");
        scheduler.EulerStep(x, v, 29); // last step goes to σ' = 0
        for (int i = 0; i < x.Length; i++)
            Assert.That(x[i], Is.EqualTo(before[i] - v[i] * scheduler.Sigmas[28]).Within(1e-5), $"element {i} after last step");
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.EulerStep(x, v, 30));
        Assert.Throws<ShapeMismatchException>(() => scheduler.EulerStep(x, v.AsSpan(1), 0));
    }

    [Test]
    public void Sampling_the_exact_velocity_lands_on_the_data()
    {
        // For x_σ = (1−σ)x0 + σε the exact velocity is ε − x0 at every σ; Euler is exact on a straight path, so the
        // whole 30-step loop must carry pure noise to x0 (only float rounding remains).
        var x0 = GaussianNoise.Sample(1003, seed: 11, stream: 1);
        var noise = GaussianNoise.Sample(1003, seed: 11, stream: 2);
        var v = new float[x0.Length];
        FlowMatchScheduler.VelocityTarget(x0, noise, v);
        var scheduler = new FlowMatchScheduler();
        scheduler.SetTimesteps(30);
        var x = (float[])noise.Clone();
        for (int j = 0; j < scheduler.StepCount; j++) scheduler.EulerStep(x, v, j);
        for (int i = 0; i < x.Length; i++) Assert.That(x[i], Is.EqualTo(x0[i]).Within(2e-5), $"element {i}");
    }

    [Test]
    public void Guidance_is_negative_plus_cfg_times_difference()
    {
        float[] pos = [1f, 2f, -3f, 0.5f, 4f, -1.5f, 2.5f, 1.25f, -0.75f];
        float[] neg = [0.5f, 2.5f, -1f, 1.5f, -2f, 0.25f, 2f, -1.25f, 0.5f];
        var result = new float[pos.Length];
        FlowMatchScheduler.Guidance(pos, neg, 5f, result);
        float[] expected = [3f, 0f, -11f, -3.5f, 28f, -8.5f, 4.5f, 11.25f, -5.75f];
        Assert.That(result, Is.EqualTo(expected).Within(1e-6));
        FlowMatchScheduler.Guidance(pos, neg, 1f, neg); // aliasing the destination; cfg 1 is the positive branch
        Assert.That(neg, Is.EqualTo(pos).Within(1e-6));
    }

    [Test]
    public void Training_schedule_has_the_bell_weight_with_min_zero_and_mean_one()
    {
        var schedule = FlowMatchScheduler.TrainingTimesteps(1000, shift: 5);
        Assert.That(schedule.Count, Is.EqualTo(1000));
        Assert.That(schedule.Timesteps[0], Is.EqualTo(1000).Within(1e-9));
        Assert.That(schedule.Timesteps[999], Is.EqualTo(4.98008).Within(1e-5)); // 1000·5·0.001/(1+4·0.001)
        Assert.That(schedule.Timesteps[500], Is.EqualTo(833.3333).Within(1e-4)); // σ = 0.5 → 5/6
        // Expected values from an independent float64 evaluation of the spec formula over the shifted t_k.
        Assert.That(schedule.Weights[0], Is.EqualTo(0.0).Within(1e-12), "min (at t = 1000) is shifted to 0");
        Assert.That(schedule.Weights[1], Is.EqualTo(0.0012813308360750829).Within(1e-12));
        Assert.That(schedule.Weights[833], Is.EqualTo(2.076400284720149).Within(1e-9), "peak near t = 500.6");
        Assert.That(schedule.Weights[999], Is.EqualTo(0.0318790686636461).Within(1e-12));
        Assert.That(schedule.Weights.Average(), Is.EqualTo(1.0).Within(1e-12));
        Assert.That(schedule.Weights.Min(), Is.EqualTo(0.0).Within(1e-12));
        Assert.That(schedule.Weights.Max(), Is.EqualTo(schedule.Weights[833]));
    }

    [Test]
    public void Training_index_is_a_uniform_deterministic_function_of_seed_and_step()
    {
        var schedule = FlowMatchScheduler.TrainingTimesteps();
        var counts = new int[10];
        for (long step = 0; step < 20000; step++)
        {
            int index = schedule.SampleIndex(7, step);
            Assert.That(index, Is.EqualTo(schedule.SampleIndex(7, step)));
            counts[index / 100]++;
        }
        // 2000 expected per decile; binomial σ ≈ 42, allow 5σ.
        foreach (int count in counts) Assert.That(count, Is.InRange(1790, 2210));
        Assert.That(Enumerable.Range(0, 50).Count(s => schedule.SampleIndex(7, s) != schedule.SampleIndex(8, s)), Is.GreaterThan(40));
    }

    [Test]
    public void Noisy_input_interpolates_and_target_is_its_sigma_derivative()
    {
        var x0 = GaussianNoise.Sample(37, seed: 3, stream: 0);
        var noise = GaussianNoise.Sample(37, seed: 3, stream: 1);
        var xt = new float[37];
        FlowMatchScheduler.NoisyInput(x0, noise, 0.3, xt);
        for (int i = 0; i < xt.Length; i++) Assert.That(xt[i], Is.EqualTo(0.7 * x0[i] + 0.3 * noise[i]).Within(1e-6));
        FlowMatchScheduler.NoisyInput(x0, noise, 1.0, xt);
        Assert.That(xt, Is.EqualTo(noise));
        var target = new float[37];
        FlowMatchScheduler.VelocityTarget(x0, noise, target);
        var plus = new float[37];
        var minus = new float[37];
        FlowMatchScheduler.NoisyInput(x0, noise, 0.625, plus);
        FlowMatchScheduler.NoisyInput(x0, noise, 0.375, minus);
        for (int i = 0; i < target.Length; i++)
            Assert.That(target[i], Is.EqualTo((plus[i] - minus[i]) / 0.25).Within(1e-5), $"element {i}");
    }
}
