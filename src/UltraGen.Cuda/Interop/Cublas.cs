using System.Runtime.InteropServices;

namespace UltraGen.Cuda.Interop;

/// <summary>cuBLAS operand transpose (cublasOperation_t).</summary>
public enum BlasOp
{
    N = 0,
    T = 1,
}

/// <summary>cudaDataType_t values of the operand types this project multiplies.</summary>
public enum BlasDataType
{
    R32F = 0,
    R16F = 2,
    R16BF = 14,
}

/// <summary>
/// The column-major cuBLAS call that computes a row-major product <c>C = op(A)·op(B)</c>, C being M×N and the shared
/// dimension K. <b>The transpose trick:</b> a row-major r×c buffer, read column-major with leading dimension c, is the c×r
/// matrix Xᵀ. So the row-major C buffer is the column-major <c>Cᵀ = op(B)ᵀ·op(A)ᵀ</c>, and cuBLAS gets the operands swapped
/// (first B's buffer, then A's), <c>m = N</c>, <c>n = M</c>, <c>k = K</c>. Since each buffer already reads as its transpose,
/// <c>op(B)ᵀ</c> is the buffer as read when B is not transposed (<c>transa = N</c>) and its transpose when it is
/// (<c>transa = T</c>): the flags carry over, <c>transa = transB</c>, <c>transb = transA</c>. Leading dimensions are the row
/// lengths of the row-major buffers: <c>lda</c> = K when B is stored N×K, else N; <c>ldb</c> = M when A is stored K×M, else K;
/// <c>ldc = N</c>.
/// </summary>
public readonly record struct GemmCall(BlasOp TransA, BlasOp TransB, int M, int N, int K, int Lda, int Ldb, int Ldc, bool SwapOperands)
{
    /// <summary>
    /// The call for row-major <c>C(M×N) = op(A)·op(B)</c>: A stored M×K (or K×M when <paramref name="transposeA"/>), B stored K×N
    /// (or N×K when <paramref name="transposeB"/>). The returned call's first operand is B's buffer and its second A's
    /// (<see cref="SwapOperands"/> is always true; it is kept explicit for readers of the launch site).
    /// </summary>
    public static GemmCall RowMajor(int m, int n, int k, bool transposeA, bool transposeB)
    {
        if (m < 1 || n < 1 || k < 1) throw new ArgumentOutOfRangeException(nameof(m), $"GEMM dims must be ≥ 1, got M={m}, N={n}, K={k}");
        return new GemmCall(
            TransA: transposeB ? BlasOp.T : BlasOp.N,
            TransB: transposeA ? BlasOp.T : BlasOp.N,
            M: n, N: m, K: k,
            Lda: transposeB ? k : n,
            Ldb: transposeA ? m : k,
            Ldc: n,
            SwapOperands: true);
    }

    /// <summary>y(rows×out) = x(rows×in)·Wᵀ with W stored (out×in), torch.nn.Linear's layout.</summary>
    public static GemmCall LinearForward(int rows, int inFeatures, int outFeatures) => RowMajor(rows, outFeatures, inFeatures, false, true);

    /// <summary>dx(rows×in) = dy(rows×out)·W(out×in).</summary>
    public static GemmCall LinearBackwardInput(int rows, int inFeatures, int outFeatures) => RowMajor(rows, inFeatures, outFeatures, false, false);

    /// <summary>dW(out×in) = dyᵀ·x, dy stored (rows×out), x stored (rows×in).</summary>
    public static GemmCall LinearBackwardWeight(int rows, int inFeatures, int outFeatures) => RowMajor(outFeatures, inFeatures, rows, true, false);

    /// <summary>y(rows×out) += 1(rows×1)·b(1×out): the bias broadcast as a rank-1 GEMM with beta = 1.</summary>
    public static GemmCall BiasBroadcast(int rows, int outFeatures) => RowMajor(rows, outFeatures, 1, false, false);

    /// <summary>db(out×1) = dyᵀ·1(rows×1): the bias gradient as a GEMM with a ones vector.</summary>
    public static GemmCall BiasGradient(int rows, int outFeatures) => RowMajor(outFeatures, 1, rows, true, false);

    public override string ToString() =>
        $"cublas(transa={TransA}, transb={TransB}, m={M}, n={N}, k={K}, lda={Lda}, ldb={Ldb}, ldc={Ldc})";
}

