using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Safetensors;
using UltraGen.Generation.Sampling;
using UltraGen.Generation.Training;

namespace UltraGen.Tests.Generation;

/// <summary>
/// The loop on a small synthetic task: y = W·x + b fitted by MSE on seeded batches that depend only on the step.
/// </summary>
public class TrainingLoopTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("ultragen-train-").FullName;

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>Linear regression with a deterministic batch per step; can be told to fail like a kill at a step.</summary>
    private sealed class LinearRegressionTask : ITrainingTask, IDisposable
    {
        private const int Batch = 8;
        private readonly int _in, _out;
        private readonly Tensor _weight, _bias;
        private readonly float[] _trueWeight, _trueBias;

        public LinearRegressionTask(int inputs = 5, int outputs = 3)
        {
            _in = inputs;
            _out = outputs;
            _weight = Tensor.Host(DType.F32, outputs, inputs);
            _bias = Tensor.Host(DType.F32, outputs);
            GaussianNoise.Fill(_weight.HostSpan<float>(), 100, 1);
            GaussianNoise.Fill(_bias.HostSpan<float>(), 100, 2);
            _trueWeight = GaussianNoise.Sample(outputs * inputs, 200, 1);
            _trueBias = GaussianNoise.Sample(outputs, 200, 2);
            Parameters = [("weight", _weight), ("bias", _bias)];
        }

        public IReadOnlyList<(string Name, Tensor Master)> Parameters { get; }

        public long? ThrowAtStep { get; init; }

        public bool ForgetBiasGradient { get; init; }

        public int UpdateNotifications { get; private set; }

        public double ComputeGradients(long step, IReadOnlyDictionary<string, Tensor> gradients)
        {
            if (step == ThrowAtStep) throw new InvalidOperationException($"simulated crash at step {step}");
            var x = GaussianNoise.Sample(Batch * _in, 300, (ulong)step);
            var noise = GaussianNoise.Sample(Batch * _out, 400, (ulong)step);
            var w = _weight.HostSpan<float>();
            var b = _bias.HostSpan<float>();
            var predicted = new float[Batch * _out];
            var target = new float[Batch * _out];
            for (int n = 0; n < Batch; n++)
                for (int o = 0; o < _out; o++)
                {
                    float p = b[o], t = _trueBias[o] + 0.01f * noise[n * _out + o];
                    for (int i = 0; i < _in; i++)
                    {
                        p += w[o * _in + i] * x[n * _in + i];
                        t += _trueWeight[o * _in + i] * x[n * _in + i];
                    }
                    predicted[n * _out + o] = p;
                    target[n * _out + o] = t;
                }
            var dPredicted = new float[predicted.Length];
            double loss = FlowMatchingLoss.Compute(predicted, target, 1.0, dPredicted);
            var dw = gradients["weight"].HostSpan<float>();
            dw.Clear();
            for (int n = 0; n < Batch; n++)
                for (int o = 0; o < _out; o++)
                    for (int i = 0; i < _in; i++) dw[o * _in + i] += dPredicted[n * _out + o] * x[n * _in + i];
            if (!ForgetBiasGradient)
            {
                var db = gradients["bias"].HostSpan<float>();
                db.Clear();
                for (int n = 0; n < Batch; n++)
                    for (int o = 0; o < _out; o++) db[o] += dPredicted[n * _out + o];
            }
            return loss;
        }

        public void ParametersUpdated() => UpdateNotifications++;

        public uint[] WeightBits() =>
            [.. _weight.HostSpan<float>().ToArray().Concat(_bias.HostSpan<float>().ToArray()).Select(BitConverter.SingleToUInt32Bits)];

        public void Dispose()
        {
            _weight.Dispose();
            _bias.Dispose();
        }
    }

    private TrainingOptions Options(string run, long total, string? resumeFrom = null) => new()
    {
        TotalSteps = total,
        LearningRate = new LearningRateSchedule(0.05, WarmupSteps: 3, CosineDecay: true, Minimum: 0.005),
        MaxGradNorm = 2.0, // small enough that some steps are clipped
        CheckpointEvery = 5,
        CheckpointPath = PathOf(run + ".safetensors"),
        ResumeFrom = resumeFrom,
        LossLogPath = PathOf(run + ".csv"),
        Seed = 17,
        Config = "linear-regression in=5 out=3 batch=8",
    };

    /// <summary>Log lines without the seconds column (the only one allowed to differ between runs).</summary>
    private static string[] LogWithoutSeconds(string path) =>
        [.. File.ReadAllLines(path).Select(line => string.Join(',', line.Split(',').Take(4)))];

    private static uint[] Bits(Tensor tensor) => [.. tensor.HostSpan<float>().ToArray().Select(BitConverter.SingleToUInt32Bits)];

    private (uint[] Weights, string[] Log, uint[] Moments) Uninterrupted(long total)
    {
        using var task = new LinearRegressionTask();
        var result = new TrainingLoop(task, Options("straight", total)).Run();
        Assert.That(result.CompletedSteps, Is.EqualTo(total));
        using var file = SafetensorsFile.Open(PathOf("straight.safetensors"));
        using var m = file.ReadTensor("optimizer.m.weight");
        using var v = file.ReadTensor("optimizer.v.bias");
        return (task.WeightBits(), LogWithoutSeconds(PathOf("straight.csv")), [.. Bits(m), .. Bits(v)]);
    }

    private void AssertSameAsUninterrupted((uint[] Weights, string[] Log, uint[] Moments) expected, LinearRegressionTask task, string run)
    {
        Assert.That(task.WeightBits(), Is.EqualTo(expected.Weights), "weights bit-identical");
        Assert.That(LogWithoutSeconds(PathOf(run + ".csv")), Is.EqualTo(expected.Log), "loss log identical except seconds");
        using var file = SafetensorsFile.Open(PathOf(run + ".safetensors"));
        using var m = file.ReadTensor("optimizer.m.weight");
        using var v = file.ReadTensor("optimizer.v.bias");
        Assert.That((uint[])[.. Bits(m), .. Bits(v)], Is.EqualTo(expected.Moments), "optimizer state bit-identical");
    }

    [TestCase(false, TestName = "Resume_after_a_clean_stop_is_bit_identical")]
    [TestCase(true, TestName = "Resume_after_a_crash_past_the_checkpoint_is_bit_identical_and_drops_later_log_lines")]
    public void Resume_is_bit_identical(bool crash)
    {
        const int N = 12, K = 5;
        var expected = Uninterrupted(N);
        Assert.That(expected.Log, Has.Length.EqualTo(N + 1));
        Assert.That(File.ReadLines(PathOf("straight.csv")).First(), Is.EqualTo("step,loss,grad_norm,lr,seconds"));
        // The fit must actually progress, or identical logs would prove little.
        double firstLoss = double.Parse(expected.Log[1].Split(',')[1]), lastLoss = double.Parse(expected.Log[N].Split(',')[1]);
        Assert.That(lastLoss, Is.LessThan(firstLoss * 0.8));

        using (var first = new LinearRegressionTask { ThrowAtStep = crash ? 7 : null })
        {
            // A clean stop plans the whole run (the cosine spans N) but ends this session at K.
            var loop = new TrainingLoop(first, Options("resumed", N) with { StopAtStep = crash ? null : K });
            if (crash)
            {
                Assert.Throws<InvalidOperationException>(() => loop.Run());
                // The crash left log lines 6 and 7 behind the step-5 checkpoint.
                Assert.That(File.ReadAllLines(PathOf("resumed.csv")), Has.Length.EqualTo(8));
            }
            else
            {
                loop.Run();
            }
        }
        Assert.That(Checkpoint.ReadStep(PathOf("resumed.safetensors")), Is.EqualTo(K));

        using var second = new LinearRegressionTask(); // fresh objects: weights start from the initial values again
        var result = new TrainingLoop(second, Options("resumed", N, resumeFrom: PathOf("resumed.safetensors"))).Run();
        Assert.That(result.StartStep, Is.EqualTo(K));
        Assert.That(second.UpdateNotifications, Is.EqualTo(1 + N - K), "told once after the load and once per update");
        AssertSameAsUninterrupted(expected, second, "resumed");
    }

    [Test]
    public void Cancel_writes_a_checkpoint_and_resuming_from_it_is_bit_identical()
    {
        const int N = 12;
        var expected = Uninterrupted(N);
        using var cancel = new CancellationTokenSource();
        var reports = new List<TrainingProgress>();
        using (var first = new LinearRegressionTask())
        {
            var loop = new TrainingLoop(first, Options("canceled", N));
            var error = Assert.Throws<TrainingCanceledException>(() => loop.Run(p =>
            {
                reports.Add(p);
                if (p.Step == 4) cancel.Cancel();
            }, cancel.Token))!;
            Assert.That(error.CompletedSteps, Is.EqualTo(4));
        }
        Assert.That(reports.Select(r => r.Step), Is.EqualTo(new long[] { 1, 2, 3, 4 }));
        Assert.That(reports.All(r => r.TotalSteps == N && r.StepsPerSecond > 0 && r.Eta >= TimeSpan.Zero && double.IsFinite(r.Loss)));
        Assert.That(reports[0].LearningRate, Is.EqualTo(0.05 / 3).Within(1e-15), "first warm-up step");
        Assert.That(Checkpoint.ReadStep(PathOf("canceled.safetensors")), Is.EqualTo(4));

        using var second = new LinearRegressionTask();
        var finalReports = new List<TrainingProgress>();
        new TrainingLoop(second, Options("canceled", N, resumeFrom: PathOf("canceled.safetensors"))).Run(finalReports.Add);
        Assert.That(finalReports[^1].Step, Is.EqualTo(N));
        Assert.That(finalReports[^1].Eta, Is.EqualTo(TimeSpan.Zero));
        AssertSameAsUninterrupted(expected, second, "canceled");
    }

    /// <summary>Runs 2 steps and returns the checkpoint path plus the initial weights of a fresh task.</summary>
    private string TwoStepCheckpoint()
    {
        using var task = new LinearRegressionTask();
        new TrainingLoop(task, Options("base", 2)).Run();
        return PathOf("base.safetensors");
    }

    private void AssertResumeFails<TException>(TrainingOptions options, LinearRegressionTask task, string messagePart)
        where TException : Exception
    {
        var before = task.WeightBits();
        var error = Assert.Throws<TException>(() => new TrainingLoop(task, options).Run())!;
        Assert.That(error.Message, Does.Contain(messagePart));
        Assert.That(task.WeightBits(), Is.EqualTo(before), "a refused checkpoint changes nothing");
        Assert.That(task.UpdateNotifications, Is.EqualTo(0));
    }

    [Test]
    public void Mismatched_checkpoints_are_refused_with_a_clear_typed_exception()
    {
        string checkpoint = TwoStepCheckpoint();
        using var task = new LinearRegressionTask();
        var resume = Options("target", 4, resumeFrom: checkpoint);

        AssertResumeFails<CheckpointMismatchException>(resume with { Config = "linear-regression in=5 out=3 batch=16" }, task, "different config");
        AssertResumeFails<CheckpointMismatchException>(resume with { Seed = 18 }, task, "seed 17");
        AssertResumeFails<CheckpointMismatchException>(resume with { Optimizer = new AdamWSettings(WeightDecay: 0.1) }, task, "optimizer settings differ");

        using (var wider = new LinearRegressionTask(inputs: 6))
        {
            var error = Assert.Throws<CheckpointMismatchException>(() => new TrainingLoop(wider, resume).Run())!;
            Assert.That(error.TensorName, Is.EqualTo("weight"));
            Assert.That(error.Message, Does.Contain("(3, 5)").And.Contain("(3, 6)"));
        }

        // The same file without one optimizer tensor, and with an extra one.
        using (var file = SafetensorsFile.Open(checkpoint))
        {
            var tensors = file.Names.Select(name => new KeyValuePair<string, Tensor>(name, file.ReadTensor(name))).ToList();
            try
            {
                SafetensorsWriter.Write(PathOf("missing.safetensors"), tensors.Where(t => t.Key != "optimizer.v.bias"), file.Metadata);
                using var extra = Tensor.FromDoubles(DType.F32, [1], [1.5]);
                SafetensorsWriter.Write(PathOf("extra.safetensors"), tensors.Append(new("lora.b", extra)), file.Metadata);
                SafetensorsWriter.Write(PathOf("no-metadata.safetensors"), tensors);
            }
            finally
            {
                foreach (var (_, tensor) in tensors) tensor.Dispose();
            }
        }
        var missing = Assert.Throws<CheckpointMismatchException>(() =>
            new TrainingLoop(task, resume with { ResumeFrom = PathOf("missing.safetensors") }).Run())!;
        Assert.That(missing.TensorName, Is.EqualTo("optimizer.v.bias"));
        Assert.That(missing.Message, Does.Contain("missing"));
        var extraError = Assert.Throws<CheckpointMismatchException>(() =>
            new TrainingLoop(task, resume with { ResumeFrom = PathOf("extra.safetensors") }).Run())!;
        Assert.That(extraError.TensorName, Is.EqualTo("lora.b"));
        AssertResumeFails<CheckpointMismatchException>(resume with { ResumeFrom = PathOf("no-metadata.safetensors") }, task,
            "not an UltraGen training checkpoint");

        // The untouched original still resumes.
        var result = new TrainingLoop(task, resume).Run();
        Assert.That(result.StartStep, Is.EqualTo(2));
    }

    [Test]
    public void Corrupt_or_missing_checkpoint_files_raise_safetensors_format_errors()
    {
        string checkpoint = TwoStepCheckpoint();
        byte[] bytes = File.ReadAllBytes(checkpoint);
        File.WriteAllBytes(PathOf("truncated.safetensors"), bytes[..(bytes.Length - 7)]);
        var header = (byte[])bytes.Clone();
        header[12] = (byte)'#'; // inside the JSON header
        File.WriteAllBytes(PathOf("garbled.safetensors"), header);
        using var task = new LinearRegressionTask();
        foreach (string name in new[] { "truncated", "garbled", "absent" })
        {
            var error = Assert.Throws<SafetensorsFormatException>(() =>
                new TrainingLoop(task, Options("target", 4, resumeFrom: PathOf(name + ".safetensors"))).Run())!;
            Assert.That(error.FilePath, Does.EndWith(name + ".safetensors"), name);
        }
        Assert.That(task.UpdateNotifications, Is.EqualTo(0));
    }

    [Test]
    public void Checkpoint_holds_masters_moments_and_metadata_and_replaces_the_previous_one()
    {
        using var task = new LinearRegressionTask();
        new TrainingLoop(task, Options("layout", 7)).Run(); // checkpoints at 5 and 7, the same file
        Assert.That(Directory.GetFiles(_dir, "*.tmp"), Is.Empty, "no temporary files left behind");
        using var file = SafetensorsFile.Open(PathOf("layout.safetensors"));
        Assert.That(file.Names, Is.EquivalentTo(new[]
        {
            "weight", "bias", "optimizer.m.weight", "optimizer.m.bias", "optimizer.v.weight", "optimizer.v.bias",
        }));
        Assert.That(file.Metadata["step"], Is.EqualTo("7"));
        Assert.That(file.Metadata["seed"], Is.EqualTo("17"));
        Assert.That(file.Metadata["format"], Is.EqualTo(Checkpoint.Format));
        Assert.That(file.Metadata["optimizer"], Is.EqualTo("adamw beta1=0.9 beta2=0.999 eps=1E-08 weight_decay=0.01"));
        Assert.That(file.Metadata["config"], Is.EqualTo("linear-regression in=5 out=3 batch=8"));
        using var weight = file.ReadTensor("weight");
        Assert.That(Bits(weight), Is.EqualTo(task.WeightBits()[..15]));
        using var v = file.ReadTensor("optimizer.v.weight");
        Assert.That(v.ToDoubles().All(x => x > 0), "second moments of a trained parameter are positive");
    }

    [Test]
    public void Non_finite_loss_or_unwritten_gradient_stops_training_without_an_update()
    {
        using var forgetful = new LinearRegressionTask { ForgetBiasGradient = true };
        var before = forgetful.WeightBits();
        var error = Assert.Throws<TrainingDivergedException>(() => new TrainingLoop(forgetful, Options("nan", 3)).Run())!;
        Assert.That(error.Step, Is.EqualTo(0));
        Assert.That(forgetful.WeightBits(), Is.EqualTo(before));
        Assert.That(File.Exists(PathOf("nan.safetensors")), Is.False, "no checkpoint of a diverged step");
    }
}
