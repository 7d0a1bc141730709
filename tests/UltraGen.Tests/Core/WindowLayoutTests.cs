using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Tests.Core;

[TestFixture]
public class WindowLayoutTests
{
    private static readonly Grid3 Grid1080P = new(21, 68, 120);
    private static readonly Grid3 Grid4K = new(21, 135, 240);

    // ---------------------------------------------------------------- Grid3

    [Test]
    public void Grid3_TokenCountAndFrameMajorIndex()
    {
        Assert.That(Grid1080P.TokenCount, Is.EqualTo(171_360L));
        Assert.That(Grid4K.TokenCount, Is.EqualTo(680_400L));
        var g = new Grid3(3, 4, 5);
        Assert.That(g.TokenIndex(0, 0, 0), Is.EqualTo(0L));
        Assert.That(g.TokenIndex(0, 0, 1), Is.EqualTo(1L));
        Assert.That(g.TokenIndex(0, 1, 0), Is.EqualTo(5L));
        Assert.That(g.TokenIndex(1, 0, 0), Is.EqualTo(20L));
        Assert.That(g.TokenIndex(2, 3, 4), Is.EqualTo(59L));
        for (long idx = 0; idx < g.TokenCount; idx++)
        {
            var (t, row, col) = g.Coordinates(idx);
            Assert.That(g.Contains(t, row, col), Is.True);
            Assert.That(g.TokenIndex(t, row, col), Is.EqualTo(idx));
        }
    }

    [Test]
    public void Grid3_ValidateNamesTheSizes()
    {
        var ex = Assert.Throws<ShapeMismatchException>(() => new Grid3(2, 0, 7).Validate());
        Assert.That(ex!.Message, Does.Contain("H=0").And.Contain("W=7"));
        Assert.That(new Grid3(1, 1, 1).Validate(), Is.EqualTo(new Grid3(1, 1, 1)));
    }

    // ---------------------------------------------------------------- ClosestDivisible

    [TestCase(6, 4, 4)]    // tie 4 | 8 → lower
    [TestCase(2, 4, 4)]    // tie 0 | 4 → lower is 0 → n
    [TestCase(1, 4, 4)]    // nearest is 0 → n
    [TestCase(3, 4, 4)]
    [TestCase(10, 4, 8)]   // tie 8 | 12 → lower
    [TestCase(7, 2, 6)]    // tie 6 | 8 → lower
    [TestCase(68, 4, 68)]  // exact multiples unchanged
    [TestCase(120, 5, 120)]
    [TestCase(240, 4, 240)]
    [TestCase(7, 1, 7)]
    [TestCase(68, 5, 70)]  // §1.4 cases
    [TestCase(34, 3, 33)]
    [TestCase(60, 3, 60)]
    [TestCase(135, 4, 136)]
    [TestCase(135, 5, 135)]
    [TestCase(67, 2, 66)]  // tie 66 | 68 → lower
    [TestCase(67, 3, 66)]
    [TestCase(34, 2, 34)]
    public void ClosestDivisible_Cases(int x, int n, int expected) =>
        Assert.That(WindowLayout.ClosestDivisible(x, n), Is.EqualTo(expected));

    [Test]
    public void ClosestDivisible_MatchesBruteForceNearestWithTiesDown()
    {
        for (int n = 1; n <= 9; n++)
        for (int x = 1; x <= 60; x++)
        {
            int best = -1;
            for (int m = 0; m <= x + n; m += n)
                if (best < 0 || Math.Abs(m - x) < Math.Abs(best - x)) best = m; // strict: first (lower) wins ties
            if (best == 0) best = n;
            Assert.That(WindowLayout.ClosestDivisible(x, n), Is.EqualTo(best), $"x={x}, n={n}");
        }
    }

    [Test]
    public void ClosestDivisible_RejectsBadArguments()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => WindowLayout.ClosestDivisible(5, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => WindowLayout.ClosestDivisible(0, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => WindowLayout.ClosestDivisible(-4, 2));
    }

    // ---------------------------------------------------------------- §1.4 tables

