using UltraGen.Core;
using UltraGen.Cuda.Interop;
using static UltraGen.Cuda.Launchers.LaunchGeometry;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>cross_attention</c> (kernels/attention/cross_attention.cu), parameters in the order of
/// kernels/ABI.md: text cross-attention, N queries (B, N, heads·headDim) over L keys (B, L, heads·headDim), f32, the f32 SIMT
/// attention tiles of window_attention (block 128, 32-row tiles, the same dynamic shared memory). lse and delta are f32
/// (B, heads, N). δ = rowsum(dO∘O) comes from <c>window_attention_bwd_preprocess_f32</c> (same layout); the dK/dV grid is
/// split over query chunks (<see cref="CrossAttentionSplits"/>) and the partials are added by <c>column_sum_f32</c>.
/// <code>
/// cross_attention_fwd_f32(const float* q, const float* k, const float* v, float* o, float* lse (nullable),
///     int batch, int queries, int keys, int heads, int headDim, float scale)
/// cross_attention_bwd_dkdv_f32(const float* q, const float* k, const float* v, const float* dO, const float* lse, const float* delta,
///     float* dk, float* dv, int batch, int queries, int keys, int heads, int headDim, float scale, int splits)
/// cross_attention_bwd_dq_f32(const float* q, const float* k, const float* v, const float* dO, const float* lse, const float* delta,
///     float* dq, int batch, int queries, int keys, int heads, int headDim, float scale)
/// </code>
/// The backward recomputes the forward (o, lse) first: the op's backward receives only q, k, v and dO.
/// </summary>
public sealed class CrossAttentionLauncher(LaunchContext context, ElementwiseLauncher elementwise)
{
    public const string Module = "cross_attention";

    public readonly record struct Shape(int Batch, int Queries, int Keys, int Heads, int HeadDim)
    {
        public long QueryElements => (long)Batch * Queries * Heads * HeadDim;
        public long KeyElements => (long)Batch * Keys * Heads * HeadDim;
        /// <summary>B·N·heads: entries of lse and delta.</summary>
        public long Rows => (long)Batch * Queries * Heads;
        public float Scale => (float)(1.0 / Math.Sqrt(HeadDim));
    }

    /// <summary>Why a shape cannot run on these kernels, or null.</summary>
    public static string? Limitation(int headDim) =>
        AttentionHeadDimSupported(headDim) ? null : $"cuda cross_attention kernels support head dims 32, 64 and 128, got {headDim}";

    private static void Require(Shape s)
    {
        if (Limitation(s.HeadDim) is { } reason) throw new UnsupportedConfigurationException(reason);
    }

    private static KernelArgs Sizes(KernelArgs args, Shape s) =>
        args.Int(s.Batch).Int(s.Queries).Int(s.Keys).Int(s.Heads).Int(s.HeadDim).Float(s.Scale);

    /// <summary>The argument list of <c>cross_attention_fwd_f32</c>.</summary>
    public static KernelArgs ForwardArgs(IntPtr q, IntPtr k, IntPtr v, IntPtr o, IntPtr lse, Shape s) =>
        Sizes(new KernelArgs().Ptr(q).Ptr(k).Ptr(v).Ptr(o).Ptr(lse), s);

    /// <summary>The argument list of <c>cross_attention_bwd_dkdv_f32</c>.</summary>
    public static KernelArgs KeyValueArgs(IntPtr q, IntPtr k, IntPtr v, IntPtr dO, IntPtr lse, IntPtr delta, IntPtr dk, IntPtr dv, Shape s,
        int splits) =>
        Sizes(new KernelArgs().Ptr(q).Ptr(k).Ptr(v).Ptr(dO).Ptr(lse).Ptr(delta).Ptr(dk).Ptr(dv), s).Int(splits);

