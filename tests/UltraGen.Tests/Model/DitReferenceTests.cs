using System.Diagnostics;
using NUnit.Framework;
using UltraGen.Model;
using UltraGen.Model.Reference;
using UltraGen.Ops;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Model;

/// <summary>
/// The whole-model float64 reference on the Tiny preset (dim 48, 4 layers: blocks 0 and 3 full, 1 (odd) and 2 (even)
/// decomposed) with a 16×16 latent of 2 frames: token grid 2×8×8, so the ×4 global compression sees a 2×2 grid, the
/// odd block's 5×5 local windows resize 8 → 10 and its 3×3 hierarchical windows resize 4 → 3.
/// </summary>
public class DitReferenceTests
{
    private const long WeightSeed = 20251018;
    // Sixth-order central differences (f(±h), f(±2h), f(±3h)): truncation O(h⁶) lets the step be large enough that the
    // rounding noise of L (a float64 sum of ~10⁴ terms; about 5e-14 seen) divided by h stays far below the smallest
    // gradients probed, those of the gate projection (~3e-5). Fourth order at h = 1e-3 left that noise at a relative
    // 1.1e-6 on seed 1371970620 (over the 1e-6 tolerance: CI failed on it); sixth order at 1e-3 still 1.3e-6 (noise, not
    // truncation), at 4e-3 4.2e-7, at 1e-2 1.0e-7, with every other probed tensor ≤ 1e-8.
    private const double Step = 1e-2;
    private const double Tolerance = 1e-6;
    private const int ProbesPerTensor = 5;

    private static ModelConfig Tiny => ModelConfig.Tiny;

    private sealed record Sample(RefTensor Latent, RefTensor Timestep, RefTensor Context);

