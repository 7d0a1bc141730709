using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Ops.Backends;

/// <summary>
/// The catalogue's composite ops as graphs of primitive calls on any backend, mirroring their float64 references
/// line by line (see <see cref="UltraGenSelfAttentionOp"/>, <see cref="WanSelfAttentionOp"/>, <see cref="LoraOp"/>,
/// <see cref="GateMlpOp"/>). Backward recomputes the forward's intermediates, then walks back.
/// </summary>
public static class CompositeOps
{
    public static readonly IReadOnlySet<string> Names =
        new HashSet<string>(StringComparer.Ordinal) { "lora", "gate_mlp", "wan_self_attention", "ultragen_self_attention" };

    private static readonly OpParams s_none = new();

    public static void Forward(IBackend backend, Op op, IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        using var scope = new DeviceScope(backend);
        var output = outputs.Values.Single();
        switch (op.Name)
        {
            case "lora": Lora(scope, inputs, "", output, null, null); break;
            case "gate_mlp": GateMlp(scope, inputs, "embedding", "projection", output, null, null); break;
            case "wan_self_attention": WanSelfAttention(scope, inputs, WanConfig(parameters), output, null, null); break;
            case "ultragen_self_attention": UltraGen(scope, inputs, UltraGenSelfAttentionOp.Config.From(parameters), output, null, null); break;
            default: throw new UnsupportedConfigurationException($"'{op.Name}' is not a composite op");
        }
    }

    public static void Backward(IBackend backend, Op op, IReadOnlyDictionary<string, Tensor> inputs,
        IReadOnlyDictionary<string, Tensor> outputGradients, IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters)
    {
        using var scope = new DeviceScope(backend);
        var dy = outputGradients.Values.Single();
        var gradients = new DeviceGradients(scope);
        switch (op.Name)
        {
            case "lora": gradients.Add("x", Lora(scope, inputs, "", null, dy, gradients)); break;
            case "gate_mlp": GateMlp(scope, inputs, "embedding", "projection", null, dy, gradients); break;
            case "wan_self_attention": WanSelfAttention(scope, inputs, WanConfig(parameters), null, dy, gradients); break;
            case "ultragen_self_attention": UltraGen(scope, inputs, UltraGenSelfAttentionOp.Config.From(parameters), null, dy, gradients); break;
            default: throw new UnsupportedConfigurationException($"'{op.Name}' is not a composite op");
        }
        gradients.WriteInto(inputGradients);
    }

    private static (Grid3 Grid, int Heads, double Eps) WanConfig(OpParams p) =>
        (new Grid3(p.GetInt("T"), p.GetInt("H"), p.GetInt("W")), p.GetInt("heads"), p.GetDouble("eps", 1e-6));

    private static Tensor Get(IReadOnlyDictionary<string, Tensor> inputs, string name) =>
        inputs.TryGetValue(name, out var tensor) ? tensor : throw new ShapeMismatchException($"tensor '{name}' is missing");

    private static OpParams Eps(double eps) => OpParams.Of(("eps", eps));

    private static Tensor Linear(DeviceScope s, Tensor x, Tensor weight, Tensor? bias, Tensor? into = null) =>
        s.Run("linear", s_none, into, ("x", x), ("weight", weight), ("bias", bias));

    /// <summary>dx of y = x Wᵀ + b, with dW and db added to <paramref name="g"/> under <paramref name="prefix"/>.weight/.bias.</summary>
    private static Tensor LinearBackward(DeviceScope s, DeviceGradients g, string prefix, Tensor x, Tensor weight, Tensor bias, Tensor dy)
    {
        var grads = s.Gradients("linear", s_none, dy, [("x", x), ("weight", weight), ("bias", bias)], "x", "weight", "bias");
        g.Add(prefix + ".weight", grads["weight"]);
        g.Add(prefix + ".bias", grads["bias"]);
        return grads["x"];
    }

    // ---- lora: y = B(Ax + a) + b ----

