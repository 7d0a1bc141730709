using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Model.Dit;

/// <summary>What holds backend memory at the peak of an inference forward.</summary>
/// <param name="PeakBytes">All of the forward's backend allocations alive at its peak (weights excluded).</param>
/// <param name="TextBytes">Of those, the text context: the uploaded embeddings (B, L, text_dim) and text_embedding's three (B, L, D) outputs.</param>
/// <param name="PassBytes">Of those, the pass's own tensors: latent, patches, the two (B, N, D) token buffers, time embedding, head.</param>
/// <param name="BlockBytes">Of those, the block that is running: its intermediates and those of the op it is inside.</param>
/// <param name="PeakAt">Where the peak is reached (block index and the last allocation before it).</param>
public sealed record DitForwardMemory(long PeakBytes, long TextBytes, long PassBytes, long BlockBytes, string PeakAt)
{
    /// <summary>Everything but the text context: the activations.</summary>
    public long ActivationBytes => PassBytes + BlockBytes;
}

/// <summary>
/// The backend memory <see cref="Dit"/> allocates, computed from the configuration and the token grid without running
/// anything: weights (every parameter as f32, as <see cref="Dit"/> uploads them) and the peak of one inference
/// <see cref="Dit.Forward"/>. The forward is replayed allocation by allocation in the order <see cref="DitPass"/>,
/// <see cref="DitBlock"/> and the composite ops of <see cref="Ops.Backends.CompositeOps"/> make them, each tensor
/// freed where they free it (inference frees every intermediate after its last use), so the result is what a counting backend
/// (<see cref="Ops.Backends.IBackend.Allocations"/>) observes. It covers kernel backends (cpu, ilgpu, cuda), where composite ops run as
/// graphs of primitives; kernels' private scratch (the Cpu linear's transposed weight, flash-attention tiles, cuBLAS's
/// workspace) is not in it. Keep it in step with those files: a test holds it to the Cpu backend's counter.
/// </summary>
public static class DitMemory
{
    private const long F32 = sizeof(float);

    /// <summary>Bytes of every parameter of <paramref name="config"/> as f32 on the backend (whatever the file's dtype).</summary>
    public static long WeightBytes(ModelConfig config) => ParameterCatalog.List(config).Sum(spec => spec.ElementCount) * F32;

    /// <summary>The peak of one inference forward of a batch of <paramref name="batch"/> latents on <paramref name="grid"/> (tokens).</summary>
    public static DitForwardMemory Forward(ModelConfig config, int batch, Grid3 grid)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        grid.Validate();
        var trace = new Trace();
        long b = batch, n = grid.TokenCount, d = config.Dim, l = config.TextLen;
        long tokens = b * n * d, text = b * l * d;
        var patch = config.Patch;
        long latentIn = b * config.InChannels * n * patch.Volume, latentOut = b * config.OutChannels * n * patch.Volume;

