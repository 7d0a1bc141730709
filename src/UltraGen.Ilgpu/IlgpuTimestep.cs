using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using UltraGen.Core;

namespace UltraGen.Ilgpu;

/// <summary>
/// timestep_embedding: out[b] = [cos(t·f_j)]_j ++ [sin(t·f_j)]_j with f_j = 10000^(−j/half), and dt.
/// <para>
/// The angles t·f_j reach 1000 rad, where an f32 angle is off by ~6e-5 rad: too much for the 1e-5 f32 tolerance. So the
/// frequency, the angle and the trigonometry are done in f64 (a B×dim op; its cost is nothing next to the DiT).
/// Forward is a grid-stride loop over (b, j); backward is one group per sample reducing Σ_j over half with an f64
/// shared-memory tree.
/// </para>
/// </summary>
internal sealed class IlgpuTimestep
{
    private readonly LaunchShape _shape;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _forward;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _backward;

    public IlgpuTimestep(Accelerator accelerator, LaunchShape shape)
    {
        _shape = shape;
        _forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int>(ForwardKernel);
        _backward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(BackwardKernel);
    }

    public void Forward(Tensor t, Tensor embedding)
    {
        int batch = t.Dim(0), dim = embedding.Dim(1);
        _forward(_shape.Stride((long)batch * dim / 2), IlgpuBackend.F32(t), IlgpuBackend.F32(embedding), batch, dim / 2);
    }

    public void Backward(Tensor t, Tensor dy, Tensor dt)
    {
        int batch = t.Dim(0), dim = dy.Dim(1);
        _backward(new KernelConfig(batch, _shape.GroupSize), IlgpuBackend.F32(t), IlgpuBackend.F32(dy), IlgpuBackend.F32(dt), batch, dim / 2);
    }

    /// <summary>f_j = 10000^(−j/half) = e^(−ln(10000)·j/half), in f64.</summary>
    private static double Frequency(int j, int half) => XMath.Exp(-9.210340371976184 * j / half);

    private static void ForwardKernel(ArrayView<float> t, ArrayView<float> embedding, int batch, int half)
    {
        int count = batch * half;
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
        {
            int b = i / half, j = i % half;
            double angle = t[b] * Frequency(j, half);
            embedding[b * 2 * half + j] = (float)XMath.Cos(angle);
            embedding[b * 2 * half + half + j] = (float)XMath.Sin(angle);
        }
    }

    /// <summary>dt_b = Σ_j f_j·(−dy_cos·sin(t_b·f_j) + dy_sin·cos(t_b·f_j)).</summary>
    private static void BackwardKernel(ArrayView<float> t, ArrayView<float> dy, ArrayView<float> dt, int batch, int half)
    {
        var scratch = SharedMemory.Allocate<double>(LaunchShape.MaxGroupSize);
        int b = Grid.IdxX, tid = Group.IdxX;
        double sum = 0;
        for (int j = tid; j < half; j += Group.DimX)
        {
            double f = Frequency(j, half);
            double angle = t[b] * f;
            sum += f * (-dy[b * 2 * half + j] * XMath.Sin(angle) + dy[b * 2 * half + half + j] * XMath.Cos(angle));
        }
        scratch[tid] = sum;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (tid < stride) scratch[tid] += scratch[tid + stride];
            Group.Barrier();
        }
        if (tid == 0 && b < batch) dt[b] = (float)scratch[0];
    }
}
