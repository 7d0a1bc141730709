using UltraGen.Core;
using UltraGen.Cuda.Interop;
using UltraGen.Cuda.Launchers;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Cuda;

/// <summary>
/// The native NVIDIA backend: tensors in device memory (<see cref="CudaStorage"/>), primitives run by the nvcc-built PTX
/// kernels through the typed launchers in <c>Launchers/</c>, dense products (linear) by cuBLAS. bf16 window attention runs
/// natively on the tensor-core kernels (<see cref="TryForwardNative"/>); every other bf16/f16 op is widened to f32 by
/// <see cref="KernelBackend"/>. Work is queued on one stream per backend; copies to the host wait for it.
/// </summary>
public sealed class CudaBackend : KernelBackend
{
    /// <summary>Primitives with a launcher here; anything else reports itself unsupported (skipped by the harness, never faked).</summary>
    private static readonly Dictionary<string, string> s_kernels = new(StringComparer.Ordinal)
    {
        ["add"] = ElementwiseLauncher.Module,
        ["gelu_tanh"] = ElementwiseLauncher.Module,
        ["silu"] = ElementwiseLauncher.Module,
        ["sigmoid"] = ElementwiseLauncher.Module,
        ["gate_fusion"] = ElementwiseLauncher.Module,
        ["rms_norm"] = NormsLauncher.Module,
        ["layer_norm"] = NormsLauncher.Module,
        ["modulate"] = NormsLauncher.Module,
        ["depthwise_conv2d"] = SpatialLauncher.Module,
        ["depthwise_conv3d"] = SpatialLauncher.Module,
        ["bilinear_resize"] = SpatialLauncher.Module,
        ["timestep_embedding"] = TimestepLauncher.Module,
        ["window_attention"] = WindowAttentionLauncher.Module,
        ["cross_attention"] = CrossAttentionLauncher.Module,
        ["linear"] = "cublas",
        ["gated_residual"] = ElementwiseLauncher.Module, ["patchify"] = PatchifyLauncher.Module, ["unpatchify"] = PatchifyLauncher.Module,
    };

    /// <summary>Modules every op needs besides its own: reductions finish in elementwise, dtype widening in convert.</summary>
    private static readonly Dictionary<string, string[]> s_extraModules = new(StringComparer.Ordinal)
    {
        [NormsLauncher.Module] = [ElementwiseLauncher.Module],
        [SpatialLauncher.Module] = [ElementwiseLauncher.Module],
        [WindowAttentionLauncher.Module] = [WindowAttentionLauncher.BackwardModule],
        [CrossAttentionLauncher.Module] = [WindowAttentionLauncher.BackwardModule, ElementwiseLauncher.Module],
    };

    private readonly CudaDevice _device;
    private readonly PtxModules _modules;
    private IntPtr _stream;
    private readonly LaunchContext _context;
    private readonly ElementwiseLauncher _elementwise;
    private readonly NormsLauncher _norms;
    private readonly SpatialLauncher _spatial;
    private readonly TimestepLauncher _timestep;
    private readonly ConvertLauncher _convert;
    private readonly WindowAttentionLauncher _attention;
    private readonly PatchifyLauncher _patchify;
    private readonly CrossAttentionLauncher _crossAttention;
    private readonly Lazy<Cublas> _cublas;
    private readonly Dictionary<(string Kind, long Size, double Theta, int Extra), CudaStorage> _constants = [];

    public CudaBackend(CudaDevice device, PtxModules modules)
    {
        _device = device;
        _modules = modules;
        _device.MakeCurrent();
        _stream = CudaDriver.CreateStream();
        _context = new LaunchContext(device, modules, _stream);
        _elementwise = new ElementwiseLauncher(_context);
        _norms = new NormsLauncher(_context, _elementwise);
        _spatial = new SpatialLauncher(_context, _elementwise);
        _timestep = new TimestepLauncher(_context);
        _convert = new ConvertLauncher(_context);
        _attention = new WindowAttentionLauncher(_context);
        _patchify = new PatchifyLauncher(_context);
        _crossAttention = new CrossAttentionLauncher(_context, _elementwise);
        _cublas = new Lazy<Cublas>(() =>
        {
            _device.MakeCurrent();
            return new Cublas(_stream);
        });
    }