        // DitPass.Run, in order.
        trace.Open(Part.Pass);
        trace.Alloc(b, "timestep");
        trace.Alloc(latentIn, "latent");
        trace.Alloc(latentIn, "patches");
        trace.Alloc(tokens, "patch embedding");
        trace.Alloc(b * config.FreqDim, "sinusoid");
        for (int i = 0; i < 4; i++) trace.Alloc(b * d, "time embedding");
        trace.Alloc(b * 6 * d, "time projection");
        trace.Alloc(b * l * config.TextDim, "text context", Part.Text);
        for (int i = 0; i < 3; i++) trace.Alloc(text, "text embedding", Part.Text);
        trace.Alloc(tokens, "second token buffer");
        for (int block = 0; block < config.Layers; block++) Block(trace, config, batch, grid, block);
        trace.Alloc(b * d, "head shift");
        trace.Alloc(b * d, "head scale");
        trace.Alloc(tokens, "head norm");
        trace.Alloc(tokens, "head input");
        trace.Alloc(latentOut, "head output");
        trace.Alloc(latentOut, "velocity");
        trace.Close();
        return trace.Result();
    }

    /// <summary>
    /// DitBlock.Forward in inference: each intermediate freed after its last use, the output written into the pass's spare
    /// token buffer.
    /// </summary>
    private static void Block(Trace trace, ModelConfig config, int batch, Grid3 grid, int block)
    {
        long b = batch, n = grid.TokenCount, d = config.Dim, l = config.TextLen;
        long tokens = b * n * d, text = b * l * d, hidden = b * n * config.FfnDim;
        trace.Open(Part.Block, block);
        for (int i = 0; i < 6; i++) trace.Alloc(b * d, "modulation");
        var norm1 = trace.Alloc(tokens, "norm1");
        var selfIn = trace.Alloc(tokens, "self-attention input");
        trace.Free(norm1);
        var selfOut = trace.Alloc(tokens, "self-attention output");
        if (config.IsDecomposed(block)) UltraGenSelfAttention(trace, config, batch, grid, block);
        else WanSelfAttention(trace, batch, grid, d);
        trace.Free(selfIn);
        var h = trace.Alloc(tokens, "h");
        trace.Free(selfOut);
        var norm3 = config.CrossAttnNorm ? trace.Alloc(tokens, "norm3") : null;
        var qPre = trace.Alloc(tokens, "cross q (pre-norm)");
        trace.Free(norm3);
        var kPre = trace.Alloc(text, "cross k (pre-norm)");
        var q = trace.Alloc(tokens, "cross q");
        trace.Free(qPre);
        var k = trace.Alloc(text, "cross k");
        trace.Free(kPre);
        var v = trace.Alloc(text, "cross v");
        var attention = trace.Alloc(tokens, "cross-attention");
        trace.Free(q, k, v);
        var output = trace.Alloc(tokens, "cross-attention W_o");
        trace.Free(attention);
        trace.Alloc(tokens, "h2");
        trace.Free(h, output);
        var norm2 = trace.Alloc(tokens, "norm2");
        var ffnIn = trace.Alloc(tokens, "FFN input");
        trace.Free(norm2);
        var ffnHidden = trace.Alloc(hidden, "FFN hidden");
        trace.Free(ffnIn);
        var ffnAct = trace.Alloc(hidden, "FFN GELU");
        trace.Free(ffnHidden);
        trace.Alloc(tokens, "FFN output");
        trace.Free(ffnAct);
        trace.Close();
    }

    /// <summary>CompositeOps.WanSelfAttention forward: q, k, v projections, their norms, the attention.</summary>
    private static void WanSelfAttention(Trace trace, long batch, Grid3 grid, long dim)
    {
        long tokens = batch * grid.TokenCount * dim;
        trace.Open(Part.Block);
        var qkv = Qkv(trace, tokens, 0, dim, "full attention");
        trace.Alloc(tokens, "full attention");
        trace.Free(qkv);
        trace.Close();
    }

    /// <summary>
    /// The Qkv helper of the composites, forward only: q, k, v = linear (+ LoRA: rank-r hidden, output, sum, the parts
    /// freed once summed) each, then RMSNorm of q and k (each freeing its input). Returns q, k and v (normed).
    /// </summary>
    private static Trace.Buffer[] Qkv(Trace trace, long elements, int loraRank, long dim, string branch)
    {
        var projected = new Trace.Buffer[3];
        for (int projection = 0; projection < 3; projection++)
        {
            var y = trace.Alloc(elements, $"{branch} projection");
            projected[projection] = y;
            if (loraRank == 0) continue;
            var hidden = trace.Alloc(elements / dim * loraRank, $"{branch} LoRA hidden");
            var lora = trace.Alloc(elements, $"{branch} LoRA output");
            trace.Free(hidden);
            projected[projection] = trace.Alloc(elements, $"{branch} projection + LoRA");
            trace.Free(y, lora);
        }
        var q = trace.Alloc(elements, $"{branch} q norm");
        trace.Free(projected[0]);
        var k = trace.Alloc(elements, $"{branch} k norm");
        trace.Free(projected[1]);
        return [q, k, projected[2]];
    }

    /// <summary>
    /// CompositeOps.UltraGen forward only (decomposed block): gates, then the local, global and hierarchical branches
    /// (each freeing its inputs, q/k/v and pre-resize maps once used), the fusion freeing the three branch outputs.
    /// </summary>
    private static void UltraGenSelfAttention(Trace trace, ModelConfig config, int batch, Grid3 grid, int block)
    {
        long b = batch, d = config.Dim;
        long Elements(Grid3 g) => b * g.TokenCount * d;
        long tokens = Elements(grid);
        var plan = UltraGenLayoutPlan.Create(grid, block, config.WindowMode, config.WindowBase);
        trace.Open(Part.Block);
        for (int gate = 0; gate < 2; gate++)
        {
            trace.Alloc(b * config.FreqDim, "gate sinusoid");
            for (int i = 0; i < 6; i++) trace.Alloc(b * d, "gate MLP");
        }

        // A branch's attention output, resized back to the token grid when its grid differs (a new tensor, the map freed).
        Trace.Buffer? Back(Trace.Buffer attention, Grid3 attended, string what)
        {
            if (attended == grid) return attention;
            var back = trace.Alloc(tokens, what);
            trace.Free(attention);
            return back;
        }

        var local = plan.Local.Layout.Grid;
        var localIn = local != grid ? trace.Alloc(Elements(local), "local resize") : null;
        var qkv = Qkv(trace, Elements(local), 0, d, "local");
        trace.Free(localIn);
        var localAttention = trace.Alloc(Elements(local), "local attention");
        trace.Free(qkv);
        var zLocal = Back(localAttention, local, "local resize back");

        var global = plan.Global.Layout.Grid;
        var globalIn = trace.Alloc(Elements(plan.Global.InputGrid), "global compression");
        qkv = Qkv(trace, Elements(global), config.LoraRank, d, "global");
        trace.Free(globalIn);
        var globalAttention = trace.Alloc(Elements(global), "global attention");
        trace.Free(qkv);
        var globalUp = Back(globalAttention, global, "global resize back");
        var zGlobal = trace.Alloc(tokens, "global conv3d");
        trace.Free(globalUp);

        var compressed = plan.Hierarchical.InputGrid;
        var hierarchical = plan.Hierarchical.Layout.Grid;
        var hierCompressed = trace.Alloc(Elements(compressed), "hierarchical compression");
        var hierIn = hierCompressed;
        if (hierarchical != compressed)
        {
            hierIn = trace.Alloc(Elements(hierarchical), "hierarchical resize");
            trace.Free(hierCompressed);
        }
        qkv = Qkv(trace, Elements(hierarchical), config.LoraRank, d, "hierarchical");
        trace.Free(hierIn);
        var hierAttention = trace.Alloc(Elements(hierarchical), "hierarchical attention");
        trace.Free(qkv);
        var hierUp = Back(hierAttention, hierarchical, "hierarchical resize back");
        var zHier = trace.Alloc(tokens, "hierarchical conv3d");
        trace.Free(hierUp);

        trace.Alloc(tokens, "gate fusion");
        trace.Free(zLocal, zHier, zGlobal);
        trace.Close();
    }

    private enum Part { Pass, Text, Block }

    /// <summary>
    /// Allocations in scopes (a scope frees what it still holds when closed; <see cref="Free"/> frees one early), with the
    /// peak and what made it up.
    /// </summary>
    private sealed class Trace
    {
        /// <summary>One allocation.</summary>
        public sealed class Buffer(long bytes, Part part)
        {
            public long Bytes { get; } = bytes;
            public Part Part { get; } = part;
            public bool Freed { get; set; }
        }

        private readonly Stack<(Part Part, int Block, List<Buffer> Owned)> _scopes = new();
        private readonly long[] _live = new long[3];
        private long _total, _peak;
        private long[] _atPeak = new long[3];
        private string _peakAt = "";

        public void Open(Part part, int block = -1)
        {
            int owner = block >= 0 || _scopes.Count == 0 ? block : _scopes.Peek().Block;
            _scopes.Push((part, owner, []));
        }

        public Buffer Alloc(long elements, string what, Part? part = null)
        {
            var scope = _scopes.Peek();
            var buffer = new Buffer(checked(elements * F32), part ?? scope.Part);
            scope.Owned.Add(buffer);
            _live[(int)buffer.Part] += buffer.Bytes;
            _total += buffer.Bytes;
            if (_total > _peak)
            {
                _peak = _total;
                _atPeak = (long[])_live.Clone();
                _peakAt = scope.Block >= 0 ? $"block {scope.Block}, {what}" : what;
            }
            return buffer;
        }

        public void Free(params Buffer?[] buffers)
        {
            foreach (var buffer in buffers)
            {
                if (buffer is null || buffer.Freed) continue;
                buffer.Freed = true;
                _live[(int)buffer.Part] -= buffer.Bytes;
                _total -= buffer.Bytes;
            }
        }

        public void Close() => Free([.. _scopes.Pop().Owned]);

        public DitForwardMemory Result() =>
            new(_peak, _atPeak[(int)Part.Text], _atPeak[(int)Part.Pass], _atPeak[(int)Part.Block], _peakAt);
    }
}
