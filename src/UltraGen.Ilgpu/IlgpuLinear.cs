using ILGPU;
using ILGPU.Runtime;
using UltraGen.Core;

namespace UltraGen.Ilgpu;

/// <summary>
/// <c>linear</c> (y = x·Wᵀ + b) as one strided tiled GEMM, C[m, n] = Σ_k A(m, k)·B(k, n) (+ bias[n]), where A and B
/// are read through element strides so the same kernel does all three products without a transpose pass:
/// forward y = x·Wᵀ, backward dx = dy·W and dW = dyᵀ·x; db is a column sum of dy (<see cref="IlgpuReductions"/>).
/// <para>
/// Kernel design: one group of 64 threads per 16×16 output tile; the K axis is walked in 16-wide slabs staged in
/// shared memory (A slab 16×16 and B slab 16×16, the A slab padded to 17 to keep the transposed stores off one bank).
/// Each thread owns one output column and four rows (register blocking, 4 accumulators), so every B value read from
/// shared memory feeds four FMAs. Slab loads map consecutive threads to the operand's contiguous axis (coalesced).
/// Two barriers per slab. Edge tiles (M, N, K not multiples of 16) load zeros and skip the stores.
/// </para>
/// </summary>
internal sealed class IlgpuLinear
{
    internal const int Tile = 16;
    internal const int Threads = 64;

    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs> _gemm;

    public IlgpuLinear(Accelerator accelerator, LaunchShape shape)
    {
        _ = shape; // the GEMM's group is fixed by its tile (64 threads on every accelerator)
        _gemm = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(GemmKernel);
    }

    /// <summary>Sizes and element strides: A(m, k) = a[m·AM + k·AK], B(k, n) = b[k·BK + n·BN], C row-major (M, N).</summary>
    internal struct GemmArgs
    {
        public int M, N, K;
        public int AM, AK, BK, BN;
        public int HasBias;
    }

    /// <summary>C = A·B (+ bias) with the strides of <paramref name="args"/>; public for the tile-edge tests.</summary>
    internal void Gemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, ArrayView<float> c, GemmArgs args)
    {
        var config = new KernelConfig(new Index2D((args.M + Tile - 1) / Tile, (args.N + Tile - 1) / Tile), new Index2D(Threads, 1));
        _gemm(config, a, b, bias, c, args);
    }

    public void Forward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        int outFeatures = weight.Dim(0), inFeatures = weight.Dim(1);
        int rows = checked((int)(x.ElementCount / inFeatures));
        Gemm(IlgpuBackend.F32(x), IlgpuBackend.F32(weight), IlgpuBackend.F32OrEmpty(bias), IlgpuBackend.F32(y), new GemmArgs
        {
            M = rows, N = outFeatures, K = inFeatures,
            AM = inFeatures, AK = 1, // x[row, i]
            BK = 1, BN = inFeatures, // W[o, i] read as B(i, o)
            HasBias = bias is null ? 0 : 1,
        });
    }

    public void Backward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias, IlgpuReductions reductions)
    {
        int outFeatures = weight.Dim(0), inFeatures = weight.Dim(1);
        int rows = checked((int)(x.ElementCount / inFeatures));
        var dyView = IlgpuBackend.F32(dy);
        if (dx is not null)
            Gemm(dyView, IlgpuBackend.F32(weight), ArrayView<float>.Empty, IlgpuBackend.F32(dx), new GemmArgs
            {
                M = rows, N = inFeatures, K = outFeatures,
                AM = outFeatures, AK = 1, // dy[row, o]
                BK = inFeatures, BN = 1, // W[o, i]
            });
        if (dWeight is not null)
            Gemm(dyView, IlgpuBackend.F32(x), ArrayView<float>.Empty, IlgpuBackend.F32(dWeight), new GemmArgs
            {
                M = outFeatures, N = inFeatures, K = rows,
                AM = 1, AK = outFeatures, // dy[row, o] read as A(o, row)
                BK = inFeatures, BN = 1, // x[row, i]
            });
        if (dBias is not null)
            reductions.ColumnSum(IlgpuReductions.SumA, dyView, ArrayView<float>.Empty, ArrayView<float>.Empty, ArrayView<float>.Empty,
                IlgpuBackend.F32(dBias), 1, rows, outFeatures);
    }

    private static void GemmKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, ArrayView<float> c, GemmArgs args)
    {
        var aTile = SharedMemory.Allocate<float>(Tile * (Tile + 1)); // [k][m], padded
        var bTile = SharedMemory.Allocate<float>(Tile * Tile); // [k][n]
        int tid = Group.IdxX;
        int rowBase = Grid.IdxX * Tile, colBase = Grid.IdxY * Tile;
        int column = tid % Tile, rowLane = tid / Tile; // rows rowLane + 4·r
        bool aAlongK = args.AK == 1, bAlongN = args.BN == 1;
        float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;

        for (int k0 = 0; k0 < args.K; k0 += Tile)
        {
            for (int e = tid; e < Tile * Tile; e += Threads)
            {
                // A slab: consecutive threads walk A's contiguous axis.
                int am = aAlongK ? e / Tile : e % Tile, ak = aAlongK ? e % Tile : e / Tile;
                int m = rowBase + am, k = k0 + ak;
                aTile[ak * (Tile + 1) + am] = m < args.M && k < args.K ? a[m * args.AM + k * args.AK] : 0f;
                int bn = bAlongN ? e % Tile : e / Tile, bk = bAlongN ? e / Tile : e % Tile;
                int n = colBase + bn, kb = k0 + bk;
                bTile[bk * Tile + bn] = n < args.N && kb < args.K ? b[kb * args.BK + n * args.BN] : 0f;
            }
            Group.Barrier();
            for (int k = 0; k < Tile; k++)
            {
                float bv = bTile[k * Tile + column];
                int aRow = k * (Tile + 1) + rowLane;
                acc0 += aTile[aRow] * bv;
                acc1 += aTile[aRow + 4] * bv;
                acc2 += aTile[aRow + 8] * bv;
                acc3 += aTile[aRow + 12] * bv;
            }
            Group.Barrier();
        }

        int col = colBase + column;
        if (col >= args.N) return;
        float biasValue = args.HasBias != 0 ? bias[col] : 0f;
        Store(c, args, rowBase + rowLane, col, acc0 + biasValue);
        Store(c, args, rowBase + rowLane + 4, col, acc1 + biasValue);
        Store(c, args, rowBase + rowLane + 8, col, acc2 + biasValue);
        Store(c, args, rowBase + rowLane + 12, col, acc3 + biasValue);
    }

    private static void Store(ArrayView<float> c, GemmArgs args, int row, int col, float value)
    {
        if (row < args.M) c[row * args.N + col] = value;
    }
}
