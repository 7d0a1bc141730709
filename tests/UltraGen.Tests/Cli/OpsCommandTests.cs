using System.Text;
using NUnit.Framework;
using UltraGen.Cli;
using UltraGen.Cli.Commands;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Ops;

namespace UltraGen.Tests.Cli;

/// <summary><c>ultragen ops</c> end to end, in process: listing, running, and bad input giving exit code 2 with no output file.</summary>
[TestFixture]
[NonParallelizable]
public class OpsCommandTests
{
    private string _directory = "";

    [SetUp]
    public void SetUp() => _directory = Directory.CreateTempSubdirectory("ultragen-cli-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_directory, recursive: true);

    private string PathOf(string name) => Path.Combine(_directory, name);

    private static (int ExitCode, string Out, string Error) Invoke(params string[] args) => CliRunner.Invoke(args);

    /// <summary>A file from a literal header and data buffer, for malformed variants.</summary>
    private string WriteRaw(string name, string header, byte[] data, ulong? headerLengthOverride = null)
    {
        var headerBytes = Encoding.UTF8.GetBytes(header);
        using var stream = File.Create(PathOf(name));
        stream.Write(BitConverter.GetBytes(headerLengthOverride ?? (ulong)headerBytes.Length));
        stream.Write(headerBytes);
        stream.Write(data);
        return PathOf(name);
    }

    private static byte[] Floats(int count) => Enumerable.Range(1, count).SelectMany(i => BitConverter.GetBytes(i * 0.25f)).ToArray();

    [Test]
    public void List_prints_every_op_with_its_tensors()
    {
        var (exit, output, _) = Invoke("ops", "list");
        Assert.That(exit, Is.Zero);
        foreach (var op in OpCatalog.All)
        {
            Assert.That(output, Does.Contain(op.Name + " — "));
            foreach (var input in op.Inputs) Assert.That(output, Does.Contain(input.Name));
        }
    }

    [Test]
    public void Run_forward_and_backward_matches_the_reference()
    {
        string input = PathOf("in.safetensors"), output = PathOf("out.safetensors");
        Assert.That(Invoke("ops", "example", "linear", "-o", input, "--with-grad", "--dtype", "f64").ExitCode, Is.Zero);
        var run = Invoke("ops", "run", "linear", "-i", input, "-o", output, "--backend", "reference");
        Assert.That(run.ExitCode, Is.Zero, run.Error);

        using var inputs = SafetensorsFile.Open(input);
        using var outputs = SafetensorsFile.Open(output);
        RefTensor Read(SafetensorsFile file, string name) { using var t = file.ReadTensor(name); return RefTensor.FromTensor(t); }
        var args = new RefArgs { ["x"] = Read(inputs, "x"), ["weight"] = Read(inputs, "weight"), ["bias"] = Read(inputs, "bias") };
        var expected = LinearOp.Forward(args["x"], args["weight"], args["bias"]);
        Assert.That(Read(outputs, "y").Data, Is.EqualTo(expected.Data).Within(1e-12));
        var (dx, _, _) = LinearOp.Backward(args["x"], args["weight"], Read(inputs, "grad.y"));
        Assert.That(Read(outputs, "grad.x").Data, Is.EqualTo(dx.Data).Within(1e-12));
    }

    [Test]
    public void Params_come_from_the_file_and_the_command_line_overrides_them()
    {
        string input = PathOf("in.safetensors"), output = PathOf("out.safetensors");
        Assert.That(Invoke("ops", "example", "bilinear_resize", "-o", input).ExitCode, Is.Zero);
        Assert.That(Invoke("ops", "run", "bilinear_resize", "-i", input, "-o", output, "-p", "out_h=5", "-p", "out_w=6").ExitCode, Is.Zero);
        using var outputs = SafetensorsFile.Open(output);
        var shape = outputs.GetInfo("y").Shape;
        Assert.That(shape[2..4], Is.EqualTo(new[] { 5, 6 }));
    }

    private static readonly string ValidEntry = "\"x\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,60]}";

    public static IEnumerable<TestCaseData> MalformedFiles()
    {
        yield return new TestCaseData("truncated", "{" + ValidEntry + "}", 40, null).SetName("Malformed_truncated_gives_exit_2");
        yield return new TestCaseData("overlapping",
            "{\"x\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,60]},\"weight\":{\"dtype\":\"F32\",\"shape\":[4,5],\"data_offsets\":[40,120]}}",
            120, null).SetName("Malformed_overlapping_offsets_gives_exit_2");
        yield return new TestCaseData("huge_header", "{" + ValidEntry + "}", 60, 1UL << 40).SetName("Malformed_header_length_2pow40_gives_exit_2");
        yield return new TestCaseData("unknown_dtype", "{\"x\":{\"dtype\":\"F33\",\"shape\":[3,5],\"data_offsets\":[0,60]}}", 60, null)
            .SetName("Malformed_unknown_dtype_gives_exit_2");
    }

    [TestCaseSource(nameof(MalformedFiles))]
    public void Malformed_file_gives_a_typed_error_and_exit_code_2(string name, string header, int dataFloatsBytes, ulong? headerLength)
    {
        string input = WriteRaw(name + ".safetensors", header, Floats(dataFloatsBytes / 4), headerLength);
        Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(input).Dispose());
        string output = PathOf("out.safetensors");
        var (exit, _, error) = Invoke("ops", "run", "linear", "-i", input, "-o", output);
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error.Trim().Split('\n'), Has.Length.EqualTo(1), "one-line message");
        Assert.That(error, Does.StartWith("error: ").And.Contain(input));
        Assert.That(File.Exists(output), Is.False, "no partial output");
    }

    [Test]
    public void Wrong_shapes_give_exit_2_and_keep_an_existing_output()
    {
        string input = PathOf("in.safetensors"), output = PathOf("out.safetensors");
        File.WriteAllText(output, "previous result");
        using (var x = Tensor.FromDoubles(DType.F32, [3, 5], Enumerable.Range(0, 15).Select(i => i + 0.5).ToArray()))
        using (var weight = Tensor.FromDoubles(DType.F32, [4, 6], Enumerable.Range(0, 24).Select(i => i - 0.5).ToArray()))
            SafetensorsWriter.Write(input, [new("x", x), new("weight", weight)]);
        var (exit, _, error) = Invoke("ops", "run", "linear", "-i", input, "-o", output);
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain("x's last dim 5").And.Contain("weight"));
        Assert.That(File.ReadAllText(output), Is.EqualTo("previous result"));
    }

    [TestCase("nosuchop", "unknown op 'nosuchop'")]
    [TestCase("bilinear_resize", "needs parameter 'out_h'")]
    public void Unknown_op_or_missing_parameter_gives_exit_2(string op, string message)
    {
        string input = PathOf("in.safetensors");
        using (var x = Tensor.FromDoubles(DType.F32, [1, 1, 2, 2, 1], [1.5, 2.5, 3.5, 4.5]))
            SafetensorsWriter.Write(input, [new("x", x)]);
        var (exit, _, error) = Invoke("ops", "run", op, "-i", input, "-o", PathOf("out.safetensors"));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(error, Does.Contain(message));
    }

    [Test]
    public void Describe_names_dtypes_and_shape_rules() =>
        Assert.That(OpsCommand.Describe([OpCatalog.Get("linear")]), Does.Contain("f32|bf16|f16|f64").And.Contain("(out, in)"));
}
