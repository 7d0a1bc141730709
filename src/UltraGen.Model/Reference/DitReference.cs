using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Ops;

namespace UltraGen.Model.Reference;

/// <summary>Gradients of one <see cref="DitReference.Backward"/> call.</summary>
/// <param name="Parameters">
/// Parameter gradients by checkpoint name: every parameter the forward pass read, or only those the <c>trainable</c>
/// filter admitted.
/// </param>
/// <param name="Latent">dL/dlatent, (B, C_in, T, Hl, Wl).</param>
/// <param name="Context">dL/dcontext, (B, textLen, textDim).</param>
public sealed record DitGradients(RefArgs Parameters, RefTensor Latent, RefTensor Context);

/// <summary>
/// The whole Wan2.1 DiT with UltraGen self-attention in float64 (spec §2.2, §1.3/§1.8): the definition of "correct" that
/// every backend's model is held to. Forward and backward are written out layer by layer (llm.c style): the forward pass
/// keeps every activation the backward pass reads in a <see cref="Trace"/>, and the backward pass walks the same layers in
/// reverse, reusing the catalogue ops' static <c>Forward</c>/<c>Backward</c> functions.
/// </summary>
/// <remarks>
/// Shapes: latent (B, C_in, T, Hl, Wl) with (T, Hl, Wl) divisible by the patch size; timestep (B), the raw value in
/// [0, 1000] (it is not differentiated); context (B, textLen, textDim), every position attended (no mask). The token grid
/// is (T/pt, Hl/ph, Wl/pw), tokens in (frame, row, column) order. LayerNorms and RMSNorms use <see cref="ModelConfig.Eps"/>.
/// Weights are looked up by checkpoint name; names the configuration does not use (UltraGen tensors of a block that keeps
/// full attention) are ignored, so an all-full plan runs Wan's computation whatever the dictionary holds.
/// </remarks>
public static class DitReference
{
    private const string SelfAttentionPrefix = "self_attn.";

    /// <summary>The velocity (B, C_out, T, Hl, Wl) the DiT predicts for <paramref name="latent"/> at <paramref name="timestep"/>.</summary>
    public static RefTensor Forward(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, RefTensor latent, RefTensor timestep,
        RefTensor context) => Run(config, weights, latent, timestep, context).Velocity;

    /// <summary>
    /// Back-propagates <paramref name="dVelocity"/> (the loss's gradient with respect to the velocity) through the DiT.
    /// When <paramref name="trainable"/> is given, only the parameters it accepts get gradient entries (a frozen parameter's
    /// gradient is neither accumulated nor returned); gradients still flow through every activation, so the latent's and
    /// the trainable parameters' gradients equal the unfiltered ones. <see cref="LoraTrainable"/> gives the domain-aware LoRA
    /// mode's filter.
    /// </summary>
    public static DitGradients Backward(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, RefTensor latent,
        RefTensor timestep, RefTensor context, RefTensor dVelocity, Func<string, bool>? trainable = null)
    {
        var trace = Run(config, weights, latent, timestep, context);
        if (!dVelocity.Shape.AsSpan().SequenceEqual(trace.Velocity.Shape))
            throw new ShapeMismatchException(
                $"dit: dVelocity {Shape.Format(dVelocity.Shape)} must match the velocity {Shape.Format(trace.Velocity.Shape)}");
        return BackwardCore(trace, dVelocity, new GradientSink(trace.Weights, trainable));
    }

    /// <summary>
    /// The domain-aware LoRA mode's filter (<see cref="ParameterSpec.TrainableInLora"/>): the base model is frozen; LoRA,
    /// gates and the UltraGen convolutions train.
    /// </summary>
    public static Func<string, bool> LoraTrainable(ModelConfig config)
    {
        var names = ParameterCatalog.List(config).Where(s => s.TrainableInLora).Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
        return names.Contains;
    }

    /// <summary>float64 copies of <paramref name="weights"/>, keyed by name, ready for <see cref="Forward"/>.</summary>
    public static Dictionary<string, RefTensor> ToReference(IEnumerable<KeyValuePair<string, Tensor>> weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        var result = new Dictionary<string, RefTensor>(StringComparer.Ordinal);
        foreach (var (name, tensor) in weights) result[name] = RefTensor.FromTensor(tensor);
        return result;
    }