    public readonly record struct BranchRow(int Windows, int InH, int InW, int ResizedH, int ResizedW, int WinH, int WinW, int Tokens);

    public static IEnumerable<TestCaseData> ReferenceTables()
    {
        // grid, block, local, global, hierarchical
        yield return new TestCaseData(Grid1080P, 4,
                new BranchRow(4, 68, 120, 68, 120, 17, 30, 10_710),
                new BranchRow(1, 17, 30, 17, 30, 17, 30, 10_710),
                new BranchRow(2, 34, 60, 34, 60, 17, 30, 10_710))
            .SetName("Table_1080P_Even");
        yield return new TestCaseData(Grid1080P, 3,
                new BranchRow(5, 68, 120, 70, 120, 14, 24, 7_056),
                new BranchRow(1, 17, 30, 17, 30, 17, 30, 10_710),
                new BranchRow(3, 34, 60, 33, 60, 11, 20, 4_620))
            .SetName("Table_1080P_Odd");
        yield return new TestCaseData(Grid4K, 4,
                new BranchRow(4, 135, 240, 136, 240, 34, 60, 42_840),
                new BranchRow(1, 33, 60, 33, 60, 33, 60, 41_580),
                new BranchRow(2, 67, 120, 66, 120, 33, 60, 41_580))
            .SetName("Table_4K_Even");
        yield return new TestCaseData(Grid4K, 3,
                new BranchRow(5, 135, 240, 135, 240, 27, 48, 27_216),
                new BranchRow(1, 33, 60, 33, 60, 33, 60, 41_580),
                new BranchRow(3, 67, 120, 66, 120, 22, 40, 18_480))
            .SetName("Table_4K_Odd");
    }

    [TestCaseSource(nameof(ReferenceTables))]
    public void Plan_MatchesSpecTables(Grid3 grid, int block, BranchRow local, BranchRow global, BranchRow hier)
    {
        var plan = UltraGenLayoutPlan.Create(grid, block);
        Assert.Multiple(() =>
        {
            Assert.That(plan.Parity, Is.EqualTo(block % 2));
            Assert.That(plan.Mode, Is.EqualTo(WindowMode.ResizeToDivisible));
            AssertBranch(plan.Local, grid.T, local, 1);
            AssertBranch(plan.Global, grid.T, global, UltraGenLayoutPlan.GlobalDownsample);
            AssertBranch(plan.Hierarchical, grid.T, hier, UltraGenLayoutPlan.HierarchicalDownsample);
            Assert.That(plan.Global.InputGrid.TokenCount, Is.EqualTo((long)global.Tokens));
        });
    }

    private static void AssertBranch(BranchLayout b, int t, BranchRow e, int down)
    {
        string name = b.Branch.ToString();
        Assert.That(b.Downsample, Is.EqualTo(down), name);
        Assert.That(b.WindowsPerSide, Is.EqualTo(e.Windows), name + " windows per side");
        Assert.That(b.Layout.WindowCount, Is.EqualTo(e.Windows * e.Windows), name);
        Assert.That(b.InputGrid, Is.EqualTo(new Grid3(t, e.InH, e.InW)), name + " input grid");
        Assert.That((b.ResizedH, b.ResizedW), Is.EqualTo((e.ResizedH, e.ResizedW)), name + " resized");
        Assert.That(b.IsResized, Is.EqualTo(e.InH != e.ResizedH || e.InW != e.ResizedW), name);
        Assert.That((b.WindowH, b.WindowW), Is.EqualTo((e.WinH, e.WinW)), name + " window h x w");
        Assert.That(b.TokensPerWindow, Is.EqualTo(e.Tokens), name + " tokens/window");
        Assert.That(b.Layout.IsUniform, Is.True, name);
        for (int g = 0; g < b.Layout.WindowCount; g++)
            Assert.That(b.Layout.TokensInWindow(g), Is.EqualTo(e.Tokens), $"{name} window {g}");
        Assert.That(b.AttentionPairs, Is.EqualTo((long)e.Windows * e.Windows * e.Tokens * e.Tokens), name + " pairs");
    }

