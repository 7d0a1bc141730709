using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Ops;

/// <summary>
/// <c>wan_self_attention</c>: Wan2.1's full self-attention layer (<c>forward_ori</c>, spec §1.8, §2.2), kept by UltraGen in
/// blocks 0–2 and 27–29: q = RMSNorm_q(W_q x + b_q), k = RMSNorm_k(W_k x + b_k) over the full model dim, v = W_v x + b_v,
/// 3-D RoPE over the whole (T, H, W) grid, SDPA with scale 1/√headDim, y = W_o a + b_o. Inputs use the checkpoint's names
/// (<c>blocks.{i}.self_attn.</c> stripped).
/// </summary>
public sealed class WanSelfAttentionOp : Op
{
    private static readonly string[] s_linears = ["q", "k", "v", "o"];

    public override string Name => "wan_self_attention";

    public override string Summary =>
        "Wan self-attention: RMSNorm'd q/k projections, full-grid 3-D RoPE, softmax attention, output projection";

    public override IReadOnlyList<TensorSpec> Inputs { get; } =
    [
        new("x", "(B, N = T·H·W, D)"),
        new("q.weight", "(D, D)"), new("q.bias", "(D)"),
        new("k.weight", "(D, D)"), new("k.bias", "(D)"),
        new("v.weight", "(D, D)"), new("v.bias", "(D)"),
        new("o.weight", "(D, D)"), new("o.bias", "(D)"),
        new("norm_q.weight", "(D)"),
        new("norm_k.weight", "(D)"),
    ];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("y", "(B, N, D)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("T", "int", null, "frames of the token grid"),
        new("H", "int", null, "rows of the token grid"),
        new("W", "int", null, "columns of the token grid"),
        new("heads", "int", null, "attention heads; D = heads·headDim with headDim even and ≥ 6"),
        new("eps", "double", "1e-6", "RMSNorm eps of norm_q and norm_k"),
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var x = RequireShape(shapes, "x", 3);
        var grid = GridOf(parameters);
        int heads = parameters.GetInt("heads");
        if (heads < 1) throw new OpParameterException($"op '{Name}': heads must be at least 1, got {heads}");
        if (x[0] < 1) throw ShapeError($"batch of x must be at least 1, got {Shape.Format(x)}");
        if (x[1] != grid.T * grid.H * grid.W)
            throw ShapeError($"x {Shape.Format(x)} has {x[1]} tokens but the grid T·H·W = {grid.T}·{grid.H}·{grid.W} has {grid.T * grid.H * grid.W}");
        int dim = x[2];
        if (dim % heads != 0) throw ShapeError($"model dim {dim} of x is not divisible by heads={heads}");
        WindowAttentionOp.CheckRopeHeadDim(Name, dim / heads);
        foreach (string linear in s_linears)
        {
            ExpectShape(shapes, $"{linear}.weight", dim, dim);
            ExpectShape(shapes, $"{linear}.bias", dim);
        }
        ExpectShape(shapes, "norm_q.weight", dim);
        ExpectShape(shapes, "norm_k.weight", dim);
        double eps = parameters.GetDouble("eps", RmsNormOp.DefaultEps);
        if (!(eps >= 0) || double.IsInfinity(eps))
            throw new OpParameterException($"op '{Name}': eps must be a finite number ≥ 0, got {eps}");
        return Single("y", (int[])x.Clone());
    }

    private Grid3 GridOf(OpParams parameters)
    {
        var grid = new Grid3(parameters.GetInt("T"), parameters.GetInt("H"), parameters.GetInt("W"));
        if (grid.T < 1 || grid.H < 1 || grid.W < 1)
            throw new OpParameterException($"op '{Name}': T, H and W must all be at least 1, got {grid}");
        return grid;
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("y", Forward(inputs, GridOf(parameters), parameters.GetInt("heads"),
            parameters.GetDouble("eps", RmsNormOp.DefaultEps)));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var gradients = Backward(inputs, outputGradients.Get("y"), GridOf(parameters), parameters.GetInt("heads"),
            parameters.GetDouble("eps", RmsNormOp.DefaultEps));
        foreach (var (name, gradient) in gradients) inputGradients.SetIfRequested(name, gradient);
    }

    /// <summary>The forward's intermediates, kept for the backward.</summary>
    private sealed record Activations(
        RefTensor QLinear, RefTensor KLinear, RefTensor Q, RefTensor K, RefTensor V, RefTensor Attention, WindowLayout Layout, int[] Grid5);