    // ==================================================================================================== forward

    /// <summary>Activations of one block that its backward pass reads.</summary>
    private sealed class BlockTrace
    {
        public required RefTensor X;            // block input (B, N, D)
        public required RefTensor Mod;          // modulation + e6, (B, 6, D)
        public required RefTensor Norm1;        // LN(x)
        public required RefArgs SelfInputs;     // the self-attention op's inputs: x = modulated LN(x), t, block weights
        public required UltraGenSelfAttentionOp.Config SelfConfig;
        public required RefTensor SelfOut;      // SelfAttn(...)
        public required RefTensor H;            // x + g_msa ⊙ SelfOut
        public required RefTensor Norm3;        // LN3(h) (affine) — the cross-attention input
        public required CrossAttentionTrace Cross;
        public required RefTensor H2;           // h + CrossAttn
        public required RefTensor Norm2;        // LN(h2)
        public required RefTensor FfnIn;        // LN(h2)(1+sc_mlp)+s_mlp
        public required RefTensor FfnHidden;    // ffn.0 output (pre-GELU)
        public required RefTensor FfnAct;       // GELU_tanh(FfnHidden)
        public required RefTensor FfnOut;       // ffn.2 output
    }

    private sealed class CrossAttentionTrace
    {
        public required RefTensor QPre, KPre, Q, K, V, Attention;
    }

    /// <summary>Everything one forward pass computed that the backward pass reads.</summary>
    private sealed class Trace
    {
        public required ModelConfig Config;
        public required IReadOnlyDictionary<string, RefTensor> Weights;
        public required int Batch, Tokens;
        public required Grid3 Grid;
        public required int[] LatentShape;
        public required RefTensor Patches;      // (B, N, C_in·pt·ph·pw)
        public required RefTensor Sinusoid;     // sin256(t), (B, F)
        public required RefTensor TimeHidden;   // time_embedding.0 output (pre-SiLU)
        public required RefTensor TimeAct;      // SiLU(TimeHidden)
        public required RefTensor E;            // time embedding e, (B, D)
        public required RefTensor ESilu;        // SiLU(e)
        public required RefTensor Context;      // (B, L, textDim)
        public required RefTensor TextHidden;   // text_embedding.0 output (pre-GELU)
        public required RefTensor TextAct;      // GELU_tanh(TextHidden)
        public required RefTensor C;            // text embedding c, (B, L, D)
        public required BlockTrace[] Blocks;
        public required RefTensor XFinal;       // output of the last block
        public required RefTensor HeadMod;      // head.modulation + e, (B, 2, D)
        public required RefTensor HeadNorm;     // LN(x)
        public required RefTensor HeadIn;       // LN(x)(1+scale)+shift
        public required RefTensor Velocity;
    }

    private static Trace Run(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, RefTensor latent, RefTensor timestep,
        RefTensor context)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(latent);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(context);
        config.Validate();
        if (!config.QkNorm)
            throw new NotSupportedException("dit reference: qk_norm = false is not supported (the self-attention ops always apply norm_q/norm_k)");
        var (batch, grid) = CheckInputs(config, latent, timestep, context);
        int dim = config.Dim, tokens = checked((int)grid.TokenCount);
        RefTensor W(string name) => Weight(weights, name);

        // Patch embedding: Conv3d with kernel = stride = patch is patchify + a linear on the flattened (c, pt, ph, pw) patch.
        var patches = Patchify(latent, config.Patch, channelsLast: false);
        var patchWeight = W("patch_embedding.weight");
        var x = LinearOp.Forward(patches, patchWeight.Reshape(dim, patchWeight.Length / dim), W("patch_embedding.bias"));

