using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Cuda;
using UltraGen.Cuda.Launchers;
using UltraGen.Model;
using UltraGen.Model.Dit;
using UltraGen.Model.Reference;
using UltraGen.Ops;
using UltraGen.Ops.Backends;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Model;

/// <summary>
/// The backend DiT (<see cref="Dit"/>) against the float64 whole-model reference (<see cref="DitReference"/>), on every
/// backend present: forward velocity, every parameter gradient, dL/dcontext and dL/dlatent, in full and LoRA mode, with
/// and without block recomputation. Tiny preset (blocks 0 and 3 full, 1 odd and 2 even decomposed), token grid 2×8×8.
/// </summary>
public class DitBackendTests
{
    // f32 storage between ~60 ops per block: relative errors of a few 1e-6 on the reference backend, a few 1e-5 on the
    // kernel backends (single-precision accumulation in the GEMMs and attention).
    private const double ForwardTolerance = 1e-4;
    private const double GradientTolerance = 5e-4;

    private static ModelConfig Tiny => ModelConfig.Tiny;

    /// <summary>
    /// The cuda backend's attention kernels take head dims 32, 64 and 128 only (the tiny preset's is 12): its rows use the tiny
    /// preset widened to dim 128 over 2 heads (head dim 64), otherwise the same model.
    /// </summary>
    private static ModelConfig ConfigFor(string backendName) =>
        backendName == "cuda" ? Tiny with { Dim = 128, FfnDim = 192, Heads = 2 } : Tiny;

    public static IEnumerable<TestCaseData> Backends() =>
        BackendRegistry.Providers.Select(p => new TestCaseData(p.Name).SetName($"Dit_{{m}}({p.Name})"));

    private static IBackend BackendOrSkip(string name)
    {
        var probe = BackendRegistry.Get(name).Probe();
        if (probe.Backend is null) Assert.Ignore($"backend '{name}' is not available here: {probe.UnavailableReason}");
        return probe.Backend;
    }

    private sealed record Sample(Tensor Latent, Tensor Timestep, Tensor Context, Tensor DVelocity) : IDisposable
    {
        public void Dispose()
        {
            Latent.Dispose();
            Timestep.Dispose();
            Context.Dispose();
            DVelocity.Dispose();
        }
    }

    /// <summary>
    /// ILGPU's CPU accelerator (the test device here) runs each of the ~250 kernel launches of a pass slowly, so its rows
    /// use one frame and one sample (token grid 1×8×8: still every branch, window parity and resize path).
    /// </summary>
    private static Sample SampleFor(string backendName, int seed)
    {
        TestContext.Out.WriteLine($"input seed {seed}");
        return backendName == "ilgpu" ? NewSample(seed, batch: 1, frames: 1) : NewSample(seed, batch: 2);
    }

    private static Sample NewSample(int seed, int batch, int frames = 2)
    {
        var random = new Random(seed);
        Tensor Uniform(params int[] shape)
        {
            var tensor = Tensor.Host(DType.F32, shape);
            var span = tensor.HostSpan<float>();
            for (int i = 0; i < span.Length; i++) span[i] = (float)(2 * random.NextDouble() - 1);
            return tensor;
        }
        var timestep = Tensor.Host(DType.F32, batch);
        for (int b = 0; b < batch; b++) timestep.HostSpan<float>()[b] = (float)(random.NextDouble() * 1000);
        return new Sample(Uniform(batch, 16, frames, 16, 16), timestep, Uniform(batch, Tiny.TextLen, Tiny.TextDim), Uniform(batch, 16, frames, 16, 16));
    }

    private static RefTensor ToRef(Tensor tensor) => new(tensor.ShapeArray, tensor.ToDoubles());

