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
/// freed when its <see cref="Ops.Backends.DeviceScope"/> is, so the result is what a counting backend
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

    /// <summary>DitBlock.Forward with its output written into the pass's spare token buffer (inference).</summary>
    private static void Block(Trace trace, ModelConfig config, int batch, Grid3 grid, int block)
    {
        long b = batch, n = grid.TokenCount, d = config.Dim, l = config.TextLen;
        long tokens = b * n * d, text = b * l * d, hidden = b * n * config.FfnDim;
        trace.Open(Part.Block, block);
        for (int i = 0; i < 6; i++) trace.Alloc(b * d, "modulation");
        trace.Alloc(tokens, "norm1");
        trace.Alloc(tokens, "self-attention input");
        trace.Alloc(tokens, "self-attention output");
        if (config.IsDecomposed(block)) UltraGenSelfAttention(trace, config, batch, grid, block);
        else WanSelfAttention(trace, batch, grid, d);
        trace.Alloc(tokens, "h");
        if (config.CrossAttnNorm) trace.Alloc(tokens, "norm3");
        trace.Alloc(tokens, "cross q (pre-norm)");
        trace.Alloc(text, "cross k (pre-norm)");
        trace.Alloc(tokens, "cross q");
        trace.Alloc(text, "cross k");
        trace.Alloc(text, "cross v");
        trace.Alloc(tokens, "cross-attention");
        trace.Alloc(tokens, "cross-attention W_o");
        trace.Alloc(tokens, "h2");
        trace.Alloc(tokens, "norm2");
        trace.Alloc(tokens, "FFN input");
        trace.Alloc(hidden, "FFN hidden");
        trace.Alloc(hidden, "FFN GELU");
        trace.Alloc(tokens, "FFN output");
        trace.Close();
    }

    /// <summary>CompositeOps.WanSelfAttention forward: q, k, v projections, their norms, the attention.</summary>
    private static void WanSelfAttention(Trace trace, long batch, Grid3 grid, long dim)
    {
        long tokens = batch * grid.TokenCount * dim;
        trace.Open(Part.Block);
        Qkv(trace, tokens, 0, dim, "full attention");
        trace.Alloc(tokens, "full attention");
        trace.Close();
    }

    /// <summary>
    /// The Qkv helper of the composites: q, k, v = linear (+ LoRA: rank-r hidden, output, sum) each, then RMSNorm of q and k.
    /// </summary>
    private static void Qkv(Trace trace, long elements, int loraRank, long dim, string branch)
    {
        for (int projection = 0; projection < 3; projection++)
        {
            trace.Alloc(elements, $"{branch} projection");
            if (loraRank == 0) continue;
            trace.Alloc(elements / dim * loraRank, $"{branch} LoRA hidden");
            trace.Alloc(elements, $"{branch} LoRA output");
            trace.Alloc(elements, $"{branch} projection + LoRA");
        }
        trace.Alloc(elements, $"{branch} q norm");
        trace.Alloc(elements, $"{branch} k norm");
    }

    /// <summary>CompositeOps.UltraGen forward (decomposed block): gates, local, global and hierarchical branches, fusion.</summary>
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

        var local = plan.Local.Layout.Grid;
        if (local != grid) trace.Alloc(Elements(local), "local resize");
        Qkv(trace, Elements(local), 0, d, "local");
        trace.Alloc(Elements(local), "local attention");
        if (local != grid) trace.Alloc(tokens, "local resize back");

        var global = plan.Global.Layout.Grid;
        trace.Alloc(Elements(plan.Global.InputGrid), "global compression");
        Qkv(trace, Elements(global), config.LoraRank, d, "global");
        trace.Alloc(Elements(global), "global attention");
        if (global != grid) trace.Alloc(tokens, "global resize back");
        trace.Alloc(tokens, "global conv3d");

        var compressed = plan.Hierarchical.InputGrid;
        var hierarchical = plan.Hierarchical.Layout.Grid;
        trace.Alloc(Elements(compressed), "hierarchical compression");
        if (hierarchical != compressed) trace.Alloc(Elements(hierarchical), "hierarchical resize");
        Qkv(trace, Elements(hierarchical), config.LoraRank, d, "hierarchical");
        trace.Alloc(Elements(hierarchical), "hierarchical attention");
        if (hierarchical != grid) trace.Alloc(tokens, "hierarchical resize back");
        trace.Alloc(tokens, "hierarchical conv3d");

        trace.Alloc(tokens, "gate fusion");
        trace.Close();
    }

    private enum Part { Pass, Text, Block }

    /// <summary>Scoped allocations (a scope frees everything it allocated when closed) with the peak and its composition.</summary>
    private sealed class Trace
    {
        private readonly Stack<(Part Part, int Block, List<(long Bytes, Part Part)> Owned)> _scopes = new();
        private readonly long[] _live = new long[3];
        private long _total, _peak;
        private long[] _atPeak = new long[3];
        private string _peakAt = "";

        public void Open(Part part, int block = -1)
        {
            int owner = block >= 0 || _scopes.Count == 0 ? block : _scopes.Peek().Block;
            _scopes.Push((part, owner, []));
        }

        public void Alloc(long elements, string what, Part? part = null)
        {
            var scope = _scopes.Peek();
            var category = part ?? scope.Part;
            long bytes = checked(elements * F32);
            scope.Owned.Add((bytes, category));
            _live[(int)category] += bytes;
            _total += bytes;
            if (_total > _peak)
            {
                _peak = _total;
                _atPeak = (long[])_live.Clone();
                _peakAt = scope.Block >= 0 ? $"block {scope.Block}, {what}" : what;
            }
        }

        public void Close()
        {
            foreach (var (bytes, part) in _scopes.Pop().Owned)
            {
                _live[(int)part] -= bytes;
                _total -= bytes;
            }
        }

        public DitForwardMemory Result() =>
            new(_peak, _atPeak[(int)Part.Text], _atPeak[(int)Part.Pass], _atPeak[(int)Part.Block], _peakAt);
    }
}
