using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Model.Dit;

/// <summary>
/// Sums parameter gradients by checkpoint name on the backend (a block's tensors are freed as soon as it has been
/// walked back, so every contribution is copied into the accumulator's own memory), skipping frozen parameters.
/// </summary>
internal sealed class DitGradientAccumulator(DeviceScope scope, Func<string, bool> trainable)
{
    private static readonly OpParams s_none = new();
    private readonly Dictionary<string, Tensor> _totals = new(StringComparer.Ordinal);
    private Tensor? _context;

    public bool IsTrainable(string name) => trainable(name);

    public IReadOnlyDictionary<string, Tensor> Totals => _totals;

    public Tensor? Context => _context;

    public void Add(string name, Tensor gradient)
    {
        if (!trainable(name)) return;
        _totals.TryGetValue(name, out var total);
        Accumulate(ref total, gradient);
        _totals[name] = total!;
    }

    /// <summary>dL/dc: every block's cross-attention k and v read the text embedding.</summary>
    public void AddContext(Tensor gradient) => Accumulate(ref _context, gradient);

    private void Accumulate(ref Tensor? total, Tensor gradient)
    {
        if (total is null)
        {
            total = scope.New(gradient.ShapeArray);
            scope.Copy(gradient, total);
        }
        else scope.Add(total, gradient.Reshape(total.ShapeArray), into: total);
    }

    /// <summary>The model whose weights the linear layers read (set once by <see cref="DitBackward"/>).</summary>
    public Dit Model { get; set; } = null!;

    /// <summary>Backward of linear <c>{name}.weight/.bias</c> on input x; weight gradients only when trainable. Returns dx.</summary>
    public Tensor LinearBackward(DeviceScope s, string name, Tensor x, Tensor dy)
    {
        string weightName = name + ".weight", biasName = name + ".bias";
        var weight = Model.Weight(weightName);
        var wanted = trainable(weightName) ? new[] { "x", "weight", "bias" } : ["x"];
        var grads = s.Gradients("linear", s_none, dy, [("x", x), ("weight", weight), ("bias", Model.Weight(biasName))], wanted);
        if (grads.TryGetValue("weight", out var dWeight)) Add(weightName, dWeight);
        if (grads.TryGetValue("bias", out var dBias)) Add(biasName, dBias);
        return grads["x"];
    }

    public Tensor RmsNormBackward(DeviceScope s, string weightName, Tensor x, Tensor dy, OpParams eps)
    {
        var wanted = trainable(weightName) ? new[] { "x", "weight" } : ["x"];
        var grads = s.Gradients("rms_norm", eps, dy, [("x", x), ("weight", Model.Weight(weightName))], wanted);
        if (grads.TryGetValue("weight", out var dWeight)) Add(weightName, dWeight);
        return grads["x"];
    }
}

/// <summary>The backward pass of one <see cref="DitPass"/>: head, blocks last to first, patch, time and text embeddings.</summary>
internal sealed class DitBackward(Dit model, DitPass pass, Func<string, bool> trainable)
{
    private static readonly OpParams s_none = new();

    public DitHostGradients Run(Tensor dVelocityHost, bool latentGradient)
    {
        var config = model.Config;
        int batch = pass.Batch, dim = config.Dim;
        using var scope = new DeviceScope(model.Backend);
        var grads = new DitGradientAccumulator(scope, trainable) { Model = model };
        var s = scope;

        // Head: velocity = unpatchify(Linear(LN(x)(1+scale)+shift)).
        var dVelocity = pass.Upload(dVelocityHost, owner: s);
        var dHeadOut = s.Gradients("unpatchify", pass.UnpatchifyParams(config.OutChannels, channelsLast: true), dVelocity,
            [("tokens", pass.HeadOut)], "tokens")["tokens"];
        var dHeadIn = grads.LinearBackward(s, "head.head", pass.HeadIn, dHeadOut);
        var dModulate = s.Gradients("modulate", s_none, dHeadIn, [("x", pass.HeadNorm), ("shift", pass.HeadShift), ("scale", pass.HeadScale)],
            "x", "shift", "scale");
        var dx = s.Gradients("layer_norm", OpParams.Of(("eps", config.Eps)), dModulate["x"], [("x", pass.XFinal)], "x")["x"];
        float[] dShift = pass.Download(dModulate["shift"]), dScale = pass.Download(dModulate["scale"]);
        var dE = new float[batch * dim];
        var hostGradients = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var dHeadModulation = new float[2 * dim];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < dim; i++)
            {
                float shift = dShift[b * dim + i], scale = dScale[b * dim + i];
                dHeadModulation[i] += shift;
                dHeadModulation[dim + i] += scale;
                dE[b * dim + i] += shift + scale;
            }
        hostGradients["head.modulation"] = dHeadModulation;