    /// <summary>Forward into <paramref name="into"/> (when not null) or backward (when <paramref name="dy"/> is given); returns y or dx.</summary>
    private static Tensor Lora(DeviceScope s, IReadOnlyDictionary<string, Tensor> inputs, string prefix, Tensor? into, Tensor? dy,
        DeviceGradients? g, Tensor? xOverride = null, bool forwardOnly = false)
    {
        var x = xOverride ?? Get(inputs, "x");
        string p = prefix.Length == 0 ? "" : prefix + ".";
        Tensor aW = Get(inputs, p + "lora_A.weight"), aB = Get(inputs, p + "lora_A.bias");
        Tensor bW = Get(inputs, p + "lora_B.weight"), bB = Get(inputs, p + "lora_B.bias");
        var hidden = Linear(s, x, aW, aB);
        if (dy is null)
        {
            var y = Linear(s, hidden, bW, bB, into);
            if (forwardOnly) s.Release(hidden);
            return y;
        }
        var dHidden = LinearBackward(s, g!, p + "lora_B", hidden, bW, bB, dy);
        return LinearBackward(s, g!, p + "lora_A", x, aW, aB, dHidden);
    }

    // ---- gate_mlp: sigmoid(P(SiLU(E2(SiLU(E0(sin(t))))))) ----

    private static Tensor GateMlp(DeviceScope s, IReadOnlyDictionary<string, Tensor> inputs, string embedding, string projection,
        Tensor? into, Tensor? dy, DeviceGradients? g)
    {
        var t = Get(inputs, "t");
        Tensor e0W = Get(inputs, $"{embedding}.0.weight"), e0B = Get(inputs, $"{embedding}.0.bias");
        Tensor e2W = Get(inputs, $"{embedding}.2.weight"), e2B = Get(inputs, $"{embedding}.2.bias");
        Tensor p1W = Get(inputs, $"{projection}.1.weight"), p1B = Get(inputs, $"{projection}.1.bias");
        var sinusoid = s.Run("timestep_embedding", OpParams.Of(("dim", e0W.Dim(1))), ("t", t));
        var h1 = Linear(s, sinusoid, e0W, e0B);
        var a1 = s.Run("silu", s_none, ("x", h1));
        var h2 = Linear(s, a1, e2W, e2B);
        var a2 = s.Run("silu", s_none, ("x", h2));
        var h3 = Linear(s, a2, p1W, p1B);
        if (dy is null) return s.Run("sigmoid", s_none, into, ("x", h3));
        var dH3 = s.Gradients("sigmoid", s_none, dy, [("x", h3)], "x")["x"];
        var dA2 = LinearBackward(s, g!, $"{projection}.1", a2, p1W, p1B, dH3);
        var dH2 = s.Gradients("silu", s_none, dA2, [("x", h2)], "x")["x"];
        var dA1 = LinearBackward(s, g!, $"{embedding}.2", a1, e2W, e2B, dH2);
        var dH1 = s.Gradients("silu", s_none, dA1, [("x", h1)], "x")["x"];
        return LinearBackward(s, g!, $"{embedding}.0", sinusoid, e0W, e0B, dH1); // d(sinusoid): t takes no gradient
    }

    // ---- q/k/v projections shared by the attention layers ----

    /// <summary>
    /// q = RMSNorm_q(W_q x (+ LoRA_q x)), k = RMSNorm_k(W_k x (+ LoRA_k x)) with W_q in place of W_k when the
    /// global branch's compatibility switch is on, v = W_v x (+ LoRA_v x); x is channels-last video (B, T, H, W, D).
    /// </summary>
    private sealed class Qkv
    {
        private readonly IReadOnlyDictionary<string, Tensor> _inputs;
        private readonly string? _loraSuffix;
        private readonly bool _kUsesWq;
        private readonly double _eps;
        private readonly Tensor _x;
        private readonly Tensor _qPre, _kPre;

        public Tensor Q { get; }
        public Tensor K { get; }
        public Tensor V { get; }

        /// <summary>
        /// Projects <paramref name="x"/>. With <paramref name="forwardOnly"/> (a forward that no backward follows) each
        /// intermediate is freed after its last use; <see cref="Backward"/> then cannot be used.
        /// </summary>
        public Qkv(DeviceScope s, IReadOnlyDictionary<string, Tensor> inputs, Tensor x, string? loraSuffix, bool kUsesWq, double eps,
            bool forwardOnly = false)
        {
            (_inputs, _x, _loraSuffix, _kUsesWq, _eps, _forwardOnly) = (inputs, x, loraSuffix, kUsesWq, eps, forwardOnly);
            _qPre = Project(s, "q", "q");
            _kPre = Project(s, kUsesWq ? "q" : "k", "k");
            V = Project(s, "v", "v");
            Q = s.Run("rms_norm", Eps(eps), ("x", _qPre), ("weight", Get(inputs, "norm_q.weight")));
            if (forwardOnly) s.Release(_qPre);
            K = s.Run("rms_norm", Eps(eps), ("x", _kPre), ("weight", Get(inputs, "norm_k.weight")));
            if (forwardOnly) s.Release(_kPre);
        }

