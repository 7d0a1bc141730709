using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Model;
using UltraGen.Ops;

namespace UltraGen.Tests.Model;

public class ModelWeightsTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("ultragen-weights-").FullName;

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static ModelConfig Tiny => ModelConfig.Tiny;

    private static uint[] Bits(Tensor tensor) => tensor.HostSpan<float>().ToArray().Select(BitConverter.SingleToUInt32Bits).ToArray();

    /// <summary>Writes some of <paramref name="weights"/>' tensors (plus extras) under their names, without metadata.</summary>
    private string WriteSubset(string name, ModelWeights weights, Func<string, bool> keep, params (string Name, Tensor Tensor)[] extra)
    {
        var entries = weights.Where(kv => keep(kv.Key)).ToList();
        entries.AddRange(extra.Select(e => new KeyValuePair<string, Tensor>(e.Name, e.Tensor)));
        SafetensorsWriter.Write(PathOf(name), entries);
        return PathOf(name);
    }

    [Test]
    public void Random_checkpoint_has_every_catalog_tensor_and_is_reproducible()
    {
        using var a = ModelWeights.Random(Tiny, seed: 5);
        using var b = ModelWeights.Random(Tiny, seed: 5);
        using var c = ModelWeights.Random(Tiny, seed: 6);
        var catalog = ParameterCatalog.List(Tiny);
        Assert.That(a.Keys, Is.EqualTo(catalog.Select(s => s.Name)));
        Assert.That(a.ParameterCount, Is.EqualTo(ParameterCatalog.Count(Tiny).Total.Parameters));
        foreach (var spec in catalog)
        {
            Assert.That(a[spec.Name].Shape.ToArray(), Is.EqualTo(spec.Shape), spec.Name);
            Assert.That(a[spec.Name].DType, Is.EqualTo(DType.F32));
            Assert.That(Bits(a[spec.Name]), Is.EqualTo(Bits(b[spec.Name])), spec.Name);
        }
        Assert.That(Bits(a["blocks.1.ffn.0.weight"]), Is.Not.EqualTo(Bits(c["blocks.1.ffn.0.weight"])));
        Assert.That(a["blocks.1.self_attn.alpha_time_projection.1.weight"].ToFloats(), Has.Some.Not.Zero, "random gates are not the 0.5 init");
        Assert.That(a.InitializedNames, Is.Empty);
    }

    [Test]
    public void F32_round_trip_is_bit_exact()
    {
        using var original = ModelWeights.Random(Tiny, seed: 1);
        original.Save(PathOf("tiny.safetensors"));
        using var loaded = ModelWeights.Load(PathOf("tiny.safetensors"), Tiny);
        Assert.That(loaded.Keys, Is.EqualTo(original.Keys));
        foreach (var (name, tensor) in original)
            Assert.That(Bits(loaded[name]), Is.EqualTo(Bits(tensor)), name);
        using var file = SafetensorsFile.Open(PathOf("tiny.safetensors"));
        Assert.That(file.Names, Is.EqualTo(original.Keys), "saved in state_dict order");
        Assert.That(file.Tensors.All(t => t.DTypeName == "F32"));
        Assert.That(file.Metadata[WeightsMetadata.Heads], Is.EqualTo("4"));
    }

    [TestCase(DType.BF16)]
    [TestCase(DType.F16)]
    public void Half_precision_round_trip_is_within_rounding(DType storage)
    {
        using var original = ModelWeights.Random(Tiny, seed: 2);
        original.Save(PathOf("half.safetensors"), new WeightsSaveOptions { Storage = storage });
        using (var file = SafetensorsFile.Open(PathOf("half.safetensors")))
            Assert.That(file.Tensors.All(t => t.DType == storage));
        using var loaded = ModelWeights.Load(PathOf("half.safetensors"), Tiny);
        double relative = storage == DType.BF16 ? Math.Pow(2, -8) : Math.Pow(2, -11); // unit roundoff: half an ulp
        foreach (var (name, tensor) in original)
        {
            var expected = tensor.ToFloats();
            var actual = loaded[name].ToFloats();
            Assert.That(loaded[name].DType, Is.EqualTo(DType.F32), "loaded as f32 master copies");
            for (int i = 0; i < expected.Length; i++)
            {
                float rounded = storage == DType.BF16
                    ? FloatConversions.BFloat16ToFloat(FloatConversions.FloatToBFloat16(expected[i]))
                    : FloatConversions.HalfBitsToFloat(FloatConversions.FloatToHalfBits(expected[i]));
                Assert.That(actual[i], Is.EqualTo(rounded), $"{name}[{i}] is the nearest-even rounding");
                // f16 subnormals (|x| < 2^-14) have an absolute, not relative, step
                Assert.That(Math.Abs(actual[i] - expected[i]), Is.LessThanOrEqualTo(Math.Max(relative * Math.Abs(expected[i]), 3e-8)), $"{name}[{i}]");
            }
        }
    }

    [Test]
    public void Base_only_file_loads_with_the_reference_init()
    {
        using var original = ModelWeights.Random(Tiny, seed: 3);
        original.Save(PathOf("base.safetensors"), new WeightsSaveOptions { BaseOnly = true });

        var strict = Assert.Throws<WeightsMismatchException>(() => ModelWeights.Load(PathOf("base.safetensors"), Tiny))!;
        Assert.That(strict.Missing, Has.Count.EqualTo(2 * 44));

        using var loaded = ModelWeights.Load(PathOf("base.safetensors"), Tiny, WeightsLoadOptions.FromBaseWan with { InitSeed = 11 });
        Assert.That(loaded.InitializedNames, Has.Count.EqualTo(2 * 44));
        Assert.That(loaded.InitializedNames.All(ParameterCatalog.IsUltraGenName));
        foreach (var spec in loaded.Parameters.Where(s => s.IsBase))
            Assert.That(Bits(loaded[spec.Name]), Is.EqualTo(Bits(original[spec.Name])), spec.Name);

        foreach (int block in new[] { 1, 2 })
        {
            string p = $"blocks.{block}.self_attn.";
            Assert.That(loaded[p + "downsample_conv.weight"].ToFloats(), Is.All.EqualTo(1f / 16));
            Assert.That(loaded[p + "downsample_conv_hierachcal.weight"].ToFloats(), Is.All.EqualTo(1f / 4));
            Assert.That(loaded[p + "upsample_conv.weight"].ToFloats(), Is.All.EqualTo(1f / 27));
            Assert.That(loaded[p + "upsample_conv_hierachcal.weight"].ToFloats(), Is.All.EqualTo(1f / 27));
            foreach (var spec in loaded.Parameters.Where(s => s.Block == block && s.IsUltraGen && s.Name.EndsWith("bias")))
                Assert.That(loaded[spec.Name].ToFloats(), Is.All.Zero, spec.Name);
            foreach (var gate in new[] { "alpha_time_projection", "alpha_time_projection2" })
                Assert.That(loaded[p + gate + ".1.weight"].ToFloats(), Is.All.Zero);

            // kaiming_uniform(a=√5): U(−1/√fan_in, 1/√fan_in), fan_in = shape[1]; LoRA B too (not zero, as released).
            foreach (var spec in loaded.Parameters.Where(s => s.Block == block && s.Init == ParameterInit.KaimingUniform))
            {
                var values = loaded[spec.Name].ToFloats();
                double bound = 1 / Math.Sqrt(spec.Shape[1]);
                Assert.That(values.Max(v => Math.Abs(v)), Is.LessThanOrEqualTo(bound * (1 + 1e-7)).And.GreaterThan(0.7 * bound), spec.Name);
                Assert.That(Math.Abs(values.Average()), Is.LessThan(0.25 * bound), spec.Name);
            }
            Assert.That(loaded[p + "v_lora_2.lora_B.weight"].ToFloats(), Has.Some.Not.Zero);

            // Zero projections make both gates exactly sigmoid(0) = 0.5 at any t.
            var inputs = new RefArgs { ["t"] = new RefTensor([2], [0.0, 937.5]) };
            foreach (var suffix in new[] { ".0.weight", ".0.bias", ".2.weight", ".2.bias" })
                inputs["embedding" + suffix] = RefTensor.FromTensor(loaded[p + "alpha_time_embedding" + suffix]);
            inputs["projection.1.weight"] = RefTensor.FromTensor(loaded[p + "alpha_time_projection.1.weight"]);
            inputs["projection.1.bias"] = RefTensor.FromTensor(loaded[p + "alpha_time_projection.1.bias"]);
            var gateOutput = OpRunner.Forward(new GateMlpOp(), inputs, new OpParams())["gate"];
            Assert.That(gateOutput.Data, Is.All.EqualTo(0.5));
        }

        // Same seed, same init; ZeroInitLoraB zeroes B only.
        using var again = ModelWeights.Load(PathOf("base.safetensors"), Tiny, WeightsLoadOptions.FromBaseWan with { InitSeed = 11 });
        Assert.That(Bits(again["blocks.1.self_attn.q_lora_1.lora_A.weight"]), Is.EqualTo(Bits(loaded["blocks.1.self_attn.q_lora_1.lora_A.weight"])));
        using var zeroB = ModelWeights.Load(PathOf("base.safetensors"), Tiny, WeightsLoadOptions.FromBaseWan with { ZeroInitLoraB = true });
        foreach (var spec in zeroB.Parameters.Where(s => s.Group == ParameterGroup.Lora && s.Name.EndsWith(".weight")))
        {
            bool isB = spec.Name.EndsWith(".lora_B.weight");
            Assert.That(zeroB[spec.Name].ToFloats().All(v => v == 0), Is.EqualTo(isB), spec.Name);
        }
    }

    [Test]
    public void A_partly_present_block_is_not_silently_initialised()
    {
        using var original = ModelWeights.Random(Tiny, seed: 4);
        string path = WriteSubset("partial.safetensors", original,
            name => !ParameterCatalog.IsUltraGenName(name) || name == "blocks.1.self_attn.q_lora_1.lora_A.weight");
        var error = Assert.Throws<WeightsMismatchException>(() => ModelWeights.Load(path, Tiny, WeightsLoadOptions.FromBaseWan))!;
        Assert.That(error.Missing, Has.Count.EqualTo(43));
        Assert.That(error.Missing.All(n => n.StartsWith("blocks.1.")));
    }

    [Test]
    public void Missing_unexpected_and_misshaped_are_reported_together()
    {
        using var original = ModelWeights.Random(Tiny, seed: 7);
        using var extra = Tensor.Host(DType.F32, 3);
        extra.Fill(1);
        using var wrong = Tensor.Host(DType.F32, 48, 47);
        wrong.Fill(0.5);
        string path = WriteSubset("bad.safetensors", original,
            name => name is not ("blocks.2.ffn.0.bias" or "blocks.1.self_attn.q.weight"),
            ("blocks.1.self_attn.q.weight", wrong), ("blocks.2.ffn.3.weight", extra));

        var error = Assert.Throws<WeightsMismatchException>(() => ModelWeights.Load(path, Tiny))!;
        Assert.That(error.Missing, Is.EqualTo(new[] { "blocks.2.ffn.0.bias" }));
        Assert.That(error.Unexpected, Is.EqualTo(new[] { "blocks.2.ffn.3.weight" }));
        Assert.That(error.Misshaped, Is.EqualTo(new[] { "blocks.1.self_attn.q.weight" }));
        Assert.That(error, Is.InstanceOf<UltraGenException>());
        Assert.That(error.Message, Does.Contain("1 missing, 1 unexpected, 1 mis-shaped")
            .And.Contain("blocks.2.ffn.0.bias (96)")
            .And.Contain("blocks.2.ffn.3.weight F32(3)")
            .And.Contain("blocks.1.self_attn.q.weight: expected (48, 48), file has (48, 47)"));
    }

    [Test]
    public void Long_lists_are_capped_with_counts()
    {
        using var tiny = ModelWeights.Random(Tiny, seed: 8);
        tiny.Save(PathOf("tiny.safetensors"));
        var error = Assert.Throws<WeightsMismatchException>(() => ModelWeights.Load(PathOf("tiny.safetensors"), ModelConfig.Mini))!;
        Assert.That(error.Missing.Count, Is.GreaterThan(WeightsCheck.DefaultListLimit));
        Assert.That(error.Message, Does.Contain($"missing ({error.Missing.Count}):")
            .And.Contain($"… and {error.Missing.Count - WeightsCheck.DefaultListLimit} more"));
        int listed = error.Message.Split('\n').Count(line => line.StartsWith("    blocks.") || line.StartsWith("    patch") || line.StartsWith("    t") || line.StartsWith("    head"));
        Assert.That(listed, Is.LessThanOrEqualTo(3 * WeightsCheck.DefaultListLimit));
    }

    [Test]
    public void Detect_config_recovers_the_saved_config()
    {
        foreach (var config in new[] { Tiny, Tiny.WithAllDecomposed(), Tiny with { GlobalKUsesWq = false, WindowMode = UltraGen.Core.Layout.WindowMode.Ragged, Eps = 1e-5 }, ModelConfig.Mini })
        {
            using var weights = ModelWeights.Random(config, seed: 9);
            weights.Save(PathOf("detect.safetensors"), new WeightsSaveOptions { Storage = DType.BF16 });
            using var file = SafetensorsFile.Open(PathOf("detect.safetensors"));
            Assert.That(ModelWeights.DetectConfig(file), Is.EqualTo(config));
        }
    }

    [Test]
    public void Detect_config_without_metadata()
    {
        // Wan-sized width: heads assumed dim/128, everything else from shapes and defaults.
        var wanLike = new ModelConfig
        {
            Dim = 256, FfnDim = 64, FreqDim = 16, TextDim = 8, TextLen = 512, Heads = 2, Layers = 3, LoraRank = 2,
            FullAttentionBlocks = BlockSet.Of(0),
        };
        using (var weights = ModelWeights.Random(wanLike, seed: 1))
            WriteSubset("wan-like.safetensors", weights, _ => true);
        using (var file = SafetensorsFile.Open(PathOf("wan-like.safetensors")))
        {
            var detection = ConfigDetector.Detect(file);
            Assert.That(detection.Config, Is.EqualTo(wanLike));
            Assert.That(detection.Notes, Has.Some.Contains("assumed dim/128"));
        }

        // Other widths need the head count from somewhere.
        using (var weights = ModelWeights.Random(Tiny, seed: 1))
            WriteSubset("bare.safetensors", weights, _ => true);
        using (var file = SafetensorsFile.Open(PathOf("bare.safetensors")))
        {
            var error = Assert.Throws<ModelConfigException>(() => ModelWeights.DetectConfig(file))!;
            Assert.That(error.Message, Does.Contain("head count"));
            var detected = ModelWeights.DetectConfig(file, heads: 4);
            Assert.That(detected, Is.EqualTo(Tiny with { TextLen = 512 }), "text length is not in the shapes");
        }

        // Base-only files detect as plain Wan (every block full).
        using (var weights = ModelWeights.Random(Tiny, seed: 1))
            weights.Save(PathOf("base.safetensors"), new WeightsSaveOptions { BaseOnly = true });
        using (var file = SafetensorsFile.Open(PathOf("base.safetensors")))
            Assert.That(ModelWeights.DetectConfig(file), Is.EqualTo(Tiny.WithAllFull()));
    }

    [Test]
    public void Detect_config_needs_the_embeddings()
    {
        using var weights = ModelWeights.Random(Tiny, seed: 1);
        string path = WriteSubset("headless.safetensors", weights, name => name != "patch_embedding.weight");
        using var file = SafetensorsFile.Open(path);
        var error = Assert.Throws<ModelConfigException>(() => ModelWeights.DetectConfig(file))!;
        Assert.That(error.Message, Does.Contain("patch_embedding.weight"));
    }

    [Test]
    public void Block_tensors_fit_the_ultragen_self_attention_op()
    {
        using var weights = ModelWeights.Random(Tiny, seed: 12);
        var grid = (T: 2, H: 8, W: 8);
        foreach (int block in Enumerable.Range(0, Tiny.Layers))
        {
            string prefix = $"blocks.{block}.self_attn.";
            var inputs = new RefArgs
            {
                ["x"] = new RefTensor(1, grid.T * grid.H * grid.W, Tiny.Dim),
                ["t"] = new RefTensor([1], [500.0]),
            };
            var random = new Random(block);
            for (int i = 0; i < inputs["x"].Length; i++) inputs["x"].Data[i] = random.NextDouble() - 0.5;
            foreach (var (name, tensor) in weights.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)))
                inputs[name[prefix.Length..]] = RefTensor.FromTensor(tensor);
            var parameters = OpParams.Parse([$"T={grid.T}", $"H={grid.H}", $"W={grid.W}", $"heads={Tiny.Heads}", $"block={block}",
                $"full_blocks={Tiny.FullAttentionBlocks}"]);
            var y = OpRunner.Forward(new UltraGenSelfAttentionOp(), inputs, parameters)["y"];
            Assert.That(y.Data.All(double.IsFinite), $"block {block}");
        }
    }

    [Test]
    public void Base_wan_1_3b_header_checks_against_the_ultragen_preset()
    {
        var preset = ModelConfig.Wan21T2V13B;
        HeaderOnlyFile.Write(PathOf("wan-base.safetensors"), ParameterCatalog.List(preset).Where(s => s.IsBase));
        using var file = SafetensorsFile.Open(PathOf("wan-base.safetensors"));
        Assert.That(file.Count, Is.EqualTo(825));

        var strict = WeightsCheck.Run(file, preset);
        Assert.That(strict.Missing, Has.Count.EqualTo(24 * 44));
        Assert.That(strict.Describe(), Does.Contain("1056 missing").And.Contain("… and 1036 more"));

        var fromBase = WeightsCheck.Run(file, preset, WeightsLoadOptions.FromBaseWan);
        Assert.That(fromBase.IsMatch);
        Assert.That(fromBase.ToInitialize.Sum(s => s.ElementCount), Is.EqualTo(277_005_312));

        Assert.That(ModelWeights.DetectConfig(file), Is.EqualTo(preset.WithAllFull()), "a Wan file detects as plain Wan with heads = dim/128");
    }

    [Test]
    public void Disposed_weights_refuse_access()
    {
        var weights = ModelWeights.Random(Tiny, seed: 0);
        weights.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _ = weights["head.head.bias"]);
        weights.Dispose();
    }
}
