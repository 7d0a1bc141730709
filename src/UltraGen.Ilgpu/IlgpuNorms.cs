using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using UltraGen.Core;

namespace UltraGen.Ilgpu;

/// <summary>
/// rms_norm and layer_norm over the last dim, forward and backward (modulate lives with the pointwise kernels).
/// <para>
/// Kernel design: one group per row (grid-stride over rows when there are more rows than the grid), threads strided
/// over the D channels (coalesced), per-thread fp32 partials combined by a shared-memory tree
/// (<see cref="IlgpuReductions.GroupSum"/>), so the sum's error grows with log D, not D. layer_norm takes the mean
/// first and the variance of (x − mean) second (two passes, no cancellation). Backward recomputes the row statistics,
/// reduces Σg·x (rms) or Σg and Σg·x̂ (layer) in one shared tree, writes dx, and stores the per-row statistics so the
/// weight/bias gradients are column sums over rows (<see cref="IlgpuReductions.ColumnSum"/>, no atomics).
/// </para>
/// </summary>
internal sealed class IlgpuNorms
{
    private readonly LaunchShape _shape;
    private readonly Accelerator _accelerator;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs> _rmsForward;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs> _rmsBackward;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs> _layerForward;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs> _layerBackward;

    public IlgpuNorms(Accelerator accelerator, LaunchShape shape)
    {
        _accelerator = accelerator;
        _shape = shape;
        _rmsForward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(RmsForwardKernel);
        _rmsBackward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(RmsBackwardKernel);
        _layerForward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(LayerForwardKernel);
        _layerBackward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RowArgs>(LayerBackwardKernel);
    }

    internal struct RowArgs
    {
        public int Rows, Dim;
        public float Eps;
        public int HasWeight, HasBias, HasDx, WriteStats;
    }

    private KernelConfig RowConfig(int rows) => new(Math.Min(rows, Math.Max(_shape.MaxGroups, 1) * 4), _shape.GroupSize);

    private static RowArgs Rows(Tensor x, double eps) => new()
    {
        Dim = x.Dim(-1), Rows = checked((int)(x.ElementCount / x.Dim(-1))), Eps = (float)eps,
    };

    public void RmsNorm(Tensor x, Tensor weight, Tensor y, double eps)
    {
        var args = Rows(x, eps);
        _rmsForward(RowConfig(args.Rows), IlgpuBackend.F32(x), IlgpuBackend.F32(weight), IlgpuBackend.F32(y), args);
    }

