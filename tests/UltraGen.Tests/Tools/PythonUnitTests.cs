using NUnit.Framework;

namespace UltraGen.Tests.Tools;

/// <summary>
/// Runs each Python test module under <c>tools/tests/</c> (Python's unittest) as one NUnit test, so the README's one
/// test command covers the Python tools too.
/// </summary>
[TestFixture]
[NonParallelizable] // each module may use both cores through torch
public sealed class PythonUnitTests
{
    public static IEnumerable<TestCaseData> Modules()
    {
        string folder = Path.Combine(PythonTools.ToolsFolder, "tests");
        foreach (string file in Directory.EnumerateFiles(folder, "test_*.py").Order(StringComparer.Ordinal))
        {
            string module = Path.GetFileNameWithoutExtension(file);
            yield return new TestCaseData(module).SetName($"tools/tests/{module}.py");
        }
    }

    [TestCaseSource(nameof(Modules))]
    public void Module_passes(string module)
    {
        var (exitCode, output) = PythonTools.Run(["-m", "unittest", "-v", $"tests.{module}"]);
        TestContext.Out.WriteLine(output);
        Assert.That(exitCode, Is.EqualTo(0), $"python -m unittest tests.{module} failed:\n{output}");
        Assert.That(output, Does.Match(@"Ran [1-9]\d* tests?"), "the module ran no tests");
    }
}