    [Test]
    public void Plan_ParityFollowsAbsoluteBlockIndex()
    {
        for (int block = 3; block <= 26; block++)
        {
            var plan = UltraGenLayoutPlan.Create(Grid1080P, block);
            Assert.That(plan.Local.WindowsPerSide, Is.EqualTo(4 + block % 2));
            Assert.That(plan.Hierarchical.WindowsPerSide, Is.EqualTo(2 + block % 2));
            Assert.That(plan.Global.WindowsPerSide, Is.EqualTo(1));
        }
    }

    // ---------------------------------------------------------------- cost ratio

    [Test]
    public void CostRatio_1080PEven_IsPaperFormula()
    {
        var plan = UltraGenLayoutPlan.Create(Grid1080P, 4);
        const double k = 4;
        double paper = 5 / (4 * k * k) + 1 / (k * k * k * k); // 21/256
        TestContext.Out.WriteLine($"1080P even: {plan.AttentionCostRatio:F6} (paper {paper:F6})");
        Assert.That(Math.Round(plan.AttentionCostRatio, 4), Is.EqualTo(0.0820));
        Assert.That(plan.AttentionCostRatio, Is.EqualTo(paper).Within(1e-12));
        Assert.That(plan.AttentionPairs, Is.EqualTo(21L * 10_710 * 10_710));
    }

    [Test]
    public void CostRatio_OddLayers_BetweenFivePercentAndFivePointThree()
    {
        foreach (var (name, grid) in new[] { ("1080P", Grid1080P), ("4K", Grid4K) })
        {
            var odd = UltraGenLayoutPlan.Create(grid, 3);
            var even = UltraGenLayoutPlan.Create(grid, 4);
            TestContext.Out.WriteLine($"{name}: odd {odd.AttentionCostRatio:F6}, even {even.AttentionCostRatio:F6}");
            Assert.That(odd.AttentionCostRatio, Is.InRange(0.050, 0.053), name);
            Assert.That(odd.AttentionCostRatio, Is.LessThan(even.AttentionCostRatio), name);
        }
        // Hand-computed pair counts (§1.4): 25·7056² + 10710² + 9·4620² and 25·27216² + 41580² + 9·18480².
        Assert.That(UltraGenLayoutPlan.Create(Grid1080P, 3).AttentionPairs,
            Is.EqualTo(25L * 7_056 * 7_056 + 10_710L * 10_710 + 9L * 4_620 * 4_620));
        Assert.That(UltraGenLayoutPlan.Create(Grid4K, 3).AttentionPairs,
            Is.EqualTo(25L * 27_216 * 27_216 + 41_580L * 41_580 + 9L * 18_480 * 18_480));
    }

    [Test]
    public void CostRatio_RaggedMode_ReportsValues()
    {
        foreach (var grid in new[] { Grid1080P, Grid4K })
        foreach (int block in new[] { 3, 4 })
        {
            var ragged = UltraGenLayoutPlan.Create(grid, block, WindowMode.Ragged);
            var resized = UltraGenLayoutPlan.Create(grid, block);
            TestContext.Out.WriteLine($"{grid} block {block}: ragged {ragged.AttentionCostRatio:F6}, resized {resized.AttentionCostRatio:F6}");
            Assert.That(ragged.Local.IsResized || ragged.Hierarchical.IsResized, Is.False);
            Assert.That(ragged.Local.Layout.Grid, Is.EqualTo(grid));
            Assert.That(ragged.AttentionCostRatio, Is.EqualTo(resized.AttentionCostRatio).Within(0.005));
        }
    }

    // ---------------------------------------------------------------- full blocks

