using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Ops;

namespace UltraGen.Tests.Ops;

/// <summary>
/// Anchors for the attention references that the catalogue harness cannot give: RoPE against hand computation, window
/// attention against plain attention written out here, per-window independence, ragged coverage and typed errors.
/// </summary>
[TestFixture]
public class AttentionOpsTests
{
    private const double Tight = 1e-12;

    private static RefTensor Random(Random random, params int[] shape)
    {
        var tensor = new RefTensor(shape);
        for (int i = 0; i < tensor.Length; i++) tensor.Data[i] = 2 * random.NextDouble() - 1;
        return tensor;
    }

    private static double MaxAbsDiff(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length));
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    /// <summary>Textbook attention of n queries over l keys of one head: softmax(q·kᵀ/√d)·v, rows as arrays.</summary>
    private static double[][] PlainAttention(double[][] q, double[][] k, double[][] v)
    {
        int n = q.Length, l = k.Length, d = q[0].Length;
        var o = new double[n][];
        for (int i = 0; i < n; i++)
        {
            var logits = new double[l];
            for (int j = 0; j < l; j++)
            {
                double dot = 0;
                for (int c = 0; c < d; c++) dot += q[i][c] * k[j][c];
                logits[j] = dot / Math.Sqrt(d);
            }
            double max = logits.Max();
            var weights = logits.Select(l => Math.Exp(l - max)).ToArray();
            double sum = weights.Sum();
            o[i] = new double[d];
            for (int j = 0; j < l; j++)
                for (int c = 0; c < d; c++) o[i][c] += weights[j] / sum * v[j][c];
        }
        return o;
    }

    private static double[] HeadVector(RefTensor x, int b, int t, int row, int col, int head, int headDim)
    {
        int rows = x.Dim(2), cols = x.Dim(3), channels = x.Dim(4);
        int offset = (((b * x.Dim(1) + t) * rows + row) * cols + col) * channels + head * headDim;
        return x.Data.AsSpan(offset, headDim).ToArray();
    }

    // ---------------------------------------------------------------- Rope3d

    [Test]
    public void Rope3d_split_matches_wan()
    {
        Assert.That(Rope3d.Split(128), Is.EqualTo((44, 42, 42)));
        Assert.That(Rope3d.Split(64), Is.EqualTo((24, 20, 20)));
        Assert.That(Rope3d.Split(6), Is.EqualTo((2, 2, 2)));
        Assert.That(Rope3d.Split(8), Is.EqualTo((4, 2, 2)));
        Assert.That(Rope3d.Split(12), Is.EqualTo((4, 4, 4)));
    }

    [Test]
    public void Rope3d_matches_hand_computation_for_head_dim_8()
    {
        // d = 8: time dims 0..3 (two pairs, ω = 1 and θ^(-2/4)), height dims 4..5 (ω = 1), width dims 6..7 (ω = 1).
        double[] x = [0.3, -0.7, 0.5, 0.9, -0.2, 0.4, 0.8, -0.6];
        int t = 2, row = 3, col = 5;
        double theta = 10000;
        double timeOmega1 = 1.0 / Math.Pow(theta, 0.5); // 0.01
        static (double, double) Rotate(double x0, double x1, double angle) =>
            (x0 * Math.Cos(angle) - x1 * Math.Sin(angle), x0 * Math.Sin(angle) + x1 * Math.Cos(angle));
        var (e0, e1) = Rotate(0.3, -0.7, t * 1.0);
        var (e2, e3) = Rotate(0.5, 0.9, t * timeOmega1);
        var (e4, e5) = Rotate(-0.2, 0.4, row * 1.0);
        var (e6, e7) = Rotate(0.8, -0.6, col * 1.0);
        double[] expected = [e0, e1, e2, e3, e4, e5, e6, e7];

        Rope3d.Apply(x, t, row, col, theta);
        Assert.That(MaxAbsDiff(x, expected), Is.LessThan(1e-15));
        Assert.That(timeOmega1, Is.EqualTo(0.01).Within(1e-15));
    }

    [Test]
    public void Rope3d_head_dim_12_uses_per_axis_frequencies_and_custom_theta()
    {
        // d = 12: 4/4/4; each axis has pairs j = 0, 1 with ω_j = θ^(-2j/4). θ = 100 → ω_1 = 0.1.
        var x = new double[12];
        x[2] = 1; // time pair 1
        x[6] = 1; // height pair 1
        x[10] = 1; // width pair 1
        Rope3d.Apply(x, 1, 2, 3, theta: 100);
        Assert.That(x[2], Is.EqualTo(Math.Cos(0.1)).Within(1e-15));
        Assert.That(x[3], Is.EqualTo(Math.Sin(0.1)).Within(1e-15));
        Assert.That(x[6], Is.EqualTo(Math.Cos(0.2)).Within(1e-15));
        Assert.That(x[7], Is.EqualTo(Math.Sin(0.2)).Within(1e-15));
        Assert.That(x[10], Is.EqualTo(Math.Cos(0.3)).Within(1e-15));
        Assert.That(x[11], Is.EqualTo(Math.Sin(0.3)).Within(1e-15));
        Assert.That(new[] { x[0], x[1], x[4], x[5], x[8], x[9] }, Is.All.EqualTo(0.0));
    }

    [Test]
    public void Rope3d_position_zero_is_identity()
    {
        var random = new Random(1);
        var x = Enumerable.Range(0, 128).Select(_ => random.NextDouble() - 0.5).ToArray();
        var y = (double[])x.Clone();
        Rope3d.Apply(y, 0, 0, 0);
        Assert.That(y, Is.EqualTo(x));
    }

    [TestCase(6)]
    [TestCase(64)]
    [TestCase(128)]
    public void Rope3d_inverse_undoes_apply_and_norm_is_preserved(int headDim)
    {
        var random = new Random(headDim);
        for (int trial = 0; trial < 20; trial++)
        {
            var x = Enumerable.Range(0, headDim).Select(_ => 2 * random.NextDouble() - 1).ToArray();
            int t = random.Next(0, 21), row = random.Next(0, 135), col = random.Next(0, 240);
            var y = (double[])x.Clone();
            Rope3d.Apply(y, t, row, col);
            double normX = Math.Sqrt(x.Sum(a => a * a)), normY = Math.Sqrt(y.Sum(a => a * a));
            Assert.That(normY, Is.EqualTo(normX).Within(1e-13 * normX));
            Rope3d.ApplyInverse(y, t, row, col);
            Assert.That(MaxAbsDiff(y, x), Is.LessThan(1e-14));
        }
    }

    [Test]
    public void Rope3d_attention_logit_depends_only_on_relative_position()
    {
        // ⟨R(p)q, R(p')k⟩ depends on p − p' only: the property that makes window-local coordinates a pure relabelling.
        var random = new Random(7);
        var q = Enumerable.Range(0, 64).Select(_ => 2 * random.NextDouble() - 1).ToArray();
        var k = Enumerable.Range(0, 64).Select(_ => 2 * random.NextDouble() - 1).ToArray();
        double Logit(int t1, int r1, int c1, int t2, int r2, int c2)
        {
            var a = (double[])q.Clone();
            var b = (double[])k.Clone();
            Rope3d.Apply(a, t1, r1, c1);
            Rope3d.Apply(b, t2, r2, c2);
            return a.Zip(b, (u, w) => u * w).Sum();
        }
        Assert.That(Logit(1, 2, 3, 0, 5, 1), Is.EqualTo(Logit(4, 12, 20, 3, 15, 18)).Within(1e-12));
    }

    [TestCase(7)]
    [TestCase(5)]
    [TestCase(4)]
    public void Rope3d_rejects_unsupported_head_dims(int headDim)
    {
        Assert.Throws<UnsupportedConfigurationException>(() => Rope3d.Split(headDim));
        Assert.Throws<UnsupportedConfigurationException>(() => Rope3d.Apply(new double[headDim], 0, 0, 0));
    }

    // ---------------------------------------------------------------- rms_norm

    [Test]
    public void RmsNorm_matches_definition()
    {
        var random = new Random(3);
        var x = Random(random, 2, 5);
        var weight = Random(random, 5);
        var y = RmsNormOp.Forward(x, weight, 1e-6);
        for (int row = 0; row < 2; row++)
        {
            var values = x.Data.AsSpan(row * 5, 5).ToArray();
            double rms = Math.Sqrt(values.Sum(a => a * a) / 5 + 1e-6);
            for (int i = 0; i < 5; i++)
                Assert.That(y.Data[row * 5 + i], Is.EqualTo(values[i] / rms * weight.Data[i]).Within(Tight));
        }
    }

    // ---------------------------------------------------------------- window_attention

    [Test]
    public void Window_attention_with_one_window_and_no_rope_is_plain_attention()
    {
        var random = new Random(11);
        int batch = 2, T = 2, H = 2, W = 3, heads = 2, headDim = 4, n = T * H * W;
        var q = Random(random, batch, T, H, W, heads * headDim);
        var k = Random(random, batch, T, H, W, heads * headDim);
        var v = Random(random, batch, T, H, W, heads * headDim);
        var o = WindowAttentionOp.Forward(q, k, v, heads, WindowLayout.Divisible(new Grid3(T, H, W), 1), rope: false);

        for (int b = 0; b < batch; b++)
            for (int head = 0; head < heads; head++)
            {
                double[][] Rows(RefTensor x) =>
                    Enumerable.Range(0, n).Select(token => x.Data.AsSpan((b * n + token) * heads * headDim + head * headDim, headDim).ToArray()).ToArray();
                var expected = PlainAttention(Rows(q), Rows(k), Rows(v));
                var actual = Rows(o);
                for (int token = 0; token < n; token++) Assert.That(MaxAbsDiff(actual[token], expected[token]), Is.LessThan(Tight));
            }
    }

    [Test]
    public void Window_attention_with_one_window_uses_global_coordinates()
    {
        var random = new Random(12);
        int T = 2, H = 3, W = 2, heads = 1, headDim = 8;
        var q = Random(random, 1, T, H, W, headDim);
        var k = Random(random, 1, T, H, W, headDim);
        var v = Random(random, 1, T, H, W, headDim);
        var o = WindowAttentionOp.Forward(q, k, v, heads, WindowLayout.Divisible(new Grid3(T, H, W), 1));

        var coordinates = new List<(int T, int Row, int Col)>();
        for (int t = 0; t < T; t++) for (int row = 0; row < H; row++) for (int col = 0; col < W; col++) coordinates.Add((t, row, col));
        double[][] Gather(RefTensor x, bool rotate) => coordinates.Select(c =>
        {
            var vector = HeadVector(x, 0, c.T, c.Row, c.Col, 0, headDim);
            if (rotate) Rope3d.Apply(vector, c.T, c.Row, c.Col);
            return vector;
        }).ToArray();
        var expected = PlainAttention(Gather(q, true), Gather(k, true), Gather(v, false));
        for (int i = 0; i < coordinates.Count; i++)
        {
            var (t, row, col) = coordinates[i];
            Assert.That(MaxAbsDiff(HeadVector(o, 0, t, row, col, 0, headDim), expected[i]), Is.LessThan(Tight));
        }
    }

    /// <summary>
    /// Each window's output equals full attention over that window's tokens alone, gathered here from hand-computed
    /// bounds (row r of n spans [⌊r·H/n⌋, ⌊(r+1)·H/n⌋)) with RoPE at window-local coordinates.
    /// </summary>
    [TestCase(2, 4, 6, 2, false)]
    [TestCase(1, 6, 6, 3, false)]
    [TestCase(2, 5, 7, 2, true)]
    [TestCase(1, 10, 15, 4, true)]
    public void Each_window_is_full_attention_on_its_own_tokens(int T, int H, int W, int n, bool ragged)
    {
        var random = new Random(T * 1000 + H * 100 + W * 10 + n);
        int batch = 2, heads = 2, headDim = 6;
        var grid = new Grid3(T, H, W);
        var layout = ragged ? WindowLayout.Ragged(grid, n) : WindowLayout.Divisible(grid, n);
        var q = Random(random, batch, T, H, W, heads * headDim);
        var k = Random(random, batch, T, H, W, heads * headDim);
        var v = Random(random, batch, T, H, W, heads * headDim);
        var o = WindowAttentionOp.Forward(q, k, v, heads, layout);

        // The op entry point (parameters) must agree with the static function.
        var viaOp = OpRunner.Forward(OpCatalog.Get("window_attention"), new RefArgs { ["q"] = q, ["k"] = k, ["v"] = v },
            OpParams.Of(("heads", heads), ("windows", n), ("ragged", ragged))).Get("o");
        Assert.That(viaOp.Data, Is.EqualTo(o.Data));

        int covered = 0;
        for (int windowRow = 0; windowRow < n; windowRow++)
            for (int windowCol = 0; windowCol < n; windowCol++)
            {
                int rowStart = windowRow * H / n, rowEnd = (windowRow + 1) * H / n;
                int colStart = windowCol * W / n, colEnd = (windowCol + 1) * W / n;
                var members = new List<(int T, int Row, int Col)>();
                for (int t = 0; t < T; t++)
                    for (int row = rowStart; row < rowEnd; row++)
                        for (int col = colStart; col < colEnd; col++) members.Add((t, row, col));
                covered += members.Count;
                for (int b = 0; b < batch; b++)
                    for (int head = 0; head < heads; head++)
                    {
                        double[][] Gather(RefTensor x, bool rotate) => members.Select(m =>
                        {
                            var vector = HeadVector(x, b, m.T, m.Row, m.Col, head, headDim);
                            if (rotate) Rope3d.Apply(vector, m.T, m.Row - rowStart, m.Col - colStart);
                            return vector;
                        }).ToArray();
                        var expected = PlainAttention(Gather(q, true), Gather(k, true), Gather(v, false));
                        for (int i = 0; i < members.Count; i++)
                        {
                            var (t, row, col) = members[i];
                            Assert.That(MaxAbsDiff(HeadVector(o, b, t, row, col, head, headDim), expected[i]), Is.LessThan(Tight),
                                $"window ({windowRow}, {windowCol}) batch {b} head {head} token ({t}, {row}, {col})");
                        }
                    }
            }
        Assert.That(covered, Is.EqualTo(T * H * W));
    }

    [TestCase(2, 5, 7, 2)]
    [TestCase(1, 10, 15, 4)]
    [TestCase(3, 7, 10, 3)]
    [TestCase(1, 135, 240, 4)]
    public void Ragged_layout_covers_every_token_exactly_once(int T, int H, int W, int n)
    {
        var layout = WindowLayout.Ragged(new Grid3(T, H, W), n);
        var seen = new int[T * H * W];
        for (int window = 0; window < layout.WindowCount; window++)
            for (int i = 0; i < layout.TokensInWindow(window); i++) seen[layout.TokenIndex(window, i)]++;
        Assert.That(seen, Is.All.EqualTo(1));
    }

    [Test]
    public void Ragged_window_attention_writes_every_output_element()
    {
        // Poison-style check on the reference itself: every element of o, dq, dk, dv is written (non-NaN, and dv nonzero).
        var random = new Random(5);
        var shape = new[] { 1, 2, 5, 7, 8 };
        var inputs = new RefArgs { ["q"] = Random(random, shape), ["k"] = Random(random, shape), ["v"] = Random(random, shape) };
        var op = OpCatalog.Get("window_attention");
        var parameters = OpParams.Of(("heads", 1), ("windows", 2), ("ragged", true));
        var o = OpRunner.Forward(op, inputs, parameters).Get("o");
        var grads = OpRunner.Backward(op, inputs, new RefArgs { ["o"] = Random(random, shape) }, parameters);
        Assert.That(o.Data.Any(double.IsNaN), Is.False);
        foreach (var (name, gradient) in grads)
            Assert.That(gradient.Data.Count(value => value == 0.0), Is.EqualTo(0), $"d{name} has unwritten elements");
    }

    [Test]
    public void Window_attention_rejects_odd_head_dim_with_typed_error()
    {
        var op = OpCatalog.Get("window_attention");
        var shapes = new Dictionary<string, int[]> { ["q"] = [1, 1, 2, 2, 14], ["k"] = [1, 1, 2, 2, 14], ["v"] = [1, 1, 2, 2, 14] };
        var error = Assert.Throws<UnsupportedConfigurationException>(() => op.OutputShapes(shapes, OpParams.Of(("heads", 2))));
        Assert.That(error!.Message, Does.Contain("head dim 7"));
        // Too small for three axes.
        shapes = new Dictionary<string, int[]> { ["q"] = [1, 1, 2, 2, 8], ["k"] = [1, 1, 2, 2, 8], ["v"] = [1, 1, 2, 2, 8] };
        Assert.Throws<UnsupportedConfigurationException>(() => op.OutputShapes(shapes, OpParams.Of(("heads", 2))));
        // The static entry point says the same.
        var random = new Random(2);
        var q = Random(random, 1, 1, 2, 2, 14);
        Assert.Throws<UnsupportedConfigurationException>(() =>
            WindowAttentionOp.Forward(q, q, q, 2, WindowLayout.Divisible(new Grid3(1, 2, 2), 1)));
        // Without RoPE an odd head dim is fine.
        Assert.DoesNotThrow(() => op.OutputShapes(
            new Dictionary<string, int[]> { ["q"] = [1, 1, 2, 2, 14], ["k"] = [1, 1, 2, 2, 14], ["v"] = [1, 1, 2, 2, 14] },
            OpParams.Of(("heads", 2), ("rope", false))));
    }

    [Test]
    public void Window_attention_rejects_non_divisible_grid_unless_ragged()
    {
        var op = OpCatalog.Get("window_attention");
        var shapes = new Dictionary<string, int[]> { ["q"] = [1, 2, 5, 7, 8], ["k"] = [1, 2, 5, 7, 8], ["v"] = [1, 2, 5, 7, 8] };
        var error = Assert.Throws<ShapeMismatchException>(() => op.OutputShapes(shapes, OpParams.Of(("heads", 1), ("windows", 2))));
        Assert.That(error!.Message, Does.Contain("window_attention"));
        Assert.DoesNotThrow(() => op.OutputShapes(shapes, OpParams.Of(("heads", 1), ("windows", 2), ("ragged", true))));
        Assert.Throws<OpParameterException>(() => op.OutputShapes(shapes, OpParams.Of(("heads", 1), ("windows", 0))));
        Assert.Throws<ShapeMismatchException>(() => op.OutputShapes(shapes, OpParams.Of(("heads", 3))));
    }

    // ---------------------------------------------------------------- cross_attention

    [TestCase(1, 7, 5, 2, 4)]
    [TestCase(2, 3, 70, 1, 6)]
    [TestCase(2, 9, 1, 3, 5)]
    public void Cross_attention_is_plain_attention_per_batch_and_head(int batch, int queries, int keys, int heads, int headDim)
    {
        var random = new Random(batch * 1000 + queries * 100 + keys * 10 + heads);
        int channels = heads * headDim;
        var q = Random(random, batch, queries, channels);
        var k = Random(random, batch, keys, channels);
        var v = Random(random, batch, keys, channels);
        var o = CrossAttentionOp.Forward(q, k, v, heads);
        var viaOp = OpRunner.Forward(OpCatalog.Get("cross_attention"), new RefArgs { ["q"] = q, ["k"] = k, ["v"] = v },
            OpParams.Of(("heads", heads))).Get("o");
        Assert.That(viaOp.Data, Is.EqualTo(o.Data));

        double[][] Rows(RefTensor x, int b, int head) => Enumerable.Range(0, x.Dim(1))
            .Select(i => x.Data.AsSpan((b * x.Dim(1) + i) * channels + head * headDim, headDim).ToArray()).ToArray();
        for (int b = 0; b < batch; b++)
            for (int head = 0; head < heads; head++)
            {
                var expected = PlainAttention(Rows(q, b, head), Rows(k, b, head), Rows(v, b, head));
                var actual = Rows(o, b, head);
                for (int i = 0; i < queries; i++)
                    Assert.That(MaxAbsDiff(actual[i], expected[i]), Is.LessThan(Tight), $"batch {b} head {head} query {i}");
            }
    }

    [Test]
    public void Cross_attention_over_the_queries_themselves_is_full_window_attention_without_rope()
    {
        // With L = N, cross-attention of (B, N, C) is window_attention on the (B, 1, 1, N, C) grid, one window, no RoPE:
        // forward and all three gradients.
        var random = new Random(31);
        int batch = 2, n = 6, heads = 2, channels = 10;
        var q = Random(random, batch, n, channels);
        var k = Random(random, batch, n, channels);
        var v = Random(random, batch, n, channels);
        var dO = Random(random, batch, n, channels);
        var layout = WindowLayout.Divisible(new Grid3(1, 1, n), 1);
        RefTensor Video(RefTensor x) => x.Reshape(batch, 1, 1, n, channels);
        var o = CrossAttentionOp.Forward(q, k, v, heads);
        Assert.That(MaxAbsDiff(o.Data, WindowAttentionOp.Forward(Video(q), Video(k), Video(v), heads, layout, rope: false).Data),
            Is.LessThan(Tight));
        var cross = CrossAttentionOp.Backward(q, k, v, dO, heads);
        var window = WindowAttentionOp.Backward(Video(q), Video(k), Video(v), Video(dO), heads, layout, rope: false);
        Assert.That(MaxAbsDiff(cross.Dq.Data, window.Dq.Data), Is.LessThan(Tight));
        Assert.That(MaxAbsDiff(cross.Dk.Data, window.Dk.Data), Is.LessThan(Tight));
        Assert.That(MaxAbsDiff(cross.Dv.Data, window.Dv.Data), Is.LessThan(Tight));
    }

    [Test]
    public void Cross_attention_rejects_bad_shapes_with_errors_naming_the_op()
    {
        var op = OpCatalog.Get("cross_attention");
        Dictionary<string, int[]> Shapes(int[] q, int[] k, int[] v) => new() { ["q"] = q, ["k"] = k, ["v"] = v };
        var heads2 = OpParams.Of(("heads", 2));
        Assert.That(op.OutputShapes(Shapes([2, 9, 8], [2, 5, 8], [2, 5, 8]), heads2)["o"], Is.EqualTo(new[] { 2, 9, 8 }));
        foreach (var (q, k, v) in new (int[], int[], int[])[]
                 {
                     ([9, 8], [5, 8], [5, 8]),                  // rank 2
                     ([2, 9, 8], [1, 5, 8], [1, 5, 8]),         // batch differs
                     ([2, 9, 8], [2, 5, 6], [2, 5, 6]),         // channels differ
                     ([2, 9, 8], [2, 5, 8], [2, 4, 8]),         // v is not k's shape
                     ([2, 9, 8], [2, 0, 8], [2, 0, 8]),         // no keys
                     ([2, 9, 7], [2, 5, 7], [2, 5, 7]),         // 7 channels, 2 heads
                 })
        {
            var error = Assert.Throws<ShapeMismatchException>(() => op.OutputShapes(Shapes(q, k, v), heads2), $"q {Shape.Format(q)}");
            Assert.That(error!.Message, Does.Contain("cross_attention"));
        }
        var zeroHeads = Assert.Throws<OpParameterException>(() => op.OutputShapes(Shapes([1, 2, 8], [1, 3, 8], [1, 3, 8]), OpParams.Of(("heads", 0))));
        Assert.That(zeroHeads!.Message, Does.Contain("cross_attention"));
        Assert.Throws<OpParameterException>(() => op.OutputShapes(Shapes([1, 2, 8], [1, 3, 8], [1, 3, 8]), new OpParams()));
        // The static entry points check too.
        var random = new Random(3);
        var good = Random(random, 1, 2, 8);
        Assert.Throws<ShapeMismatchException>(() => CrossAttentionOp.Forward(good, Random(random, 1, 3, 6), Random(random, 1, 3, 6), 2));
        Assert.Throws<ShapeMismatchException>(() => CrossAttentionOp.Backward(good, good, good, Random(random, 1, 3, 8), 2));
    }

    // ---------------------------------------------------------------- wan_self_attention

    [Test]
    public void Wan_self_attention_equals_its_pieces_written_out()
    {
        var random = new Random(21);
        int batch = 1, T = 2, H = 2, W = 3, dim = 12, heads = 2, headDim = 6, n = T * H * W;
        var op = OpCatalog.Get("wan_self_attention");
        var parameters = OpParams.Of(("T", T), ("H", H), ("W", W), ("heads", heads));
        var inputs = new RefArgs();
        foreach (var spec in op.Inputs)
            inputs[spec.Name] = spec.Name == "x" ? Random(random, batch, n, dim)
                : spec.Name.EndsWith(".weight") && !spec.Name.StartsWith("norm") ? Random(random, dim, dim) : Random(random, dim);
        var y = OpRunner.Forward(op, inputs, parameters).Get("y");
        Assert.That(WanSelfAttentionOp.Forward(inputs, new Grid3(T, H, W), heads, 1e-6).Data, Is.EqualTo(y.Data));

        double[] Linear(double[] x, string name) => Enumerable.Range(0, dim)
            .Select(o => inputs[name + ".bias"].Data[o] + Enumerable.Range(0, dim).Sum(i => inputs[name + ".weight"].Data[o * dim + i] * x[i]))
            .ToArray();
        double[] Norm(double[] x, string name)
        {
            double rms = Math.Sqrt(x.Sum(a => a * a) / dim + 1e-6);
            return x.Select((a, i) => a / rms * inputs[name].Data[i]).ToArray();
        }
        var tokens = Enumerable.Range(0, n).Select(i => inputs["x"].Data.AsSpan(i * dim, dim).ToArray()).ToArray();
        var qs = tokens.Select(x => Norm(Linear(x, "q"), "norm_q.weight")).ToArray();
        var ks = tokens.Select(x => Norm(Linear(x, "k"), "norm_k.weight")).ToArray();
        var vs = tokens.Select(x => Linear(x, "v")).ToArray();
        var attention = new double[n][];
        for (int i = 0; i < n; i++) attention[i] = new double[dim];
        for (int head = 0; head < heads; head++)
        {
            double[][] Head(double[][] rows, bool rotate) => rows.Select((row, token) =>
            {
                var vector = row.AsSpan(head * headDim, headDim).ToArray();
                // frame-major token order: t = token / (H·W), row = (token / W) mod H, col = token mod W
                if (rotate) Rope3d.Apply(vector, token / (H * W), token / W % H, token % W);
                return vector;
            }).ToArray();
            var o = PlainAttention(Head(qs, true), Head(ks, true), Head(vs, false));
            for (int i = 0; i < n; i++) Array.Copy(o[i], 0, attention[i], head * headDim, headDim);
        }
        for (int i = 0; i < n; i++)
            Assert.That(MaxAbsDiff(y.Data.AsSpan(i * dim, dim), Linear(attention[i], "o")), Is.LessThan(Tight));
    }

    [Test]
    public void Wan_self_attention_checks_token_count_against_grid()
    {
        var op = OpCatalog.Get("wan_self_attention");
        var shapes = op.Cases().First().InputShapes;
        Assert.Throws<ShapeMismatchException>(() => op.OutputShapes(shapes, OpParams.Of(("T", 1), ("H", 2), ("W", 3), ("heads", 2))));
        Assert.Throws<UnsupportedConfigurationException>(() => op.OutputShapes(shapes, OpParams.Of(("T", 2), ("H", 2), ("W", 3), ("heads", 3))));
    }
}
