using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Model;
using UltraGen.Model.Dit;
using UltraGen.Model.Reference;
using UltraGen.Ops;
using UltraGen.Ops.Backends;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Tools;

/// <summary>
/// <c>tools/convert_weights.py</c> end to end, judged by the C# side: Python builds small synthetic checkpoints with the
/// real Wan/UltraGen names (<c>tools/tests/make_synthetic_checkpoint.py</c>: a pickled UltraGen state dict with a wrapper
/// and a name prefix, and a Wan safetensors) plus the same tensors as an F32 reference; the converter writes the
/// project's file; C# detects the config from that file alone, loads it with <see cref="ModelWeights.Load(SafetensorsFile, ModelConfig, WeightsLoadOptions?)"/>,
/// compares every tensor with the reference (bit for bit in F32, after <see cref="FloatConversions"/>' bf16 rounding
/// otherwise) and runs one DiT forward pass on the Cpu backend against <see cref="DitReference"/>.
/// Skipped, with the reason, where no Python has torch.
/// </summary>
[TestFixture]
[NonParallelizable] // Python may use both cores through torch
public sealed class ConverterTests
{
    // The DiT forward tolerance of DitBackendTests: relative L2 error of the backend's f32 velocity against the
    // float64 reference on the same weights.
    private const double ForwardTolerance = 1e-4;

    /// <summary>The synthetic checkpoints' sizes (make_synthetic_checkpoint.py's SMALL) with the converter flags used here.</summary>
    private static readonly ModelConfig Synthetic = new()
    {
        Dim = 32,
        FfnDim = 64,
        FreqDim = 16,
        TextDim = 24,
        TextLen = 8,
        Heads = 2,
        Layers = 4,
        LoraRank = 4,
        FullAttentionBlocks = BlockSet.Of(0, 3),
    };

    private static readonly string[] SizeFlags = ["--heads", "2", "--text-len", "8"];

    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        PythonTools.RequirePython();
        _dir = Directory.CreateTempSubdirectory("ultragen-convert-").FullName;
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static void Python(params string[] args)
    {
        var (exitCode, output) = PythonTools.Run(args, TimeSpan.FromMinutes(3));
        TestContext.Out.WriteLine($"$ python {string.Join(' ', args)}\n{output}");
        Assert.That(exitCode, Is.EqualTo(0), $"python {string.Join(' ', args)} failed:\n{output}");
    }

    private static int NewSeed()
    {
        int seed = Environment.TickCount & int.MaxValue;
        TestContext.Out.WriteLine($"checkpoint seed {seed}");
        return seed;
    }

    /// <summary>Builds a synthetic checkpoint and its F32 reference, converts it, and returns the converted file's path.</summary>
    private (string Converted, string Reference) BuildAndConvert(string kind, string dtype, int seed, params string[] extraFlags)
    {
        string checkpoint = PathOf(kind == "wan" ? "wan.safetensors" : "ultragen.ckpt");
        string reference = PathOf($"{kind}-reference.safetensors");
        string converted = PathOf($"{kind}-{dtype}.safetensors");
        Python("tests/make_synthetic_checkpoint.py", "--kind", kind, "--seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--output", checkpoint, "--reference-output", reference);
        var convert = new List<string> { "convert_weights.py", checkpoint, "-o", converted };
        if (dtype != "bf16") convert.AddRange(["--dtype", dtype]); // bf16 is the default: leave it implicit
        convert.AddRange(SizeFlags);
        convert.AddRange(extraFlags);
        Python([.. convert]);
        return (converted, reference);
    }

    private static uint Bits(float value) => BitConverter.SingleToUInt32Bits(value);

    /// <summary>Every reference tensor against the loaded one: equal bits (F32), or equal to the reference rounded to bf16.</summary>
    private static void AssertMatchesReference(ModelWeights weights, string referencePath, DType storage, IEnumerable<string>? only = null)
    {
        using var reference = SafetensorsFile.Open(referencePath);
        var names = (only ?? reference.Names).ToList();
        Assert.That(names, Is.Not.Empty);
        foreach (string name in names)
        {
            using var expected = reference.ReadTensor(name);
            Assert.That(expected.DType, Is.EqualTo(DType.F32), name);
            var source = expected.HostSpan<float>();
            var loaded = weights[name].HostSpan<float>();
            Assert.That(weights[name].Shape.ToArray(), Is.EqualTo(expected.Shape.ToArray()), name);
            for (int i = 0; i < source.Length; i++)
            {
                float want = storage == DType.F32 ? source[i] : FloatConversions.BFloat16ToFloat(FloatConversions.FloatToBFloat16(source[i]));
                if (Bits(loaded[i]) != Bits(want))
                    Assert.Fail($"{name}[{i}]: loaded {loaded[i]:R} (0x{Bits(loaded[i]):X8}), expected {want:R} (0x{Bits(want):X8}) from source {source[i]:R}");
            }
        }
    }