    private static double RelativeError(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        double difference = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.That(float.IsFinite(actual[i]), $"element {i} is {actual[i]}");
            difference += (actual[i] - expected[i]) * (actual[i] - expected[i]);
            norm += expected[i] * expected[i];
        }
        if (norm == 0)
        {
            // An exactly-zero reference gradient is real on tiny grids: a 1-token window's softmax is constant, so its
            // q and k receive nothing. Then the backend must give (numerically) zero too.
            Assert.That(Math.Sqrt(difference), OpHarness.Within(1e-6), "reference is exactly zero; the backend's gradient must be too");
            return 0;
        }
        return Math.Sqrt(difference / norm);
    }

    [TestCaseSource(nameof(Backends))]
    public void Forward_matches_the_reference(string backendName)
    {
        using var backend = BackendOrSkip(backendName);
        var config = ConfigFor(backendName);
        using var weights = ModelWeights.Random(config, seed: 11);
        using var sample = SampleFor(backendName, Environment.TickCount);
        var expected = DitReference.Forward(config, DitReference.ToReference(weights), ToRef(sample.Latent), ToRef(sample.Timestep), ToRef(sample.Context));
        using var dit = new Dit(config, backend, weights);
        using var velocity = dit.Forward(sample.Latent, sample.Timestep, sample.Context);
        Assert.That(velocity.Shape.ToArray(), Is.EqualTo(expected.Shape));
        double error = RelativeError(expected.Data, velocity.HostSpan<float>());
        TestContext.Out.WriteLine($"{backendName}: forward relative error {error:E2}");
        Assert.That(error, OpHarness.Within(ForwardTolerance));
    }

    /// <summary>
    /// The whole DiT on cuda with <see cref="AttentionPrecision.Bf16"/>: every block's self-attention through the bf16
    /// tensor-core kernels (what <c>sample --attention-precision bf16</c> runs), against the float64 reference, within
    /// bf16's tolerance; and it must differ from the f32 path's result (it did run another arithmetic).
    /// </summary>
    [Test]
    public void Dit_forward_with_bf16_attention_on_cuda_is_within_bf16_tolerance()
    {
        using var backend = BackendOrSkip("cuda");
        var cuda = (CudaBackend)backend;
        var config = ConfigFor("cuda");
        using var weights = ModelWeights.Random(config, seed: 11);
        using var sample = SampleFor("cuda", Environment.TickCount);
        var expected = DitReference.Forward(config, DitReference.ToReference(weights), ToRef(sample.Latent), ToRef(sample.Timestep), ToRef(sample.Context));
        using var dit = new Dit(config, backend, weights);
        using var exact = dit.Forward(sample.Latent, sample.Timestep, sample.Context);
        double exactError = RelativeError(expected.Data, exact.HostSpan<float>());
        cuda.F32AttentionPrecision = AttentionPrecision.Bf16;
        using var velocity = dit.Forward(sample.Latent, sample.Timestep, sample.Context);
        double error = RelativeError(expected.Data, velocity.HostSpan<float>());
        TestContext.Out.WriteLine($"cuda: forward relative error {error:E2} with bf16 attention, {exactError:E2} with f32 attention");
        Assert.That(error, OpHarness.Within(1e-2));
        Assert.That(error, Is.GreaterThan(exactError), "bf16 attention must not give the f32 kernels' result");
    }

    [TestCaseSource(nameof(Backends))]
    public void Backward_matches_the_reference_for_every_parameter(string backendName) => CheckBackward(backendName, lora: false, recompute: false);

    [TestCaseSource(nameof(Backends))]
    public void Lora_mode_backward_with_recomputation_matches_the_reference(string backendName) => CheckBackward(backendName, lora: true, recompute: true);

    private static void CheckBackward(string backendName, bool lora, bool recompute)
    {
        using var backend = BackendOrSkip(backendName);
        var config = ConfigFor(backendName);
        using var weights = ModelWeights.Random(config, seed: 12);
        using var sample = SampleFor(backendName, Environment.TickCount);
        var trainable = lora ? DitReference.LoraTrainable(config) : null;
        var expected = DitReference.Backward(config, DitReference.ToReference(weights), ToRef(sample.Latent), ToRef(sample.Timestep),
            ToRef(sample.Context), ToRef(sample.DVelocity), trainable);

        using var dit = new Dit(config, backend, weights, new DitOptions { RecomputeBlocks = recompute });
        using var pass = dit.ForwardForBackward(sample.Latent, sample.Timestep, sample.Context);
        using var gradients = dit.Backward(pass, sample.DVelocity, trainable, latentGradient: true);

        Assert.That(gradients.Parameters.Keys, Is.EquivalentTo(expected.Parameters.Keys), "the set of parameters with gradients");
        if (lora) Assert.That(gradients.Parameters.Keys, Has.None.StartsWith("blocks.0.ffn"), "frozen base weights get no gradient");
        var worst = (Name: "", Error: 0.0);
        foreach (var (name, gradient) in gradients.Parameters)
        {
            double error = RelativeError(expected.Parameters[name].Data, gradient.HostSpan<float>());
            if (error > worst.Error) worst = (name, error);
            Assert.That(error, OpHarness.Within(GradientTolerance), $"gradient of {name}");
        }
        double contextError = RelativeError(expected.Context.Data, gradients.Context.HostSpan<float>());
        double latentError = RelativeError(expected.Latent.Data, gradients.Latent!.HostSpan<float>());
        TestContext.Out.WriteLine(
            $"{backendName}: {gradients.Parameters.Count} parameter gradients, worst {worst.Name} {worst.Error:E2}; context {contextError:E2}; latent {latentError:E2}");
        Assert.That(contextError, OpHarness.Within(GradientTolerance), "dL/dcontext");
        Assert.That(latentError, OpHarness.Within(GradientTolerance), "dL/dlatent");
    }

    [Test]
    public void Recomputation_gives_the_same_gradients_as_saved_activations()
    {
        using var backend = BackendOrSkip("cpu");
        using var weights = ModelWeights.Random(Tiny, seed: 13);
        using var sample = NewSample(seed: Environment.TickCount, batch: 1);
        DitHostGradients Run(bool recompute)
        {
            using var dit = new Dit(Tiny, backend, weights, new DitOptions { RecomputeBlocks = recompute });
            using var pass = dit.ForwardForBackward(sample.Latent, sample.Timestep, sample.Context);
            return dit.Backward(pass, sample.DVelocity);
        }
        using var saved = Run(recompute: false);
        using var recomputed = Run(recompute: true);
        foreach (var (name, gradient) in saved.Parameters)
            Assert.That(recomputed.Parameters[name].HostSpan<float>().ToArray(), Is.EqualTo(gradient.HostSpan<float>().ToArray()),
                $"{name}: recomputing a block is deterministic, so the gradients are bit-identical");
    }

    /// <summary>The reference backend, except that its attention "kernels" exist for head dim 64 only (like cuda's 32/64/128).</summary>
    private sealed class HeadDim64Backend : IBackend
    {
        private readonly ReferenceBackend _inner = new();
        public string Name => "headdim64";
        public string Description => "test double";
        public bool Supports(Op op, DType dtype, out string? reason) => _inner.Supports(op, dtype, out reason);
        public bool SupportsCase(Op op, DType dtype, IReadOnlyDictionary<string, int[]> inputShapes, OpParams parameters, out string? reason)
        {
            var channels = inputShapes.TryGetValue("x", out var x) ? x[^1] : inputShapes.TryGetValue("q", out var q) ? q[^1] : 0;
            int headDim = parameters.Has("heads") && channels > 0 ? channels / parameters.GetInt("heads") : 64;
            reason = headDim == 64 ? null : $"{op.Name} kernels take head dim 64, got {headDim}";
            return reason is null && Supports(op, dtype, out reason);
        }
        public Tensor Allocate(DType dtype, int[] shape) => _inner.Allocate(dtype, shape);
        public void CopyFromHost(Tensor host, Tensor destination) => _inner.CopyFromHost(host, destination);
        public void CopyToHost(Tensor source, Tensor host) => _inner.CopyToHost(source, host);
        public void Forward(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams p) =>
            _inner.Forward(op, inputs, outputs, p);
        public void Backward(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> dy,
            IReadOnlyDictionary<string, Tensor> dx, OpParams p) => _inner.Backward(op, inputs, dy, dx, p);
        public void Dispose() { }
    }

    [Test]
    public void A_backend_without_kernels_for_the_head_dim_is_refused_up_front_and_skipped_by_auto()
    {
        using var limited = new HeadDim64Backend();
        var head64 = Tiny with { Dim = 128, FfnDim = 192, Heads = 2 };
        Assert.That(Dit.Limitation(limited, head64), Is.Null);
        Assert.That(Dit.Limitation(limited, Tiny), Does.Contain("head dim 64, got 12"));

        using var weights = ModelWeights.Random(Tiny, seed: 15);
        var error = Assert.Throws<UnsupportedConfigurationException>(() => new Dit(Tiny, limited, weights))!;
        Assert.That(error.Message, Does.Contain("backend 'headdim64' cannot run this model").And.Contain("got 12").And.Contain("--backend"));

        // auto passes over a backend the caller's limitation rules out, and says so.
        var (chosen, why) = BackendRegistry.Auto(limitation: b => b.Name == "cpu" ? "cpu refused by the test" : null);
        using (chosen)
        {
            Assert.That(chosen.Name, Is.Not.EqualTo("cpu"));
            Assert.That(why, Does.Contain("cpu cannot run it (cpu refused by the test)"));
        }
    }

    [Test]
    public void Bad_inputs_are_rejected_with_clear_errors()
    {
        using var backend = BackendOrSkip("reference");
        using var weights = ModelWeights.Random(Tiny, seed: 14);
        using var dit = new Dit(Tiny, backend, weights);
        using var sample = NewSample(seed: 1, batch: 1);
        using var oddLatent = Tensor.Host(DType.F32, 1, 16, 2, 15, 16);
        var error = Assert.Throws<ShapeMismatchException>(() => dit.Forward(oddLatent, sample.Timestep, sample.Context))!;
        Assert.That(error.Message, Does.Contain("patch size"));
        using var wrongContext = Tensor.Host(DType.F32, 1, Tiny.TextLen, Tiny.TextDim + 1);
        Assert.Throws<ShapeMismatchException>(() => dit.Forward(sample.Latent, sample.Timestep, wrongContext));

        var partial = weights.Where(kv => kv.Key != "head.head.bias").ToDictionary(kv => kv.Key, kv => kv.Value);
        var missing = Assert.Throws<ShapeMismatchException>(() => new Dit(Tiny, backend, partial))!;
        Assert.That(missing.Message, Does.Contain("head.head.bias"));
    }
}
