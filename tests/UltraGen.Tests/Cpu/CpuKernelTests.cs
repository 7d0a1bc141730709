using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Cpu;
using UltraGen.Ops;
using UltraGen.Ops.Backends;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Cpu;

/// <summary>
/// Shapes beyond the catalogue's cases that stress the Cpu kernels' blocking edges: GEMM sizes that are not multiples of
/// the micro-tile (4 × 64/16), the cache blocks (64 × 256 × 256) or the vector width, down to 1 × 1; the bilinear
/// resize at the model's ×4 ratio, both ways; and the composites built only from Cpu primitives (lora, gate_mlp), run
/// through <see cref="CompositeOps"/> directly because the backend only advertises composites once every primitive,
/// window_attention included, has a kernel.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.Children)]
public class CpuKernelTests
{
    private static readonly DType[] s_dtypes = [DType.F32, DType.BF16];

    private static OpCase Linear(string name, int rows, int inFeatures, int outFeatures, bool bias = true)
    {
        var shapes = new Dictionary<string, int[]> { ["x"] = [rows, inFeatures], ["weight"] = [outFeatures, inFeatures] };
        if (bias) shapes["bias"] = [outFeatures];
        return new OpCase(name, shapes, new OpParams());
    }

    private static OpCase Resize(string name, int[] x, int outH, int outW) =>
        new(name, new Dictionary<string, int[]> { ["x"] = x }, OpParams.Of(("out_h", outH), ("out_w", outW)));

    public static IEnumerable<TestCaseData> Cases()
    {
        var cases = new (string Op, OpCase Case)[]
        {
            ("linear", Linear("rows67_in130_out77", 67, 130, 77)),
            ("linear", Linear("rows130_in300_out270_blocks", 130, 300, 270)),
            ("linear", Linear("rows8_in17_out9_nobias_packed_edge", 8, 17, 9, bias: false)),
            ("linear", Linear("rows7_in33_out65_dot_path", 7, 33, 65)),
            ("linear", Linear("rows1_in1_out1", 1, 1, 1)),
            ("linear", Linear("rows1_in130_out1", 1, 130, 1)),
            ("linear", Linear("rows1_in130_out77", 1, 130, 77)),
            ("linear", Linear("rows64_in1_out64", 64, 1, 64)),
            ("bilinear_resize", Resize("up_17x30_to_68x120_c64", [1, 1, 17, 30, 64], 68, 120)),
            ("bilinear_resize", Resize("down_t2_68x120_to_17x30_c64", [1, 2, 68, 120, 64], 17, 30)),
            ("bilinear_resize", Resize("odd_b2_11x13_to_29x7_c19", [2, 1, 11, 13, 19], 29, 7)),
            ("depthwise_conv3d", new OpCase("k3_b2_t4_h9w11_c37", new Dictionary<string, int[]>
            {
                ["x"] = [2, 4, 9, 11, 37], ["weight"] = [37, 1, 3, 3, 3], ["bias"] = [37],
            }, new OpParams())),
            ("depthwise_conv2d", new OpCase("k4_b2_t2_h19w21_c37", new Dictionary<string, int[]>
            {
                ["x"] = [2, 2, 19, 21, 37], ["weight"] = [37, 1, 4, 4], ["bias"] = [37],
            }, new OpParams())),
            ("rms_norm", new OpCase("rows300_d1536", new Dictionary<string, int[]> { ["x"] = [300, 1536], ["weight"] = [1536] }, new OpParams())),
            ("layer_norm", new OpCase("rows300_d1000_affine", new Dictionary<string, int[]>
            {
                ["x"] = [300, 1000], ["weight"] = [1000], ["bias"] = [1000],
            }, new OpParams())),
            ("modulate", new OpCase("b2_n700_d300", new Dictionary<string, int[]>
            {
                ["x"] = [2, 700, 300], ["shift"] = [2, 300], ["scale"] = [2, 300],
            }, new OpParams())),
            ("gated_residual", new OpCase("b2_n700_d300", new Dictionary<string, int[]>
            {
                ["x"] = [2, 700, 300], ["y"] = [2, 700, 300], ["gate"] = [2, 300],
            }, new OpParams())),
            ("gelu_tanh", new OpCase("n100003_wide", new Dictionary<string, int[]> { ["x"] = [100003] }, new OpParams(),
                new Dictionary<string, (double, double)> { ["x"] = (-8.0, 8.0) })),
        };
        foreach (var (op, opCase) in cases)
            foreach (var dtype in s_dtypes)
                yield return new TestCaseData(op, opCase, dtype).SetName($"{op}/{opCase.Name}/cpu-edges/{DTypes.Lower(dtype)}");
    }

