using UltraGen.Core;
using UltraGen.Ops;
using static UltraGen.Cpu.CpuParallel;

namespace UltraGen.Cpu;

/// <summary>
/// timestep_embedding on f32 host tensors (reference: <see cref="TimestepEmbeddingOp"/>). The angles t·f_j reach
/// 1000 rad, where an f32 angle is off by ~6e-5 rad, so angles and their sin/cos are f64; the op is B × dim, tiny next
/// to the linears it feeds, and samples run in parallel.
/// </summary>
public static unsafe class CpuTimestep
{
    public static void Forward(Tensor t, Tensor embedding, int dim)
    {
        int half = dim / 2;
        var frequencies = TimestepEmbeddingOp.Frequencies(half);
        float* pt = Ptr(t), py = Ptr(embedding);
        For(t.ElementCount, Math.Max(1, 4096 / dim), (s, e) =>
        {
            for (int b = s; b < e; b++)
                for (int j = 0; j < half; j++)
                {
                    var (sin, cos) = Math.SinCos(pt[b] * frequencies[j]);
                    py[(long)b * dim + j] = (float)cos;
                    py[(long)b * dim + half + j] = (float)sin;
                }
        });
    }

    /// <summary>dt_b = Σ_j f_j·(−dy_cos[b, j]·sin(t_b·f_j) + dy_sin[b, j]·cos(t_b·f_j)).</summary>
    public static void Backward(Tensor t, Tensor dEmbedding, Tensor dt, int dim)
    {
        int half = dim / 2;
        var frequencies = TimestepEmbeddingOp.Frequencies(half);
        float* pt = Ptr(t), pdy = Ptr(dEmbedding), pdt = Ptr(dt);
        For(t.ElementCount, Math.Max(1, 4096 / dim), (s, e) =>
        {
            for (int b = s; b < e; b++)
            {
                double sum = 0;
                for (int j = 0; j < half; j++)
                {
                    var (sin, cos) = Math.SinCos(pt[b] * frequencies[j]);
                    sum += frequencies[j] * (-pdy[(long)b * dim + j] * sin + pdy[(long)b * dim + half + j] * cos);
                }
                pdt[b] = (float)sum;
            }
        });
    }
}