/// <summary>
/// A cuBLAS handle bound to one stream, doing the GEMMs the Cuda backend needs (linear forward and backward) with
/// <c>cublasGemmEx</c>: f32 or bf16 operands, fp32 accumulation (CUBLAS_COMPUTE_32F, no TF32), alpha/beta on the host.
/// Create it with the owning context current.
/// </summary>
public sealed unsafe partial class Cublas : IDisposable
{
    private const int ComputeType32F = 68; // CUBLAS_COMPUTE_32F
    private const int GemmDefault = -1;    // CUBLAS_GEMM_DEFAULT

    private IntPtr _handle;

    internal static partial class Native
    {
        static Native() => NativeLibraries.EnsureRegistered();

        [LibraryImport(NativeLibraries.CublasName, EntryPoint = "cublasCreate_v2")] internal static partial int cublasCreate(out IntPtr handle);
        [LibraryImport(NativeLibraries.CublasName, EntryPoint = "cublasDestroy_v2")] internal static partial int cublasDestroy(IntPtr handle);
        [LibraryImport(NativeLibraries.CublasName, EntryPoint = "cublasSetStream_v2")] internal static partial int cublasSetStream(IntPtr handle, IntPtr stream);

        [LibraryImport(NativeLibraries.CublasName)]
        internal static partial int cublasGemmEx(IntPtr handle, int transa, int transb, int m, int n, int k,
            void* alpha, IntPtr a, int aType, int lda, IntPtr b, int bType, int ldb,
            void* beta, IntPtr c, int cType, int ldc, int computeType, int algo);
    }

    /// <summary>Why cuBLAS cannot be used here, or null when the library loads.</summary>
    public static string? Unavailable() => NativeLibraries.TryLoadCublas(out _, out var reason) ? null : reason;

    public Cublas(IntPtr stream)
    {
        if (Unavailable() is { } reason) throw new Core.UnsupportedConfigurationException(reason);
        Check(Native.cublasCreate(out _handle), "cublasCreate_v2");
        Check(Native.cublasSetStream(_handle, stream), "cublasSetStream_v2");
    }

    private static void Check(int status, string call, string? detail = null)
    {
        if (status != 0) throw new CublasException(call, status, detail);
    }

    /// <summary>
    /// Row-major <c>C = alpha·op(A)·op(B) + beta·C</c> as described by <paramref name="call"/> (see <see cref="GemmCall.RowMajor"/>):
    /// <paramref name="a"/> and <paramref name="b"/> are the row-major product's A and B; they are swapped here.
    /// </summary>
    public void Gemm(GemmCall call, IntPtr a, IntPtr b, IntPtr c, float alpha = 1f, float beta = 0f,
        BlasDataType inputType = BlasDataType.R32F, BlasDataType outputType = BlasDataType.R32F, string? what = null)
    {
        ObjectDisposedException.ThrowIf(_handle == IntPtr.Zero, this);
        Check(Native.cublasGemmEx(_handle, (int)call.TransA, (int)call.TransB, call.M, call.N, call.K,
                &alpha, b, (int)inputType, call.Lda, a, (int)inputType, call.Ldb,
                &beta, c, (int)outputType, call.Ldc, ComputeType32F, GemmDefault),
            "cublasGemmEx", $"{what ?? "gemm"}: {call}, {inputType} → {outputType}, CUBLAS_COMPUTE_32F");
    }

    public void Dispose()
    {
        if (_handle != IntPtr.Zero)
        {
            Native.cublasDestroy(_handle);
            _handle = IntPtr.Zero;
        }
    }
}