    /// <summary>The argument list of <c>cross_attention_bwd_dq_f32</c>.</summary>
    public static KernelArgs QueryArgs(IntPtr q, IntPtr k, IntPtr v, IntPtr dO, IntPtr lse, IntPtr delta, IntPtr dq, Shape s) =>
        Sizes(new KernelArgs().Ptr(q).Ptr(k).Ptr(v).Ptr(dO).Ptr(lse).Ptr(delta).Ptr(dq), s);

    /// <summary>o (and lse when <paramref name="lse"/> is not zero).</summary>
    public void Forward(IntPtr q, IntPtr k, IntPtr v, IntPtr o, IntPtr lse, Shape s)
    {
        Require(s);
        context.Launch(Module, "cross_attention_fwd_f32", CrossAttentionGrid(s.Queries, s.Heads, s.Batch, 1), new Dim3(AttentionThreads),
            ForwardArgs(q, k, v, o, lse, s), AttentionF32ForwardSmem(s.HeadDim));
    }

    /// <summary>The gradients whose pointers are not zero (each entirely overwritten).</summary>
    public void Backward(IntPtr q, IntPtr k, IntPtr v, IntPtr dO, IntPtr dq, IntPtr dk, IntPtr dv, Shape s)
    {
        Require(s);
        if (dq == IntPtr.Zero && dk == IntPtr.Zero && dv == IntPtr.Zero) return;
        var scratch = new List<CudaStorage>();
        CudaStorage Scratch(long bytes)
        {
            var storage = context.Scratch(bytes);
            scratch.Add(storage);
            return storage;
        }
        try
        {
            var o = Scratch(s.QueryElements * 4);
            var lse = Scratch(s.Rows * 4);
            var delta = Scratch(s.Rows * 4);
            Forward(q, k, v, o.Pointer, lse.Pointer, s);
            context.Launch(WindowAttentionLauncher.BackwardModule, "window_attention_bwd_preprocess_f32", AttentionPreprocessGrid(s.Rows),
                new Dim3(256), new KernelArgs().Ptr(o.Pointer).Ptr(dO).Ptr(delta.Pointer).Int(s.Batch).Add((long)s.Queries).Int(s.Heads).Int(s.HeadDim));
            if (dk != IntPtr.Zero || dv != IntPtr.Zero)
            {
                int splits = CrossAttentionSplits(s.Batch, s.Queries, s.Keys, s.Heads, s.HeadDim, 4 * context.Device.MultiprocessorCount);
                // One split writes the gradients directly (scratch for an unwanted one); several write partials to be summed.
                IntPtr dkTarget = splits > 1 ? Scratch(splits * s.KeyElements * 4).Pointer : dk != IntPtr.Zero ? dk : Scratch(s.KeyElements * 4).Pointer;
                IntPtr dvTarget = splits > 1 ? Scratch(splits * s.KeyElements * 4).Pointer : dv != IntPtr.Zero ? dv : Scratch(s.KeyElements * 4).Pointer;
                context.Launch(Module, "cross_attention_bwd_dkdv_f32", CrossAttentionGrid(s.Keys, s.Heads, s.Batch, splits), new Dim3(AttentionThreads),
                    KeyValueArgs(q, k, v, dO, lse.Pointer, delta.Pointer, dkTarget, dvTarget, s, splits), AttentionF32DkdvSmem(s.HeadDim));
                int columns = LaunchContext.Count(s.KeyElements, "cross_attention dk/dv");
                if (splits > 1 && dk != IntPtr.Zero) elementwise.ColumnSum(dkTarget, dk, splits, columns, 1);
                if (splits > 1 && dv != IntPtr.Zero) elementwise.ColumnSum(dvTarget, dv, splits, columns, 1);
            }
            if (dq != IntPtr.Zero)
                context.Launch(Module, "cross_attention_bwd_dq_f32", CrossAttentionGrid(s.Queries, s.Heads, s.Batch, 1), new Dim3(AttentionThreads),
                    QueryArgs(q, k, v, dO, lse.Pointer, delta.Pointer, dq, s), AttentionF32DqSmem(s.HeadDim));
        }
        finally
        {
            foreach (var storage in scratch) storage.Dispose();
        }
    }
}
