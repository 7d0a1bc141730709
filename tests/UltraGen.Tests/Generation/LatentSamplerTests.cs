using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Core.Safetensors;
using UltraGen.Cpu;
using UltraGen.Generation.Latent;
using UltraGen.Generation.Sampling;
using UltraGen.Model;
using UltraGen.Model.Dit;

namespace UltraGen.Tests.Generation;

/// <summary>
/// The real-model (latent-space) sampler: the latent shape rules of spec §1.1, and <see cref="LatentSampler"/> against an
/// independent Euler loop written out here from spec §2.6 that calls the DiT once per prompt (two B = 1 passes, as the
/// reference pipeline does) on a tiny Wan-named DiT.
/// </summary>
[TestFixture]
[NonParallelizable]
public class LatentSamplerTests
{
    /// <summary>Tiny DiT with Wan's 16 latent channels; blocks 1 (odd) and 2 (even) decomposed.</summary>
    internal static ModelConfig TinyWan => ModelConfig.Tiny;

    [TestCase(81, 1088, 1920, 21, 136, 240, 68, 120)]
    [TestCase(81, 1080, 1920, 21, 136, 240, 68, 120)]
    [TestCase(81, 2160, 3840, 21, 270, 480, 135, 240)]
    [TestCase(81, 480, 832, 21, 60, 104, 30, 52)]
    [TestCase(1, 64, 96, 1, 8, 12, 4, 6)]
    public void Latent_and_token_grid_follow_spec_1_1(int frames, int height, int width, int t, int hl, int wl, int th, int tw)
    {
        var geometry = LatentGeometry.FromPixels(frames, height, width);
        Assert.That(geometry.LatentShape, Is.EqualTo(new[] { 16, t, hl, wl }));
        Assert.That(geometry.TokenGrid(new PatchSize(1, 2, 2)), Is.EqualTo(new Grid3(t, th, tw)));
        Assert.That(geometry.Height % 16 + geometry.Width % 16, Is.Zero);
        Assert.That(geometry.WasRounded, Is.EqualTo(height % 16 != 0 || width % 16 != 0));
    }

    [TestCase(80, 77, 81)]
    [TestCase(82, 81, 85)]
    [TestCase(2, 1, 5)]
    [TestCase(4, 1, 5)]
    public void Frames_not_4k_plus_1_name_the_two_nearest_valid_counts(int frames, int below, int above)
    {
        var error = Assert.Throws<ShapeMismatchException>(() => LatentGeometry.FromPixels(frames, 64, 64))!;
        Assert.That(error.Message, Does.Contain($"use {below} or {above}"));
    }

    private static Tensor RandomContext(ModelConfig config, int seed)
    {
        var random = new Random(seed);
        var context = Tensor.Host(DType.F32, config.TextLen, config.TextDim);
        var values = context.HostSpan<float>();
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        values[((config.TextLen - 2) * config.TextDim)..].Clear();    // padding rows, as umT5's output has
        return context;
    }