        private readonly bool _forwardOnly;

        private string? LoraPrefix(string which) => _loraSuffix is null ? null : $"{which}_lora_{_loraSuffix}";

        private Tensor Project(DeviceScope s, string baseName, string which)
        {
            var y = Linear(s, _x, Get(_inputs, baseName + ".weight"), Get(_inputs, baseName + ".bias"));
            var prefix = LoraPrefix(which);
            if (prefix is null) return y;
            var lora = Lora(s, _inputs, prefix, null, null, null, _x, _forwardOnly);
            var sum = s.Add(y, lora);
            if (_forwardOnly) s.Release(y, lora);
            return sum;
        }

        /// <summary>Frees q, k and v (forward only, after the attention that read them).</summary>
        public void Release(DeviceScope s)
        {
            if (_forwardOnly) s.Release(Q, K, V);
        }

        private Tensor ProjectBackward(DeviceScope s, DeviceGradients g, string baseName, string which, Tensor dy)
        {
            var dx = LinearBackward(s, g, baseName, _x, Get(_inputs, baseName + ".weight"), Get(_inputs, baseName + ".bias"), dy);
            var prefix = LoraPrefix(which);
            return prefix is null ? dx : s.Add(dx, Lora(s, _inputs, prefix, null, dy, g, _x));
        }

        /// <summary>dx from dq, dk, dv, adding every weight's gradient to <paramref name="g"/>.</summary>
        public Tensor Backward(DeviceScope s, DeviceGradients g, Tensor dq, Tensor dk, Tensor dv)
        {
            var dqPre = s.Gradients("rms_norm", Eps(_eps), dq, [("x", _qPre), ("weight", Get(_inputs, "norm_q.weight"))], "x", "weight");
            var dkPre = s.Gradients("rms_norm", Eps(_eps), dk, [("x", _kPre), ("weight", Get(_inputs, "norm_k.weight"))], "x", "weight");
            g.Add("norm_q.weight", dqPre["weight"]);
            g.Add("norm_k.weight", dkPre["weight"]);
            var dx = ProjectBackward(s, g, "q", "q", dqPre["x"]);
            dx = s.Add(dx, ProjectBackward(s, g, _kUsesWq ? "q" : "k", "k", dkPre["x"]));
            return s.Add(dx, ProjectBackward(s, g, "v", "v", dv));
        }
    }

    private static OpParams AttentionParams(int heads, WindowLayout layout) =>
        OpParams.Of(("heads", heads), ("windows", layout.WindowsPerSide), ("ragged", !layout.IsUniform));

    /// <summary>Attention over <paramref name="layout"/>; <see cref="AttendBackward"/> is its gradient back to the layer input.</summary>
    private static Tensor Attend(DeviceScope s, Qkv qkv, int heads, WindowLayout layout) =>
        s.Run("window_attention", AttentionParams(heads, layout), ("q", qkv.Q), ("k", qkv.K), ("v", qkv.V));

    private static Tensor AttendBackward(DeviceScope s, DeviceGradients g, Qkv qkv, int heads, WindowLayout layout, Tensor dOut)
    {
        var d = s.Gradients("window_attention", AttentionParams(heads, layout), dOut, [("q", qkv.Q), ("k", qkv.K), ("v", qkv.V)], "q", "k", "v");
        return qkv.Backward(s, g, d["q"], d["k"], d["v"]);
    }

    // ---- wan_self_attention ----

    private static void WanSelfAttention(DeviceScope s, IReadOnlyDictionary<string, Tensor> inputs, (Grid3 Grid, int Heads, double Eps) c,
        Tensor? into, Tensor? dy, DeviceGradients? g)
    {
        var x = Get(inputs, "x");
        int batch = x.Dim(0), dim = x.Dim(2);
        var x5 = x.Reshape(batch, c.Grid.T, c.Grid.H, c.Grid.W, dim);
        var layout = WindowLayout.Divisible(c.Grid, 1);
        bool forwardOnly = dy is null;
        var qkv = new Qkv(s, inputs, x5, null, kUsesWq: false, c.Eps, forwardOnly);
        var attention = Attend(s, qkv, c.Heads, layout).Reshape(x.ShapeArray);
        qkv.Release(s);
        if (dy is null)
        {
            Linear(s, attention, Get(inputs, "o.weight"), Get(inputs, "o.bias"), into);
            return;
        }
        var dAttention = LinearBackward(s, g!, "o", attention, Get(inputs, "o.weight"), Get(inputs, "o.bias"), dy);
        var dx5 = AttendBackward(s, g!, qkv, c.Heads, layout, dAttention.Reshape(x5.ShapeArray));
        g!.Add("x", dx5.Reshape(x.ShapeArray));
    }