    public override string Name => "cuda";

    public override string Description => $"{_device} · PTX sm{_modules.ComputeCapability} from {_modules.Directory} ({_modules.Origin})";

    public CudaDevice Device => _device;

    public IntPtr Stream => _stream;

    internal LaunchContext LaunchContext => _context;

    /// <summary>
    /// The bf16 window-attention forward kernel this backend launches (64 or 128 queries per block; same function, speed
    /// only). Benchmarks and the cuda tests switch it; everything else keeps the default.
    /// </summary>
    public AttentionForwardTile AttentionForwardTile
    {
        get => _attention.ForwardTile;
        set => _attention.ForwardTile = value;
    }

    /// <summary>
    /// How f32 window attention runs — the DiT and the attention composites are f32 on this backend, so this is the
    /// model's self-attention. <see cref="AttentionPrecision.F32"/> (default): the SIMT f32 kernels, exact to f32.
    /// <see cref="AttentionPrecision.Bf16"/>: q, k, v (and dO) rounded to bf16 for the tensor-core kernels (f32
    /// accumulation and softmax), results widened back to f32 — the precision the reference pipeline runs its attention
    /// in, at the tensor cores' rate instead of the f32 units'. bf16 tensors always take the tensor-core kernels.
    /// </summary>
    public AttentionPrecision F32AttentionPrecision { get; set; } = AttentionPrecision.F32;

    /// <summary>A timer on this backend's stream (benchmarks: <see cref="CudaTimer.Median"/>).</summary>
    public CudaTimer CreateTimer()
    {
        _device.MakeCurrent();
        return new CudaTimer(_stream);
    }

    /// <summary>Waits for all queued work (surfacing asynchronous kernel faults).</summary>
    public void Synchronize()
    {
        _device.MakeCurrent();
        CudaDriver.SynchronizeStream(_stream);
    }

    protected override string? Limitation(Op op, DType dtype)
    {
        if (!KernelBackend.PrimitiveOps.Contains(op.Name)) return null;
        if (!s_kernels.TryGetValue(op.Name, out var module)) return $"no cuda launcher for '{op.Name}' yet";
        if (module == "cublas") return Cublas.Unavailable();
        IEnumerable<string> needed = [module, .. s_extraModules.GetValueOrDefault(module, []), .. dtype == DType.F32 ? [] : new[] { ConvertLauncher.Module }];
        foreach (var name in needed)
        {
            try { _modules.PathOf(name); }
            catch (PtxNotFoundException e) { return e.Message; }
        }
        return null;
    }

    /// <summary>
    /// The kernels' shape limits for one case: attention head dims 32, 64 and 128 (also inside the attention composites),
    /// depthwise conv2d kernels up to 4×4, conv3d exactly 3×3×3.
    /// </summary>
    protected override string? CaseLimitation(Op op, DType dtype, IReadOnlyDictionary<string, int[]> inputShapes, OpParams parameters)
    {
        switch (op.Name)
        {
            case "window_attention":
                return WindowAttentionLauncher.Limitation(inputShapes["q"][4] / parameters.GetInt("heads"));
            case "cross_attention":
                return CrossAttentionLauncher.Limitation(inputShapes["q"][2] / parameters.GetInt("heads"));
            case "wan_self_attention":
            case "ultragen_self_attention":
                return WindowAttentionLauncher.Limitation(inputShapes["x"][2] / parameters.GetInt("heads"));
            case "depthwise_conv2d":
                return SpatialLauncher.Conv2dLimitation(inputShapes["weight"][2], inputShapes["weight"][3]);
            case "depthwise_conv3d":
                var w = inputShapes["weight"];
                return SpatialLauncher.Conv3dLimitation(w[2], w[3], w[4]);
            default:
                return null;
        }
    }

    // ---- memory ----

    private readonly MemoryCounter _allocations = new();

    public override Tensor Allocate(DType dtype, int[] shape)
    {
        long bytes = checked(Shape.ElementCount(shape) * DTypes.SizeOf(dtype));
        return new Tensor(dtype, shape, new CudaStorage(_device, bytes, _allocations));
    }

    /// <summary>The tensors <see cref="Allocate"/> handed out (launcher scratch, cached constants and cuBLAS's workspace are not counted).</summary>
    public override MemoryCounter Allocations => _allocations;

