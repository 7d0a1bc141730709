using UltraGen.Core;
using UltraGen.Cuda.Interop;
using static UltraGen.Cuda.Launchers.LaunchGeometry;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of modules <c>window_attention</c> (forward) and <c>window_attention_bwd</c> (kernels/attention/), parameters
/// in the order of kernels/ABI.md: flash-style attention over a <see cref="WindowLayoutParams"/>, online softmax with fp32
/// accumulation, window-local RoPE from the host-built cos/sin table. Tensors are channels-last (B, T, H, W, heads·headDim);
/// <c>T</c> is float (<c>_f32</c>) or bf16 bits (<c>_bf16</c>, mma.sync m16n8k16, sm_80+); lse and delta are f32
/// (B, heads, T·H·W). Grid <see cref="AttentionGrid"/> = (tiles over the largest window, windows·heads, batch), block 128,
/// dynamic shared memory from <c>launch.cuh</c> (set on the function first when above 48 KiB).
/// <code>
/// window_attention_fwd_{f32,bf16}(const T* q, const T* k, const T* v, T* o, float* lse (nullable),
///     WindowLayoutParams layout, RopeParams rope, int batch, int heads, int headDim, float scale)
/// window_attention_bwd_preprocess_{f32,bf16}(const T* o, const T* dO, float* delta, int batch, long long tokens, int heads, int headDim)
/// window_attention_bwd_dkdv_{f32,bf16}(const T* q, const T* k, const T* v, const T* dO, const float* lse, const float* delta,
///     T* dk, T* dv, WindowLayoutParams layout, RopeParams rope, int batch, int heads, int headDim, float scale)
/// window_attention_bwd_dq_{f32,bf16}(const T* q, const T* k, const T* v, const T* dO, const float* lse, const float* delta,
///     T* dq, WindowLayoutParams layout, RopeParams rope, int batch, int heads, int headDim, float scale)
/// </code>
/// The backward recomputes the forward (o, lse) first: the op's backward receives only q, k, v and dO.
/// </summary>
public sealed class WindowAttentionLauncher(LaunchContext context)
{
    public const string Module = "window_attention";
    public const string BackwardModule = "window_attention_bwd";

    public readonly record struct Shape(int Batch, int Heads, int HeadDim, WindowLayoutParams Layout)
    {
        public long Tokens => Layout.TokensPerSample;
        public long Elements => Batch * Tokens * Heads * HeadDim;
        public long Rows => Batch * Tokens * Heads;
        public float Scale => (float)(1.0 / Math.Sqrt(HeadDim));
    }

