using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Model.Dit;

/// <summary>
/// One DiT block on the backend (spec §2.2): its forward pass with every activation its backward pass reads, owned by
/// the block's own <see cref="DeviceScope"/> so a block can be freed (and recomputed) on its own.
/// <code>
/// h  = x  + g_msa ⊙ SelfAttn(LN(x)(1+sc_msa)+s_msa)       SelfAttn = ultragen_self_attention (full on full blocks)
/// h2 = h  + W_o CrossAttn(LN3(h), c)                      q = RMSNorm(W_q ·), k = RMSNorm(W_k c), v = W_v c
/// x' = h2 + g_mlp ⊙ FFN(LN(h2)(1+sc_mlp)+s_mlp)           FFN = Linear → GELU(tanh) → Linear
/// </code>
/// </summary>
internal sealed class DitBlock : IDisposable
{
    private static readonly OpParams s_none = new();
    private readonly DitPass _pass;
    private readonly DeviceScope _scope;
    private readonly int _index;
    private readonly string _prefix;
    private readonly OpParams _eps;

    // (modulation + e6).chunk(6): shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, each (B, D).
    private readonly Tensor[] _modulation = new Tensor[6];

    // saved activations
    private Tensor _x = null!, _norm1 = null!, _selfIn = null!, _selfOut = null!, _h = null!, _norm3 = null!;
    private Tensor _crossQPre = null!, _crossKPre = null!, _crossQ = null!, _crossK = null!, _crossV = null!, _crossAttention = null!;
    private Tensor _h2 = null!, _norm2 = null!, _ffnIn = null!, _ffnHidden = null!, _ffnAct = null!, _ffnOut = null!;

    public DitBlock(DitPass pass, int index)
    {
        _pass = pass;
        _index = index;
        _scope = new DeviceScope(pass.Owner.Backend);
        _prefix = Dit.BlockName(index, "");
        _eps = OpParams.Of(("eps", pass.Owner.Config.Eps));
    }

    private Dit Model => _pass.Owner;

    private Tensor W(string name) => Model.Weight(_prefix + name);

    private Tensor Linear(Tensor x, string name, Tensor? into = null) =>
        _scope.Run("linear", s_none, into, ("x", x), ("weight", W(name + ".weight")), ("bias", W(name + ".bias")));

    private (string, Tensor?)[] SelfAttentionInputs(Tensor x)
    {
        var inputs = new List<(string, Tensor?)> { ("x", x), ("t", _pass.Timestep) };
        foreach (var (opName, name) in Model.SelfAttentionWeights(_index)) inputs.Add((opName, Model.Weight(name)));
        return [.. inputs];
    }

    private (string, Tensor?)[] CrossAttentionInputs() => [("q", _crossQ), ("k", _crossK), ("v", _crossV)];

    private OpParams CrossAttentionParams => OpParams.Of(("heads", Model.Config.Heads));

    /// <summary>
    /// Runs the block on <paramref name="x"/> (B, N, D) and returns x' (owned by the block, or written into
    /// <paramref name="into"/> (B, N, D) when given). A pass that keeps activations keeps every intermediate for
    /// <see cref="Backward"/>; an inference pass frees each one after its last use, so the block's peak is the FFN's two
    /// hidden tensors and h2 instead of all of them (<see cref="DitMemory"/> replays this order).
    /// </summary>
    public Tensor Forward(Tensor x, Tensor? into = null)
    {
        var s = _scope;
        int dim = Model.Config.Dim;
        bool keep = _pass.KeepsActivations;
        void Done(params Tensor[] dead)
        {
            if (!keep) s.Release(dead);
        }
        var modulation = Model.HostModulation(_prefix + "modulation");
        for (int k = 0; k < 6; k++)
            _modulation[k] = _pass.UploadFloats(_pass.ModulationChunk(modulation, _pass.E6Host, 6, k), [_pass.Batch, dim], owner: s);

        _x = x;
        _norm1 = s.Run("layer_norm", _eps, ("x", x));
        _selfIn = s.Run("modulate", s_none, ("x", _norm1), ("shift", _modulation[0]), ("scale", _modulation[1]));
        Done(_norm1);
        _selfOut = s.Run("ultragen_self_attention", Model.SelfAttentionParams(_pass.Grid, _index), SelfAttentionInputs(_selfIn));
        Done(_selfIn);
        _h = s.Run("gated_residual", s_none, ("x", x), ("y", _selfOut), ("gate", _modulation[2]));
        Done(_selfOut);

        _norm3 = Model.Config.CrossAttnNorm
            ? s.Run("layer_norm", _eps, ("x", _h), ("weight", W("norm3.weight")), ("bias", W("norm3.bias")))
            : _h;
        _crossQPre = Linear(_norm3, "cross_attn.q");
        if (Model.Config.CrossAttnNorm) Done(_norm3);
        _crossKPre = Linear(_pass.C, "cross_attn.k");
        _crossQ = s.Run("rms_norm", _eps, ("x", _crossQPre), ("weight", W("cross_attn.norm_q.weight")));
        Done(_crossQPre);
        _crossK = s.Run("rms_norm", _eps, ("x", _crossKPre), ("weight", W("cross_attn.norm_k.weight")));
        Done(_crossKPre);
        _crossV = Linear(_pass.C, "cross_attn.v");
        _crossAttention = s.Run("cross_attention", CrossAttentionParams, CrossAttentionInputs());
        Done(_crossQ, _crossK, _crossV);
        var crossOut = Linear(_crossAttention, "cross_attn.o");
        Done(_crossAttention);
        _h2 = s.Add(_h, crossOut);
        Done(_h, crossOut);

        _norm2 = s.Run("layer_norm", _eps, ("x", _h2));
        _ffnIn = s.Run("modulate", s_none, ("x", _norm2), ("shift", _modulation[3]), ("scale", _modulation[4]));
        Done(_norm2);
        _ffnHidden = Linear(_ffnIn, "ffn.0");
        Done(_ffnIn);
        _ffnAct = s.Run("gelu_tanh", s_none, ("x", _ffnHidden));
        Done(_ffnHidden);
        _ffnOut = Linear(_ffnAct, "ffn.2");
        Done(_ffnAct);
        return s.Run("gated_residual", s_none, into, ("x", _h2), ("y", _ffnOut), ("gate", _modulation[5]));
    }

