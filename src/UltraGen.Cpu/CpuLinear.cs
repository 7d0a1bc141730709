using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using UltraGen.Core;
using Tensor = UltraGen.Core.Tensor;
using UltraGen.Ops;
using static UltraGen.Cpu.CpuParallel;

namespace UltraGen.Cpu;

/// <summary>
/// linear on f32 host tensors (reference: <see cref="LinearOp"/>): y = x·Wᵀ + b with x (rows, in), W (out, in).
/// All three products run through one cache-blocked GEMM, C (m×n) += A (m×k) · B (k×n) with B row-major and A read
/// through two strides, so A may be a transpose without a copy:
/// <list type="bullet">
/// <item>forward: A = x, B = Wᵀ (packed once per call; below <see cref="PackRows"/> rows, plain dot products instead);</item>
/// <item>dx = dy·W: A = dy, B = W;</item>
/// <item>dW = dyᵀ·x: A = dyᵀ (strides 1, out), B = x;</item>
/// <item>db = column sums of dy.</item>
/// </list>
/// The micro-kernel holds a 4-row × 64-column tile of C in sixteen Vector512 registers (4 × 16 with Vector256 on AVX2
/// machines): per k it loads one row of B's panel and broadcasts four A values, 16 FMAs per 4 loads. Blocks of
/// <see cref="MC"/> × <see cref="NC"/> of C are the parallel tasks (disjoint writes); inside one, k runs in slices of
/// <see cref="KC"/> so the B panel slice (KC × 64 floats) stays in L1/L2 while the m-tiles sweep over it.
/// </summary>
public static unsafe class CpuLinear
{
    /// <summary>Rows of C per task.</summary>
    private const int MC = 64;

    /// <summary>Columns of C per task.</summary>
    private const int NC = 256;

    /// <summary>k per slice: a 4 × KC slice of A and a KC × 64 slice of B's panel fit in L1/L2.</summary>
    private const int KC = 256;

    /// <summary>Rows of the micro-tile.</summary>
    private const int MR = 4;

    /// <summary>Below this many rows the forward skips packing Wᵀ and takes one dot product per output.</summary>
    private const int PackRows = 8;

    /// <summary>Columns of the main micro-tile: four vectors.</summary>
    private static readonly int s_tileColumns = Vector512.IsHardwareAccelerated ? 4 * Vector512<float>.Count : 2 * Vector256<float>.Count;

