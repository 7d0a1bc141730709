using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Tests.Harness;

/// <summary>Every op × case × backend × dtype, forward and backward, and every op's gradients against finite differences.</summary>
[TestFixture]
[Parallelizable(ParallelScope.Children)]
public class OpCatalogTests
{
    private static readonly DType[] s_dtypes = [DType.F32, DType.BF16, DType.F16];

    public static IEnumerable<TestCaseData> BackendCases()
    {
        foreach (var provider in BackendRegistry.Providers)
            foreach (var op in OpCatalog.All)
                foreach (var opCase in op.Cases())
                    foreach (var dtype in s_dtypes)
                        yield return new TestCaseData(provider.Name, op.Name, opCase.Name, dtype)
                            .SetName($"{op.Name}/{opCase.Name}/{provider.Name}/{DTypes.Lower(dtype)}");
    }

    public static IEnumerable<TestCaseData> GradientCases()
    {
        foreach (var op in OpCatalog.All)
            foreach (var opCase in op.Cases().Where(c => c.GradientCheck))
                yield return new TestCaseData(op.Name, opCase.Name).SetName($"{op.Name}/{opCase.Name}/gradcheck");
    }

    private static (Op Op, OpCase Case) Find(string opName, string caseName)
    {
        var op = OpCatalog.Get(opName);
        return (op, op.Cases().Single(c => c.Name == caseName));
    }

    private static IBackend BackendOrSkip(string providerName, Op op, OpCase opCase, DType dtype)
    {
        var probe = BackendRegistry.Get(providerName).Probe();
        if (probe.Backend is null) Assert.Ignore($"backend '{providerName}' is not available here: {probe.UnavailableReason}");
        if (!probe.Backend.SupportsCase(op, dtype, opCase.InputShapes, opCase.Params, out var reason))
        {
            probe.Backend.Dispose();
            Assert.Ignore($"backend '{providerName}' skips this: {reason}");
        }
        return probe.Backend;
    }

    [TestCaseSource(nameof(BackendCases))]
    public void Forward_matches_reference(string backendName, string opName, string caseName, DType dtype)
    {
        var (op, opCase) = Find(opName, caseName);
        using var backend = BackendOrSkip(backendName, op, opCase, dtype);
        OpHarness.CheckForward(backend, op, opCase, dtype);
    }

    [TestCaseSource(nameof(BackendCases))]
    public void Backward_matches_reference(string backendName, string opName, string caseName, DType dtype)
    {
        var (op, opCase) = Find(opName, caseName);
        using var backend = BackendOrSkip(backendName, op, opCase, dtype);
        OpHarness.CheckBackward(backend, op, opCase, dtype);
    }

    [TestCaseSource(nameof(GradientCases))]
    public void Reference_gradients_match_finite_differences(string opName, string caseName)
    {
        var (op, opCase) = Find(opName, caseName);
        OpHarness.CheckGradients(op, opCase);
    }

    [Test]
    public void Every_op_has_cases_and_a_gradient_check()
    {
        Assert.That(OpCatalog.All, Is.Not.Empty);
        foreach (var op in OpCatalog.All)
        {
            var cases = op.Cases().ToList();
            Assert.That(cases, Is.Not.Empty, $"op '{op.Name}' has no cases");
            Assert.That(cases.Any(c => c.GradientCheck), Is.True, $"op '{op.Name}' has no gradient-checked case");
            Assert.That(cases.Select(c => c.Name).Distinct().Count(), Is.EqualTo(cases.Count), $"op '{op.Name}' repeats a case name");
            foreach (var opCase in cases)
            {
                // Shape rules accept every declared case; parameters are all declared.
                opCase.Params.Validate(op.Name, op.Parameters);
                Assert.DoesNotThrow(() => op.OutputShapes(opCase.InputShapes, opCase.Params), $"{op.Name}/{opCase.Name}");
            }
        }
    }

    [TestCase("cpu")]
    [TestCase("ilgpu")]
    public void Kernel_backend_implements_the_whole_catalogue(string backendName)
    {
        // A backend may only skip an op for a reason of the machine (no device), never for a missing kernel.
        var probe = BackendRegistry.Get(backendName).Probe();
        if (probe.Backend is null) Assert.Ignore($"backend '{backendName}' is not available here: {probe.UnavailableReason}");
        using var backend = probe.Backend;
        foreach (var op in OpCatalog.All)
            foreach (var dtype in s_dtypes)
                Assert.That(backend.Supports(op, dtype, out var reason), Is.True, $"{backendName} lacks {op.Name} in {DTypes.Lower(dtype)}: {reason}");
    }
}
