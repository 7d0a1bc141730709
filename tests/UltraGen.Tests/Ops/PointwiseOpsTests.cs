using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Ops;

namespace UltraGen.Tests.Ops;

/// <summary>
/// Anchors the pointwise references to known numbers (closed forms, torch values, special points), so they are not
/// only self-consistent with their own finite differences.
/// </summary>
[TestFixture]
public class PointwiseOpsTests
{
    private static RefTensor T(int[] shape, params double[] data) => new(shape, data);

    private static RefTensor Filled(int[] shape, double value)
    {
        var tensor = new RefTensor(shape);
        Array.Fill(tensor.Data, value);
        return tensor;
    }

    [Test]
    public void Gelu_tanh_matches_known_values()
    {
        var y = GeluTanhOp.Forward(T([4], 0.0, 1.0, -1.0, 2.0));
        Assert.That(y.Data[0], Is.EqualTo(0.0));
        Assert.That(y.Data[1], Is.EqualTo(0.8411919906082768).Within(1e-14));   // torch: gelu(1, approximate='tanh')
        Assert.That(y.Data[2], Is.EqualTo(-0.15880800939172324).Within(1e-14)); // GELU(x) − GELU(−x) = x
        Assert.That(y.Data[3], Is.EqualTo(1.954597694087775).Within(1e-14));
    }

    [Test]
    public void Gelu_tanh_backward_at_zero_is_one_half_and_large_x_is_identity()
    {
        var dx = GeluTanhOp.Backward(T([3], 0.0, 30.0, -30.0), T([3], 1.0, 1.0, 1.0));
        Assert.That(dx.Data[0], Is.EqualTo(0.5).Within(1e-15));
        Assert.That(dx.Data[1], Is.EqualTo(1.0).Within(1e-12));
        Assert.That(dx.Data[2], Is.EqualTo(0.0).Within(1e-12));
    }