    [Test]
    public void IsDecomposed_ReferencePlan()
    {
        Assert.That(UltraGenLayoutPlan.ReferenceFullBlocks, Is.EquivalentTo(new[] { 0, 1, 2, 27, 28, 29 }));
        var decomposed = Enumerable.Range(0, 30).Where(b => UltraGenLayoutPlan.IsDecomposed(b, UltraGenLayoutPlan.ReferenceFullBlocks)).ToArray();
        Assert.That(decomposed, Is.EqualTo(Enumerable.Range(3, 24).ToArray()));
        Assert.That(UltraGenLayoutPlan.IsDecomposed(2), Is.False);
        Assert.That(UltraGenLayoutPlan.IsDecomposed(3), Is.True);
        Assert.That(UltraGenLayoutPlan.IsDecomposed(5, new HashSet<int>()), Is.True);
        Assert.Throws<ArgumentOutOfRangeException>(() => UltraGenLayoutPlan.IsDecomposed(-1));
    }

    // ---------------------------------------------------------------- properties on random grids

    private static IEnumerable<(Grid3 Grid, int N)> RandomCases(int seed, bool divisible)
    {
        var rng = new Random(seed);
        for (int c = 0; c < 150; c++)
        {
            int n = rng.Next(1, 7);
            int t = rng.Next(1, 4);
            int h, w;
            if (divisible)
            {
                h = n * rng.Next(1, 6);
                w = n * rng.Next(1, 6);
            }
            else
            {
                h = rng.Next(n, 3 * n + 6);
                w = rng.Next(n, 3 * n + 6);
            }
            yield return (new Grid3(t, h, w), n);
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Windows_PartitionTheGridExactly(bool divisible)
    {
        foreach (var (grid, n) in RandomCases(divisible ? 1234 : 5678, divisible))
        {
            var layout = divisible ? WindowLayout.Divisible(grid, n) : WindowLayout.Ragged(grid, n);
            CheckPartition(layout);
        }
    }

    private static void CheckPartition(WindowLayout layout)
    {
        var grid = layout.Grid;
        int n = layout.WindowsPerSide;
        string ctx = layout.ToString();
        var seen = new int[grid.TokenCount];
        long total = 0, pairs = 0;
        int maxTokens = 0;

        // Row and column ranges tile [0, H) and [0, W) in order, sizes differing by at most one.
        int expectRow = 0, expectCol = 0;
        for (int r = 0; r < n; r++)
        {
            var (start, len) = layout.RowRange(r);
            Assert.That(start, Is.EqualTo(expectRow), ctx);
            Assert.That(len, Is.InRange(grid.H / n, (grid.H + n - 1) / n), ctx);
            expectRow += len;
            var (cs, cl) = layout.ColRange(r);
            Assert.That(cs, Is.EqualTo(expectCol), ctx);
            Assert.That(cl, Is.InRange(grid.W / n, (grid.W + n - 1) / n), ctx);
            expectCol += cl;
        }
        Assert.That((expectRow, expectCol), Is.EqualTo((grid.H, grid.W)), ctx);

        for (int g = 0; g < layout.WindowCount; g++)
        {
            var (rowStart, rowCount, colStart, colCount) = layout.WindowBounds(g);
            Assert.That((rowStart, rowCount), Is.EqualTo(layout.RowRange(g / n)), ctx);
            Assert.That((colStart, colCount), Is.EqualTo(layout.ColRange(g % n)), ctx);
            int tokens = layout.TokensInWindow(g);
            Assert.That(tokens, Is.EqualTo(grid.T * rowCount * colCount).And.GreaterThan(0), ctx);
            maxTokens = Math.Max(maxTokens, tokens);
            total += tokens;
            pairs += (long)tokens * tokens;

            long previous = -1;
            for (int i = 0; i < tokens; i++)
            {
                var (t, lr, lc) = layout.LocalCoordinates(g, i);
                Assert.That(t, Is.InRange(0, grid.T - 1), ctx);
                Assert.That(lr, Is.InRange(0, rowCount - 1), ctx);
                Assert.That(lc, Is.InRange(0, colCount - 1), ctx);
                if (i == 0) Assert.That((t, lr, lc), Is.EqualTo((0, 0, 0)), ctx);
                // (t, localRow, localCol) order with localCol fastest.
                Assert.That((t * rowCount + lr) * colCount + lc, Is.EqualTo(i), ctx);

                long index = layout.TokenIndex(g, i);
                Assert.That(index, Is.EqualTo(grid.TokenIndex(t, rowStart + lr, colStart + lc)), ctx);
                Assert.That(index, Is.GreaterThan(previous), ctx + " (window tokens ascend in global order)");
                previous = index;
                seen[index]++;
            }
            Assert.Throws<ArgumentOutOfRangeException>(() => layout.TokenIndex(g, tokens));
        }

        Assert.That(seen.All(count => count == 1), Is.True, ctx + ": every token exactly once");
        Assert.That(total, Is.EqualTo(grid.TokenCount), ctx);
        Assert.That(layout.AttentionPairs, Is.EqualTo(pairs), ctx);
        Assert.That(layout.MaxTokensInWindow, Is.EqualTo(maxTokens), ctx);
        Assert.That(layout.IsUniform, Is.EqualTo(grid.H % n == 0 && grid.W % n == 0), ctx);
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.WindowBounds(layout.WindowCount));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.WindowBounds(-1));
    }

