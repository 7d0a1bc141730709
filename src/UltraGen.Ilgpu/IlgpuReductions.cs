using ILGPU;
using ILGPU.Runtime;

namespace UltraGen.Ilgpu;

/// <summary>
/// Column sums over the token (row) axis: the parameter gradients of the pointwise and norm ops (bias, norm weights,
/// adaLN shift/scale). For a matrix stack (batches, rows, cols): out[b, c] = Σ_r term(b, r, c).
/// <para>
/// Kernel design (no atomics, deterministic): one group per (block of 32 columns, batch); the group is 32 columns ×
/// (groupSize/32) row slices, so a warp reads 32 consecutive channels (coalesced, channels-last). Each thread sums its
/// rows in chunks of 64 (two-level summation: error ~(64 + rows/64)·ε instead of rows·ε), writes its partial to shared
/// memory, and after one barrier the first slice adds the slices in a fixed order.
/// </para>
/// </summary>
internal sealed class IlgpuReductions
{
    /// <summary>term = a.</summary>
    public const int SumA = 0;

    /// <summary>term = a·b.</summary>
    public const int SumAB = 1;

    /// <summary>term = a·b·s1[row] (rms_norm weight gradient: dy·x·r).</summary>
    public const int SumABScaled = 2;

    /// <summary>term = a·(b − s1[row])·s2[row] (layer_norm weight gradient: dy·x̂).</summary>
    public const int SumANormalized = 3;

    internal const int Columns = 32;
    private const int Chunk = 64;

    private readonly LaunchShape _shape;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ColumnSumArgs> _columnSum;

    public IlgpuReductions(Accelerator accelerator, LaunchShape shape)
    {
        _shape = shape;
        _columnSum = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ColumnSumArgs>(ColumnSumKernel);
    }

    internal struct ColumnSumArgs
    {
        public int Batches, Rows, Cols, Kind;
    }

    /// <summary>out (batches, cols) = Σ over rows of the term <paramref name="kind"/>; unused views may be empty.</summary>
    public void ColumnSum(int kind, ArrayView<float> a, ArrayView<float> b, ArrayView<float> rowStat1, ArrayView<float> rowStat2,
        ArrayView<float> output, int batches, int rows, int cols)
    {
        var config = new KernelConfig(new Index2D((cols + Columns - 1) / Columns, batches), new Index2D(_shape.GroupSize, 1));
        _columnSum(config, a, b, rowStat1, rowStat2, output, new ColumnSumArgs { Batches = batches, Rows = rows, Cols = cols, Kind = kind });
    }

    private static void ColumnSumKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> s1, ArrayView<float> s2,
        ArrayView<float> output, ColumnSumArgs args)
    {
        var partials = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        int lane = Group.IdxX % Columns, slice = Group.IdxX / Columns, slices = Group.DimX / Columns;
        int column = Grid.IdxX * Columns + lane, batch = Grid.IdxY;
        var total = new ChunkedSum();
        if (column < args.Cols)
        {
            for (int row = slice; row < args.Rows; row += slices)
            {
                int r = batch * args.Rows + row;
                int i = r * args.Cols + column;
                total.Add(args.Kind switch
                {
                    SumA => a[i],
                    SumAB => a[i] * b[i],
                    SumABScaled => a[i] * b[i] * s1[r],
                    _ => a[i] * (b[i] - s1[r]) * s2[r],
                });
            }
        }
        float sum = CombineSlices(partials, total.Total, lane, slices);
        if (slice == 0 && column < args.Cols) output[batch * args.Cols + column] = sum;
    }

    /// <summary>
    /// A running f32 sum that flushes into a second accumulator every <see cref="Chunk"/> terms, so a long column sum
    /// keeps the 1e-5 tolerance without f64 (shared by every column-sum kernel).
    /// </summary>
    internal struct ChunkedSum
    {
        private float _chunk, _total;
        private int _inChunk;

        public void Add(float term)
        {
            _chunk += term;
            if (++_inChunk == Chunk)
            {
                _total += _chunk;
                _chunk = 0;
                _inChunk = 0;
            }
        }

        public readonly float Total => _total + _chunk;
    }

    /// <summary>
    /// Combines the per-slice partial sums of a column-sum group (<see cref="Columns"/> columns × slices): every thread
    /// stores its partial, and slice 0's thread of each column gets the column's total, added in a fixed order.
    /// </summary>
    internal static float CombineSlices(ArrayView<float> partials, float partial, int lane, int slices)
    {
        partials[Group.IdxX] = partial;
        Group.Barrier();
        float sum = 0;
        for (int s = 0; s < slices; s++) sum += partials[s * Columns + lane];
        return sum;
    }

    // ---- row reductions inside a group (device helpers shared by the norm and timestep kernels) ----

    /// <summary>Tree sum of one value per thread over the group (group size a power of two); every thread gets the total.</summary>
    internal static float GroupSum(ArrayView<float> scratch, float value)
    {
        int tid = Group.IdxX;
        scratch[tid] = value;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (tid < stride) scratch[tid] += scratch[tid + stride];
            Group.Barrier();
        }
        float total = scratch[0];
        Group.Barrier(); // the scratch may be reused right after
        return total;
    }

    /// <summary>Two tree sums sharing the barriers; the totals land in <paramref name="first"/> and <paramref name="second"/>.</summary>
    internal static void GroupSum2(ArrayView<float> scratchA, ArrayView<float> scratchB, ref float first, ref float second)
    {
        int tid = Group.IdxX;
        scratchA[tid] = first;
        scratchB[tid] = second;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (tid < stride)
            {
                scratchA[tid] += scratchA[tid + stride];
                scratchB[tid] += scratchB[tid + stride];
            }
            Group.Barrier();
        }
        first = scratchA[0];
        second = scratchB[0];
        Group.Barrier();
    }
}