    /// <summary>The device's total memory (cuMemGetInfo).</summary>
    public override long? MemoryCapacity => _device.TotalMemory;

    private static IntPtr Ptr(Tensor tensor) => tensor.Storage is CudaStorage storage
        ? storage.Pointer
        : throw new UnsupportedConfigurationException($"cuda backend: {tensor} is not in CUDA memory; allocate it with this backend");

    private static IntPtr PtrOrZero(Tensor? tensor) => tensor is null ? IntPtr.Zero : Ptr(tensor);

    private static void CheckSameLayout(Tensor source, Tensor destination)
    {
        if (source.DType != destination.DType || !source.Shape.SequenceEqual(destination.Shape))
            throw new ShapeMismatchException($"cannot copy {source} into {destination}");
    }

    public override unsafe void CopyFromHost(Tensor host, Tensor destination)
    {
        CheckSameLayout(host, destination);
        var storage = host.Storage as HostStorage ?? throw new UnsupportedConfigurationException($"cuda backend: {host} is not a host tensor");
        _device.MakeCurrent();
        CudaDriver.SynchronizeStream(_stream); // the destination may still be read by queued kernels
        CudaDriver.CopyHostToDevice(Ptr(destination), (void*)storage.Pointer, destination.ByteCount);
    }

    public override unsafe void CopyToHost(Tensor source, Tensor host)
    {
        CheckSameLayout(source, host);
        var storage = host.Storage as HostStorage ?? throw new UnsupportedConfigurationException($"cuda backend: {host} is not a host tensor");
        _device.MakeCurrent();
        CudaDriver.SynchronizeStream(_stream, "queued kernels before a copy to the host");
        CudaDriver.CopyDeviceToHost((void*)storage.Pointer, Ptr(source), source.ByteCount);
    }

    public override void Convert(Tensor source, Tensor destination)
    {
        if (source.ElementCount != destination.ElementCount)
            throw new ShapeMismatchException($"cannot convert {source} into {destination}: element counts differ");
        _device.MakeCurrent();
        if (source.DType == destination.DType)
        {
            CudaDriver.SynchronizeStream(_stream);
            CudaDriver.CopyDeviceToDevice(Ptr(destination), Ptr(source), source.ByteCount);
        }
        else _convert.Convert(source.DType, destination.DType, Ptr(source), Ptr(destination), source.ElementCount);
    }

    // ---- cached constant buffers (ones for the GEMM bias tricks, RoPE tables) ----

    private IntPtr Constant(string kind, long count, double theta, int extra, Func<float[]> values)
    {
        var key = (kind, count, theta, extra);
        if (!_constants.TryGetValue(key, out var storage))
        {
            var data = values();
            storage = new CudaStorage(_device, 4L * data.Length);
            unsafe
            {
                fixed (float* pointer = data) CudaDriver.CopyHostToDevice(storage.Pointer, pointer, 4L * data.Length);
            }
            _constants[key] = storage;
        }
        return storage.Pointer;
    }

    private IntPtr Ones(long count) => Constant("ones", count, 0, 0, () => Enumerable.Repeat(1f, checked((int)count)).ToArray());

    private RopeParams Rope(OpParams parameters, int headDim, WindowLayoutParams layout)
    {
        if (!parameters.GetBool("rope", true)) return RopeParams.Disabled;
        double theta = parameters.GetDouble("rope_theta", Ops.Rope3d.DefaultTheta);
        int positions = LaunchGeometry.RopeMinPositions(layout);
        var table = Constant("rope", positions, theta, headDim, () => LaunchGeometry.RopeTable(headDim, theta, positions));
        return new RopeParams(1, positions, table);
    }

    // ---- ops ----

    private static int LastDim(Tensor x) => x.Dim(-1);

    private static long Rows(Tensor x) => x.ElementCount / LastDim(x);

    private WindowAttentionLauncher.Shape AttentionShape(Tensor q, OpParams parameters)
    {
        int heads = parameters.GetInt("heads");
        var layout = WindowAttentionOp.LayoutFor(new Core.Layout.Grid3(q.Dim(1), q.Dim(2), q.Dim(3)), parameters);
        return new WindowAttentionLauncher.Shape(q.Dim(0), heads, q.Dim(4) / heads, WindowLayoutParams.From(layout));
    }