    [Test]
    public void Ragged_EqualsDivisible_WhenDivisible()
    {
        foreach (var (grid, n) in RandomCases(42, divisible: true))
        {
            var a = WindowLayout.Divisible(grid, n);
            var b = WindowLayout.Ragged(grid, n);
            Assert.That(b.IsUniform, Is.True);
            for (int g = 0; g < a.WindowCount; g++)
            {
                Assert.That(b.WindowBounds(g), Is.EqualTo(a.WindowBounds(g)));
                // Uniform windows: start = r·(H/n), the reference's (n1 h) split.
                var (rowStart, rowCount, colStart, colCount) = a.WindowBounds(g);
                Assert.That((rowStart, rowCount), Is.EqualTo((g / n * (grid.H / n), grid.H / n)));
                Assert.That((colStart, colCount), Is.EqualTo((g % n * (grid.W / n), grid.W / n)));
            }
        }
    }

    [Test]
    public void OneWindowPerSide_IsIdentityOrder()
    {
        foreach (var (grid, _) in RandomCases(99, divisible: false))
        foreach (var layout in new[] { WindowLayout.Divisible(grid, 1), WindowLayout.Ragged(grid, 1) })
        {
            Assert.That(layout.WindowCount, Is.EqualTo(1));
            Assert.That(layout.TokensInWindow(0), Is.EqualTo((int)grid.TokenCount));
            Assert.That(layout.AttentionPairs, Is.EqualTo(grid.TokenCount * grid.TokenCount));
            for (int i = 0; i < grid.TokenCount; i++)
            {
                Assert.That(layout.TokenIndex(0, i), Is.EqualTo((long)i));
                Assert.That(layout.LocalCoordinates(0, i), Is.EqualTo(grid.Coordinates(i)));
            }
        }
    }

    [Test]
    public void Ragged_KnownSplit()
    {
        // H = 7, n = 3: rows [0,2), [2,4), [4,7). W = 10: cols [0,3), [3,6), [6,10).
        var layout = WindowLayout.Ragged(new Grid3(2, 7, 10), 3);
        Assert.That(layout.RowRange(0), Is.EqualTo((0, 2)));
        Assert.That(layout.RowRange(1), Is.EqualTo((2, 2)));
        Assert.That(layout.RowRange(2), Is.EqualTo((4, 3)));
        Assert.That(layout.ColRange(0), Is.EqualTo((0, 3)));
        Assert.That(layout.ColRange(1), Is.EqualTo((3, 3)));
        Assert.That(layout.ColRange(2), Is.EqualTo((6, 4)));
        Assert.That(layout.WindowBounds(5), Is.EqualTo((2, 2, 6, 4)));
        Assert.That(layout.TokensInWindow(8), Is.EqualTo(2 * 3 * 4));
        Assert.That(layout.MaxTokensInWindow, Is.EqualTo(24));
        Assert.That((layout.MaxWindowRows, layout.MaxWindowCols), Is.EqualTo((3, 4)));
        Assert.That(layout.IsUniform, Is.False);
        // Window 5, token 9: hw = 8, t = 1, in-frame 1 → local (0, 1) → global (1·7 + 2)·10 + 7 = 97.
        Assert.That(layout.LocalCoordinates(5, 9), Is.EqualTo((1, 0, 1)));
        Assert.That(layout.TokenIndex(5, 9), Is.EqualTo(97L));
    }

