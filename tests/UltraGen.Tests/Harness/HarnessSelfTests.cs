using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Tests.Harness;

/// <summary>
/// The harness must be able to fail: a wrong backward, a backend that leaves outputs unwritten and a backend that is
/// slightly off are each caught.
/// </summary>
[TestFixture]
public class HarnessSelfTests
{
    /// <summary>y = x², with a backward that forgets the factor 2.</summary>
    private sealed class SquareWithWrongBackward : Op
    {
        public override string Name => "square_wrong_backward";
        public override string Summary => "test double";
        public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("x", "(N)")];
        public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(N)")];

        public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams p) =>
            Single("y", RequireShape(shapes, "x", 1));

        public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams p)
        {
            var x = inputs.Get("x");
            var y = outputs.Get("y");
            for (int i = 0; i < x.Length; i++) y.Data[i] = x.Data[i] * x.Data[i];
        }

        public override void ReferenceBackward(RefArgs inputs, RefArgs dy, RefArgs dx, OpParams p)
        {
            var x = inputs.Get("x");
            for (int i = 0; i < x.Length; i++) dx.Get("x").Data[i] = x.Data[i] * dy.Get("y").Data[i];
        }

        public override IEnumerable<OpCase> Cases()
        {
            yield return new OpCase("n7", new Dictionary<string, int[]> { ["x"] = [7] }, new OpParams());
        }
    }

    /// <summary>A backend that does nothing (outputs stay poisoned) or perturbs the reference's result.</summary>
    private sealed class FaultyBackend(double relativePerturbation, bool writeNothing) : IBackend
    {
        private readonly ReferenceBackend _inner = new();
        public string Name => "faulty";
        public string Description => "test double";
        public bool Supports(Op op, DType dtype, out string? reason) => _inner.Supports(op, dtype, out reason);
        public Tensor Allocate(DType dtype, int[] shape) => _inner.Allocate(dtype, shape);
        public void CopyFromHost(Tensor host, Tensor destination) => _inner.CopyFromHost(host, destination);
        public void CopyToHost(Tensor source, Tensor host) => _inner.CopyToHost(source, host);

        public void Forward(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams p)
        {
            if (writeNothing) return;
            _inner.Forward(op, inputs, outputs, p);
            foreach (var output in outputs.Values)
            {
                var values = output.ToDoubles();
                values[0] += relativePerturbation * values.Select(Math.Abs).Sum();
                output.CopyFrom(values);
            }
        }

        public void Backward(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> dy,
            IReadOnlyDictionary<string, Tensor> dx, OpParams p)
        {
            if (!writeNothing) _inner.Backward(op, inputs, dy, dx, p);
        }

        public void Dispose() { }
    }

    [Test]
    public void Wrong_backward_fails_the_gradient_check()
    {
        var op = new SquareWithWrongBackward();
        var errors = OpHarness.GradientErrors(op, op.Cases().Single());
        Assert.That(errors["x"], Is.GreaterThan(0.1), "a backward missing a factor 2 must be far off");
    }

    [Test]
    public void Correct_backward_passes_the_gradient_check()
    {
        var op = OpCatalog.Get("linear");
        foreach (var error in OpHarness.GradientErrors(op, op.Cases().First()).Values)
            Assert.That(error, Is.LessThan(1e-7));
    }

    [Test]
    public void Unwritten_outputs_fail_forward_and_backward()
    {
        var op = OpCatalog.Get("linear");
        using var backend = new FaultyBackend(0, writeNothing: true);
        Assert.That(OpHarness.ForwardErrors(backend, op, op.Cases().First(), DType.F32).Values, Has.All.NaN);
        Assert.That(OpHarness.BackwardErrors(backend, op, op.Cases().First(), DType.F32).Values, Has.All.NaN);
    }

    [Test]
    public void A_nan_error_fails_the_tolerance_check()
    {
        // A bare Is.LessThanOrEqualTo(tolerance) accepts NaN (NUnit orders NaN below every number).
        Assert.That(Is.LessThanOrEqualTo(1.0).ApplyTo(double.NaN).IsSuccess, Is.True, "NUnit's ordering of NaN changed; revisit Within");
        Assert.That(OpHarness.Within(1.0).Resolve().ApplyTo(double.NaN).IsSuccess, Is.False);
        Assert.That(OpHarness.Within(1.0).Resolve().ApplyTo(0.5).IsSuccess, Is.True);
        Assert.That(OpHarness.Within(0.0).Resolve().ApplyTo(1e-300).IsSuccess, Is.False);
    }

    [Test]
    public void A_small_error_exceeds_the_f32_tolerance()
    {
        var op = OpCatalog.Get("linear");
        using var backend = new FaultyBackend(1e-3, writeNothing: false);
        double error = OpHarness.ForwardErrors(backend, op, op.Cases().First(), DType.F32)["y"];
        Assert.That(error, Is.GreaterThan(op.ForwardTolerance(DType.F32)));
    }
}