    private static Activations Run(RefArgs inputs, Grid3 grid, int heads, double eps)
    {
        var x = inputs.Get("x");
        if (x.Rank != 3 || x.Dim(1) != grid.T * grid.H * grid.W)
            throw new ShapeMismatchException($"wan_self_attention: x {Shape.Format(x.Shape)} must be (B, T·H·W, D) for grid {grid}");
        int batch = x.Dim(0), dim = x.Dim(2);
        int[] grid5 = [batch, grid.T, grid.H, grid.W, dim];
        var layout = WindowLayout.Divisible(grid, 1);

        var qLinear = LinearOp.Forward(x, inputs.Get("q.weight"), inputs.Get("q.bias"));
        var kLinear = LinearOp.Forward(x, inputs.Get("k.weight"), inputs.Get("k.bias"));
        var q = RmsNormOp.Forward(qLinear, inputs.Get("norm_q.weight"), eps).Reshape(grid5);
        var k = RmsNormOp.Forward(kLinear, inputs.Get("norm_k.weight"), eps).Reshape(grid5);
        var v = LinearOp.Forward(x, inputs.Get("v.weight"), inputs.Get("v.bias")).Reshape(grid5);
        // Tokens are frame-major (t, row, col), so (B, N, D) and (B, T, H, W, D) share one layout.
        var attention = WindowAttentionOp.Forward(q, k, v, heads, layout).Reshape(batch, grid.T * grid.H * grid.W, dim);
        return new Activations(qLinear, kLinear, q, k, v, attention, layout, grid5);
    }

    /// <summary>y = W_o·SDPA(RoPE(RMSNorm_q(W_q x + b_q)), RoPE(RMSNorm_k(W_k x + b_k)), W_v x + b_v) + b_o over the full grid.</summary>
    public static RefTensor Forward(RefArgs inputs, Grid3 grid, int heads, double eps)
    {
        var run = Run(inputs, grid, heads, eps);
        return LinearOp.Forward(run.Attention, inputs.Get("o.weight"), inputs.Get("o.bias"));
    }

    /// <summary>Gradients of every input (keyed by the input names) given dy, by the chain rule through the same pieces.</summary>
    public static RefArgs Backward(RefArgs inputs, RefTensor dy, Grid3 grid, int heads, double eps)
    {
        var x = inputs.Get("x");
        if (!dy.Shape.AsSpan().SequenceEqual(x.Shape))
            throw new ShapeMismatchException($"wan_self_attention: dy {Shape.Format(dy.Shape)} must match x {Shape.Format(x.Shape)}");
        var run = Run(inputs, grid, heads, eps);
        var gradients = new RefArgs();

        var (dAttention, dWo, dBo) = LinearOp.Backward(run.Attention, inputs.Get("o.weight"), dy);
        gradients["o.weight"] = dWo;
        gradients["o.bias"] = dBo;

        var (dq, dk, dv) = WindowAttentionOp.Backward(run.Q, run.K, run.V, dAttention.Reshape(run.Grid5), heads, run.Layout);
        var flat = x.Shape;
        var (dqLinear, dNormQ) = RmsNormOp.Backward(run.QLinear, inputs.Get("norm_q.weight"), dq.Reshape(flat), eps);
        var (dkLinear, dNormK) = RmsNormOp.Backward(run.KLinear, inputs.Get("norm_k.weight"), dk.Reshape(flat), eps);
        gradients["norm_q.weight"] = dNormQ;
        gradients["norm_k.weight"] = dNormK;

        var dx = new RefTensor((int[])x.Shape.Clone());
        foreach (var (name, dOut) in new[] { ("q", dqLinear), ("k", dkLinear), ("v", dv.Reshape(flat)) })
        {
            var (dxPart, dWeight, dBias) = LinearOp.Backward(x, inputs.Get($"{name}.weight"), dOut);
            for (int i = 0; i < dx.Length; i++) dx.Data[i] += dxPart.Data[i];
            gradients[$"{name}.weight"] = dWeight;
            gradients[$"{name}.bias"] = dBias;
        }
        gradients["x"] = dx;
        return gradients;
    }

    private static Dictionary<string, int[]> Shapes(int batch, int tokens, int dim)
    {
        var shapes = new Dictionary<string, int[]> { ["x"] = [batch, tokens, dim] };
        foreach (string linear in s_linears)
        {
            shapes[$"{linear}.weight"] = [dim, dim];
            shapes[$"{linear}.bias"] = [dim];
        }
        shapes["norm_q.weight"] = [dim];
        shapes["norm_k.weight"] = [dim];
        return shapes;
    }

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("d12_h2_t2h2w3", Shapes(1, 12, 12), OpParams.Of(("T", 2), ("H", 2), ("W", 3), ("heads", 2)));
        yield return new OpCase("batch2_d12_h2_t2h2w3", Shapes(2, 12, 12), OpParams.Of(("T", 2), ("H", 2), ("W", 3), ("heads", 2)));
        yield return new OpCase("d128_h2_t2h4w4", Shapes(1, 32, 128), OpParams.Of(("T", 2), ("H", 4), ("W", 4), ("heads", 2)))
        {
            GradientCheck = false,
            // Weights of a realistic scale (≈ 1/√D) keep the projections O(1) as in the checkpoint.
            Ranges = new Dictionary<string, (double Low, double High)>
            {
                ["q.weight"] = (-0.15, 0.15), ["k.weight"] = (-0.15, 0.15), ["v.weight"] = (-0.15, 0.15), ["o.weight"] = (-0.15, 0.15),
            },
        };
    }
}