    public void RmsNormBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, double eps, IlgpuReductions reductions)
    {
        var args = Rows(x, eps);
        args.HasDx = dx is null ? 0 : 1;
        args.WriteStats = dWeight is null ? 0 : 1;
        using var inverseRms = _accelerator.Allocate1D<float>(Math.Max(1, args.Rows));
        _rmsBackward(RowConfig(args.Rows), IlgpuBackend.F32(x), IlgpuBackend.F32(weight), IlgpuBackend.F32(dy),
            IlgpuBackend.F32OrEmpty(dx), inverseRms.View, args);
        if (dWeight is not null)
            reductions.ColumnSum(IlgpuReductions.SumABScaled, IlgpuBackend.F32(dy), IlgpuBackend.F32(x), inverseRms.View,
                ArrayView<float>.Empty, IlgpuBackend.F32(dWeight), 1, args.Rows, args.Dim);
        _accelerator.Synchronize(); // the statistics buffer is freed on return
    }

    public void LayerNorm(Tensor x, Tensor? weight, Tensor? bias, Tensor y, double eps)
    {
        var args = Rows(x, eps);
        args.HasWeight = weight is null ? 0 : 1;
        args.HasBias = bias is null ? 0 : 1;
        _layerForward(RowConfig(args.Rows), IlgpuBackend.F32(x), IlgpuBackend.F32OrEmpty(weight), IlgpuBackend.F32OrEmpty(bias),
            IlgpuBackend.F32(y), args);
    }

    public void LayerNormBackward(Tensor x, Tensor? weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias, double eps,
        IlgpuReductions reductions)
    {
        var args = Rows(x, eps);
        args.HasWeight = weight is null ? 0 : 1;
        args.HasDx = dx is null ? 0 : 1;
        args.WriteStats = dWeight is null ? 0 : 1;
        if (dx is not null || dWeight is not null)
        {
            using var stats = _accelerator.Allocate1D<float>(Math.Max(2, 2 * args.Rows));
            var means = stats.View.SubView(0, Math.Max(1, args.Rows));
            var rstds = stats.View.SubView(Math.Max(1, args.Rows), Math.Max(1, args.Rows));
            _layerBackward(RowConfig(args.Rows), IlgpuBackend.F32(x), IlgpuBackend.F32OrEmpty(weight), IlgpuBackend.F32(dy),
                IlgpuBackend.F32OrEmpty(dx), means, rstds, args);
            if (dWeight is not null)
                reductions.ColumnSum(IlgpuReductions.SumANormalized, IlgpuBackend.F32(dy), IlgpuBackend.F32(x), means, rstds,
                    IlgpuBackend.F32(dWeight), 1, args.Rows, args.Dim);
            _accelerator.Synchronize(); // the statistics buffer is freed on return
        }
        if (dBias is not null)
            reductions.ColumnSum(IlgpuReductions.SumA, IlgpuBackend.F32(dy), ArrayView<float>.Empty, ArrayView<float>.Empty,
                ArrayView<float>.Empty, IlgpuBackend.F32(dBias), 1, args.Rows, args.Dim);
    }

    // ---- kernels ----

    private static void RmsForwardKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> y, RowArgs args)
    {
        var scratch = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        for (int row = Grid.IdxX; row < args.Rows; row += Grid.DimX)
        {
            int offset = row * args.Dim;
            float squares = 0;
            for (int i = Group.IdxX; i < args.Dim; i += Group.DimX) squares += x[offset + i] * x[offset + i];
            float r = XMath.Rsqrt(IlgpuReductions.GroupSum(scratch, squares) / args.Dim + args.Eps);
            for (int i = Group.IdxX; i < args.Dim; i += Group.DimX) y[offset + i] = x[offset + i] * r * weight[i];
        }
    }

    /// <summary>dx = r·dy·w − r³·x·(Σ dy·w·x)/D; the row's r is stored for the weight gradient Σ dy·x·r.</summary>
    private static void RmsBackwardKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy, ArrayView<float> dx,
        ArrayView<float> inverseRms, RowArgs args)
    {
        var scratchA = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        var scratchB = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        for (int row = Grid.IdxX; row < args.Rows; row += Grid.DimX)
        {
            int offset = row * args.Dim;
            float squares = 0, gx = 0;
            for (int i = Group.IdxX; i < args.Dim; i += Group.DimX)
            {
                float xi = x[offset + i];
                squares += xi * xi;
                gx += dy[offset + i] * weight[i] * xi;
            }
            IlgpuReductions.GroupSum2(scratchA, scratchB, ref squares, ref gx);
            float r = XMath.Rsqrt(squares / args.Dim + args.Eps);
            if (args.WriteStats != 0 && Group.IdxX == 0) inverseRms[row] = r;
            if (args.HasDx != 0)
            {
                float correction = r * r * r * gx / args.Dim;
                for (int i = Group.IdxX; i < args.Dim; i += Group.DimX)
                    dx[offset + i] = r * dy[offset + i] * weight[i] - correction * x[offset + i];
            }
        }
    }

    /// <summary>Mean and 1/√(biased variance + eps) of one row, two passes over the row.</summary>
    private static void RowStats(ArrayView<float> scratch, ArrayView<float> x, int offset, RowArgs args, out float mean, out float rstd)
    {
        float sum = 0;
        for (int i = Group.IdxX; i < args.Dim; i += Group.DimX) sum += x[offset + i];
        mean = IlgpuReductions.GroupSum(scratch, sum) / args.Dim;
        float squares = 0;
        for (int i = Group.IdxX; i < args.Dim; i += Group.DimX)
        {
            float c = x[offset + i] - mean;
            squares += c * c;
        }
        rstd = XMath.Rsqrt(IlgpuReductions.GroupSum(scratch, squares) / args.Dim + args.Eps);
    }

    private static void LayerForwardKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias, ArrayView<float> y, RowArgs args)
    {
        var scratch = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        for (int row = Grid.IdxX; row < args.Rows; row += Grid.DimX)
        {
            int offset = row * args.Dim;
            RowStats(scratch, x, offset, args, out float mean, out float rstd);
            for (int i = Group.IdxX; i < args.Dim; i += Group.DimX)
            {
                float value = (x[offset + i] - mean) * rstd;
                if (args.HasWeight != 0) value *= weight[i];
                if (args.HasBias != 0) value += bias[i];
                y[offset + i] = value;
            }
        }
    }

    /// <summary>With g = dy·w and x̂ the normalized row: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).</summary>
    private static void LayerBackwardKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> dy, ArrayView<float> dx,
        ArrayView<float> means, ArrayView<float> rstds, RowArgs args)
    {
        var scratchA = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        var scratchB = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        for (int row = Grid.IdxX; row < args.Rows; row += Grid.DimX)
        {
            int offset = row * args.Dim;
            RowStats(scratchA, x, offset, args, out float mean, out float rstd);
            if (Group.IdxX == 0)
            {
                means[row] = mean;
                rstds[row] = rstd;
            }
            if (args.HasDx == 0) continue;
            float sumG = 0, sumGX = 0;
            for (int i = Group.IdxX; i < args.Dim; i += Group.DimX)
            {
                float g = dy[offset + i];
                if (args.HasWeight != 0) g *= weight[i];
                sumG += g;
                sumGX += g * (x[offset + i] - mean) * rstd;
            }
            IlgpuReductions.GroupSum2(scratchA, scratchB, ref sumG, ref sumGX);
            float meanG = sumG / args.Dim, meanGX = sumGX / args.Dim;
            for (int i = Group.IdxX; i < args.Dim; i += Group.DimX)
            {
                float g = dy[offset + i];
                if (args.HasWeight != 0) g *= weight[i];
                dx[offset + i] = rstd * (g - meanG - (x[offset + i] - mean) * rstd * meanGX);
            }
        }
    }
}