        // Time embedding e = Linear(SiLU(Linear(sin(t)))) and projection e6 = Linear(SiLU(e)) viewed (B, 6, D).
        var sinusoid = TimestepEmbeddingOp.Forward(timestep, config.FreqDim);
        var timeHidden = LinearOp.Forward(sinusoid, W("time_embedding.0.weight"), W("time_embedding.0.bias"));
        var timeAct = Activations.Silu(timeHidden);
        var e = LinearOp.Forward(timeAct, W("time_embedding.2.weight"), W("time_embedding.2.bias"));
        var eSilu = Activations.Silu(e);
        var e6 = LinearOp.Forward(eSilu, W("time_projection.1.weight"), W("time_projection.1.bias")).Reshape(batch, 6, dim);

        // Text embedding c = Linear(GELU_tanh(Linear(context))) over every position.
        var textHidden = LinearOp.Forward(context, W("text_embedding.0.weight"), W("text_embedding.0.bias"));
        var textAct = GeluTanhOp.Forward(textHidden);
        var c = LinearOp.Forward(textAct, W("text_embedding.2.weight"), W("text_embedding.2.bias"));

        var fullBlocks = config.FullAttentionBlocks.ToHashSet();
        var blocks = new BlockTrace[config.Layers];
        for (int i = 0; i < config.Layers; i++)
        {
            var block = BlockForward(config, weights, i, x, e6, c, timestep, grid, fullBlocks);
            blocks[i] = block;
            x = Residual(block.H2, Chunk(block.Mod, 5), block.FfnOut);
        }

        // Head: (head.modulation + e).chunk(2) = shift, scale; Linear(LN(x)(1+scale)+shift); unpatchify.
        var headMod = AddModulation(W("head.modulation"), e, 2);
        var headNorm = LayerNormOp.Forward(x, null, null, config.Eps);
        var headIn = ModulateOp.Forward(headNorm, Chunk(headMod, 0), Chunk(headMod, 1));
        var headOut = LinearOp.Forward(headIn, W("head.head.weight"), W("head.head.bias"));
        var velocity = Unpatchify(headOut, config.Patch, config.OutChannels, batch, grid, channelsLast: true);