    private static CrossAttentionLauncher.Shape CrossShape(IReadOnlyDictionary<string, Tensor> inputs, OpParams parameters)
    {
        var (q, k) = (inputs["q"], inputs["k"]);
        int heads = parameters.GetInt("heads");
        return new CrossAttentionLauncher.Shape(q.Dim(0), q.Dim(1), k.Dim(1), heads, q.Dim(2) / heads);
    }

    protected override bool TryForwardNative(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        if (op.Name != "window_attention" || inputs["q"].DType != DType.BF16) return false;
        var shape = AttentionShape(inputs["q"], parameters);
        if (WindowAttentionLauncher.Limitation(shape.HeadDim) is not null) return false;
        _device.MakeCurrent();
        _attention.Forward(DType.BF16, Ptr(inputs["q"]), Ptr(inputs["k"]), Ptr(inputs["v"]), Ptr(outputs["o"]), IntPtr.Zero, shape,
            Rope(parameters, shape.HeadDim, shape.Layout));
        return true;
    }

    protected override bool TryBackwardNative(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters)
    {
        if (op.Name != "window_attention" || inputs["q"].DType != DType.BF16) return false;
        var shape = AttentionShape(inputs["q"], parameters);
        if (WindowAttentionLauncher.Limitation(shape.HeadDim) is not null) return false;
        _device.MakeCurrent();
        AttentionBackward(DType.BF16, inputs, outputGradients, inputGradients, parameters, shape);
        return true;
    }

    private void AttentionBackward(DType dtype, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters, WindowAttentionLauncher.Shape shape)
    {
        var scratch = new List<CudaStorage>();
        try
        {
            IntPtr Gradient(string name)
            {
                if (inputGradients.TryGetValue(name, out var tensor)) return Ptr(tensor);
                var unwanted = _context.Scratch(shape.Elements * DTypes.SizeOf(dtype));
                scratch.Add(unwanted);
                return unwanted.Pointer;
            }
            _attention.Backward(dtype, Ptr(inputs["q"]), Ptr(inputs["k"]), Ptr(inputs["v"]), Ptr(outputGradients["o"]),
                Gradient("q"), Gradient("k"), Gradient("v"), shape, Rope(parameters, shape.HeadDim, shape.Layout));
        }
        finally
        {
            foreach (var storage in scratch) storage.Dispose();
        }
    }

    /// <summary>A bf16 copy (round to nearest even) of an f32 device tensor, in scratch memory.</summary>
    private CudaStorage Narrowed(Tensor x)
    {
        var copy = _context.Scratch(x.ElementCount * 2);
        _convert.Convert(DType.F32, DType.BF16, Ptr(x), copy.Pointer, x.ElementCount);
        return copy;
    }

    /// <summary>f32 window-attention backward through the bf16 tensor-core kernels (<see cref="AttentionPrecision.Bf16"/>).</summary>
    private void Bf16AttentionBackward(IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters, WindowAttentionLauncher.Shape shape)
    {
        using var q = Narrowed(inputs["q"]);
        using var k = Narrowed(inputs["k"]);
        using var v = Narrowed(inputs["v"]);
        using var dO = Narrowed(outputGradients["o"]);
        using var dq = _context.Scratch(shape.Elements * 2);
        using var dk = _context.Scratch(shape.Elements * 2);
        using var dv = _context.Scratch(shape.Elements * 2);
        _attention.Backward(DType.BF16, q.Pointer, k.Pointer, v.Pointer, dO.Pointer, dq.Pointer, dk.Pointer, dv.Pointer, shape,
            Rope(parameters, shape.HeadDim, shape.Layout));
        foreach (var (name, gradient) in new[] { ("q", dq), ("k", dk), ("v", dv) })
            if (inputGradients.TryGetValue(name, out var target))
                _convert.Convert(DType.BF16, DType.F32, gradient.Pointer, Ptr(target), shape.Elements);
    }