    private Dictionary<string, RefTensor> _weights = null!;
    private Sample _sample = null!;
    private RefTensor _dVelocity = null!;
    private DitGradients _gradients = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        using (var weights = ModelWeights.Random(Tiny, WeightSeed)) _weights = DitReference.ToReference(weights);
        var random = new Random(7);
        _sample = NewSample(random, batch: 1);
        _dVelocity = RandomTensor(random, [1, 16, 2, 16, 16], 1.0);
        var clock = Stopwatch.StartNew();
        _gradients = DitReference.Backward(Tiny, _weights, _sample.Latent, _sample.Timestep, _sample.Context, _dVelocity);
        TestContext.Out.WriteLine($"Tiny backward (incl. its forward): {clock.Elapsed.TotalMilliseconds:F0} ms");
    }

    private static Sample NewSample(Random random, int batch)
    {
        var timestep = new RefTensor(batch);
        for (int b = 0; b < batch; b++) timestep.Data[b] = random.NextDouble() * 1000;
        return new Sample(RandomTensor(random, [batch, 16, 2, 16, 16], 1.0), timestep,
            RandomTensor(random, [batch, Tiny.TextLen, Tiny.TextDim], 1.0));
    }

    private static RefTensor RandomTensor(Random random, int[] shape, double bound)
    {
        var tensor = new RefTensor(shape);
        for (int i = 0; i < tensor.Length; i++) tensor.Data[i] = (2 * random.NextDouble() - 1) * bound;
        return tensor;
    }

    private double Loss(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, Sample sample)
    {
        var velocity = DitReference.Forward(config, weights, sample.Latent, sample.Timestep, sample.Context);
        double loss = 0;
        for (int i = 0; i < velocity.Length; i++) loss += _dVelocity.Data[i] * velocity.Data[i];
        return loss;
    }

    /// <summary>Relative error (norm over the probes) of the analytic gradient against sixth-order central differences of L = Σ dv·v.</summary>
    private double GradientError(RefTensor target, RefTensor analytic, Random random, string label)
    {
        var probes = Enumerable.Range(0, target.Length).OrderBy(_ => random.Next()).Take(ProbesPerTensor).ToArray();
        var numeric = new double[probes.Length];
        var exact = new double[probes.Length];
        for (int p = 0; p < probes.Length; p++)
        {
            int index = probes[p];
            double saved = target.Data[index];
            double At(double offset)
            {
                target.Data[index] = saved + offset;
                return Loss(Tiny, _weights, _sample);
            }
            double d1 = At(Step) - At(-Step), d2 = At(2 * Step) - At(-2 * Step), d3 = At(3 * Step) - At(-3 * Step);
            target.Data[index] = saved;
            numeric[p] = (45 * d1 - 9 * d2 + d3) / (60 * Step);
            exact[p] = analytic.Data[index];
        }
        double error = OpHarness.RelativeError(exact, numeric);
        TestContext.Out.WriteLine($"d'{label}' at [{string.Join(", ", probes)}]: analytic [{string.Join(", ", exact.Select(v => v.ToString("E4")))}] rel err {error:E2}");
        Assert.That(exact.Any(v => Math.Abs(v) > 1e-9), Is.True, $"'{label}': every probed gradient is ~0, the check would be vacuous");
        return error;
    }

    private static readonly string[] s_probedParameters =
    [
        "patch_embedding.weight",
        "time_embedding.0.weight",
        "text_embedding.0.weight",
        "blocks.1.modulation",
        "blocks.0.self_attn.q.weight",                              // full block
        "blocks.2.self_attn.q.weight",                              // decomposed block (even)
        "blocks.1.self_attn.k.weight",                              // decomposed block (odd)
        "blocks.1.self_attn.k_lora_2.lora_A.weight",
        "blocks.2.self_attn.v_lora_1.lora_B.weight",
        "blocks.1.self_attn.alpha_time_projection.1.weight",
        "blocks.2.self_attn.alpha_time_embedding2.0.weight",
        "blocks.2.self_attn.downsample_conv.weight",
        "blocks.1.self_attn.upsample_conv_hierachcal.weight",
        "blocks.1.cross_attn.k.weight",
        "blocks.0.norm3.weight",
        "blocks.3.ffn.0.weight",
        "head.modulation",
        "head.head.weight",
    ];

    [Test]
    public void Gradients_match_central_differences_on_the_tiny_model()
    {
        var random = new Random(OpHarness.NewSeed());
        var clock = Stopwatch.StartNew();
        var errors = new Dictionary<string, double>();
        foreach (var name in s_probedParameters)
            errors[name] = GradientError(_weights[name], _gradients.Parameters.Get(name), random, name);
        errors["latent"] = GradientError(_sample.Latent, _gradients.Latent, random, "latent");
        errors["context"] = GradientError(_sample.Context, _gradients.Context, random, "context");
        TestContext.Out.WriteLine($"{errors.Count} tensors × {ProbesPerTensor} probes in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.Multiple(() =>
        {
            foreach (var (name, error) in errors)
                Assert.That(error, OpHarness.Within(Tolerance), $"gradient of '{name}' vs finite differences");
        });
    }

    [Test]
    public void Every_parameter_gets_a_gradient_of_its_shape()
    {
        var catalog = ParameterCatalog.List(Tiny);
        Assert.That(_gradients.Parameters.Keys, Is.EquivalentTo(catalog.Select(s => s.Name)));
        foreach (var spec in catalog)
            Assert.That(_gradients.Parameters[spec.Name].Shape, Is.EqualTo(spec.Shape.ToArray()), spec.Name);
        Assert.That(_gradients.Latent.Shape, Is.EqualTo(_sample.Latent.Shape));
        Assert.That(_gradients.Context.Shape, Is.EqualTo(_sample.Context.Shape));
    }

    [Test]
    public void Velocity_has_the_latent_shape_and_is_finite()
    {
        var random = new Random(3);
        var sample = NewSample(random, batch: 2);
        var velocity = DitReference.Forward(Tiny, _weights, sample.Latent, sample.Timestep, sample.Context);
        Assert.That(velocity.Shape, Is.EqualTo(new[] { 2, 16, 2, 16, 16 }));
        Assert.That(velocity.Data.All(double.IsFinite), Is.True);
        Assert.That(velocity.Data.Max(Math.Abs), Is.GreaterThan(1e-3));
    }

    [Test]
    public void Batch_of_two_equals_two_single_runs()
    {
        var random = new Random(11);
        var pair = NewSample(random, batch: 2);
        var both = DitReference.Forward(Tiny, _weights, pair.Latent, pair.Timestep, pair.Context);
        int perSampleLatent = pair.Latent.Length / 2, perSampleContext = pair.Context.Length / 2;
        for (int b = 0; b < 2; b++)
        {
            var latent = new RefTensor([1, 16, 2, 16, 16], pair.Latent.Data.AsSpan(b * perSampleLatent, perSampleLatent).ToArray());
            var context = new RefTensor([1, Tiny.TextLen, Tiny.TextDim], pair.Context.Data.AsSpan(b * perSampleContext, perSampleContext).ToArray());
            var single = DitReference.Forward(Tiny, _weights, latent, new RefTensor([1], [pair.Timestep.Data[b]]), context);
            var slice = both.Data.AsSpan(b * single.Length, single.Length).ToArray();
            Assert.That(OpHarness.RelativeError(slice, single.Data), OpHarness.Within(1e-13), $"sample {b}");
        }
    }

    [Test]
    public void Lora_mode_filter_keeps_only_trainable_gradients_and_they_match_the_full_ones()
    {
        var trainable = DitReference.LoraTrainable(Tiny);
        var filtered = DitReference.Backward(Tiny, _weights, _sample.Latent, _sample.Timestep, _sample.Context, _dVelocity, trainable);
        var expected = ParameterCatalog.List(Tiny).Where(s => s.TrainableInLora).Select(s => s.Name).ToList();
        Assert.That(expected, Is.Not.Empty);
        Assert.That(filtered.Parameters.Keys, Is.EquivalentTo(expected), "exactly the LoRA-mode trainable parameters");
        Assert.That(filtered.Parameters.Keys.Any(n => n.Contains("lora_B", StringComparison.Ordinal)), Is.True);
        Assert.That(filtered.Parameters.ContainsKey("blocks.1.self_attn.q.weight"), Is.False, "base weights are frozen");
        foreach (var (name, gradient) in filtered.Parameters)
            Assert.That(gradient.Data, Is.EqualTo(_gradients.Parameters[name].Data), name);
        Assert.That(filtered.Latent.Data, Is.EqualTo(_gradients.Latent.Data), "activation gradients still flow through frozen layers");
    }

    [Test]
    public void All_full_plan_is_plain_wan_and_never_reads_ultragen_weights()
    {
        var allFull = Tiny.WithAllFull();
        // The same seed gives the same base tensors (one random stream per name) and no UltraGen tensors.
        Dictionary<string, RefTensor> wan;
        using (var weights = ModelWeights.Random(allFull, WeightSeed)) wan = DitReference.ToReference(weights);
        Assert.That(wan.Keys.Any(ParameterCatalog.IsUltraGenName), Is.False);
        foreach (var (name, tensor) in wan) Assert.That(tensor.Data, Is.EqualTo(_weights[name].Data), name);

        // The Tiny checkpoint with every UltraGen tensor poisoned: an all-full plan must not touch them.
        var poisoned = _weights.ToDictionary(kv => kv.Key, kv => ParameterCatalog.IsUltraGenName(kv.Key) ? Poison(kv.Value) : kv.Value);
        Assert.That(poisoned.Keys.Count(ParameterCatalog.IsUltraGenName), Is.GreaterThan(0));

        var plain = DitReference.Forward(allFull, wan, _sample.Latent, _sample.Timestep, _sample.Context);
        var bypassed = DitReference.Forward(allFull, poisoned, _sample.Latent, _sample.Timestep, _sample.Context);
        Assert.That(plain.Data.All(double.IsFinite), Is.True);
        Assert.That(bypassed.Data, Is.EqualTo(plain.Data), "decomposed-block code is bypassed when every block is full");

        var decomposed = DitReference.Forward(Tiny, _weights, _sample.Latent, _sample.Timestep, _sample.Context);
        Assert.That(OpHarness.RelativeError(decomposed.Data, plain.Data), Is.GreaterThan(1e-3), "the Tiny plan's decomposed blocks do change the output");

        var gradients = DitReference.Backward(allFull, poisoned, _sample.Latent, _sample.Timestep, _sample.Context, _dVelocity);
        Assert.That(gradients.Parameters.Keys, Is.EquivalentTo(wan.Keys));
        Assert.That(gradients.Latent.Data.All(double.IsFinite), Is.True);
    }

    private static RefTensor Poison(RefTensor tensor)
    {
        var poisoned = new RefTensor((int[])tensor.Shape.Clone());
        Array.Fill(poisoned.Data, double.NaN);
        return poisoned;
    }

    /// <summary>
    /// The layout conventions checked against a direct computation: with every block made an identity (zero residual gates
    /// and a zero cross-attention output projection) the velocity is head(patch_embedding(latent)), computed here straight
    /// from the Conv3d definition and the head's "b (f h w) (p q r c) -> b c (f p) (h q) (w r)" with c fastest.
    /// </summary>
    [Test]
    public void Identity_blocks_reduce_the_model_to_conv3d_patch_embedding_and_the_head()
    {
        int dim = Tiny.Dim;
        var weights = _weights.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
        void Zero(string name, int start, int count) => Array.Clear(weights[name].Data, start, count);
        Zero("time_projection.1.weight", 2 * dim * dim, dim * dim);     // e6 chunk 2 (gate_msa)
        Zero("time_projection.1.bias", 2 * dim, dim);
        Zero("time_projection.1.weight", 5 * dim * dim, dim * dim);     // e6 chunk 5 (gate_mlp)
        Zero("time_projection.1.bias", 5 * dim, dim);
        for (int i = 0; i < Tiny.Layers; i++)
        {
            Zero($"blocks.{i}.modulation", 2 * dim, dim);
            Zero($"blocks.{i}.modulation", 5 * dim, dim);
            Zero($"blocks.{i}.cross_attn.o.weight", 0, dim * dim);
            Zero($"blocks.{i}.cross_attn.o.bias", 0, dim);
        }
        var velocity = DitReference.Forward(Tiny, weights, _sample.Latent, _sample.Timestep, _sample.Context);

        // Conv3d, kernel = stride = (1, 2, 2), straight from its definition.
        var latent = _sample.Latent;
        int channels = 16, frames = 2, rows = 8, cols = 8, height = 16, width = 16, tokens = frames * rows * cols;
        var convWeight = weights["patch_embedding.weight"];
        var x = new RefTensor(1, tokens, dim);
        for (int f = 0; f < frames; f++)
            for (int h = 0; h < rows; h++)
                for (int w = 0; w < cols; w++)
                    for (int o = 0; o < dim; o++)
                    {
                        double sum = weights["patch_embedding.bias"].Data[o];
                        for (int c = 0; c < channels; c++)
                            for (int q = 0; q < 2; q++)
                                for (int r = 0; r < 2; r++)
                                    sum += convWeight.Data[((o * channels + c) * 2 + q) * 2 + r]
                                        * latent.Data[((c * frames + f) * height + 2 * h + q) * width + 2 * w + r];
                        x.Data[((f * rows + h) * cols + w) * dim + o] = sum;
                    }

        // Head: e from the time embedding, (head.modulation + e) → shift, scale; Linear(LN(x)(1+scale)+shift).
        var sinusoid = TimestepEmbeddingOp.Forward(_sample.Timestep, Tiny.FreqDim);
        var e = LinearOp.Forward(Activations.Silu(LinearOp.Forward(sinusoid, weights["time_embedding.0.weight"], weights["time_embedding.0.bias"])),
            weights["time_embedding.2.weight"], weights["time_embedding.2.bias"]);
        var shift = new RefTensor(1, dim);
        var scale = new RefTensor(1, dim);
        for (int i = 0; i < dim; i++)
        {
            shift.Data[i] = weights["head.modulation"].Data[i] + e.Data[i];
            scale.Data[i] = weights["head.modulation"].Data[dim + i] + e.Data[i];
        }
        var y = LinearOp.Forward(ModulateOp.Forward(LayerNormOp.Forward(x, null, null, Tiny.Eps), shift, scale),
            weights["head.head.weight"], weights["head.head.bias"]);

        var expected = new RefTensor(1, channels, frames, height, width);
        for (int f = 0; f < frames; f++)
            for (int h = 0; h < rows; h++)
                for (int w = 0; w < cols; w++)
                    for (int q = 0; q < 2; q++)
                        for (int r = 0; r < 2; r++)
                            for (int c = 0; c < channels; c++)
                                expected.Data[((c * frames + f) * height + 2 * h + q) * width + 2 * w + r] =
                                    y.Data[((f * rows + h) * cols + w) * 64 + (q * 2 + r) * channels + c];
        Assert.That(OpHarness.RelativeError(velocity.Data, expected.Data), OpHarness.Within(1e-13));
    }

    [Test]
    public void Missing_weight_and_bad_shapes_are_reported_by_name()
    {
        var partial = _weights.Where(kv => kv.Key != "blocks.2.self_attn.downsample_conv.weight").ToDictionary();
        var error = Assert.Throws<KeyNotFoundException>(() =>
            DitReference.Forward(Tiny, partial, _sample.Latent, _sample.Timestep, _sample.Context));
        Assert.That(error!.Message, Does.Contain("blocks.2.self_attn.downsample_conv.weight"));
        Assert.Throws<UltraGen.Core.ShapeMismatchException>(() =>
            DitReference.Forward(Tiny, _weights, new RefTensor(1, 16, 2, 15, 16), _sample.Timestep, _sample.Context));
    }
}