        return new Trace
        {
            Config = config, Weights = weights, Batch = batch, Tokens = tokens, Grid = grid, LatentShape = (int[])latent.Shape.Clone(),
            Patches = patches, Sinusoid = sinusoid, TimeHidden = timeHidden, TimeAct = timeAct, E = e, ESilu = eSilu,
            Context = context, TextHidden = textHidden, TextAct = textAct, C = c, Blocks = blocks, XFinal = x,
            HeadMod = headMod, HeadNorm = headNorm, HeadIn = headIn, Velocity = velocity,
        };
    }

    private static BlockTrace BlockForward(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, int i, RefTensor x,
        RefTensor e6, RefTensor c, RefTensor timestep, Grid3 grid, IReadOnlySet<int> fullBlocks)
    {
        string prefix = BlockName(i, "");
        RefTensor W(string name) => Weight(weights, prefix + name);

        // (modulation + e6).chunk(6) = shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, each (B, D).
        var mod = AddModulation(W("modulation"), e6.Reshape(e6.Dim(0), 6 * config.Dim), 6);

        // h = x + g_msa ⊙ SelfAttn(LN(x)(1+sc_msa)+s_msa): UltraGen's op, Wan's attention on full blocks.
        var norm1 = LayerNormOp.Forward(x, null, null, config.Eps);
        var selfInputs = SelfAttentionInputs(config, weights, i);
        selfInputs["x"] = ModulateOp.Forward(norm1, Chunk(mod, 0), Chunk(mod, 1));
        selfInputs["t"] = timestep;
        var selfConfig = new UltraGenSelfAttentionOp.Config(grid, config.Heads, i, fullBlocks, config.WindowBase, config.GlobalKUsesWq,
            config.WindowMode == WindowMode.Ragged, config.Eps);
        var selfOut = UltraGenSelfAttentionOp.Forward(selfInputs, selfConfig);
        var h = Residual(x, Chunk(mod, 2), selfOut);

        // h2 = h + CrossAttn(LN3(h), c): no gate, no modulation.
        var norm3 = config.CrossAttnNorm ? LayerNormOp.Forward(h, W("norm3.weight"), W("norm3.bias"), config.Eps) : h;
        var cross = CrossAttentionForward(config, weights, prefix + "cross_attn.", norm3, c);
        var h2 = Add(h, LinearOp.Forward(cross.Attention, W("cross_attn.o.weight"), W("cross_attn.o.bias")));

        // x' = h2 + g_mlp ⊙ FFN(LN(h2)(1+sc_mlp)+s_mlp) (the residual itself is formed by the caller).
        var norm2 = LayerNormOp.Forward(h2, null, null, config.Eps);
        var ffnIn = ModulateOp.Forward(norm2, Chunk(mod, 3), Chunk(mod, 4));
        var ffnHidden = LinearOp.Forward(ffnIn, W("ffn.0.weight"), W("ffn.0.bias"));
        var ffnAct = GeluTanhOp.Forward(ffnHidden);
        var ffnOut = LinearOp.Forward(ffnAct, W("ffn.2.weight"), W("ffn.2.bias"));

        return new BlockTrace
        {
            X = x, Mod = mod, Norm1 = norm1, SelfInputs = selfInputs, SelfConfig = selfConfig, SelfOut = selfOut, H = h,
            Norm3 = norm3, Cross = cross, H2 = h2, Norm2 = norm2, FfnIn = ffnIn, FfnHidden = ffnHidden, FfnAct = ffnAct, FfnOut = ffnOut,
        };
    }

    /// <summary>
    /// Block <paramref name="block"/>'s <c>self_attn</c> tensors under the op's names (prefix stripped): the base q, k, v, o,
    /// norm_q, norm_k, plus the UltraGen tensors only when the configuration decomposes the block.
    /// </summary>
    private static RefArgs SelfAttentionInputs(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, int block)
    {
        string prefix = BlockName(block, SelfAttentionPrefix);
        var inputs = new RefArgs();
        foreach (var name in SelfAttentionParameterNames(config, block))
            inputs[name[prefix.Length..]] = Weight(weights, name);
        return inputs;
    }

    /// <summary>The catalogue names of block <paramref name="block"/>'s self-attention parameters under this configuration.</summary>
    private static IEnumerable<string> SelfAttentionParameterNames(ModelConfig config, int block)
    {
        string prefix = BlockName(block, SelfAttentionPrefix);
        foreach (var projection in new[] { "q", "k", "v", "o" })
        {
            yield return $"{prefix}{projection}.weight";
            yield return $"{prefix}{projection}.bias";
        }
        yield return prefix + "norm_q.weight";
        yield return prefix + "norm_k.weight";
        if (!config.IsDecomposed(block)) yield break;
        foreach (var spec in ParameterCatalog.List(config))
            if (spec.Block == block && spec.IsUltraGen) yield return spec.Name;
    }

    // ---------------------------------------------------------------------------------------------- cross-attention

    /// <summary>q = RMSNorm_q(W_q x), k = RMSNorm_k(W_k c), v = W_v c; softmax(q kᵀ/√d) v per head, no RoPE, no mask (W_o is the caller's).</summary>
    private static CrossAttentionTrace CrossAttentionForward(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, string prefix,
        RefTensor x, RefTensor c)
    {
        RefTensor W(string name) => Weight(weights, prefix + name);
        var qPre = LinearOp.Forward(x, W("q.weight"), W("q.bias"));
        var kPre = LinearOp.Forward(c, W("k.weight"), W("k.bias"));
        var v = LinearOp.Forward(c, W("v.weight"), W("v.bias"));
        var q = RmsNormOp.Forward(qPre, W("norm_q.weight"), config.Eps);
        var k = RmsNormOp.Forward(kPre, W("norm_k.weight"), config.Eps);
        return new CrossAttentionTrace { QPre = qPre, KPre = kPre, Q = q, K = k, V = v, Attention = CrossAttentionOp.Forward(q, k, v, config.Heads) };
    }

    /// <summary>Returns dx (the query input's gradient) and accumulates dc; parameter gradients go to <paramref name="sink"/>.</summary>
    private static RefTensor CrossAttentionBackward(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, string prefix,
        RefTensor x, RefTensor c, CrossAttentionTrace trace, RefTensor dAttention, RefTensor dc, GradientSink sink)
    {
        RefTensor W(string name) => Weight(weights, prefix + name);
        var (dq, dk, dv) = CrossAttentionOp.Backward(trace.Q, trace.K, trace.V, dAttention, config.Heads);
        var (dqPre, dNormQ) = RmsNormOp.Backward(trace.QPre, W("norm_q.weight"), dq, config.Eps);
        var (dkPre, dNormK) = RmsNormOp.Backward(trace.KPre, W("norm_k.weight"), dk, config.Eps);
        sink.Add(prefix + "norm_q.weight", dNormQ);
        sink.Add(prefix + "norm_k.weight", dNormK);
        var dx = LinearBackward(x, prefix + "q", weights, dqPre, sink);
        AddInto(dc, LinearBackward(c, prefix + "k", weights, dkPre, sink));
        AddInto(dc, LinearBackward(c, prefix + "v", weights, dv, sink));
        return dx;
    }

    // ==================================================================================================== backward

    private static DitGradients BackwardCore(Trace trace, RefTensor dVelocity, GradientSink sink)
    {
        var config = trace.Config;
        var weights = trace.Weights;
        int batch = trace.Batch, dim = config.Dim;
        RefTensor W(string name) => Weight(weights, name);

        // Head.
        var dHeadOut = Patchify(dVelocity, config.Patch, channelsLast: true);    // unpatchify's adjoint
        var dHeadIn = LinearBackward(trace.HeadIn, "head.head", weights, dHeadOut, sink);
        var (dHeadNorm, dShift, dScale) = ModulateOp.Backward(trace.HeadNorm, Chunk(trace.HeadMod, 1), dHeadIn);
        var dx = LayerNormOp.Backward(trace.XFinal, null, dHeadNorm, config.Eps).Dx;
        var dHeadMod = Stack(dShift, dScale);
        sink.Add("head.modulation", SumOverBatch(dHeadMod));
        var dE = SumChunks(dHeadMod);

        // Blocks, last to first.
        var de6 = new RefTensor(batch, 6 * dim);
        var dc = new RefTensor((int[])trace.C.Shape.Clone());
        for (int i = config.Layers - 1; i >= 0; i--)
            dx = BlockBackward(config, weights, i, trace.Blocks[i], trace.C, dx, de6, dc, sink);

        // Patch embedding.
        var patchWeight = W("patch_embedding.weight");
        var (dPatches, dPatchWeight, dPatchBias) = LinearOp.Backward(trace.Patches, patchWeight.Reshape(dim, patchWeight.Length / dim), dx);
        sink.Add("patch_embedding.weight", dPatchWeight.Reshape(patchWeight.Shape));
        sink.Add("patch_embedding.bias", dPatchBias);
        var dLatent = Unpatchify(dPatches, config.Patch, config.InChannels, batch, trace.Grid, channelsLast: false);    // patchify's adjoint

        // Time projection and embedding (the sinusoid's input t is not differentiated).
        var dESilu = LinearBackward(trace.ESilu, "time_projection.1", weights, de6, sink);
        AddInto(dE, Activations.SiluBackward(trace.E, dESilu));
        var dTimeAct = LinearBackward(trace.TimeAct, "time_embedding.2", weights, dE, sink);
        var dTimeHidden = Activations.SiluBackward(trace.TimeHidden, dTimeAct);
        LinearBackward(trace.Sinusoid, "time_embedding.0", weights, dTimeHidden, sink);

        // Text embedding.
        var dTextAct = LinearBackward(trace.TextAct, "text_embedding.2", weights, dc, sink);
        var dTextHidden = GeluTanhOp.Backward(trace.TextHidden, dTextAct);
        var dContext = LinearBackward(trace.Context, "text_embedding.0", weights, dTextHidden, sink);

        return new DitGradients(sink.Result, dLatent, dContext);
    }

    /// <summary>The backward of one block: returns dL/dx_in, accumulates dL/de6 and dL/dc.</summary>
    private static RefTensor BlockBackward(ModelConfig config, IReadOnlyDictionary<string, RefTensor> weights, int i, BlockTrace t,
        RefTensor c, RefTensor dOut, RefTensor de6, RefTensor dc, GradientSink sink)
    {
        string prefix = BlockName(i, "");
        RefTensor W(string name) => Weight(weights, prefix + name);
        int batch = t.X.Dim(0), dim = config.Dim;
        var dMod = new RefTensor(batch, 6, dim);

        // x' = h2 + g_mlp ⊙ FFN(...)
        var dh2 = dOut.Clone();
        var dFfnOut = ResidualBackward(Chunk(t.Mod, 5), t.FfnOut, dOut, dMod, 5);
        var dFfnAct = LinearBackward(t.FfnAct, prefix + "ffn.2", weights, dFfnOut, sink);
        var dFfnHidden = GeluTanhOp.Backward(t.FfnHidden, dFfnAct);
        var dFfnIn = LinearBackward(t.FfnIn, prefix + "ffn.0", weights, dFfnHidden, sink);
        var (dNorm2, dShiftMlp, dScaleMlp) = ModulateOp.Backward(t.Norm2, Chunk(t.Mod, 4), dFfnIn);
        SetChunk(dMod, 3, dShiftMlp);
        SetChunk(dMod, 4, dScaleMlp);
        AddInto(dh2, LayerNormOp.Backward(t.H2, null, dNorm2, config.Eps).Dx);

        // h2 = h + W_o CrossAttn(LN3(h), c)
        var dh = dh2.Clone();
        var dCrossAttention = LinearBackward(t.Cross.Attention, prefix + "cross_attn.o", weights, dh2, sink);
        var dNorm3 = CrossAttentionBackward(config, weights, prefix + "cross_attn.", t.Norm3, c, t.Cross, dCrossAttention, dc, sink);
        if (config.CrossAttnNorm)
        {
            var (dhNorm, dNorm3Weight, dNorm3Bias) = LayerNormOp.Backward(t.H, W("norm3.weight"), dNorm3, config.Eps);
            sink.Add(prefix + "norm3.weight", dNorm3Weight);
            sink.Add(prefix + "norm3.bias", dNorm3Bias);
            AddInto(dh, dhNorm);
        }
        else AddInto(dh, dNorm3);

        // h = x + g_msa ⊙ SelfAttn(LN(x)(1+sc_msa)+s_msa)
        var dx = dh.Clone();
        var dSelfOut = ResidualBackward(Chunk(t.Mod, 2), t.SelfOut, dh, dMod, 2);
        var selfGrads = UltraGenSelfAttentionOp.Backward(t.SelfInputs, dSelfOut, t.SelfConfig);
        string selfPrefix = prefix + SelfAttentionPrefix;
        foreach (var (name, gradient) in selfGrads)
            if (name != "x") sink.Add(selfPrefix + name, gradient);
        var (dNorm1, dShiftMsa, dScaleMsa) = ModulateOp.Backward(t.Norm1, Chunk(t.Mod, 1), selfGrads.Get("x"));
        SetChunk(dMod, 0, dShiftMsa);
        SetChunk(dMod, 1, dScaleMsa);
        AddInto(dx, LayerNormOp.Backward(t.X, null, dNorm1, config.Eps).Dx);

        // mod = modulation + e6
        sink.Add(prefix + "modulation", SumOverBatch(dMod));
        AddInto(de6, dMod.Reshape(batch, 6 * dim));
        return dx;
    }

    // ==================================================================================================== pieces

    private static (int Batch, Grid3 Grid) CheckInputs(ModelConfig config, RefTensor latent, RefTensor timestep, RefTensor context)
    {
        var patch = config.Patch;
        if (latent.Rank != 5 || latent.Dim(1) != config.InChannels)
            throw new ShapeMismatchException($"dit: latent must be (B, {config.InChannels}, T, H, W), got {Shape.Format(latent.Shape)}");
        int batch = latent.Dim(0);
        if (latent.Dim(2) % patch.T != 0 || latent.Dim(3) % patch.H != 0 || latent.Dim(4) % patch.W != 0)
            throw new ShapeMismatchException($"dit: latent {Shape.Format(latent.Shape)} is not divisible by the patch size {patch}");
        if (timestep.Rank != 1 || timestep.Dim(0) != batch)
            throw new ShapeMismatchException($"dit: timestep must be ({batch}), got {Shape.Format(timestep.Shape)}");
        if (context.Rank != 3 || context.Dim(0) != batch || context.Dim(2) != config.TextDim)
            throw new ShapeMismatchException($"dit: context must be ({batch}, L, {config.TextDim}), got {Shape.Format(context.Shape)}");
        return (batch, new Grid3(latent.Dim(2) / patch.T, latent.Dim(3) / patch.H, latent.Dim(4) / patch.W));
    }

    private static RefTensor Weight(IReadOnlyDictionary<string, RefTensor> weights, string name) =>
        weights.TryGetValue(name, out var tensor) ? tensor : throw new KeyNotFoundException($"dit reference: weight '{name}' is missing");

    private static string BlockName(int block, string rest) =>
        ParameterCatalog.BlockPrefix + block.ToString(CultureInfo.InvariantCulture) + "." + rest;

    /// <summary>
    /// (B, C, T·pt, H·ph, W·pw) → (B, T·H·W, C·pt·ph·pw), tokens (f, h, w) frame-major, features in (c, p, q, r) order
    /// (the patch-embedding Conv3d's flattened weight) or (p, q, r, c) when <paramref name="channelsLast"/> (the head's
    /// layout): the catalogue's <see cref="PatchifyOp"/>.
    /// </summary>
    private static RefTensor Patchify(RefTensor video, PatchSize patch, bool channelsLast) =>
        PatchifyOp.Forward(video, patch.T, patch.H, patch.W, channelsLast);

    /// <summary>The inverse of <see cref="Patchify"/> (<see cref="UnpatchifyOp"/>): with <paramref name="channelsLast"/> Wan's head unpatchify.</summary>
    private static RefTensor Unpatchify(RefTensor tokens, PatchSize patch, int channels, int batch, Grid3 grid, bool channelsLast)
    {
        var parameters = OpParams.Of(("channels", channels), ("T", grid.T), ("H", grid.H), ("W", grid.W),
            ("pt", patch.T), ("ph", patch.H), ("pw", patch.W), ("channels_last", channelsLast));
        if (tokens.Dim(0) != batch) throw new ShapeMismatchException($"dit: tokens {Shape.Format(tokens.Shape)} do not hold {batch} samples");
        return UnpatchifyOp.Forward(tokens, PatchLayout.OfTokens(tokens.Shape, parameters, "dit"));
    }

    /// <summary>
    /// (1, k, D) modulation + time features → (B, k, D). The features are (B, k·D) (the blocks' e6) or (B, D), broadcast
    /// to every chunk (the head's e.unsqueeze(1)).
    /// </summary>
    private static RefTensor AddModulation(RefTensor modulation, RefTensor time, int chunks)
    {
        int batch = time.Dim(0), width = modulation.Length, dim = width / chunks;
        int timeWidth = time.Length / batch;
        if (modulation.Length != chunks * dim || (timeWidth != width && timeWidth != dim))
            throw new ShapeMismatchException($"dit: modulation {Shape.Format(modulation.Shape)} does not match time features {Shape.Format(time.Shape)}");
        var result = new RefTensor(batch, chunks, dim);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < width; i++)
                result.Data[b * width + i] = modulation.Data[i] + time.Data[b * timeWidth + (timeWidth == width ? i : i % dim)];
        return result;
    }

    /// <summary>Chunk <paramref name="index"/> of a (B, k, D) tensor as (B, D).</summary>
    private static RefTensor Chunk(RefTensor stacked, int index)
    {
        int batch = stacked.Dim(0), chunks = stacked.Dim(1), dim = stacked.Dim(2);
        var result = new RefTensor(batch, dim);
        for (int b = 0; b < batch; b++) Array.Copy(stacked.Data, (b * chunks + index) * dim, result.Data, b * dim, dim);
        return result;
    }

    private static void SetChunk(RefTensor stacked, int index, RefTensor chunk)
    {
        int batch = stacked.Dim(0), chunks = stacked.Dim(1), dim = stacked.Dim(2);
        for (int b = 0; b < batch; b++) Array.Copy(chunk.Data, b * dim, stacked.Data, (b * chunks + index) * dim, dim);
    }

    /// <summary>(B, D) shift and scale gradients → (B, 2, D).</summary>
    private static RefTensor Stack(RefTensor first, RefTensor second)
    {
        var result = new RefTensor(first.Dim(0), 2, first.Dim(1));
        SetChunk(result, 0, first);
        SetChunk(result, 1, second);
        return result;
    }

    /// <summary>(B, k, D) → (1, k, D).</summary>
    private static RefTensor SumOverBatch(RefTensor stacked)
    {
        int batch = stacked.Dim(0), width = stacked.Length / batch;
        var result = new RefTensor(1, stacked.Dim(1), stacked.Dim(2));
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < width; i++) result.Data[i] += stacked.Data[b * width + i];
        return result;
    }

    /// <summary>(B, k, D) → (B, D): the sum of the chunks (the gradient of a (B, D) tensor broadcast into each chunk).</summary>
    private static RefTensor SumChunks(RefTensor stacked)
    {
        int batch = stacked.Dim(0), chunks = stacked.Dim(1), dim = stacked.Dim(2);
        var result = new RefTensor(batch, dim);
        for (int b = 0; b < batch; b++)
            for (int k = 0; k < chunks; k++)
                for (int i = 0; i < dim; i++) result.Data[b * dim + i] += stacked.Data[(b * chunks + k) * dim + i];
        return result;
    }

    /// <summary>x + gate ⊙ f with gate (B, D) broadcast over the tokens (<see cref="GatedResidualOp"/>).</summary>
    private static RefTensor Residual(RefTensor x, RefTensor gate, RefTensor f) => GatedResidualOp.Forward(x, f, gate);

    /// <summary>The gradient of <see cref="Residual"/>'s f (dy ⊙ gate); writes Σ_N dy ⊙ f into chunk <paramref name="chunk"/> of dMod.</summary>
    private static RefTensor ResidualBackward(RefTensor gate, RefTensor f, RefTensor dy, RefTensor dMod, int chunk)
    {
        var (_, df, dGate) = GatedResidualOp.Backward(f, gate, dy);
        SetChunk(dMod, chunk, dGate);
        return df;
    }

    private static RefTensor Add(RefTensor a, RefTensor b)
    {
        var y = a.Clone();
        AddInto(y, b);
        return y;
    }

    private static void AddInto(RefTensor target, RefTensor addend)
    {
        if (target.Length != addend.Length)
            throw new ShapeMismatchException($"dit: cannot add {Shape.Format(addend.Shape)} into {Shape.Format(target.Shape)}");
        for (int i = 0; i < target.Length; i++) target.Data[i] += addend.Data[i];
    }

    /// <summary>Backward of the linear layer <c>{name}.weight/.bias</c> on input x: records its gradients, returns dx.</summary>
    private static RefTensor LinearBackward(RefTensor x, string name, IReadOnlyDictionary<string, RefTensor> weights, RefTensor dy, GradientSink sink)
    {
        var (dx, dWeight, dBias) = LinearOp.Backward(x, Weight(weights, name + ".weight"), dy);
        sink.Add(name + ".weight", dWeight);
        sink.Add(name + ".bias", dBias);
        return dx;
    }

    /// <summary>Sums parameter gradients by name, skipping the parameters the trainable filter rejects.</summary>
    private sealed class GradientSink(IReadOnlyDictionary<string, RefTensor> weights, Func<string, bool>? trainable)
    {
        public RefArgs Result { get; } = new();

        public void Add(string name, RefTensor gradient)
        {
            if (trainable is not null && !trainable(name)) return;
            if (!Result.TryGetValue(name, out var total))
            {
                total = new RefTensor((int[])Weight(weights, name).Shape.Clone());
                Result[name] = total;
            }
            AddInto(total, gradient);
        }
    }
}