    // ---------------------------------------------------------------- errors

    [Test]
    public void Divisible_NonDivisible_ThrowsNamingSizes()
    {
        var ex = Assert.Throws<ShapeMismatchException>(() => WindowLayout.Divisible(Grid1080P, 5));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("H=68").And.Contain("5x5").And.Contain("70").And.Not.Contain("W=120 is"));

        ex = Assert.Throws<ShapeMismatchException>(() => WindowLayout.Divisible(new Grid3(1, 8, 9), 4));
        Assert.That(ex!.Message, Does.Contain("W=9").And.Contain("4x4"));

        ex = Assert.Throws<ShapeMismatchException>(() => WindowLayout.Divisible(Grid4K, 4));
        Assert.That(ex!.Message, Does.Contain("H=135").And.Contain("136"));
    }

    [Test]
    public void Ragged_TooManyWindows_ThrowsNamingSizes()
    {
        var ex = Assert.Throws<ShapeMismatchException>(() => WindowLayout.Ragged(new Grid3(2, 3, 10), 4));
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("H=3").And.Contain("W=10").And.Contain("4x4").And.Contain("H >= 4"));
        Assert.Throws<ShapeMismatchException>(() => WindowLayout.Ragged(new Grid3(2, 10, 3), 4));
        Assert.DoesNotThrow(() => WindowLayout.Ragged(new Grid3(2, 4, 4), 4));
    }

    [Test]
    public void InvalidArguments_AreTyped()
    {
        Assert.Throws<UnsupportedConfigurationException>(() => WindowLayout.Ragged(Grid1080P, 0));
        Assert.Throws<UnsupportedConfigurationException>(() => WindowLayout.Divisible(Grid1080P, -2));
        Assert.Throws<ShapeMismatchException>(() => WindowLayout.Divisible(new Grid3(0, 4, 4), 1));
        Assert.Throws<UnsupportedConfigurationException>(() => UltraGenLayoutPlan.Create(Grid1080P, 3, k: 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => UltraGenLayoutPlan.Create(Grid1080P, -1));
        var small = Assert.Throws<ShapeMismatchException>(() => UltraGenLayoutPlan.Create(new Grid3(1, 3, 16), 4));
        Assert.That(small!.Message, Does.Contain("H=3"));
        // Ragged plan: the hierarchical branch sees (T, 2, 2) from an (T, 5, 5) grid; 3x3 windows do not fit.
        var hier = Assert.Throws<ShapeMismatchException>(() => UltraGenLayoutPlan.Create(new Grid3(1, 5, 5), 3, WindowMode.Ragged));
        Assert.That(hier!.Message, Does.Contain("H=2"));
    }

    [Test]
    public void ResizeMode_TinyGrid_UsesNInsteadOfEmpty()
    {
        // ClosestDivisible(2, 3) = 3 (nearer than 0); ClosestDivisible(4, 5) = 5.
        var plan = UltraGenLayoutPlan.Create(new Grid3(1, 4, 4), 3);
        Assert.That((plan.Hierarchical.ResizedH, plan.Hierarchical.ResizedW), Is.EqualTo((3, 3)));
        Assert.That((plan.Local.ResizedH, plan.Local.ResizedW), Is.EqualTo((5, 5)));
        Assert.That(plan.Global.InputGrid, Is.EqualTo(new Grid3(1, 1, 1)));

        // K = 8: ClosestDivisible(4, 8) and ClosestDivisible(2, 4) tie with 0; the reference would give an empty grid, we give n.
        var wide = UltraGenLayoutPlan.Create(new Grid3(1, 4, 4), 4, k: 8);
        Assert.That((wide.Local.ResizedH, wide.Local.WindowH), Is.EqualTo((8, 1)));
        Assert.That((wide.Hierarchical.ResizedH, wide.Hierarchical.WindowH), Is.EqualTo((4, 1)));
    }
}