    /// <summary>One forward pass on the Cpu backend: right shape, finite, and equal to the float64 reference.</summary>
    private static void AssertForwardMatchesReference(ModelConfig config, ModelWeights weights, int seed)
    {
        var probe = BackendRegistry.Get("cpu").Probe();
        if (probe.Backend is null) Assert.Ignore($"the cpu backend is not available here: {probe.UnavailableReason}");
        using var backend = probe.Backend;
        var random = new Random(seed);
        Tensor Uniform(params int[] shape)
        {
            var tensor = Tensor.Host(DType.F32, shape);
            var span = tensor.HostSpan<float>();
            for (int i = 0; i < span.Length; i++) span[i] = (float)(2 * random.NextDouble() - 1);
            return tensor;
        }
        int[] latentShape = [1, config.InChannels, 2, 16, 16]; // token grid 2×8×8: every branch, both parities, the resize paths
        using var latent = Uniform(latentShape);
        using var context = Uniform(1, config.TextLen, config.TextDim);
        using var timestep = Tensor.Host(DType.F32, 1);
        timestep.HostSpan<float>()[0] = (float)(random.NextDouble() * 1000);

        var expected = DitReference.Forward(config, DitReference.ToReference(weights), RefTensor.FromTensor(latent),
            RefTensor.FromTensor(timestep), RefTensor.FromTensor(context));
        using var dit = new Dit(config, backend, weights);
        using var velocity = dit.Forward(latent, timestep, context);
        Assert.That(velocity.Shape.ToArray(), Is.EqualTo(new[] { 1, config.OutChannels, 2, 16, 16 }));
        Assert.That(expected.Shape, Is.EqualTo(velocity.Shape.ToArray()));
        var actual = velocity.HostSpan<float>();
        double difference = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            Assert.That(float.IsFinite(actual[i]), $"velocity element {i} is {actual[i]}");
            difference += (actual[i] - expected.Data[i]) * (actual[i] - expected.Data[i]);
            norm += expected.Data[i] * expected.Data[i];
        }
        Assert.That(norm, Is.GreaterThan(0), "the reference velocity is not all zero");
        double error = Math.Sqrt(difference / norm);
        TestContext.Out.WriteLine($"forward on the converted weights: relative error {error:E2} against DitReference");
        Assert.That(error, OpHarness.Within(ForwardTolerance));
    }

    private static DType StorageOf(string dtype) => dtype == "f32" ? DType.F32 : DType.BF16;

    [TestCase("bf16")]
    [TestCase("f32")]
    public void UltraGen_checkpoint_converts_loads_and_runs(string dtype)
    {
        int seed = NewSeed();
        var (converted, reference) = BuildAndConvert("ultragen", dtype, seed);

        using var file = SafetensorsFile.Open(converted);
        var config = ModelWeights.DetectConfig(file);
        Assert.That(config, Is.EqualTo(Synthetic), "the config C# detects from the converted file alone");
        Assert.That(file.Metadata, Is.EquivalentTo(ModelWeights.MetadataOf(config)), "metadata exactly as C# writes it");
        Assert.That(file.Names, Is.EqualTo(ParameterCatalog.List(config).Select(s => s.Name)), "tensors in the catalogue's order");
        Assert.That(file.Tensors.Select(t => t.DType).Distinct(), Is.EqualTo(new DType?[] { StorageOf(dtype) }));

        using var weights = ModelWeights.Load(file, config);
        Assert.That(weights.InitializedNames, Is.Empty);
        using (var referenceFile = SafetensorsFile.Open(reference))
            Assert.That(referenceFile.Names, Is.EquivalentTo(weights.Keys), "the converter neither drops nor adds a parameter");
        AssertMatchesReference(weights, reference, StorageOf(dtype));
        AssertForwardMatchesReference(config, weights, seed);
    }

    [TestCase("bf16")]
    [TestCase("f32")]
    public void Wan_checkpoint_loads_as_plain_wan_and_into_an_ultragen_model(string dtype)
    {
        int seed = NewSeed();
        var (converted, reference) = BuildAndConvert("wan", dtype, seed, "--lora-rank", "4");

        using var file = SafetensorsFile.Open(converted);
        var detected = ModelWeights.DetectConfig(file);
        Assert.That(detected, Is.EqualTo(Synthetic.WithAllFull()), "a Wan file has no UltraGen tensor: every block keeps full attention");
        Assert.That(file.Metadata, Is.EquivalentTo(ModelWeights.MetadataOf(detected)));
        Assert.That(file.Names, Is.EqualTo(ParameterCatalog.List(detected).Select(s => s.Name)));

        using (var plain = ModelWeights.Load(file, detected))
        {
            AssertMatchesReference(plain, reference, StorageOf(dtype));
            AssertForwardMatchesReference(detected, plain, seed);
        }

        // The base weights under UltraGen's plan: the loader initialises the UltraGen tensors (spec §1.7).
        using var ultragen = ModelWeights.Load(file, Synthetic, WeightsLoadOptions.FromBaseWan);
        var added = ParameterCatalog.List(Synthetic).Where(s => s.IsUltraGen).Select(s => s.Name).ToList();
        Assert.That(added, Is.Not.Empty);
        Assert.That(ultragen.InitializedNames, Is.EquivalentTo(added));
        AssertMatchesReference(ultragen, reference, StorageOf(dtype));
        Assert.That(ultragen["blocks.1.self_attn.downsample_conv.weight"].HostSpan<float>().ToArray(), Is.All.EqualTo(1f / 16),
            "a compression conv starts as 4×4 average pooling");
        Assert.That(ultragen["blocks.2.self_attn.alpha_time_projection.1.weight"].HostSpan<float>().ToArray(), Is.All.Zero,
            "the gates start at sigmoid(0) = 0.5");
        AssertForwardMatchesReference(Synthetic, ultragen, seed);
    }
}