    protected override void ForwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        _device.MakeCurrent();
        var y = outputs.Values.Single();
        switch (op.Name)
        {
            case "add":
                _elementwise.Add(Ptr(inputs["a"]), Ptr(inputs["b"]), Ptr(y), y.ElementCount);
                break;
            case "gelu_tanh" or "silu" or "sigmoid":
                _elementwise.ActivationForward(op.Name, Ptr(inputs["x"]), Ptr(y), y.ElementCount);
                break;
            case "gate_fusion":
            {
                var local = inputs["local"];
                _elementwise.GateFusionForward(Ptr(local), Ptr(inputs["hier"]), Ptr(inputs["glob"]), Ptr(inputs["alpha"]), Ptr(inputs["beta"]), Ptr(y),
                    local.Dim(0), local.Dim(1), local.Dim(2));
                break;
            }
            case "rms_norm":
                _norms.RmsNormForward(Ptr(inputs["x"]), Ptr(inputs["weight"]), Ptr(y), Rows(inputs["x"]), LastDim(inputs["x"]),
                    (float)parameters.GetDouble("eps", RmsNormOp.DefaultEps));
                break;
            case "layer_norm":
            {
                var x = inputs["x"];
                int dim = LastDim(x);
                _norms.LayerNormForward(Ptr(x), PtrOrZero(inputs.GetValueOrDefault("weight")), PtrOrZero(inputs.GetValueOrDefault("bias")), Ptr(y), Rows(x), dim,
                    (float)parameters.GetDouble("eps", LayerNormOp.DefaultEps));
                break;
            }
            case "modulate":
            {
                var x = inputs["x"];
                _norms.ModulateForward(Ptr(x), Ptr(inputs["shift"]), Ptr(inputs["scale"]), Ptr(y), x.Dim(0), x.Dim(1), x.Dim(2));
                break;
            }
            case "depthwise_conv2d":
            {
                var (x, w) = (inputs["x"], inputs["weight"]);
                _spatial.DepthwiseConv2dForward(Ptr(x), Ptr(w), PtrOrZero(inputs.GetValueOrDefault("bias")), Ptr(y),
                    VideoDims.Of(x), w.Dim(2), w.Dim(3));
                break;
            }
            case "depthwise_conv3d":
            {
                var (x, w) = (inputs["x"], inputs["weight"]);
                _spatial.DepthwiseConv3dForward(Ptr(x), Ptr(w), PtrOrZero(inputs.GetValueOrDefault("bias")), Ptr(y),
                    VideoDims.Of(x), w.Dim(2), w.Dim(3), w.Dim(4));
                break;
            }
            case "bilinear_resize":
                _spatial.BilinearResizeForward(Ptr(inputs["x"]), Ptr(y), VideoDims.Of(inputs["x"]), parameters.GetInt("out_h"), parameters.GetInt("out_w"));
                break;
            case "timestep_embedding":
                _timestep.Forward(Ptr(inputs["t"]), Ptr(y), y.Dim(0), y.Dim(1));
                break;
            case "window_attention":
            {
                var shape = AttentionShape(inputs["q"], parameters);
                var rope = Rope(parameters, shape.HeadDim, shape.Layout);
                if (F32AttentionPrecision == AttentionPrecision.Bf16)
                {
                    using var q = Narrowed(inputs["q"]);
                    using var k = Narrowed(inputs["k"]);
                    using var v = Narrowed(inputs["v"]);
                    using var o = _context.Scratch(shape.Elements * 2);
                    _attention.Forward(DType.BF16, q.Pointer, k.Pointer, v.Pointer, o.Pointer, IntPtr.Zero, shape, rope);
                    _convert.Convert(DType.BF16, DType.F32, o.Pointer, Ptr(y), shape.Elements);
                }
                else
                {
                    _attention.Forward(DType.F32, Ptr(inputs["q"]), Ptr(inputs["k"]), Ptr(inputs["v"]), Ptr(y), IntPtr.Zero, shape, rope);
                }
                break;
            }
            case "cross_attention":
                _crossAttention.Forward(Ptr(inputs["q"]), Ptr(inputs["k"]), Ptr(inputs["v"]), Ptr(y), IntPtr.Zero, CrossShape(inputs, parameters));
                break;
            case "linear":
                LinearForward(inputs["x"], inputs["weight"], inputs.GetValueOrDefault("bias"), y);
                break;
            case "gated_residual":
            {
                var x = inputs["x"];
                _elementwise.GatedResidualForward(Ptr(x), Ptr(inputs["y"]), Ptr(inputs["gate"]), Ptr(y), x.Dim(0), x.Dim(1), x.Dim(2));
                break;
            }
            case "patchify": _patchify.Patchify(Ptr(inputs["video"]), Ptr(y), PatchLayout.OfVideo(inputs["video"].ShapeArray, parameters, op.Name)); break;
            case "unpatchify": _patchify.Unpatchify(Ptr(inputs["tokens"]), Ptr(y), PatchLayout.OfTokens(inputs["tokens"].ShapeArray, parameters, op.Name)); break;
            default:
                throw new UnsupportedConfigurationException($"cuda backend: no forward launcher for '{op.Name}'");
        }
    }

    protected override void BackwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters)
    {
        _device.MakeCurrent();
        var dy = outputGradients.Values.Single();
        IntPtr Grad(string name) => PtrOrZero(inputGradients.GetValueOrDefault(name));
        switch (op.Name)
        {
            case "add":
                foreach (var gradient in inputGradients.Values) Convert(dy, gradient);
                break;
            case "gelu_tanh" or "silu" or "sigmoid":
                if (inputGradients.TryGetValue("x", out var dx))
                    _elementwise.ActivationBackward(op.Name, Ptr(inputs["x"]), Ptr(dy), Ptr(dx), dy.ElementCount);
                break;
            case "gate_fusion":
            {
                var local = inputs["local"];
                _elementwise.GateFusionBackward(Ptr(local), Ptr(inputs["hier"]), Ptr(inputs["glob"]), Ptr(inputs["alpha"]), Ptr(inputs["beta"]), Ptr(dy),
                    Grad("local"), Grad("hier"), Grad("glob"), Grad("alpha"), Grad("beta"), local.Dim(0), local.Dim(1), local.Dim(2));
                break;
            }
            case "rms_norm":
                _norms.RmsNormBackward(Ptr(inputs["x"]), Ptr(inputs["weight"]), Ptr(dy), Grad("x"), Grad("weight"), Rows(inputs["x"]), LastDim(inputs["x"]),
                    (float)parameters.GetDouble("eps", RmsNormOp.DefaultEps));
                break;
            case "layer_norm":
            {
                var x = inputs["x"];
                int dim = LastDim(x);
                _norms.LayerNormBackward(Ptr(x), PtrOrZero(inputs.GetValueOrDefault("weight")), Ptr(dy), Grad("x"), Grad("weight"), Grad("bias"),
                    Rows(x), dim, (float)parameters.GetDouble("eps", LayerNormOp.DefaultEps));
                break;
            }
            case "modulate":
            {
                var x = inputs["x"];
                _norms.ModulateBackward(Ptr(x), Ptr(inputs["scale"]), Ptr(dy), Grad("x"), Grad("shift"), Grad("scale"), x.Dim(0), x.Dim(1), x.Dim(2));
                break;
            }
            case "depthwise_conv2d":
            {
                var (x, w) = (inputs["x"], inputs["weight"]);
                _spatial.DepthwiseConv2dBackward(Ptr(x), Ptr(w), Ptr(dy), Grad("x"), Grad("weight"), Grad("bias"), VideoDims.Of(x), w.Dim(2), w.Dim(3));
                break;
            }
            case "depthwise_conv3d":
            {
                var (x, w) = (inputs["x"], inputs["weight"]);
                _spatial.DepthwiseConv3dBackward(Ptr(x), Ptr(w), Ptr(dy), Grad("x"), Grad("weight"), Grad("bias"), VideoDims.Of(x), w.Dim(2), w.Dim(3), w.Dim(4));
                break;
            }
            case "bilinear_resize":
                if (inputGradients.ContainsKey("x"))
                    _spatial.BilinearResizeBackward(Ptr(dy), Grad("x"), VideoDims.Of(inputs["x"]), parameters.GetInt("out_h"), parameters.GetInt("out_w"));
                break;
            case "timestep_embedding":
                if (inputGradients.ContainsKey("t"))
                    _timestep.Backward(Ptr(inputs["t"]), Ptr(dy), Grad("t"), dy.Dim(0), dy.Dim(1));
                break;
            case "window_attention":
                if (F32AttentionPrecision == AttentionPrecision.Bf16)
                    Bf16AttentionBackward(inputs, outputGradients, inputGradients, parameters, AttentionShape(inputs["q"], parameters));
                else
                    AttentionBackward(DType.F32, inputs, outputGradients, inputGradients, parameters, AttentionShape(inputs["q"], parameters));
                break;
            case "cross_attention":
                _crossAttention.Backward(Ptr(inputs["q"]), Ptr(inputs["k"]), Ptr(inputs["v"]), Ptr(dy), Grad("q"), Grad("k"), Grad("v"),
                    CrossShape(inputs, parameters));
                break;
            case "linear":
                LinearBackward(inputs["x"], inputs["weight"], dy, inputGradients.GetValueOrDefault("x"), inputGradients.GetValueOrDefault("weight"),
                    inputGradients.GetValueOrDefault("bias"));
                break;
            case "gated_residual":
            {
                var branch = inputs["y"];
                _elementwise.GatedResidualBackward(Ptr(branch), Ptr(inputs["gate"]), Ptr(dy), Grad("x"), Grad("y"), Grad("gate"),
                    branch.Dim(0), branch.Dim(1), branch.Dim(2));
                break;
            }
            case "patchify":
                if (inputGradients.ContainsKey("video"))
                    _patchify.Unpatchify(Ptr(dy), Grad("video"), PatchLayout.OfVideo(inputs["video"].ShapeArray, parameters, op.Name));
                break;
            case "unpatchify":
                if (inputGradients.ContainsKey("tokens"))
                    _patchify.Patchify(Ptr(dy), Grad("tokens"), PatchLayout.OfTokens(inputs["tokens"].ShapeArray, parameters, op.Name));
                break;
            default:
                throw new UnsupportedConfigurationException($"cuda backend: no backward launcher for '{op.Name}'");
        }
    }

    // ---- linear through cuBLAS (see GemmCall for the row-major ↔ column-major mapping) ----

    private void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        int outFeatures = weight.Dim(0), inFeatures = weight.Dim(1), rows = LaunchContext.Count(Rows(x), "linear rows (cuBLAS int)");
        var blas = _cublas.Value;
        blas.Gemm(GemmCall.LinearForward(rows, inFeatures, outFeatures), Ptr(x), Ptr(weight), Ptr(y), what: "linear y = x·Wᵀ");
        // y += 1·bᵀ: the bias broadcast over rows as a rank-1 GEMM (k = 1) accumulating into y (beta = 1).
        if (bias is not null)
            blas.Gemm(GemmCall.BiasBroadcast(rows, outFeatures), Ones(rows), Ptr(bias), Ptr(y), beta: 1f, what: "linear y += 1·bᵀ");
    }

    private void LinearBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        int outFeatures = weight.Dim(0), inFeatures = weight.Dim(1), rows = LaunchContext.Count(Rows(x), "linear rows (cuBLAS int)");
        var blas = _cublas.Value;
        if (dx is not null) blas.Gemm(GemmCall.LinearBackwardInput(rows, inFeatures, outFeatures), Ptr(dy), Ptr(weight), Ptr(dx), what: "linear dx = dy·W");
        if (dWeight is not null) blas.Gemm(GemmCall.LinearBackwardWeight(rows, inFeatures, outFeatures), Ptr(dy), Ptr(x), Ptr(dWeight), what: "linear dW = dyᵀ·x");
        // db = dyᵀ·1: the column sums of dy as a GEMM with a ones vector (no extra kernel, deterministic in cuBLAS).
        if (dBias is not null) blas.Gemm(GemmCall.BiasGradient(rows, outFeatures), Ptr(dy), Ones(rows), Ptr(dBias), what: "linear db = dyᵀ·1");
    }

    public override void Dispose()
    {
        if (_stream != IntPtr.Zero)
        {
            try
            {
                _device.MakeCurrent();
                CudaDriver.SynchronizeStream(_stream);
            }
            catch (CudaException) { } // a faulted context still lets us release what we hold
            if (_cublas.IsValueCreated) _cublas.Value.Dispose();
            foreach (var storage in _constants.Values) storage.Dispose();
            _constants.Clear();
            CudaDriver.DestroyStream(_stream);
            _stream = IntPtr.Zero;
        }
        base.Dispose();
    }
}