    // ---- ultragen_self_attention ----

    private static Tensor Resize(DeviceScope s, Tensor x5, Grid3 target) =>
        x5.Dim(2) == target.H && x5.Dim(3) == target.W ? x5
            : s.Run("bilinear_resize", OpParams.Of(("out_h", target.H), ("out_w", target.W)), ("x", x5));

    /// <summary>The gradient of <see cref="Resize"/> back to the grid <paramref name="source"/>.</summary>
    private static Tensor ResizeBackward(DeviceScope s, Tensor dy5, Grid3 source)
    {
        if (dy5.Dim(2) == source.H && dy5.Dim(3) == source.W) return dy5;
        // The resize's backward needs only x's shape; a view of dy's storage would do, but shapes differ, so pass a
        // scratch tensor of the source shape (never read by the kernels).
        var shape = dy5.ShapeArray;
        shape[2] = source.H;
        shape[3] = source.W;
        var sourceShaped = s.New(shape);
        var parameters = OpParams.Of(("out_h", dy5.Dim(2)), ("out_w", dy5.Dim(3)));
        return s.Gradients("bilinear_resize", parameters, dy5, [("x", sourceShaped)], "x")["x"];
    }

    private static void UltraGen(DeviceScope s, IReadOnlyDictionary<string, Tensor> inputs, UltraGenSelfAttentionOp.Config config,
        Tensor? into, Tensor? dy, DeviceGradients? g)
    {
        if (config.IsFull)
        {
            WanSelfAttention(s, inputs, (config.Grid, config.Heads, config.Eps), into, dy, g);
            return;
        }
        var grid = config.Grid;
        var x = Get(inputs, "x");
        int batch = x.Dim(0), dim = x.Dim(2);
        int[] videoShape = [batch, grid.T, grid.H, grid.W, dim];
        var x5 = x.Reshape(videoShape);
        var plan = config.Plan();

        var alpha = GateMlp(s, inputs, "alpha_time_embedding", "alpha_time_projection", null, null, null);
        var beta = GateMlp(s, inputs, "alpha_time_embedding2", "alpha_time_projection2", null, null, null);

        // A forward that no backward follows frees each intermediate after its last use (Release ignores views, so an
        // unresized branch input, which is a view of x, is left alone).
        bool forwardOnly = dy is null;
        void Done(params Tensor[] dead)
        {
            if (forwardOnly) s.Release(dead);
        }

        // local
        var localIn = Resize(s, x5, plan.Local.Layout.Grid);
        var localQkv = new Qkv(s, inputs, localIn, null, kUsesWq: false, config.Eps, forwardOnly);
        Done(localIn);
        var localAttention = Attend(s, localQkv, config.Heads, plan.Local.Layout);
        localQkv.Release(s);
        var zLocal = Resize(s, localAttention, grid);
        if (zLocal != localAttention) Done(localAttention);

        // global
        Tensor downW = Get(inputs, "downsample_conv.weight"), downB = Get(inputs, "downsample_conv.bias");
        Tensor upW = Get(inputs, "upsample_conv.weight"), upB = Get(inputs, "upsample_conv.bias");
        var globalIn = s.Run("depthwise_conv2d", s_none, ("x", x5), ("weight", downW), ("bias", downB));
        var globalQkv = new Qkv(s, inputs, globalIn, "1", config.KUsesWq, config.Eps, forwardOnly);
        Done(globalIn);
        var globalAttention = Attend(s, globalQkv, config.Heads, plan.Global.Layout);
        globalQkv.Release(s);
        var globalUp = Resize(s, globalAttention, grid);
        if (globalUp != globalAttention) Done(globalAttention);
        var zGlobal = s.Run("depthwise_conv3d", s_none, ("x", globalUp), ("weight", upW), ("bias", upB));
        Done(globalUp);

        // hierarchical
        Tensor hDownW = Get(inputs, "downsample_conv_hierachcal.weight"), hDownB = Get(inputs, "downsample_conv_hierachcal.bias");
        Tensor hUpW = Get(inputs, "upsample_conv_hierachcal.weight"), hUpB = Get(inputs, "upsample_conv_hierachcal.bias");
        var hierCompressed = s.Run("depthwise_conv2d", s_none, ("x", x5), ("weight", hDownW), ("bias", hDownB));
        var hierIn = Resize(s, hierCompressed, plan.Hierarchical.Layout.Grid);
        if (hierIn != hierCompressed) Done(hierCompressed);
        var hierQkv = new Qkv(s, inputs, hierIn, "2", kUsesWq: false, config.Eps, forwardOnly);
        Done(hierIn);
        var hierAttention = Attend(s, hierQkv, config.Heads, plan.Hierarchical.Layout);
        hierQkv.Release(s);
        var hierUp = Resize(s, hierAttention, grid);
        if (hierUp != hierAttention) Done(hierAttention);
        var zHier = s.Run("depthwise_conv3d", s_none, ("x", hierUp), ("weight", hUpW), ("bias", hUpB));
        Done(hierUp);

        // fusion before the shared W_o, on the token view (B, N, D)
        int[] tokenShape = x.ShapeArray;
        (string, Tensor?)[] fusionInputs =
        [
            ("local", zLocal.Reshape(tokenShape)), ("hier", zHier.Reshape(tokenShape)), ("glob", zGlobal.Reshape(tokenShape)),
            ("alpha", alpha), ("beta", beta),
        ];
        var fused = s.Run("gate_fusion", s_none, fusionInputs);
        Done(zLocal, zHier, zGlobal);
        Tensor oW = Get(inputs, "o.weight"), oB = Get(inputs, "o.bias");
        if (dy is null)
        {
            Linear(s, fused, oW, oB, into);
            return;
        }

        // ---- backward ----
        var dFused = LinearBackward(s, g!, "o", fused, oW, oB, dy);
        var dFusion = s.Gradients("gate_fusion", s_none, dFused, fusionInputs, "local", "hier", "glob", "alpha", "beta");
        GateMlp(s, inputs, "alpha_time_embedding", "alpha_time_projection", null, dFusion["alpha"], g);
        GateMlp(s, inputs, "alpha_time_embedding2", "alpha_time_projection2", null, dFusion["beta"], g);

        // local
        var dLocalAttention = ResizeBackward(s, dFusion["local"].Reshape(videoShape), plan.Local.Layout.Grid);
        var dx = ResizeBackward(s, AttendBackward(s, g!, localQkv, config.Heads, plan.Local.Layout, dLocalAttention), grid);

        // global
        var dUp = s.Gradients("depthwise_conv3d", s_none, dFusion["glob"].Reshape(videoShape),
            [("x", globalUp), ("weight", upW), ("bias", upB)], "x", "weight", "bias");
        g!.Add("upsample_conv.weight", dUp["weight"]);
        g.Add("upsample_conv.bias", dUp["bias"]);
        var dGlobalIn = AttendBackward(s, g, globalQkv, config.Heads, plan.Global.Layout, ResizeBackward(s, dUp["x"], plan.Global.InputGrid));
        var dDown = s.Gradients("depthwise_conv2d", s_none, dGlobalIn, [("x", x5), ("weight", downW), ("bias", downB)], "x", "weight", "bias");
        g.Add("downsample_conv.weight", dDown["weight"]);
        g.Add("downsample_conv.bias", dDown["bias"]);
        dx = s.Add(dx, dDown["x"]);

        // hierarchical
        var dHUp = s.Gradients("depthwise_conv3d", s_none, dFusion["hier"].Reshape(videoShape),
            [("x", hierUp), ("weight", hUpW), ("bias", hUpB)], "x", "weight", "bias");
        g.Add("upsample_conv_hierachcal.weight", dHUp["weight"]);
        g.Add("upsample_conv_hierachcal.bias", dHUp["bias"]);
        var dHierIn = AttendBackward(s, g, hierQkv, config.Heads, plan.Hierarchical.Layout,
            ResizeBackward(s, dHUp["x"], plan.Hierarchical.Layout.Grid));
        var dHDown = s.Gradients("depthwise_conv2d", s_none, ResizeBackward(s, dHierIn, plan.Hierarchical.InputGrid),
            [("x", x5), ("weight", hDownW), ("bias", hDownB)], "x", "weight", "bias");
        g.Add("downsample_conv_hierachcal.weight", dHDown["weight"]);
        g.Add("downsample_conv_hierachcal.bias", dHDown["bias"]);
        dx = s.Add(dx, dHDown["x"]);

        g.Add("x", dx.Reshape(tokenShape));
    }
}
