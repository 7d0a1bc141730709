using System.Globalization;
using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Ops;
using UltraGen.Tests.Harness;

namespace UltraGen.Tests.Tools;

/// <summary>
/// bench/gpu/layer_peer.py, the PyTorch peer of the GPU layer rows, computes the same function as the ops it is timed
/// against: in its float64 check mode (CPU) it must reproduce <c>ultragen_self_attention</c> and <c>wan_self_attention</c>'s
/// references on fresh random inputs of the op's own cases (every case but the ragged one, which the released code and
/// so the peer do not have). A peer that computed something else would make the GPU table's ratios meaningless.
/// </summary>
[TestFixture]
public class LayerPeerTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("ultragen-layer-peer-").FullName;

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var opName in new[] { "ultragen_self_attention", "wan_self_attention" })
            foreach (var opCase in OpCatalog.Get(opName).Cases())
                if (!(opCase.Params.Values.TryGetValue("ragged", out var ragged) && ragged == "true"))
                    yield return new TestCaseData(opName, opCase.Name).SetName($"layer_peer/{opName}/{opCase.Name}");
    }

    [TestCaseSource(nameof(Cases))]
    public void Float64_check_mode_reproduces_the_reference(string opName, string caseName)
    {
        PythonTools.RequirePython();
        var op = OpCatalog.Get(opName);
        var opCase = op.Cases().Single(c => c.Name == caseName);
        int seed = OpHarness.NewSeed();
        var inputs = OpRunner.RandomInputs(opCase, new Random(seed));
        var expected = OpRunner.Forward(op, inputs, opCase.Params).Get("y");

        string input = Path.Combine(_dir, "in.safetensors"), output = Path.Combine(_dir, "out.safetensors");
        var tensors = inputs.Select(kv => KeyValuePair.Create(kv.Key, Tensor.FromDoubles(DType.F64, kv.Value.Shape, kv.Value.Data))).ToList();
        try { SafetensorsWriter.Write(input, tensors); }
        finally { foreach (var (_, tensor) in tensors) tensor.Dispose(); }

        var p = opCase.Params;
        var json = string.Join(", ", new[] { "T", "H", "W", "heads" }.Select(k => $"\"{k}\": {p.GetInt(k)}"));
        if (opName == "ultragen_self_attention")
            json += string.Create(CultureInfo.InvariantCulture,
                $", \"block\": {p.GetInt("block")}, \"k_uses_wq\": {(p.Values.TryGetValue("k_uses_wq", out var k) && k == "false" ? "false" : "true")}");
        var (exitCode, log) = PythonTools.Run(["../bench/gpu/layer_peer.py", "--check", input, "--op", opName, "--params", "{" + json + "}", "--output", output]);
        Assert.That(exitCode, Is.EqualTo(0), log);

        using var file = SafetensorsFile.Open(output);
        using var y = file.ReadTensor("y");
        Assert.That(y.Shape.ToArray(), Is.EqualTo(expected.Shape));
        double error = OpHarness.RelativeError(y.ToDoubles(), expected.Data);
        TestContext.Out.WriteLine($"{opName}/{caseName}: peer vs reference, float64, rel err {error:E2}");
        Assert.That(error, OpHarness.Within(1e-10));
    }
}