    /// <summary>
    /// Walks the block back from dL/dx' (<paramref name="dOut"/>): returns dL/dx (owned by the block, copy it before disposing the block),
    /// adds dL/dc into <paramref name="grads"/>' context gradient, the six modulation chunks' gradients into
    /// <paramref name="dModulation"/> (host, (6, B, D)) and parameter gradients into <paramref name="grads"/>.
    /// </summary>
    public Tensor Backward(Tensor dOut, DitGradientAccumulator grads, float[][] dModulation)
    {
        var s = _scope;
        string Name(string rest) => _prefix + rest;

        // x' = h2 + g_mlp ⊙ FFN(...)
        var dResidual = s.Gradients("gated_residual", s_none, dOut, [("x", _h2), ("y", _ffnOut), ("gate", _modulation[5])], "x", "y", "gate");
        dModulation[5] = _pass.Download(dResidual["gate"]);
        var dFfnAct = grads.LinearBackward(s, Name("ffn.2"), _ffnAct, dResidual["y"]);
        var dFfnHidden = s.Gradients("gelu_tanh", s_none, dFfnAct, [("x", _ffnHidden)], "x")["x"];
        var dFfnIn = grads.LinearBackward(s, Name("ffn.0"), _ffnIn, dFfnHidden);
        var dModulate2 = s.Gradients("modulate", s_none, dFfnIn, [("x", _norm2), ("shift", _modulation[3]), ("scale", _modulation[4])],
            "x", "shift", "scale");
        dModulation[3] = _pass.Download(dModulate2["shift"]);
        dModulation[4] = _pass.Download(dModulate2["scale"]);
        var dNorm2 = s.Gradients("layer_norm", _eps, dModulate2["x"], [("x", _h2)], "x")["x"];
        var dh2 = s.Add(dResidual["x"], dNorm2);

        // h2 = h + W_o CrossAttn(LN3(h), c)
        var dCrossAttention = grads.LinearBackward(s, Name("cross_attn.o"), _crossAttention, dh2);
        var dAttention = s.Gradients("cross_attention", CrossAttentionParams, dCrossAttention, CrossAttentionInputs(), "q", "k", "v");
        var dQ = grads.RmsNormBackward(s, Name("cross_attn.norm_q.weight"), _crossQPre, dAttention["q"], _eps);
        var dK = grads.RmsNormBackward(s, Name("cross_attn.norm_k.weight"), _crossKPre, dAttention["k"], _eps);
        var dNorm3 = grads.LinearBackward(s, Name("cross_attn.q"), _norm3, dQ);
        grads.AddContext(grads.LinearBackward(s, Name("cross_attn.k"), _pass.C, dK));
        grads.AddContext(grads.LinearBackward(s, Name("cross_attn.v"), _pass.C, dAttention["v"]));
        Tensor dh;
        if (Model.Config.CrossAttnNorm)
        {
            string weight = Name("norm3.weight"), bias = Name("norm3.bias");
            var wanted = grads.IsTrainable(weight) ? new[] { "x", "weight", "bias" } : ["x"];
            var dNorm = s.Gradients("layer_norm", _eps, dNorm3, [("x", _h), ("weight", W("norm3.weight")), ("bias", W("norm3.bias"))], wanted);
            if (dNorm.TryGetValue("weight", out var dWeight)) grads.Add(weight, dWeight);
            if (dNorm.TryGetValue("bias", out var dBias)) grads.Add(bias, dBias);
            dh = s.Add(dh2, dNorm["x"]);
        }
        else dh = s.Add(dh2, dNorm3);

        // h = x + g_msa ⊙ SelfAttn(LN(x)(1+sc_msa)+s_msa)
        var dResidual1 = s.Gradients("gated_residual", s_none, dh, [("x", _x), ("y", _selfOut), ("gate", _modulation[2])], "x", "y", "gate");
        dModulation[2] = _pass.Download(dResidual1["gate"]);
        var selfWeights = Model.SelfAttentionWeights(_index).ToList();
        var wantedSelf = new List<string> { "x" };
        wantedSelf.AddRange(selfWeights.Where(w => grads.IsTrainable(w.Name)).Select(w => w.OpName));
        var dSelf = s.Gradients("ultragen_self_attention", Model.SelfAttentionParams(_pass.Grid, _index), dResidual1["y"],
            SelfAttentionInputs(_selfIn), [.. wantedSelf]);
        foreach (var (opName, name) in selfWeights)
            if (dSelf.TryGetValue(opName, out var gradient)) grads.Add(name, gradient);
        var dModulate1 = s.Gradients("modulate", s_none, dSelf["x"], [("x", _norm1), ("shift", _modulation[0]), ("scale", _modulation[1])],
            "x", "shift", "scale");
        dModulation[0] = _pass.Download(dModulate1["shift"]);
        dModulation[1] = _pass.Download(dModulate1["scale"]);
        var dNorm1 = s.Gradients("layer_norm", _eps, dModulate1["x"], [("x", _x)], "x")["x"];
        return s.Add(dResidual1["x"], dNorm1);
    }

    public void Dispose() => _scope.Dispose();
}