    private static string Suffix(DType dtype) => dtype switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        _ => throw new UnsupportedConfigurationException($"window_attention kernels take f32 or bf16, not {DTypes.Lower(dtype)}"),
    };

    /// <summary>Why a shape cannot run on these kernels, or null.</summary>
    public static string? Limitation(int headDim) =>
        AttentionHeadDimSupported(headDim) ? null : $"cuda window_attention kernels support head dims 32, 64 and 128, got {headDim}";

    private static void Require(Shape s)
    {
        if (Limitation(s.HeadDim) is { } reason) throw new UnsupportedConfigurationException(reason);
    }

    private static KernelArgs Tail(KernelArgs args, Shape s, RopeParams rope) =>
        args.Add(s.Layout).Add(rope).Int(s.Batch).Int(s.Heads).Int(s.HeadDim).Float(s.Scale);

    /// <summary>
    /// Which bf16 forward kernel runs (the backward's forward recomputation too). Both compute the same function and pass
    /// the same harness; they differ in speed only, which a GPU has yet to measure (bench/UltraGen.GpuBench times both).
    /// </summary>
    public AttentionForwardTile ForwardTile { get; set; } = AttentionForwardTile.Queries64;

    /// <summary>o (and lse when <paramref name="lse"/> is not zero).</summary>
    public void Forward(DType dtype, IntPtr q, IntPtr k, IntPtr v, IntPtr o, IntPtr lse, Shape s, RopeParams rope)
    {
        Require(s);
        var (entry, block, smem) = dtype switch
        {
            DType.BF16 when ForwardTile == AttentionForwardTile.Queries128 =>
                ($"window_attention_fwd_bf16_m128_d{s.HeadDim}", 2 * AttentionBf16BlockM, AttentionBf16ForwardM128Smem(s.HeadDim)),
            DType.BF16 => ("window_attention_fwd_bf16", AttentionBf16BlockM, AttentionBf16ForwardSmem(s.HeadDim)),
            _ => ($"window_attention_fwd_{Suffix(dtype)}", AttentionF32Block, AttentionF32ForwardSmem(s.HeadDim)),
        };
        context.Launch(Module, entry, AttentionGrid(s.Layout, s.Heads, s.Batch, block), new Dim3(AttentionThreads),
            Tail(new KernelArgs().Ptr(q).Ptr(k).Ptr(v).Ptr(o).Ptr(lse), s, rope), smem);
    }

    /// <summary>dq, dk, dv (all three are written; pass scratch for any the caller does not want).</summary>
    public void Backward(DType dtype, IntPtr q, IntPtr k, IntPtr v, IntPtr dO, IntPtr dq, IntPtr dk, IntPtr dv, Shape s, RopeParams rope)
    {
        Require(s);
        string suffix = Suffix(dtype);
        bool bf16 = dtype == DType.BF16;
        long elementBytes = bf16 ? 2 : 4;
        using var o = context.Scratch(s.Elements * elementBytes);
        using var lse = context.Scratch(s.Rows * 4);
        using var delta = context.Scratch(s.Rows * 4);
        Forward(dtype, q, k, v, o.Pointer, lse.Pointer, s, rope);
        context.Launch(BackwardModule, $"window_attention_bwd_preprocess_{suffix}", AttentionPreprocessGrid(s.Rows), new Dim3(256),
            new KernelArgs().Ptr(o.Pointer).Ptr(dO).Ptr(delta.Pointer).Int(s.Batch).Add(s.Tokens).Int(s.Heads).Int(s.HeadDim));
        int kvBlock = bf16 ? AttentionBf16BlockN : AttentionF32Block;
        context.Launch(BackwardModule, $"window_attention_bwd_dkdv_{suffix}", AttentionGrid(s.Layout, s.Heads, s.Batch, kvBlock), new Dim3(AttentionThreads),
            Tail(new KernelArgs().Ptr(q).Ptr(k).Ptr(v).Ptr(dO).Ptr(lse.Pointer).Ptr(delta.Pointer).Ptr(dk).Ptr(dv), s, rope),
            bf16 ? AttentionBf16DkdvSmem(s.HeadDim) : AttentionF32DkdvSmem(s.HeadDim));
        int qBlock = bf16 ? AttentionBf16BlockM : AttentionF32Block;
        context.Launch(BackwardModule, $"window_attention_bwd_dq_{suffix}", AttentionGrid(s.Layout, s.Heads, s.Batch, qBlock), new Dim3(AttentionThreads),
            Tail(new KernelArgs().Ptr(q).Ptr(k).Ptr(v).Ptr(dO).Ptr(lse.Pointer).Ptr(delta.Pointer).Ptr(dq), s, rope),
            bf16 ? AttentionBf16DqSmem(s.HeadDim) : AttentionF32DqSmem(s.HeadDim));
    }
}

/// <summary>Query rows per block of the bf16 window-attention forward (kernels/attention/window_attention.cu).</summary>
public enum AttentionForwardTile
{
    /// <summary><c>window_attention_fwd_bf16</c>: 64 queries, Q fragments held in registers (the default).</summary>
    Queries64,

    /// <summary><c>window_attention_fwd_bf16_m128_d{32,64,128}</c>: 128 queries, two m-tiles per warp sharing every K/V fragment.</summary>
    Queries128,
}

/// <summary>The arithmetic of f32 window attention on the cuda backend (<see cref="CudaBackend.F32AttentionPrecision"/>).</summary>
public enum AttentionPrecision
{
    /// <summary>The SIMT f32 kernels: exact to f32 arithmetic (the default; what the f32 harness tolerances hold).</summary>
    F32,

    /// <summary>Operands rounded to bf16 for the tensor-core kernels, f32 accumulation; about bf16's 3 significant digits.</summary>
    Bf16,
}