    [TestCase(5.0)]
    [TestCase(1.0)]
    public void Sampler_equals_an_independent_euler_loop_over_the_dit(double cfg)
    {
        var config = TinyWan;
        using var backend = new CpuBackend();
        using var weights = ModelWeights.Random(config, seed: 17);
        using var dit = new Dit(config, backend, weights);
        using var positive = RandomContext(config, 1);
        using var negative = RandomContext(config, 2);
        var geometry = LatentGeometry.FromPixels(5, 64, 96);
        const int steps = 2;
        const double shift = 5;
        const ulong seed = 9;

        var sampled = LatentSampler.Sample(dit, new LatentRequest
        {
            Context = positive, NegativeContext = negative, Geometry = geometry, Seed = seed, Steps = steps, Cfg = cfg, Shift = shift,
        });

        // Spec §2.6 written out: σ_j = 1 − j/S, σ'_j = shift·σ_j / (1 + (shift−1)·σ_j), t_j = 1000·σ'_j, σ'_S = 0;
        // v = v_neg + cfg·(v_pos − v_neg); x ← x + v·(σ'_{j+1} − σ'_j).
        double Shifted(int j) => j == steps ? 0 : shift * (1 - (double)j / steps) / (1 + (shift - 1) * (1 - (double)j / steps));
        int size = (int)geometry.LatentElementCount;
        var x = GaussianNoise.Sample(size, seed);
        float[] Velocity(Tensor context, double t)
        {
            using var latent = Tensor.Host(DType.F32, [1, .. geometry.LatentShape]);
            x.CopyTo(latent.HostSpan<float>());
            using var timestep = Tensor.Host(DType.F32, 1);
            timestep.HostSpan<float>()[0] = (float)t;
            using var batchContext = context.Reshape(1, config.TextLen, config.TextDim);
            using var v = dit.Forward(latent, timestep, batchContext);
            return v.HostSpan<float>().ToArray();
        }
        for (int j = 0; j < steps; j++)
        {
            double t = 1000 * Shifted(j);
            var vPos = Velocity(positive, t);
            var vNeg = cfg == 1 ? vPos : Velocity(negative, t);
            double dt = Shifted(j + 1) - Shifted(j);
            for (int i = 0; i < size; i++) x[i] += (float)((vNeg[i] + cfg * (vPos[i] - vNeg[i])) * dt);
        }

        double difference = 0, norm = 0;
        for (int i = 0; i < size; i++)
        {
            difference += (sampled[i] - (double)x[i]) * (sampled[i] - (double)x[i]);
            norm += (double)x[i] * x[i];
        }
        double relative = Math.Sqrt(difference / norm);
        TestContext.Out.WriteLine($"relative difference {relative:E2}");
        // Batch-2 and batch-1 passes run the same f32 kernels; only the guidance and Euler roundings differ (f32 vs double here).
        Assert.That(relative, Is.LessThan(1e-5));
        Assert.That(sampled, Has.All.Matches<float>(float.IsFinite));
        var noise = GaussianNoise.Sample(size, seed);
        Assert.That(sampled, Is.Not.EqualTo(noise), "the DiT moved the latent");
    }

    [Test]
    public void Guidance_without_negative_embeddings_is_refused()
    {
        var config = TinyWan;
        using var backend = new CpuBackend();
        using var weights = ModelWeights.Random(config, seed: 3);
        using var dit = new Dit(config, backend, weights);
        using var positive = RandomContext(config, 1);
        var error = Assert.Throws<OpParameterException>(() => LatentSampler.Sample(dit, new LatentRequest
        {
            Context = positive, Geometry = LatentGeometry.FromPixels(1, 64, 64), Steps = 1, Cfg = 5,
        }))!;
        Assert.That(error.Message, Does.Contain("negative"));
    }

    [Test]
    public void Dit_streamed_from_a_bf16_file_equals_the_dit_of_the_loaded_weights()
    {
        var config = TinyWan;
        string path = Path.Combine(Path.GetTempPath(), $"ultragen-bf16-{Guid.NewGuid():N}.safetensors");
        try
        {
            using (var random = ModelWeights.Random(config, seed: 23)) random.Save(path, new WeightsSaveOptions { Storage = DType.BF16 });
            using var backend = new CpuBackend();
            using var file = SafetensorsFile.Open(path);
            using var streamed = Dit.Load(file, config, backend);
            using var loaded = ModelWeights.Load(path, config);
            using var reference = new Dit(config, backend, loaded);
            using var latent = Tensor.Host(DType.F32, 1, 16, 1, 8, 8);
            using var timestep = Tensor.Host(DType.F32, 1);
            using var context = Tensor.Host(DType.F32, 1, config.TextLen, config.TextDim);
            var rng = new Random(4);
            foreach (var tensor in new[] { latent, context })
                foreach (ref float value in tensor.HostSpan<float>()) value = (float)rng.NextDouble();
            timestep.HostSpan<float>()[0] = 500;
            using var a = streamed.Forward(latent, timestep, context);
            using var b = reference.Forward(latent, timestep, context);
            Assert.That(a.HostSpan<float>().ToArray(), Is.EqualTo(b.HostSpan<float>().ToArray()));

            var wrong = Assert.Throws<WeightsMismatchException>(() => Dit.Load(file, config with { Layers = 5 }, backend))!;
            Assert.That(wrong.Message, Does.Contain("blocks.4"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