    [TestCaseSource(nameof(Cases))]
    public void Forward_and_backward_match_the_reference(string opName, OpCase opCase, DType dtype)
    {
        var op = OpCatalog.Get(opName);
        using var cpu = new CpuBackend();
        double tolerance = op.ForwardTolerance(dtype);
        foreach (var (name, error) in OpHarness.ForwardErrors(cpu, op, opCase, dtype))
        {
            TestContext.Out.WriteLine($"{opName}/{opCase.Name} '{name}': rel err {error:E3}");
            Assert.That(error, OpHarness.Within(tolerance), $"output '{name}'");
        }
        var gradients = OpHarness.BackwardErrors(cpu, op, opCase, dtype);
        Assert.That(gradients, Is.Not.Empty);
        foreach (var (name, error) in gradients)
        {
            TestContext.Out.WriteLine($"{opName}/{opCase.Name} d'{name}': rel err {error:E3}");
            Assert.That(error, OpHarness.Within(2 * tolerance), $"gradient of '{name}'");
        }
    }

    public static IEnumerable<TestCaseData> CompositeCases()
    {
        foreach (var name in new[] { "lora", "gate_mlp" })
            foreach (var opCase in OpCatalog.Get(name).Cases())
                yield return new TestCaseData(name, opCase.Name).SetName($"{name}/{opCase.Name}/cpu-composite/f32");
    }

    private static Dictionary<string, Tensor> Host(RefArgs values) =>
        values.ToDictionary(kv => kv.Key, kv => kv.Value.ToTensor(DType.F32));

    private static Dictionary<string, Tensor> Poisoned(IEnumerable<KeyValuePair<string, int[]>> shapes) =>
        shapes.ToDictionary(kv => kv.Key, kv =>
        {
            var tensor = Tensor.Host(DType.F32, kv.Value);
            tensor.Fill(double.NaN);
            return tensor;
        });

    [TestCaseSource(nameof(CompositeCases))]
    public void Composite_of_cpu_primitives_matches_the_reference(string opName, string caseName)
    {
        var op = OpCatalog.Get(opName);
        var opCase = op.Cases().Single(c => c.Name == caseName);
        var random = new Random(OpHarness.NewSeed());
        var inputs = OpHarness.Quantize(OpRunner.RandomInputs(opCase, random), DType.F32);
        var outputShapes = op.OutputShapes(OpRunner.ShapesOf(inputs), opCase.Params);
        var dy = OpHarness.Quantize(OpHarness.RandomLike(outputShapes, random), DType.F32);
        var expectedY = OpRunner.Forward(op, inputs, opCase.Params);
        var expectedGradients = OpRunner.Backward(op, inputs, dy, opCase.Params);
        double tolerance = op.ForwardTolerance(DType.F32);

        using var cpu = new CpuBackend();
        var x = Host(inputs);
        var dyHost = Host(dy);
        var y = Poisoned(outputShapes);
        var gradients = Poisoned(expectedGradients.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.Shape)));
        try
        {
            CompositeOps.Forward(cpu, op, x, y, opCase.Params);
            foreach (var (name, tensor) in y)
                Assert.That(OpHarness.RelativeError(tensor.ToDoubles(), expectedY.Get(name).Data), OpHarness.Within(tolerance), name);
            CompositeOps.Backward(cpu, op, x, dyHost, gradients, opCase.Params);
            foreach (var (name, tensor) in gradients)
                Assert.That(OpHarness.RelativeError(tensor.ToDoubles(), expectedGradients.Get(name).Data), OpHarness.Within(2 * tolerance),
                    $"d{name}");
        }
        finally
        {
            foreach (var tensor in x.Values.Concat(dyHost.Values).Concat(y.Values).Concat(gradients.Values)) tensor.Dispose();
        }
    }
}
