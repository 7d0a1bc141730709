using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Generation.Data;
using UltraGen.Generation.Pipeline;
using UltraGen.Generation.Text;
using UltraGen.Model;
using UltraGen.Ops.Backends;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Generation;

/// <summary>
/// The text-to-video pipeline on a tiny pixel-space model: the model file, base → UltraGen conversion, the sampler's
/// determinism and the training task's gradients (against finite differences of its own loss).
/// </summary>
[TestFixture]
[NonParallelizable]
public class PipelineTests
{
    /// <summary>Tiny DiT in pixel space: 3 channels, 12 text tokens (prompts have 9 words), blocks 0 and 3 full.</summary>
    internal static ModelConfig TinyPixel { get; } = ModelConfig.Tiny with { InChannels = 3, OutChannels = 3, TextLen = 12, TextDim = 16 };

    internal static readonly VideoFormat TinyFormat = new(2, 16, 16);

    private string _directory = "";

    [SetUp]
    public void SetUp() => _directory = Directory.CreateTempSubdirectory("ultragen-pipeline-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_directory, recursive: true);

    private static IBackend Backend(string name) => BackendRegistry.Get(name).Probe().Backend
        ?? throw new InconclusiveException($"backend {name} unavailable");

    /// <summary>A random model whose head is not zero (a zero head makes every velocity 0 and every test trivial).</summary>
    internal static VideoModel RandomModel(long seed, ModelConfig? config = null)
    {
        var model = VideoModel.CreateRandom(config ?? TinyPixel, TinyFormat, seed);
        var random = new Random((int)seed);
        foreach (var name in new[] { "head.head.weight", "head.head.bias" })
            foreach (ref float value in model.DitWeights[name].HostSpan<float>()) value = (float)(random.NextDouble() - 0.5) * 0.2f;
        return model;
    }

    [Test]
    public void Model_file_round_trips_bit_for_bit()
    {
        using var model = RandomModel(3);
        model.Notes = "made by a test";
        string path = Path.Combine(_directory, "m.safetensors");
        model.Save(path);
        using var loaded = VideoModel.Load(path);
        Assert.That(loaded.Config, Is.EqualTo(model.Config));
        Assert.That(loaded.Format, Is.EqualTo(model.Format));
        Assert.That(loaded.Notes, Is.EqualTo("made by a test"));
        Assert.That(loaded.Tokenizer.Vocabulary, Is.EqualTo(model.Tokenizer.Vocabulary));
        var expected = model.AllWeights.ToDictionary(kv => kv.Key, kv => kv.Value);
        var actual = loaded.AllWeights.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.That(actual.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (name, tensor) in expected)
            Assert.That(actual[name].HostSpan<float>().ToArray(), Is.EqualTo(tensor.HostSpan<float>().ToArray()), name);
    }

    [Test]
    public void Broken_model_files_name_every_problem()
    {
        using var model = RandomModel(4);
        string path = Path.Combine(_directory, "m.safetensors");
        model.Save(path);
        using (var file = SafetensorsFile.Open(path))
        {
            var entries = file.Names.Where(n => n != "head.head.bias").Select(n => new KeyValuePair<string, Tensor>(n, file.ReadTensor(n))).ToList();
            using var extra = Tensor.Host(DType.F32, 2);
            extra.HostSpan<float>().Fill(1);
            entries.Add(new("stray.weight", extra));
            SafetensorsWriter.Write(Path.Combine(_directory, "broken.safetensors"), entries, file.Metadata);
            foreach (var entry in entries.Where(e => e.Key != "stray.weight")) entry.Value.Dispose();
        }
        var error = Assert.Throws<VideoModelFormatException>(() => VideoModel.Load(Path.Combine(_directory, "broken.safetensors")))!;
        Assert.That(error.Message, Does.Contain("missing 'head.head.bias'").And.Contain("unexpected 'stray.weight'"));

        using (var weights = ModelWeights.Random(ModelConfig.Tiny, 1)) weights.Save(Path.Combine(_directory, "plain.safetensors"));
        var plain = Assert.Throws<VideoModelFormatException>(() => VideoModel.Load(Path.Combine(_directory, "plain.safetensors")))!;
        Assert.That(plain.Message, Does.Contain("not a video model"));
        Assert.Throws<VideoModelFormatException>(() => VideoModel.Load(Path.Combine(_directory, "absent.safetensors")));
    }

    [Test]
    public void Base_to_ultragen_keeps_every_base_weight_and_starts_lora_as_a_no_op()
    {
        using var baseModel = RandomModel(5, TinyPixel.WithAllFull());
        var high = new VideoFormat(2, 32, 32);
        using var ultragen = baseModel.WithConfig(TinyPixel.WithAllDecomposed(), high, initSeed: 9);
        Assert.That(ultragen.Format, Is.EqualTo(high));
        foreach (var (name, tensor) in baseModel.DitWeights)
            Assert.That(ultragen.DitWeights[name].HostSpan<float>().ToArray(), Is.EqualTo(tensor.HostSpan<float>().ToArray()), name);
        var added = ultragen.DitWeights.Keys.Except(baseModel.DitWeights.Keys).ToList();
        Assert.That(added, Has.Count.EqualTo(ParameterCatalog.List(ultragen.Config).Count(s => s.IsUltraGen)));
        foreach (var name in added.Where(n => n.EndsWith("lora_B.weight", StringComparison.Ordinal)))
            Assert.That(ultragen.DitWeights[name].HostSpan<float>().ToArray(), Is.All.EqualTo(0f), name);
        Assert.That(ultragen.DitWeights["blocks.1.self_attn.downsample_conv.weight"].HostSpan<float>()[0], Is.EqualTo(1f / 16), "§1.7: average-pooling init");
    }

    [Test]
    public void Coordinate_channels_follow_the_video_and_widening_keeps_the_model_exact()
    {
        using var plain = RandomModel(12);
        using var widened = plain.WithConfig(plain.Config with { InChannels = 6 }, plain.Format, initSeed: 1);
        Assert.That(widened.CoordinateChannels, Is.EqualTo(3));
        var format = new VideoFormat(2, 4, 6);
        var videos = Enumerable.Range(0, 2 * (int)format.ElementCount).Select(i => (float)Math.Sin(i)).ToArray();
        var input = new float[2 * 2 * (int)format.ElementCount];
        widened.AppendCoordinates(videos, 2, format, input);
        int size = (int)format.ElementCount, plane = 24, framePlanes = 48;
        var second = input.AsSpan(2 * size, 2 * size);
        Assert.That(second[..size].ToArray(), Is.EqualTo(videos.AsSpan(size, size).ToArray()), "sample 1's video comes first");
        // frame 1, row 3, column 5: x = (2·5+1)/6 − 1, y = (2·3+1)/4 − 1, t = (2·1+1)/2 − 1.
        int offset = 1 * plane + 3 * 6 + 5;
        Assert.That(second[size + offset], Is.EqualTo(11f / 6 - 1).Within(1e-6));
        Assert.That(second[size + framePlanes + offset], Is.EqualTo(0.75f).Within(1e-6));
        Assert.That(second[size + 2 * framePlanes + offset], Is.EqualTo(0.5f).Within(1e-6));

        // Zero weights on the new channels: the widened model's velocity equals the plain model's.
        using var backend = Backend("cpu");
        using var a = new VideoSampler(plain, backend);
        using var b = new VideoSampler(widened, backend);
        var request = new SampleRequest { Prompt = "a cyan circle moving down on a gray background", Steps = 2, Seed = 4 };
        Assert.That(b.Sample(request), Is.EqualTo(a.Sample(request)).Within(1e-5));
        Assert.Throws<ModelConfigException>(() => plain.WithConfig(plain.Config with { InChannels = 5 }, plain.Format, 1));

        // Random widening: the new channels get weights of the existing channels' RMS (and the old ones are kept).
        using var random = plain.WithConfig(plain.Config with { InChannels = 6 }, plain.Format, initSeed: 1, randomNewInputChannels: true);
        var oldWeights = plain.DitWeights["patch_embedding.weight"].HostSpan<float>();
        var newWeights = random.DitWeights["patch_embedding.weight"].HostSpan<float>();
        int perOutputOld = 3 * 4, perOutputNew = 6 * 4;
        double oldSquares = 0, newSquares = 0;
        for (int o = 0; o < plain.Config.Dim; o++)
            for (int i = 0; i < perOutputOld; i++)
            {
                Assert.That(newWeights[o * perOutputNew + i], Is.EqualTo(oldWeights[o * perOutputOld + i]));
                oldSquares += oldWeights[o * perOutputOld + i] * oldWeights[o * perOutputOld + i];
                newSquares += newWeights[o * perOutputNew + perOutputOld + i] * newWeights[o * perOutputNew + perOutputOld + i];
            }
        Assert.That(Math.Sqrt(newSquares / oldSquares), Is.EqualTo(1).Within(0.2), "RMS of the new channels ≈ the old channels'");
    }

    [Test]
    public void Sampling_is_deterministic_for_a_seed_and_differs_across_seeds()
    {
        using var model = RandomModel(6);
        using var backend = Backend("cpu");
        using var sampler = new VideoSampler(model, backend);
        var request = new SampleRequest { Prompt = "a red circle moving left on a black background", Steps = 3, Seed = 7 };
        var first = sampler.Sample(request);
        var second = sampler.Sample(request);
        var other = sampler.Sample(request with { Seed = 8 });
        Assert.That(first, Has.Length.EqualTo(TinyFormat.ElementCount));
        Assert.That(first.All(float.IsFinite));
        Assert.That(second, Is.EqualTo(first));
        Assert.That(other, Is.Not.EqualTo(first));
        var unguided = sampler.Sample(request with { Cfg = 1 });
        Assert.That(unguided, Is.Not.EqualTo(first), "guidance changes the result");
        Assert.Throws<TokenizerException>(() => sampler.Sample(request with { Prompt = string.Join(' ', Enumerable.Repeat("red", 20)) }));
        Assert.Throws<OpParameterException>(() => sampler.Sample(request with { Steps = 0 }));
        Assert.Throws<ShapeMismatchException>(() => sampler.Sample(request with { Format = new VideoFormat(2, 15, 16) }));
    }

    [Test]
    public void Sampler_matches_the_euler_loop_written_out_with_the_reference_backend()
    {
        // Two steps by hand on the float64-per-op reference backend: x1 = x0 + v0·(σ1 − σ0), v = v_neg + cfg·(v_pos − v_neg).
        using var model = RandomModel(7);
        using var cpu = Backend("cpu");
        using var reference = Backend("reference");
        var request = new SampleRequest { Prompt = "a blue square moving up on a gray background", Steps = 2, Seed = 3, Cfg = 4 };
        float[] fast;
        using (var sampler = new VideoSampler(model, cpu)) fast = sampler.Sample(request);

        var scheduler = new UltraGen.Generation.Sampling.FlowMatchScheduler(request.Shift);
        scheduler.SetTimesteps(2, request.Shift);
        var x = UltraGen.Generation.Sampling.GaussianNoise.Sample((int)TinyFormat.ElementCount, 3, 0);
        using var dit = new UltraGen.Model.Dit.Dit(model.Config, reference, model.DitWeights);
        for (int j = 0; j < 2; j++)
        {
            var v = new float[x.Length];
            var velocities = new List<float[]>();
            foreach (var prompt in new[] { request.Prompt, "" })
            {
                using var context = model.TextEncoder.Forward(model.Tokenize([prompt]), 1);
                using var latent = Tensor.Host(DType.F32, TinyFormat.Shape(1));
                x.CopyTo(latent.HostSpan<float>());
                using var t = Tensor.Host(DType.F32, 1);
                t.HostSpan<float>()[0] = (float)scheduler.Timesteps[j];
                using var velocity = dit.Forward(latent, t, context);
                velocities.Add(velocity.HostSpan<float>().ToArray());
            }
            for (int i = 0; i < v.Length; i++) v[i] = velocities[1][i] + 4 * (velocities[0][i] - velocities[1][i]);
            double step = scheduler.Sigmas[j + 1] - scheduler.Sigmas[j];
            for (int i = 0; i < x.Length; i++) x[i] += (float)(v[i] * step);
        }
        double difference = 0, norm = 0;
        for (int i = 0; i < x.Length; i++)
        {
            difference += (fast[i] - x[i]) * (fast[i] - x[i]);
            norm += x[i] * x[i];
        }
        Assert.That(Math.Sqrt(difference / norm), OpHarness.Within(1e-5));
    }

    [TestCase(TrainingMode.Full)]
    [TestCase(TrainingMode.Lora)]
    public void Training_gradients_match_finite_differences_of_the_training_loss(TrainingMode mode)
    {
        // The reference backend computes every op in float64 (stored in f32), so central differences of the task's own
        // loss resolve the gradient to ~1e-3 relative with h = 1e-2 on weights of size ~0.1–1.
        using var model = RandomModel(8);
        using var backend = Backend("reference");
        using var task = new VideoTrainingTask(model, backend,
            new VideoTrainingSettings { Format = TinyFormat, BatchSize = 2, Mode = mode, Seed = 5, PromptDropout = 0.25 });
        var names = task.Parameters.Select(p => p.Name).ToList();
        if (mode == TrainingMode.Lora)
        {
            Assert.That(names, Has.None.StartsWith("text_encoder."), "the text encoder is frozen in LoRA mode");
            Assert.That(names.All(n => ParameterCatalog.List(model.Config).Single(s => s.Name == n).IsUltraGen));
        }
        else Assert.That(names, Does.Contain(TextEncoder.TokenEmbeddingName));

        var gradients = task.Parameters.ToDictionary(p => p.Name, p => Tensor.Host(DType.F32, p.Master.ShapeArray));
        try
        {
            const long step = 3;
            double loss = task.ComputeGradients(step, gradients);
            Assert.That(loss, Is.GreaterThan(0).And.LessThan(100));
            var probes = mode == TrainingMode.Full
                ? new[] { ("head.head.bias", 1), ("blocks.0.ffn.0.weight", 17), ("blocks.2.self_attn.q.weight", 5), (TextEncoder.TokenEmbeddingName, model.Tokenizer.IdOf("moving") * TinyPixel.TextDim + 3), ("patch_embedding.weight", 3) }
                : [("blocks.1.self_attn.q_lora_1.lora_A.weight", 7), ("blocks.2.self_attn.alpha_time_projection.1.bias", 2), ("blocks.1.self_attn.upsample_conv.weight", 13)];
            foreach (var (name, index) in probes)
            {
                var master = task.Parameters.Single(p => p.Name == name).Master.HostSpan<float>();
                float saved = master[index];
                const float h = 1e-2f;
                double At(float value)
                {
                    task.Parameters.Single(p => p.Name == name).Master.HostSpan<float>()[index] = value;
                    task.ParametersUpdated();
                    return task.ComputeGradients(step, gradients.ToDictionary(kv => kv.Key, kv => Tensor.Host(DType.F32, kv.Value.ShapeArray)));
                }
                double numeric = (At(saved + h) - At(saved - h)) / (2 * h);
                At(saved);
                double analytic = gradients[name].HostSpan<float>()[index];
                TestContext.Out.WriteLine($"{name}[{index}]: analytic {analytic:E4}, numeric {numeric:E4}");
                Assert.That(analytic, Is.Not.EqualTo(0), $"{name}: a zero gradient would make the comparison vacuous");
                Assert.That(Math.Abs(analytic - numeric), OpHarness.Within(2e-2 * Math.Abs(numeric) + 1e-7), name);
            }
        }
        finally
        {
            foreach (var tensor in gradients.Values) tensor.Dispose();
        }
    }

    [Test]
    public void A_training_step_is_a_function_of_the_weights_and_the_step_number()
    {
        using var model = RandomModel(9);
        using var backend = Backend("cpu");
        using var task = new VideoTrainingTask(model, backend, new VideoTrainingSettings { Format = TinyFormat, BatchSize = 2, Seed = 11 });
        Dictionary<string, Tensor> NewGradients() => task.Parameters.ToDictionary(p => p.Name, p => Tensor.Host(DType.F32, p.Master.ShapeArray));
        var (a, b, c) = (NewGradients(), NewGradients(), NewGradients());
        double first = task.ComputeGradients(4, a), again = task.ComputeGradients(4, b), next = task.ComputeGradients(5, c);
        Assert.That(again, Is.EqualTo(first));
        Assert.That(next, Is.Not.EqualTo(first), "another step draws other data");
        foreach (var (name, gradient) in a)
        {
            Assert.That(b[name].HostSpan<float>().ToArray(), Is.EqualTo(gradient.HostSpan<float>().ToArray()), name);
            Assert.That(gradient.HostSpan<float>().ToArray().All(float.IsFinite), name);
        }
        foreach (var tensor in a.Values.Concat(b.Values).Concat(c.Values)) tensor.Dispose();
    }

    [Test]
    public void A_prompt_subset_restricts_the_training_data_and_rejects_held_out_prompts()
    {
        using var model = RandomModel(9);
        using var backend = Backend("cpu");
        var pool = PromptGrammar.Subset("color=red,shape=square,background=black");
        using var task = new VideoTrainingTask(model, backend, new VideoTrainingSettings { Format = TinyFormat, BatchSize = 2, Seed = 11, Prompts = pool, PromptsFilter = "red squares" });
        var seen = Enumerable.Range(0, 40).Select(i => task.Example(i).Prompt).ToHashSet();
        Assert.That(seen, Is.EquivalentTo(pool));
        Assert.That(task.Describe(), Does.Contain("prompts red squares (4)"));

        var withHeldOut = pool.Append(PromptGrammar.HeldOut[0]).ToArray();
        var error = Assert.Throws<OpParameterException>(() => new VideoTrainingTask(model, backend,
            new VideoTrainingSettings { Format = TinyFormat, Prompts = withHeldOut }))!;
        Assert.That(error.Message, Does.Contain("held-out"));
    }
}