    public static void Forward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        int inF = weight.Dim(1), outF = weight.Dim(0), rows = checked((int)(x.ElementCount / inF));
        float* px = Ptr(x), pw = Ptr(weight), pb = PtrOrNull(bias), py = Ptr(y);
        if (rows < PackRows)
        {
            For((long)rows * outF, Math.Max(1, (1 << 14) / Math.Max(inF, 1)), (s, e) =>
            {
                for (int i = s; i < e; i++)
                {
                    int row = i / outF, o = i % outF;
                    float dot = TensorPrimitives.Dot(Span(px + (long)row * inF, inF), Span(pw + (long)o * inF, inF));
                    py[i] = pb == null ? dot : dot + pb[o];
                }
            });
            return;
        }
        float* wt = (float*)NativeMemory.AlignedAlloc((nuint)((long)inF * outF * sizeof(float)), 64);
        try
        {
            Transpose(pw, outF, inF, wt);
            For(rows, Math.Max(1, (1 << 14) / Math.Max(outF, 1)), (s, e) =>
            {
                for (int row = s; row < e; row++)
                {
                    var ys = Span(py + (long)row * outF, outF);
                    if (pb == null) ys.Clear();
                    else Span(pb, outF).CopyTo(ys);
                }
            });
            Gemm(rows, outF, inF, px, inF, 1, wt, outF, py, outF);
        }
        finally
        {
            NativeMemory.AlignedFree(wt);
        }
    }

    public static void Backward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        int inF = weight.Dim(1), outF = weight.Dim(0), rows = checked((int)(x.ElementCount / inF));
        float* px = Ptr(x), pw = Ptr(weight), pdy = Ptr(dy);
        if (dx is not null)
        {
            dx.HostSpan<float>().Clear();
            Gemm(rows, inF, outF, pdy, outF, 1, pw, inF, Ptr(dx), inF);
        }
        if (dWeight is not null)
        {
            dWeight.HostSpan<float>().Clear();
            Gemm(outF, inF, rows, pdy, 1, outF, px, inF, Ptr(dWeight), inF);
        }
        if (dBias is not null) ColumnSum(pdy, rows, outF, Ptr(dBias));
    }

    /// <summary>destination[c] = Σ_r source[r·width + c], parallel over column blocks, f32 runs with f64 carries.</summary>
    private static void ColumnSum(float* source, int rows, int width, float* destination)
    {
        const int block = 256;
        Parallel.For(0, (width + block - 1) / block, task =>
        {
            int c0 = task * block, w = Math.Min(block, width - c0);
            var sums = new ColumnSums(w);
            for (int r = 0; r < rows; r++)
            {
                TensorPrimitives.Add(Span(source + (long)r * width + c0, w), sums.Partial, sums.Partial);
                sums.EndRow();
            }
            var totals = sums.Totals;
            for (int c = 0; c < w; c++) destination[c0 + c] = (float)totals[c];
        });
    }

    /// <summary>destination (cols × rows) = sourceᵀ for a row-major source (rows × cols), in 32 × 32 blocks.</summary>
    private static void Transpose(float* source, int rows, int cols, float* destination)
    {
        const int block = 32;
        For((rows + block - 1) / block, Math.Max(1, (1 << 15) / ((long)block * Math.Max(cols, 1))), (s, e) =>
        {
            for (int rb = s; rb < e; rb++)
                for (int c0 = 0; c0 < cols; c0 += block)
                {
                    int r0 = rb * block, r1 = Math.Min(r0 + block, rows), c1 = Math.Min(c0 + block, cols);
                    for (int c = c0; c < c1; c++)
                        for (int r = r0; r < r1; r++)
                            destination[(long)c * rows + r] = source[(long)r * cols + c];
                }
        });
    }

    /// <summary>
    /// C[i, j] += Σ_p A[i·am + p·ak]·B[p·ldb + j] for i &lt; m, j &lt; n, p &lt; k: the blocked, parallel driver.
    /// </summary>
    internal static void Gemm(int m, int n, int k, float* a, int am, int ak, float* b, int ldb, float* c, int ldc)
    {
        if (m == 0 || n == 0 || k == 0) return;
        int mBlocks = (m + MC - 1) / MC, nBlocks = (n + NC - 1) / NC;
        void Task(int t)
        {
            int i0 = t / nBlocks * MC, j0 = t % nBlocks * NC;
            Block(i0, Math.Min(i0 + MC, m), j0, Math.Min(j0 + NC, n), k, a, am, ak, b, ldb, c, ldc);
        }
        if (mBlocks * nBlocks == 1 || (long)m * n * k < 1 << 16)
            for (int t = 0; t < mBlocks * nBlocks; t++) Task(t);
        else
            Parallel.For(0, mBlocks * nBlocks, Task);
    }

    private static void Block(int i0, int i1, int j0, int j1, int k, float* a, int am, int ak, float* b, int ldb, float* c, int ldc)
    {
        int tile = s_tileColumns, vector = Vector256<float>.Count;
        for (int p0 = 0; p0 < k; p0 += KC)
        {
            int kc = Math.Min(KC, k - p0);
            for (int j = j0; j < j1;)
            {
                int left = j1 - j;
                int width = left >= tile ? tile : left >= vector ? vector : left;
                for (int i = i0; i < i1; i += MR)
                {
                    int mr = Math.Min(MR, i1 - i);
                    float* aTile = a + (long)i * am + (long)p0 * ak;
                    float* bTile = b + (long)p0 * ldb + j;
                    float* cTile = c + (long)i * ldc + j;
                    if (width == tile)
                    {
                        if (Vector512.IsHardwareAccelerated) Kernel512x4(mr, kc, aTile, am, ak, bTile, ldb, cTile, ldc);
                        else Kernel256x2(mr, kc, aTile, am, ak, bTile, ldb, cTile, ldc);
                    }
                    else if (width == vector) Kernel256x1(mr, kc, aTile, am, ak, bTile, ldb, cTile, ldc);
                    else KernelScalar(mr, width, kc, aTile, am, ak, bTile, ldb, cTile, ldc);
                }
                j += width;
            }
        }
    }

    // Micro-kernels: C tile (mr ≤ 4 rows) += A tile (mr × kc) · B panel (kc × width). Rows past mr are clamped to the
    // last valid row (same A row, same C row), so they compute that row's values again and the stores write them twice.

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel512x4(int mr, int kc, float* a, int am, int ak, float* b, int ldb, float* c, int ldc)
    {
        float* a0 = a, a1 = a + (long)Math.Min(1, mr - 1) * am, a2 = a + (long)Math.Min(2, mr - 1) * am, a3 = a + (long)Math.Min(3, mr - 1) * am;
        float* c0 = c, c1 = c + (long)Math.Min(1, mr - 1) * ldc, c2 = c + (long)Math.Min(2, mr - 1) * ldc, c3 = c + (long)Math.Min(3, mr - 1) * ldc;
        const int w = 16;
        Vector512<float> c00 = Vector512.Load(c0), c01 = Vector512.Load(c0 + w), c02 = Vector512.Load(c0 + 2 * w), c03 = Vector512.Load(c0 + 3 * w);
        Vector512<float> c10 = Vector512.Load(c1), c11 = Vector512.Load(c1 + w), c12 = Vector512.Load(c1 + 2 * w), c13 = Vector512.Load(c1 + 3 * w);
        Vector512<float> c20 = Vector512.Load(c2), c21 = Vector512.Load(c2 + w), c22 = Vector512.Load(c2 + 2 * w), c23 = Vector512.Load(c2 + 3 * w);
        Vector512<float> c30 = Vector512.Load(c3), c31 = Vector512.Load(c3 + w), c32 = Vector512.Load(c3 + 2 * w), c33 = Vector512.Load(c3 + 3 * w);
        for (long p = 0, ap = 0; p < kc; p++, ap += ak)
        {
            float* row = b + p * ldb;
            Vector512<float> b0 = Vector512.Load(row), b1 = Vector512.Load(row + w), b2 = Vector512.Load(row + 2 * w), b3 = Vector512.Load(row + 3 * w);
            var s = Vector512.Create(a0[ap]);
            c00 = Vector512.FusedMultiplyAdd(s, b0, c00); c01 = Vector512.FusedMultiplyAdd(s, b1, c01);
            c02 = Vector512.FusedMultiplyAdd(s, b2, c02); c03 = Vector512.FusedMultiplyAdd(s, b3, c03);
            s = Vector512.Create(a1[ap]);
            c10 = Vector512.FusedMultiplyAdd(s, b0, c10); c11 = Vector512.FusedMultiplyAdd(s, b1, c11);
            c12 = Vector512.FusedMultiplyAdd(s, b2, c12); c13 = Vector512.FusedMultiplyAdd(s, b3, c13);
            s = Vector512.Create(a2[ap]);
            c20 = Vector512.FusedMultiplyAdd(s, b0, c20); c21 = Vector512.FusedMultiplyAdd(s, b1, c21);
            c22 = Vector512.FusedMultiplyAdd(s, b2, c22); c23 = Vector512.FusedMultiplyAdd(s, b3, c23);
            s = Vector512.Create(a3[ap]);
            c30 = Vector512.FusedMultiplyAdd(s, b0, c30); c31 = Vector512.FusedMultiplyAdd(s, b1, c31);
            c32 = Vector512.FusedMultiplyAdd(s, b2, c32); c33 = Vector512.FusedMultiplyAdd(s, b3, c33);
        }
        c30.Store(c3); c31.Store(c3 + w); c32.Store(c3 + 2 * w); c33.Store(c3 + 3 * w);
        c20.Store(c2); c21.Store(c2 + w); c22.Store(c2 + 2 * w); c23.Store(c2 + 3 * w);
        c10.Store(c1); c11.Store(c1 + w); c12.Store(c1 + 2 * w); c13.Store(c1 + 3 * w);
        c00.Store(c0); c01.Store(c0 + w); c02.Store(c0 + 2 * w); c03.Store(c0 + 3 * w);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel256x2(int mr, int kc, float* a, int am, int ak, float* b, int ldb, float* c, int ldc)
    {
        float* a0 = a, a1 = a + (long)Math.Min(1, mr - 1) * am, a2 = a + (long)Math.Min(2, mr - 1) * am, a3 = a + (long)Math.Min(3, mr - 1) * am;
        float* c0 = c, c1 = c + (long)Math.Min(1, mr - 1) * ldc, c2 = c + (long)Math.Min(2, mr - 1) * ldc, c3 = c + (long)Math.Min(3, mr - 1) * ldc;
        const int w = 8;
        Vector256<float> c00 = Vector256.Load(c0), c01 = Vector256.Load(c0 + w), c10 = Vector256.Load(c1), c11 = Vector256.Load(c1 + w);
        Vector256<float> c20 = Vector256.Load(c2), c21 = Vector256.Load(c2 + w), c30 = Vector256.Load(c3), c31 = Vector256.Load(c3 + w);
        for (long p = 0, ap = 0; p < kc; p++, ap += ak)
        {
            float* row = b + p * ldb;
            Vector256<float> b0 = Vector256.Load(row), b1 = Vector256.Load(row + w);
            var s = Vector256.Create(a0[ap]);
            c00 = Vector256.FusedMultiplyAdd(s, b0, c00); c01 = Vector256.FusedMultiplyAdd(s, b1, c01);
            s = Vector256.Create(a1[ap]);
            c10 = Vector256.FusedMultiplyAdd(s, b0, c10); c11 = Vector256.FusedMultiplyAdd(s, b1, c11);
            s = Vector256.Create(a2[ap]);
            c20 = Vector256.FusedMultiplyAdd(s, b0, c20); c21 = Vector256.FusedMultiplyAdd(s, b1, c21);
            s = Vector256.Create(a3[ap]);
            c30 = Vector256.FusedMultiplyAdd(s, b0, c30); c31 = Vector256.FusedMultiplyAdd(s, b1, c31);
        }
        c30.Store(c3); c31.Store(c3 + w);
        c20.Store(c2); c21.Store(c2 + w);
        c10.Store(c1); c11.Store(c1 + w);
        c00.Store(c0); c01.Store(c0 + w);
    }

    /// <summary>The 8-column edge tile (any machine with Vector256).</summary>
    private static void Kernel256x1(int mr, int kc, float* a, int am, int ak, float* b, int ldb, float* c, int ldc)
    {
        float* a0 = a, a1 = a + (long)Math.Min(1, mr - 1) * am, a2 = a + (long)Math.Min(2, mr - 1) * am, a3 = a + (long)Math.Min(3, mr - 1) * am;
        float* c0 = c, c1 = c + (long)Math.Min(1, mr - 1) * ldc, c2 = c + (long)Math.Min(2, mr - 1) * ldc, c3 = c + (long)Math.Min(3, mr - 1) * ldc;
        Vector256<float> r0 = Vector256.Load(c0), r1 = Vector256.Load(c1), r2 = Vector256.Load(c2), r3 = Vector256.Load(c3);
        for (long p = 0, ap = 0; p < kc; p++, ap += ak)
        {
            var row = Vector256.Load(b + p * ldb);
            r0 = Vector256.FusedMultiplyAdd(Vector256.Create(a0[ap]), row, r0);
            r1 = Vector256.FusedMultiplyAdd(Vector256.Create(a1[ap]), row, r1);
            r2 = Vector256.FusedMultiplyAdd(Vector256.Create(a2[ap]), row, r2);
            r3 = Vector256.FusedMultiplyAdd(Vector256.Create(a3[ap]), row, r3);
        }
        r3.Store(c3);
        r2.Store(c2);
        r1.Store(c1);
        r0.Store(c0);
    }

    /// <summary>The last &lt; 8 columns.</summary>
    private static void KernelScalar(int mr, int width, int kc, float* a, int am, int ak, float* b, int ldb, float* c, int ldc)
    {
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < width; j++)
            {
                float sum = c[(long)i * ldc + j];
                for (long p = 0; p < kc; p++) sum = MathF.FusedMultiplyAdd(a[i * (long)am + p * ak], b[p * ldb + j], sum);
                c[(long)i * ldc + j] = sum;
            }
    }
}
