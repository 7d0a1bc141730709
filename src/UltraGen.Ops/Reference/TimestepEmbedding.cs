using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>timestep_embedding</c>: Wan's <c>sinusoidal_embedding_1d</c> (sin256 in the spec). With half = dim/2 and
/// f_j = 10000^(−j/half), j = 0..half−1: out = [cos(t·f_j)]_j ++ [sin(t·f_j)]_j, the cosine half first.
/// Differentiable with respect to t. t is used as given (the DiffSynth pipeline rounds it to bf16 before this; a caller
/// reproducing that rounds t itself).
/// </summary>
public sealed class TimestepEmbeddingOp : Op
{
    public const int DefaultDim = 256;

    public override string Name => "timestep_embedding";

    public override string Summary => "Wan sinusoid: t (B) → [cos(t·f_j), sin(t·f_j)] (B, dim), f_j = 10000^(−j/(dim/2)), cos half first";

    public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("t", "(B)")];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("embedding", "(B, dim)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("dim", "int", "256", "embedding width; even, ≥ 2 (Wan's freq_dim = 256)"),
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var t = RequireShape(shapes, "t", 1);
        return Single("embedding", t[0], Dim(parameters));
    }

    private int Dim(OpParams parameters)
    {
        int dim = parameters.GetInt("dim", DefaultDim);
        if (dim < 2 || dim % 2 != 0)
            throw new OpParameterException($"op '{Name}': parameter 'dim' must be even and ≥ 2 (cos half + sin half), got {dim}");
        return dim;
    }

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters) =>
        outputs.SetIfRequested("embedding", Forward(inputs.Get("t"), Dim(parameters)));

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters) =>
        inputGradients.SetIfRequested("t", Backward(inputs.Get("t"), outputGradients.Get("embedding"), Dim(parameters)));

    /// <summary>f_j = 10000^(−j/half) for j = 0..half−1, in float64 as Wan computes it.</summary>
    public static double[] Frequencies(int half)
    {
        var frequencies = new double[half];
        for (int j = 0; j < half; j++) frequencies[j] = Math.Pow(10000.0, -(double)j / half);
        return frequencies;
    }

    public static RefTensor Forward(RefTensor t, int dim)
    {
        if (dim < 2 || dim % 2 != 0) throw new OpParameterException($"timestep_embedding: dim must be even and ≥ 2, got {dim}");
        int b = t.Length, half = dim / 2;
        var frequencies = Frequencies(half);
        var y = new RefTensor(b, dim);
        for (int bi = 0; bi < b; bi++)
            for (int j = 0; j < half; j++)
            {
                double angle = t.Data[bi] * frequencies[j];
                y.Data[bi * dim + j] = Math.Cos(angle);
                y.Data[bi * dim + half + j] = Math.Sin(angle);
            }
        return y;
    }

    /// <summary>dt_b = Σ_j f_j·(−dy_cos[b,j]·sin(t_b·f_j) + dy_sin[b,j]·cos(t_b·f_j)).</summary>
    public static RefTensor Backward(RefTensor t, RefTensor dy, int dim)
    {
        if (dim < 2 || dim % 2 != 0) throw new OpParameterException($"timestep_embedding: dim must be even and ≥ 2, got {dim}");
        int b = t.Length, half = dim / 2;
        var frequencies = Frequencies(half);
        var dt = new RefTensor((int[])t.Shape.Clone());
        for (int bi = 0; bi < b; bi++)
        {
            double sum = 0;
            for (int j = 0; j < half; j++)
            {
                double angle = t.Data[bi] * frequencies[j];
                sum += frequencies[j] * (-dy.Data[bi * dim + j] * Math.Sin(angle) + dy.Data[bi * dim + half + j] * Math.Cos(angle));
            }
            dt.Data[bi] = sum;
        }
        return dt;
    }

    // t spans the sampler's full range [0, 1000]. The harness's central-difference step (1e-5) stays accurate there in
    // float64: the highest frequency is f_0 = 1, so the truncation error is ~step²/6 and the rounding of t + step near
    // 1000 (ulp ≈ 1.1e-13) and of the angles t·f_j leave an absolute noise of ~1e-8 in the quotient (measured worst
    // ~1.2e-8 relative). The check compares the whole dt vector by relative norm, so a lone sample whose dt happens to be
    // near 0 (|dt| < ~1e-2, ~1% of draws) could fail; every checked case therefore has B ≥ 3, which makes that ~1e-6.
    private static readonly Dictionary<string, (double, double)> s_timesteps = new() { ["t"] = (0.0, 1000.0) };

    public override IEnumerable<OpCase> Cases()
    {
        yield return new OpCase("b3_dim16", new Dictionary<string, int[]> { ["t"] = [3] }, OpParams.Of(("dim", 16)), s_timesteps);
        yield return new OpCase("b4_dim256", new Dictionary<string, int[]> { ["t"] = [4] }, new OpParams(), s_timesteps);
        yield return new OpCase("b3_dim32", new Dictionary<string, int[]> { ["t"] = [3] }, OpParams.Of(("dim", 32)), s_timesteps);
        yield return new OpCase("b64_dim256", new Dictionary<string, int[]> { ["t"] = [64] }, new OpParams(), s_timesteps)
        {
            GradientCheck = false,
        };
    }
}