        // Blocks, last to first; each block is freed (or recomputed first) as it is walked back.
        var de6 = new float[batch * 6 * dim];
        var dModulation = new float[6][];
        DeviceScope? carryScope = null;
        try
        {
            for (int i = config.Layers - 1; i >= 0; i--)
            {
                var block = pass.Blocks[i];
                if (block is null)
                {
                    block = new DitBlock(pass, i);
                    block.Forward(pass.BlockInputs[i]);
                }
                var dBlockIn = block.Backward(dx, grads, dModulation);
                var nextCarry = new DeviceScope(model.Backend);
                dx = nextCarry.New(dBlockIn.ShapeArray);
                nextCarry.Copy(dBlockIn, dx);
                carryScope?.Dispose();
                carryScope = nextCarry;
                block.Dispose();
                pass.Blocks[i] = null!;

                var dBlockModulation = new float[6 * dim];
                for (int k = 0; k < 6; k++)
                    for (int b = 0; b < batch; b++)
                        for (int j = 0; j < dim; j++)
                        {
                            float value = dModulation[k][b * dim + j];
                            dBlockModulation[k * dim + j] += value;
                            de6[(b * 6 + k) * dim + j] += value;
                        }
                hostGradients[Dit.BlockName(i, "modulation")] = dBlockModulation;
            }

            // Patch embedding: the weight is (D, C, pt, ph, pw) = a (D, C·pt·ph·pw) linear on the patches.
            Tensor? dLatent = null;
            var patchWeight = model.Weight("patch_embedding.weight");
            var patchWeight2d = patchWeight.Reshape(dim, (int)(patchWeight.ElementCount / dim));
            bool patchTrainable = trainable("patch_embedding.weight");
            var wantedPatch = new List<string>();
            if (latentGradient) wantedPatch.Add("x");
            if (patchTrainable) wantedPatch.AddRange(["weight", "bias"]);
            if (wantedPatch.Count > 0)
            {
                var dPatch = s.Gradients("linear", s_none, dx, [("x", pass.Patches), ("weight", patchWeight2d), ("bias", model.Weight("patch_embedding.bias"))],
                    [.. wantedPatch]);
                if (dPatch.TryGetValue("weight", out var dWeight)) grads.Add("patch_embedding.weight", dWeight.Reshape(patchWeight.ShapeArray));
                if (dPatch.TryGetValue("bias", out var dBias)) grads.Add("patch_embedding.bias", dBias);
                if (dPatch.TryGetValue("x", out var dPatches))
                {
                    var latentShaped = s.New(pass.LatentShape);    // patchify's backward reads only the video's shape
                    var dVideo = s.Gradients("patchify", pass.PatchParams(channelsLast: false), dPatches, [("video", latentShaped)], "video")["video"];
                    dLatent = Tensor.Host(DType.F32, pass.LatentShape);
                    model.Backend.CopyToHost(dVideo, dLatent);
                }
            }

            // Time projection and embedding (t itself takes no gradient).
            var de6Device = pass.UploadFloats(de6, [batch, 6 * dim], owner: s);
            var dESilu = grads.LinearBackward(s, "time_projection.1", pass.ESilu, de6Device);
            var dEFromProjection = s.Gradients("silu", s_none, dESilu, [("x", pass.E)], "x")["x"];
            var dETotal = s.Add(dEFromProjection, pass.UploadFloats(dE, [batch, dim], owner: s));
            var dTimeAct = grads.LinearBackward(s, "time_embedding.2", pass.TimeAct, dETotal);
            var dTimeHidden = s.Gradients("silu", s_none, dTimeAct, [("x", pass.TimeHidden)], "x")["x"];
            grads.LinearBackward(s, "time_embedding.0", pass.Sinusoid, dTimeHidden);

            // Text embedding (dL/dcontext feeds a trainable text encoder).
            var dc = grads.Context ?? throw new InvalidOperationException("dit: no block read the text embedding");
            var dTextAct = grads.LinearBackward(s, "text_embedding.2", pass.TextAct, dc);
            var dTextHidden = s.Gradients("gelu_tanh", s_none, dTextAct, [("x", pass.TextHidden)], "x")["x"];
            var dContextDevice = grads.LinearBackward(s, "text_embedding.0", pass.Context, dTextHidden);
            var dContext = Tensor.Host(DType.F32, pass.Context.ShapeArray);
            model.Backend.CopyToHost(dContextDevice, dContext);

            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var spec in model.Specs)
            {
                if (!trainable(spec.Name)) continue;
                var host = Tensor.Host(DType.F32, [.. spec.Shape]);
                if (hostGradients.TryGetValue(spec.Name, out var values)) values.CopyTo(host.HostSpan<float>());
                else if (grads.Totals.TryGetValue(spec.Name, out var total)) model.Backend.CopyToHost(total, host);
                else host.HostSpan<float>().Clear();    // a parameter this configuration never reads (none today)
                result[spec.Name] = host;
            }
            return new DitHostGradients(result, dLatent, dContext);
        }
        finally
        {
            carryScope?.Dispose();
        }
    }
}
