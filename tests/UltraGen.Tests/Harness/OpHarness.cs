using NUnit.Framework;
using NUnit.Framework.Constraints;
using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Tests.Harness;

/// <summary>
/// The harness every backend is held to (in the spirit of ggml's test-backend-ops): fresh random inputs per run,
/// outputs poisoned with NaN, relative error against the float64 reference, gradients against finite differences.
/// </summary>
public static class OpHarness
{
    /// <summary>A fresh seed per test, or the one in ULTRAGEN_TEST_SEED to reproduce a failure.</summary>
    public static int NewSeed()
    {
        string? fixedSeed = Environment.GetEnvironmentVariable("ULTRAGEN_TEST_SEED");
        int seed = fixedSeed is not null ? int.Parse(fixedSeed) : Random.Shared.Next();
        TestContext.Out.WriteLine($"seed {seed} (set ULTRAGEN_TEST_SEED={seed} to reproduce)");
        return seed;
    }

    public static double RelativeError(ReadOnlySpan<double> actual, ReadOnlySpan<double> expected)
    {
        if (actual.Length != expected.Length)
            throw new ArgumentException($"element counts differ: {actual.Length} vs {expected.Length}");
        double diff = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double d = actual[i] - expected[i];
            diff += d * d;
            norm += expected[i] * expected[i];
        }
        // NaN anywhere (an unwritten poisoned element) makes the error NaN, which fails every bound.
        return norm > 1e-300 ? Math.Sqrt(diff / norm) : Math.Sqrt(diff);
    }

    /// <summary>
    /// error ≤ tolerance and not NaN. NUnit orders NaN below every number (double.CompareTo), so a bare
    /// Is.LessThanOrEqualTo passes a NaN error — the very signal of an unwritten poisoned output.
    /// </summary>
    public static IResolveConstraint Within(double tolerance) => Is.Not.NaN.And.LessThanOrEqualTo(tolerance);

    /// <summary>Rounds every input to <paramref name="dtype"/>, so the oracle sees exactly what the backend stores.</summary>
    public static RefArgs Quantize(RefArgs inputs, DType dtype)
    {
        var result = new RefArgs();
        foreach (var (name, tensor) in inputs)
        {
            using var stored = tensor.ToTensor(dtype);
            result[name] = RefTensor.FromTensor(stored);
        }
        return result;
    }

    private static Dictionary<string, Tensor> Upload(IBackend backend, RefArgs values, DType dtype)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, tensor) in values)
        {
            using var host = tensor.ToTensor(dtype);
            var device = backend.Allocate(dtype, tensor.Shape);
            backend.CopyFromHost(host, device);
            result[name] = device;
        }
        return result;
    }

    private static Dictionary<string, Tensor> AllocatePoisoned(IBackend backend, IReadOnlyDictionary<string, int[]> shapes, DType dtype)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, shape) in shapes)
        {
            using var poison = Tensor.Host(dtype, shape);
            poison.Fill(double.NaN);
            var device = backend.Allocate(dtype, shape);
            backend.CopyFromHost(poison, device);
            result[name] = device;
        }
        return result;
    }

    private static RefTensor Download(IBackend backend, Tensor device)
    {
        using var host = Tensor.Host(device.DType, device.ShapeArray);
        backend.CopyToHost(device, host);
        return RefTensor.FromTensor(host);
    }

    private static void DisposeAll(params IEnumerable<Tensor>[] groups)
    {
        foreach (var group in groups) foreach (var tensor in group) tensor.Dispose();
    }

    /// <summary>Forward of <paramref name="backend"/> against the reference on the same (quantized) inputs.</summary>
    public static void CheckForward(IBackend backend, Op op, OpCase opCase, DType dtype)
    {
        double tolerance = op.ForwardTolerance(dtype);
        foreach (var (name, error) in ForwardErrors(backend, op, opCase, dtype))
        {
            TestContext.Out.WriteLine($"{op.Name}/{opCase.Name} {backend.Name} {DTypes.Lower(dtype)} '{name}': rel err {error:E3} (tol {tolerance:E1})");
            Assert.That(error, Within(tolerance), $"output '{name}' relative error");
        }
    }

    /// <summary>Relative error of every output of <paramref name="backend"/> against the reference.</summary>
    public static Dictionary<string, double> ForwardErrors(IBackend backend, Op op, OpCase opCase, DType dtype)
    {
        var random = new Random(NewSeed());
        var inputs = Quantize(OpRunner.RandomInputs(opCase, random), dtype);
        var expected = OpRunner.Forward(op, inputs, opCase.Params);

        var deviceInputs = Upload(backend, inputs, dtype);
        var deviceOutputs = AllocatePoisoned(backend, op.OutputShapes(OpRunner.ShapesOf(inputs), opCase.Params), dtype);
        try
        {
            backend.Forward(op, deviceInputs, deviceOutputs, opCase.Params);
            return deviceOutputs.ToDictionary(kv => kv.Key, kv => RelativeError(Download(backend, kv.Value).Data, expected.Get(kv.Key).Data));
        }
        finally { DisposeAll(deviceInputs.Values, deviceOutputs.Values); }
    }

    /// <summary>Backward of <paramref name="backend"/> against the reference backward on the same inputs and output gradients.</summary>
    public static void CheckBackward(IBackend backend, Op op, OpCase opCase, DType dtype)
    {
        double tolerance = op.BackwardTolerance(dtype);
        foreach (var (name, error) in BackwardErrors(backend, op, opCase, dtype))
        {
            TestContext.Out.WriteLine($"{op.Name}/{opCase.Name} {backend.Name} {DTypes.Lower(dtype)} d'{name}': rel err {error:E3} (tol {tolerance:E1})");
            Assert.That(error, Within(tolerance), $"gradient of '{name}' relative error");
        }
    }

    /// <summary>Relative error of every input gradient of <paramref name="backend"/> against the reference backward.</summary>
    public static Dictionary<string, double> BackwardErrors(IBackend backend, Op op, OpCase opCase, DType dtype)
    {
        var random = new Random(NewSeed());
        var inputs = Quantize(OpRunner.RandomInputs(opCase, random), dtype);
        var outputShapes = op.OutputShapes(OpRunner.ShapesOf(inputs), opCase.Params);
        var outputGradients = Quantize(RandomLike(outputShapes, random), dtype);
        var expected = OpRunner.Backward(op, inputs, outputGradients, opCase.Params);

        var deviceInputs = Upload(backend, inputs, dtype);
        var deviceOutputGradients = Upload(backend, outputGradients, dtype);
        var deviceInputGradients = AllocatePoisoned(backend, expected.ToDictionary(kv => kv.Key, kv => kv.Value.Shape), dtype);
        try
        {
            backend.Backward(op, deviceInputs, deviceOutputGradients, deviceInputGradients, opCase.Params);
            return deviceInputGradients.ToDictionary(kv => kv.Key, kv => RelativeError(Download(backend, kv.Value).Data, expected.Get(kv.Key).Data));
        }
        finally { DisposeAll(deviceInputs.Values, deviceOutputGradients.Values, deviceInputGradients.Values); }
    }

    public static RefArgs RandomLike(IReadOnlyDictionary<string, int[]> shapes, Random random)
    {
        var result = new RefArgs();
        foreach (var (name, shape) in shapes)
        {
            var tensor = new RefTensor((int[])shape.Clone());
            for (int i = 0; i < tensor.Length; i++) tensor.Data[i] = 2 * random.NextDouble() - 1;
            result[name] = tensor;
        }
        return result;
    }

    /// <summary>
    /// The reference backward against float64 central differences of L = Σ dy·y. Inputs with more than
    /// <paramref name="maxProbesPerInput"/> elements are probed at a random subset that always includes the ends.
    /// </summary>
    public static void CheckGradients(Op op, OpCase opCase, double step = 1e-3)
    {
        var errors = GradientErrors(op, opCase, op.GradientProbesPerInput, step);
        Assert.That(errors, Is.Not.Empty, $"op '{op.Name}' produced no input gradients");
        foreach (var (name, error) in errors)
        {
            TestContext.Out.WriteLine($"{op.Name}/{opCase.Name} d'{name}': rel err {error:E3} (tol {op.GradientTolerance:E1})");
            Assert.That(error, Within(op.GradientTolerance), $"gradient of '{name}' vs finite differences");
        }
    }

    /// <summary>
    /// Relative error of the reference backward against fourth-order central differences, per differentiable input.
    /// Fourth order lets the step be 1e-3: rounding noise in the loss (≈ ε·|L|/h) stays ~1e-13 relative even for layers
    /// whose loss is large and whose gradients are small, while truncation (≈ h⁴·f⁽⁵⁾/30) stays below 1e-11.
    /// A plain central difference at h = 1e-5 was noisy enough to fail the 1e-6 bound now and then on the composite layer.
    /// </summary>
    public static Dictionary<string, double> GradientErrors(Op op, OpCase opCase, int maxProbesPerInput = 48, double step = 1e-3)
    {
        var random = new Random(NewSeed());
        var inputs = OpRunner.RandomInputs(opCase, random);
        var outputShapes = op.OutputShapes(OpRunner.ShapesOf(inputs), opCase.Params);
        var outputGradients = RandomLike(outputShapes, random);
        var analytic = OpRunner.Backward(op, inputs, outputGradients, opCase.Params);

        double Loss()
        {
            var outputs = OpRunner.Forward(op, inputs, opCase.Params);
            double loss = 0;
            foreach (var (name, gradient) in outputGradients)
            {
                var y = outputs.Get(name).Data;
                for (int i = 0; i < y.Length; i++) loss += gradient.Data[i] * y[i];
            }
            return loss;
        }

        double lossAtInputs = Loss();
        var errors = new Dictionary<string, double>();
        foreach (var (name, gradient) in analytic)
        {
            var x = inputs.Get(name).Data;
            var probes = Enumerable.Range(0, x.Length).ToList();
            if (probes.Count > maxProbesPerInput)
                probes = probes.OrderBy(_ => random.Next()).Take(maxProbesPerInput - 2).Append(0).Append(x.Length - 1).Distinct().ToList();
            var numeric = new double[probes.Count];
            var exact = new double[probes.Count];
            for (int p = 0; p < probes.Count; p++)
            {
                int index = probes[p];
                double saved = x[index];
                double LossAt(double offset)
                {
                    x[index] = saved + offset;
                    return Loss();
                }
                double plus1 = LossAt(step), minus1 = LossAt(-step), plus2 = LossAt(2 * step), minus2 = LossAt(-2 * step);
                x[index] = saved;
                numeric[p] = (8 * (plus1 - minus1) - (plus2 - minus2)) / (12 * step);
                exact[p] = gradient.Data[index];
            }
            // Relative to ‖exact‖ — unless ‖exact‖ is too small for the differences to resolve op.GradientTolerance at
            // all: each estimate carries rounding noise of about 10·ε·|L|/h (the loss sums many products), so a
            // gradient norm below noise/tolerance is judged against the noise instead. Seen on seed 1393742621: a
            // conv weight the loss depends on linearly, gradient norm 1.3e-4, |L| = 139, differences off by 4e-10 at
            // h = 1e-3 and by 4e-11 at 3e-3 — rounding, not a wrong gradient.
            double difference = 0, norm = 0;
            for (int p = 0; p < exact.Length; p++)
            {
                difference += (numeric[p] - exact[p]) * (numeric[p] - exact[p]);
                norm += exact[p] * exact[p];
            }
            double noise = 100 * 2.220446049250313e-16 * Math.Max(Math.Abs(lossAtInputs), 1) / step * Math.Sqrt(exact.Length);
            errors[name] = Math.Sqrt(difference) / Math.Max(Math.Sqrt(norm), noise / op.GradientTolerance);
        }
        return errors;
    }
}