    [Test]
    public void Timestep_embedding_at_zero_is_ones_then_zeros()
    {
        var y = TimestepEmbeddingOp.Forward(T([2], 0.0, 0.0), 256);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 256 }));
        for (int b = 0; b < 2; b++)
            for (int j = 0; j < 256; j++)
                Assert.That(y.Data[b * 256 + j], Is.EqualTo(j < 128 ? 1.0 : 0.0), $"b={b} j={j}");
    }

    [Test]
    public void Timestep_embedding_puts_cos_half_first_with_wan_frequencies()
    {
        // dim 4: half 2, f = [10000^0, 10000^(−1/2)] = [1, 0.01].
        var y = TimestepEmbeddingOp.Forward(T([1], 1.0), 4);
        Assert.That(y.Data, Is.EqualTo(new[] { Math.Cos(1.0), Math.Cos(0.01), Math.Sin(1.0), Math.Sin(0.01) }).Within(1e-15));
        // t = 1000, dim 256: the last frequency is 10000^(−127/128).
        var z = TimestepEmbeddingOp.Forward(T([1], 1000.0), 256);
        double fLast = Math.Pow(10000.0, -127.0 / 128.0);
        Assert.That(z.Data[127], Is.EqualTo(Math.Cos(1000.0 * fLast)).Within(1e-15));
        Assert.That(z.Data[255], Is.EqualTo(Math.Sin(1000.0 * fLast)).Within(1e-15));
        Assert.That(z.Data[0], Is.EqualTo(Math.Cos(1000.0)).Within(1e-15));
    }

    [Test]
    public void Timestep_embedding_backward_at_zero_sums_frequencies_of_sin_half()
    {
        // At t = 0: d cos/dt = 0 and d sin/dt = f_j, so dt = Σ_j f_j·dy_sin[j].
        var dy = new RefTensor(1, 4);
        dy.Data[0] = 5; dy.Data[1] = 7;   // cos half: no effect at t = 0
        dy.Data[2] = 1; dy.Data[3] = 1;   // sin half
        var dt = TimestepEmbeddingOp.Backward(T([1], 0.0), dy, 4);
        Assert.That(dt.Data[0], Is.EqualTo(1.0 + 0.01).Within(1e-15));
    }

    [Test]
    public void Layer_norm_of_a_known_vector()
    {
        // [1, 2, 3, 4]: mean 2.5, biased variance 1.25 → (x − 2.5)/√1.25 = [−3, −1, 1, 3]/√5.
        var x = T([1, 4], 1, 2, 3, 4);
        var y = LayerNormOp.Forward(x, null, null, 1e-12);
        double s = 1.0 / Math.Sqrt(5.0);
        Assert.That(y.Data, Is.EqualTo(new[] { -3 * s, -s, s, 3 * s }).Within(1e-11));

        // eps 1e-6 enters under the square root: 1/√1.250001.
        var y6 = LayerNormOp.Forward(x, null, null, 1e-6);
        Assert.That(y6.Data[0], Is.EqualTo(-1.341640249843881).Within(1e-14));

        // Affine: y·w + b.
        var affine = LayerNormOp.Forward(x, T([4], 2, 2, 2, 2), T([4], 1, 0, 0, -1), 1e-12);
        Assert.That(affine.Data, Is.EqualTo(new[] { -6 * s + 1, -2 * s, 2 * s, 6 * s - 1 }).Within(1e-11));
    }

    [Test]
    public void Layer_norm_backward_of_uniform_gradient_is_zero_and_affine_grads_are_sums()
    {
        // The output is invariant to shifts of x, so a constant dy gives dx = 0; dbias = Σ dy, dweight = Σ dy·x̂.
        var x = T([2, 4], 1, 2, 3, 4, -1, 0, 5, 2);
        var dy = Filled([2, 4], 1.0);
        var (dx, dWeight, dBias) = LayerNormOp.Backward(x, null, dy, 1e-6);
        Assert.That(dx.Data, Has.All.EqualTo(0.0).Within(1e-12));
        Assert.That(dBias.Data, Has.All.EqualTo(2.0));
        var xhat = LayerNormOp.Forward(x, null, null, 1e-6);
        for (int i = 0; i < 4; i++) Assert.That(dWeight.Data[i], Is.EqualTo(xhat.Data[i] + xhat.Data[4 + i]).Within(1e-14));
    }

    [Test]
    public void Modulate_scales_and_shifts_per_sample()
    {
        // x (2, 2, 2); sample 0: scale [1, 0], shift [0, 10]; sample 1: scale [−1, 2], shift [1, 1].
        var x = T([2, 2, 2], 1, 2, 3, 4, 5, 6, 7, 8);
        var shift = T([2, 2], 0, 10, 1, 1);
        var scale = T([2, 2], 1, 0, -1, 2);
        var y = ModulateOp.Forward(x, shift, scale);
        Assert.That(y.Data, Is.EqualTo(new double[] { 2, 12, 6, 14, 1, 19, 1, 25 }));
        var (dx, dShift, dScale) = ModulateOp.Backward(x, scale, Filled([2, 2, 2], 1.0));
        Assert.That(dx.Data, Is.EqualTo(new double[] { 2, 1, 2, 1, 0, 3, 0, 3 }));
        Assert.That(dShift.Data, Is.EqualTo(new double[] { 2, 2, 2, 2 }));
        Assert.That(dScale.Data, Is.EqualTo(new double[] { 4, 6, 12, 14 }));
    }

    [Test]
    public void Lora_is_b_of_a_with_both_biases_and_no_scaling()
    {
        // in 2, r 1, out 2: A = [1, 2], a = 0.5 → h = x0 + 2·x1 + 0.5; B = [[2], [−1]], b = [0, 3].
        var x = T([2, 2], 1, 1, 0, -1);
        var y = LoraOp.Forward(x, T([1, 2], 1, 2), T([1], 0.5), T([2, 1], 2, -1), T([2], 0, 3));
        // row 0: h = 3.5 → [7, −0.5]; row 1: h = −1.5 → [−3, 4.5]
        Assert.That(y.Data, Is.EqualTo(new[] { 7.0, -0.5, -3.0, 4.5 }));
        var (dx, dAW, dAB, dBW, dBB) = LoraOp.Backward(x, T([1, 2], 1, 2), T([1], 0.5), T([2, 1], 2, -1), Filled([2, 2], 1.0));
        // dh = Σ_out dy·B = 1 per row; dx = dh·A; dA = Σ dh·x; da = Σ dh; dB = Σ dy·h; db = Σ dy.
        Assert.That(dx.Data, Is.EqualTo(new[] { 1.0, 2.0, 1.0, 2.0 }));
        Assert.That(dAW.Data, Is.EqualTo(new[] { 1.0, 0.0 }));
        Assert.That(dAB.Data, Is.EqualTo(new[] { 2.0 }));
        Assert.That(dBW.Data, Is.EqualTo(new[] { 2.0, 2.0 }));
        Assert.That(dBB.Data, Is.EqualTo(new[] { 2.0, 2.0 }));
    }

    [Test]
    public void Gate_mlp_with_zero_projection_is_exactly_one_half()
    {
        // The released loader zero-inits alpha_time_projection, so α = β = sigmoid(0) = 0.5 at initialization (spec §1.7).
        int b = 3, f = 16, d = 8;
        var random = new Random(1);
        RefTensor Rand(params int[] shape)
        {
            var tensor = new RefTensor(shape);
            for (int i = 0; i < tensor.Length; i++) tensor.Data[i] = 2 * random.NextDouble() - 1;
            return tensor;
        }
        var t = T([b], 0.0, 500.0, 999.0);
        var gate = GateMlpOp.Forward(t, Rand(d, f), Rand(d), Rand(d, d), Rand(d), new RefTensor(d, d), new RefTensor(d));
        Assert.That(gate.Shape, Is.EqualTo(new[] { b, d }));
        Assert.That(gate.Data, Has.All.EqualTo(0.5));
    }

    [Test]
    public void Gate_mlp_matches_a_hand_chained_composition()
    {
        // D = 1, F = 2, t = 0: sinusoid = [cos 0, sin 0] = [1, 0].
        // h1 = 2·1 + 3·0 + 0.5 = 2.5; h2 = −1·silu(2.5) + 0.25; gate = σ(4·silu(h2) − 1).
        var gate = GateMlpOp.Forward(
            T([1], 0.0), T([1, 2], 2, 3), T([1], 0.5), T([1, 1], -1), T([1], 0.25), T([1, 1], 4), T([1], -1));
        static double Sigmoid(double v) => 1 / (1 + Math.Exp(-v));
        double h2 = -(2.5 * Sigmoid(2.5)) + 0.25;
        double expected = Sigmoid(4 * h2 * Sigmoid(h2) - 1);
        Assert.That(gate.Data[0], Is.EqualTo(expected).Within(1e-15));
    }

    [Test]
    public void Gate_fusion_selects_branches_at_extreme_gates()
    {
        var local = Filled([1, 2, 3], 1.0);
        var hier = Filled([1, 2, 3], 2.0);
        var glob = Filled([1, 2, 3], 4.0);
        // channel 0: α = 1, β = 1 → local; channel 1: α = 1, β = 0 → hier; channel 2: α = 0 → glob.
        var z = GateFusionOp.Forward(local, hier, glob, T([1, 3], 1, 1, 0), T([1, 3], 1, 0, 0.3));
        Assert.That(z.Data, Is.EqualTo(new[] { 1.0, 2.0, 4.0, 1.0, 2.0, 4.0 }));
        // α = β = 0.5 (initialization): 0.25·local + 0.25·hier + 0.5·glob = 0.25 + 0.5 + 2 = 2.75.
        var half = GateFusionOp.Forward(local, hier, glob, Filled([1, 3], 0.5), Filled([1, 3], 0.5));
        Assert.That(half.Data, Has.All.EqualTo(2.75));
        var (dL, dH, dG, dA, dB) = GateFusionOp.Backward(local, hier, glob, Filled([1, 3], 0.5), Filled([1, 3], 0.5), Filled([1, 2, 3], 1.0));
        Assert.That(dL.Data, Has.All.EqualTo(0.25));
        Assert.That(dH.Data, Has.All.EqualTo(0.25));
        Assert.That(dG.Data, Has.All.EqualTo(0.5));
        Assert.That(dA.Data, Has.All.EqualTo(2 * (0.5 * 1 + 0.5 * 2 - 4.0)));   // Σ over N = 2 tokens
        Assert.That(dB.Data, Has.All.EqualTo(2 * 0.5 * (1.0 - 2.0)));
    }

    [Test]
    public void Activations_match_known_values()
    {
        Assert.That(Activations.Sigmoid(0.0), Is.EqualTo(0.5));
        Assert.That(Activations.Silu(1.0), Is.EqualTo(0.7310585786300049).Within(1e-15));
        Assert.That(Activations.Sigmoid(-800.0), Is.EqualTo(0.0).Within(1e-300));
        Assert.That(Activations.Sigmoid(800.0), Is.EqualTo(1.0));
        Assert.That(Activations.SiluDerivative(0.0), Is.EqualTo(0.5));
    }

    [Test]
    public void Shape_errors_name_the_tensor_and_rule()
    {
        var modulate = new ModulateOp();
        var error = Assert.Throws<ShapeMismatchException>(() => modulate.OutputShapes(new Dictionary<string, int[]>
        {
            ["x"] = [2, 3, 4], ["shift"] = [2, 5], ["scale"] = [2, 4],
        }, new OpParams()));
        Assert.That(error!.Message, Does.Contain("'shift'").And.Contain("(B, D)").And.Contain("modulate"));

        var lora = new LoraOp();
        var loraError = Assert.Throws<ShapeMismatchException>(() => lora.OutputShapes(new Dictionary<string, int[]>
        {
            ["x"] = [3, 8], ["lora_A.weight"] = [2, 8], ["lora_A.bias"] = [2], ["lora_B.weight"] = [8, 3], ["lora_B.bias"] = [8],
        }, new OpParams()));
        Assert.That(loraError!.Message, Does.Contain("lora_B.weight").And.Contain("(out, r)"));

        var gate = new GateMlpOp();
        var gateError = Assert.Throws<ShapeMismatchException>(() => gate.OutputShapes(new Dictionary<string, int[]>
        {
            ["t"] = [2], ["embedding.0.weight"] = [4, 7], ["embedding.0.bias"] = [4],
            ["embedding.2.weight"] = [4, 4], ["embedding.2.bias"] = [4],
            ["projection.1.weight"] = [4, 4], ["projection.1.bias"] = [4],
        }, new OpParams()));
        Assert.That(gateError!.Message, Does.Contain("F even"));

        Assert.Throws<OpParameterException>(() => new TimestepEmbeddingOp().OutputShapes(
            new Dictionary<string, int[]> { ["t"] = [2] }, OpParams.Of(("dim", 7))));
        Assert.Throws<OpParameterException>(() => new LayerNormOp().OutputShapes(
            new Dictionary<string, int[]> { ["x"] = [2, 4] }, OpParams.Of(("eps", 0))));
    }
}
