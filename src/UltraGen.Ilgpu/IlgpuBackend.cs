using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using UltraGen.Core;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Ilgpu;

/// <summary>
/// Launch sizes for one accelerator. GPUs get 256-thread groups and a grid of a few groups per multiprocessor for
/// grid-stride loops; the CPU accelerator emulates every group thread with an OS thread and a barrier costs a context
/// switch per thread, so it gets 64-thread groups and a grid of two groups per simulated multiprocessor.
/// </summary>
internal readonly record struct LaunchShape(int GroupSize, int MaxGroups)
{
    /// <summary>Largest group any kernel here launches; shared-memory scratch is sized for it.</summary>
    public const int MaxGroupSize = 256;

    /// <summary>Groups for a grid-stride loop over <paramref name="count"/> items, one item per thread per step.</summary>
    public int GroupsFor(long count) => (int)Math.Clamp((count + GroupSize - 1) / GroupSize, 1, MaxGroups);

    public KernelConfig Stride(long count) => new(GroupsFor(count), GroupSize);
}

/// <summary>
/// The process-wide ILGPU state: one context, one accelerator (a CUDA device when there is one, else the CPU
/// accelerator) and every kernel loaded once into typed delegates. Device work from all <see cref="IlgpuBackend"/>
/// handles is serialised by <see cref="Sync"/> (tests run in parallel; the accelerator's default stream is shared).
/// </summary>
internal sealed class IlgpuDevice : IDisposable
{
    public Context Context { get; }
    public Accelerator Accelerator { get; }
    public LaunchShape Shape { get; }
    public bool IsGpu { get; }
    public object Sync { get; } = new();

    public IlgpuConversions Conversions { get; }
    public IlgpuReductions Reductions { get; }
    public IlgpuElementwise Elementwise { get; }
    public IlgpuLinear Linear { get; }
    public IlgpuNorms Norms { get; }
    public IlgpuSpatial Spatial { get; }
    public IlgpuTimestep Timestep { get; }
    public IlgpuWindowAttention WindowAttention { get; }
    public IlgpuDitLayout DitLayout { get; }
    public IlgpuCrossAttention CrossAttention { get; }

    public IlgpuDevice()
    {
        // 32-thread warps like NVIDIA hardware, 2 warps per simulated multiprocessor (64-thread groups), one
        // multiprocessor per core.
        var cpu = new CPUDevice(32, 2, Math.Max(1, Environment.ProcessorCount));
        Context = Context.Create(builder => builder.Cuda().CPU(cpu).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        try
        {
            var cudaDevices = Context.GetCudaDevices();
            if (cudaDevices.Count > 0)
            {
                Accelerator = cudaDevices[0].CreateAccelerator(Context);
                IsGpu = true;
                Shape = new LaunchShape(256, Accelerator.NumMultiprocessors * 8);
            }
            else
            {
                Accelerator = Context.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
                Shape = new LaunchShape(64, Accelerator.NumMultiprocessors * 2);
            }
            Conversions = new IlgpuConversions(Accelerator, Shape);
            Reductions = new IlgpuReductions(Accelerator, Shape);
            Elementwise = new IlgpuElementwise(Accelerator, Shape);
            Linear = new IlgpuLinear(Accelerator, Shape);
            Norms = new IlgpuNorms(Accelerator, Shape);
            Spatial = new IlgpuSpatial(Accelerator, Shape);
            Timestep = new IlgpuTimestep(Accelerator, Shape);
            WindowAttention = new IlgpuWindowAttention(Accelerator);
            DitLayout = new IlgpuDitLayout(Accelerator, Shape);
            CrossAttention = new IlgpuCrossAttention(Accelerator, Reductions);
        }
        catch
        {
            Accelerator?.Dispose();
            Context.Dispose();
            throw;
        }
    }

    public string Description =>
        $"ILGPU {(IsGpu ? "CUDA" : "CPU")} accelerator '{Accelerator.Name}' ({Accelerator.NumMultiprocessors} multiprocessors, " +
        $"groups of {Shape.GroupSize}{(IsGpu ? "" : "; a test device, slower than the cpu backend")})";

    public void Dispose()
    {
        Accelerator.Dispose();
        Context.Dispose();
    }
}

/// <summary>A tensor's bytes in an ILGPU buffer, with typed views for the kernels.</summary>
public sealed class IlgpuStorage : TensorStorage
{
    private MemoryBuffer1D<byte, Stride1D.Dense>? _buffer;
    private readonly IlgpuDevice _device;
    private readonly string _location;

    internal IlgpuStorage(IlgpuDevice device, long byteCount, string location) : base(byteCount)
    {
        _device = device;
        // At least 4 bytes so every typed view of an empty tensor is still valid.
        _buffer = device.Accelerator.Allocate1D<byte>(Math.Max(4, (byteCount + 3) / 4 * 4));
        _location = location;
    }

    public override string Location => _location;

    private MemoryBuffer1D<byte, Stride1D.Dense> Buffer => _buffer ?? throw new ObjectDisposedException(nameof(IlgpuStorage));

    public ArrayView<byte> Bytes => Buffer.View;

    public ArrayView<T> View<T>() where T : unmanaged => Bytes.Cast<T>();

    /// <summary>Frees the buffer once the kernels queued before this call (which may still read it) have finished.</summary>
    public override void Dispose()
    {
        if (_buffer is null) return;
        lock (_device.Sync)
        {
            _device.Accelerator.Bind();
            _device.Accelerator.Synchronize();
            _buffer.Dispose();
            _buffer = null;
        }
    }
}

/// <summary>
/// The ILGPU backend: the GPU-style fallback kernels (one file per op family) on the shared <see cref="IlgpuDevice"/>.
/// A backend is a light handle; disposing it leaves the shared accelerator alive for the next handle.
/// </summary>
public sealed class IlgpuBackend : KernelBackend
{
    /// <summary>Primitives with an ILGPU kernel; window_attention joins when IlgpuWindowAttention lands.</summary>
    private static readonly HashSet<string> s_kernels = new(StringComparer.Ordinal)
    {
        "add", "bilinear_resize", "cross_attention", "depthwise_conv2d", "depthwise_conv3d", "gate_fusion", "gelu_tanh", "layer_norm",
        "linear", "modulate", "rms_norm", "sigmoid", "silu", "timestep_embedding", "window_attention",
        "gated_residual", "patchify", "unpatchify",
    };

    private readonly IlgpuDevice _device;

    internal IlgpuBackend(IlgpuDevice device) => _device = device;

    public override string Name => "ilgpu";

    public override string Description => _device.Description;

    /// <summary>The GPU's memory, or on ILGPU's CPU accelerator the host memory available to the process.</summary>
    public override long? MemoryCapacity => _device.IsGpu ? _device.Accelerator.MemorySize : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Whether the accelerator is a GPU (CUDA) rather than ILGPU's CPU emulation.</summary>
    public bool IsGpu => _device.IsGpu;

    public Accelerator Accelerator => _device.Accelerator;

    protected override string? Limitation(Op op, DType dtype) =>
        KernelBackend.PrimitiveOps.Contains(op.Name) && !s_kernels.Contains(op.Name) ? $"no ilgpu kernel for '{op.Name}' yet" : null;

    private string Location => _device.IsGpu ? "cuda:0" : "ilgpu-cpu";

    public override Tensor Allocate(DType dtype, int[] shape)
    {
        long bytes = checked(Core.Shape.ElementCount(shape) * DTypes.SizeOf(dtype));
        lock (_device.Sync)
        {
            _device.Accelerator.Bind();
            return new Tensor(dtype, shape, new IlgpuStorage(_device, bytes, Location));
        }
    }

    private static IlgpuStorage StorageOf(Tensor tensor) => tensor.Storage as IlgpuStorage
        ?? throw new InvalidOperationException($"{tensor} is not an ilgpu tensor");

    /// <summary>The f32 elements of a device tensor.</summary>
    internal static ArrayView<float> F32(Tensor tensor)
    {
        if (tensor.DType != DType.F32) throw new InvalidOperationException($"{tensor}: kernels take f32");
        return StorageOf(tensor).View<float>().SubView(0, tensor.ElementCount);
    }

    internal static ArrayView<float> F32OrEmpty(Tensor? tensor) => tensor is null ? ArrayView<float>.Empty : F32(tensor);

    private static void CheckSameLayout(Tensor a, Tensor b)
    {
        if (a.DType != b.DType || !a.Shape.SequenceEqual(b.Shape))
            throw new ShapeMismatchException($"cannot copy {a} into {b}");
    }

    public override void CopyFromHost(Tensor host, Tensor destination)
    {
        CheckSameLayout(host, destination);
        lock (_device.Sync)
        {
            _device.Accelerator.Bind();
            StorageOf(destination).Bytes.SubView(0, destination.ByteCount).CopyFromCPU(host.HostBytes);
        }
    }

    public override void CopyToHost(Tensor source, Tensor host)
    {
        CheckSameLayout(source, host);
        lock (_device.Sync)
        {
            _device.Accelerator.Bind();
            _device.Accelerator.Synchronize();
            StorageOf(source).Bytes.SubView(0, source.ByteCount).CopyToCPU(host.HostBytes);
        }
    }

    public override void Convert(Tensor source, Tensor destination)
    {
        if (source.ElementCount != destination.ElementCount)
            throw new ShapeMismatchException($"cannot convert {source} into {destination}: element counts differ");
        lock (_device.Sync)
        {
            _device.Accelerator.Bind();
            var from = StorageOf(source);
            var to = StorageOf(destination);
            if (source.DType == destination.DType)
                from.Bytes.SubView(0, source.ByteCount).CopyTo(to.Bytes.SubView(0, destination.ByteCount));
            else
                _device.Conversions.Convert(from, source.DType, to, destination.DType, checked((int)source.ElementCount));
        }
    }

    protected override void ForwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputs, OpParams parameters)
    {
        lock (_device.Sync)
        {
            _device.Accelerator.Bind();
            var d = _device;
            Tensor? Optional(string name) => inputs.GetValueOrDefault(name);
            switch (op.Name)
            {
                case "add": d.Elementwise.Add(inputs["a"], inputs["b"], outputs["y"]); break;
                case "gelu_tanh": d.Elementwise.Activation(IlgpuElementwise.GeluTanh, inputs["x"], outputs["y"]); break;
                case "silu": d.Elementwise.Activation(IlgpuElementwise.Silu, inputs["x"], outputs["y"]); break;
                case "sigmoid": d.Elementwise.Activation(IlgpuElementwise.Sigmoid, inputs["x"], outputs["y"]); break;
                case "gate_fusion":
                    d.Elementwise.GateFusion(inputs["local"], inputs["hier"], inputs["glob"], inputs["alpha"], inputs["beta"], outputs["z"]);
                    break;
                case "modulate": d.Elementwise.Modulate(inputs["x"], inputs["shift"], inputs["scale"], outputs["y"]); break;
                case "linear": d.Linear.Forward(inputs["x"], inputs["weight"], Optional("bias"), outputs["y"]); break;
                case "rms_norm": d.Norms.RmsNorm(inputs["x"], inputs["weight"], outputs["y"], parameters.GetDouble("eps", RmsNormOp.DefaultEps)); break;
                case "layer_norm":
                    d.Norms.LayerNorm(inputs["x"], Optional("weight"), Optional("bias"), outputs["y"], parameters.GetDouble("eps", LayerNormOp.DefaultEps));
                    break;
                case "depthwise_conv2d": d.Spatial.Conv2d(inputs["x"], inputs["weight"], Optional("bias"), outputs["y"]); break;
                case "depthwise_conv3d": d.Spatial.Conv3d(inputs["x"], inputs["weight"], Optional("bias"), outputs["y"]); break;
                case "bilinear_resize": d.Spatial.Resize(inputs["x"], outputs["y"]); break;
                case "timestep_embedding": d.Timestep.Forward(inputs["t"], outputs["embedding"]); break;
                case "window_attention":
                {
                    var q = inputs["q"];
                    d.WindowAttention.Forward(F32(q), F32(inputs["k"]), F32(inputs["v"]), F32(outputs["o"]), q.Dim(0),
                        parameters.GetInt("heads"), q.Dim(4) / parameters.GetInt("heads"), LayoutOf(q, parameters),
                        parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", 10000));
                    break;
                }
                case "gated_residual": d.Elementwise.GatedResidual(inputs["x"], inputs["y"], inputs["gate"], outputs["out"]); break;
                case "patchify": d.DitLayout.Patchify(inputs["video"], outputs["tokens"], PatchLayout.OfVideo(inputs["video"].ShapeArray, parameters, op.Name)); break;
                case "unpatchify": d.DitLayout.Unpatchify(inputs["tokens"], outputs["video"], PatchLayout.OfTokens(inputs["tokens"].ShapeArray, parameters, op.Name)); break;
                case "cross_attention":
                    d.CrossAttention.Forward(F32(inputs["q"]), F32(inputs["k"]), F32(inputs["v"]), F32(outputs["o"]), inputs["q"].Dim(0),
                        inputs["q"].Dim(1), inputs["k"].Dim(1), parameters.GetInt("heads"), inputs["q"].Dim(2) / parameters.GetInt("heads"));
                    break;
                default:
                    throw new UnsupportedConfigurationException($"ilgpu backend: no forward kernel for '{op.Name}'");
            }
        }
    }

    protected override void BackwardF32(Op op, IReadOnlyDictionary<string, Tensor> inputs, IReadOnlyDictionary<string, Tensor> outputGradients,
        IReadOnlyDictionary<string, Tensor> inputGradients, OpParams parameters)
    {
        lock (_device.Sync)
        {
            _device.Accelerator.Bind();
            var d = _device;
            Tensor? Optional(string name) => inputs.GetValueOrDefault(name);
            Tensor? Wanted(string name) => inputGradients.GetValueOrDefault(name);
            var dy = outputGradients.Values.Single();
            switch (op.Name)
            {
                case "add":
                    if (Wanted("a") is { } da) Convert(dy, da);
                    if (Wanted("b") is { } db) Convert(dy, db);
                    break;
                case "gelu_tanh": d.Elementwise.ActivationBackward(IlgpuElementwise.GeluTanh, inputs["x"], dy, Wanted("x")); break;
                case "silu": d.Elementwise.ActivationBackward(IlgpuElementwise.Silu, inputs["x"], dy, Wanted("x")); break;
                case "sigmoid": d.Elementwise.ActivationBackward(IlgpuElementwise.Sigmoid, inputs["x"], dy, Wanted("x")); break;
                case "gate_fusion":
                    d.Elementwise.GateFusionBackward(inputs["local"], inputs["hier"], inputs["glob"], inputs["alpha"], inputs["beta"], dy,
                        Wanted("local"), Wanted("hier"), Wanted("glob"), Wanted("alpha"), Wanted("beta"));
                    break;
                case "modulate":
                    d.Elementwise.ModulateBackward(inputs["x"], inputs["scale"], dy, Wanted("x"), Wanted("shift"), Wanted("scale"), d.Reductions);
                    break;
                case "linear":
                    d.Linear.Backward(inputs["x"], inputs["weight"], dy, Wanted("x"), Wanted("weight"), Wanted("bias"), d.Reductions);
                    break;
                case "rms_norm":
                    d.Norms.RmsNormBackward(inputs["x"], inputs["weight"], dy, Wanted("x"), Wanted("weight"),
                        parameters.GetDouble("eps", RmsNormOp.DefaultEps), d.Reductions);
                    break;
                case "layer_norm":
                    d.Norms.LayerNormBackward(inputs["x"], Optional("weight"), dy, Wanted("x"), Wanted("weight"), Wanted("bias"),
                        parameters.GetDouble("eps", LayerNormOp.DefaultEps), d.Reductions);
                    break;
                case "depthwise_conv2d":
                    d.Spatial.Conv2dBackward(inputs["x"], inputs["weight"], dy, Wanted("x"), Wanted("weight"), Wanted("bias"));
                    break;
                case "depthwise_conv3d":
                    d.Spatial.Conv3dBackward(inputs["x"], inputs["weight"], dy, Wanted("x"), Wanted("weight"), Wanted("bias"));
                    break;
                case "bilinear_resize":
                    if (Wanted("x") is { } dx) d.Spatial.ResizeBackward(dy, dx);
                    break;
                case "timestep_embedding":
                    if (Wanted("t") is { } dt) d.Timestep.Backward(inputs["t"], dy, dt);
                    break;
                case "window_attention":
                {
                    var q = inputs["q"];
                    d.WindowAttention.Backward(F32(q), F32(inputs["k"]), F32(inputs["v"]), F32(dy),
                        F32OrEmpty(Wanted("q")), F32OrEmpty(Wanted("k")), F32OrEmpty(Wanted("v")), q.Dim(0),
                        parameters.GetInt("heads"), q.Dim(4) / parameters.GetInt("heads"), LayoutOf(q, parameters),
                        parameters.GetBool("rope", true), parameters.GetDouble("rope_theta", 10000));
                    break;
                }
                case "gated_residual":
                    d.Elementwise.GatedResidualBackward(inputs["y"], inputs["gate"], dy, Wanted("x"), Wanted("y"), Wanted("gate"), d.Reductions);
                    break;
                case "patchify":
                    if (Wanted("video") is { } dVideo) d.DitLayout.Unpatchify(dy, dVideo, PatchLayout.OfVideo(inputs["video"].ShapeArray, parameters, op.Name));
                    break;
                case "unpatchify":
                    if (Wanted("tokens") is { } dTokens) d.DitLayout.Patchify(dy, dTokens, PatchLayout.OfTokens(inputs["tokens"].ShapeArray, parameters, op.Name));
                    break;
                case "cross_attention":
                    d.CrossAttention.Backward(F32(inputs["q"]), F32(inputs["k"]), F32(inputs["v"]), F32(dy), F32OrEmpty(Wanted("q")),
                        F32OrEmpty(Wanted("k")), F32OrEmpty(Wanted("v")), inputs["q"].Dim(0), inputs["q"].Dim(1), inputs["k"].Dim(1),
                        parameters.GetInt("heads"), inputs["q"].Dim(2) / parameters.GetInt("heads"));
                    break;
                default:
                    throw new UnsupportedConfigurationException($"ilgpu backend: no backward kernel for '{op.Name}'");
            }
        }
    }

    private static Core.Layout.WindowLayout LayoutOf(Tensor q, OpParams parameters) =>
        WindowAttentionOp.LayoutFor(new Core.Layout.Grid3(q.Dim(1), q.Dim(2), q.Dim(3)), parameters);
}

/// <summary>
/// Provides <see cref="IlgpuBackend"/> handles over one lazily created, process-wide <see cref="IlgpuDevice"/> (creating
/// an ILGPU context and loading the kernels costs time; the device lives until the process exits).
/// </summary>
public sealed class IlgpuBackendProvider : IBackendProvider
{
    private static readonly Lazy<(IlgpuDevice? Device, string? Error)> s_device = new(() =>
    {
        try { return (new IlgpuDevice(), null); }
        catch (Exception e) when (e is not OutOfMemoryException) { return (null, $"ILGPU could not start: {e.Message}"); }
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    public string Name => "ilgpu";

    public int AutoPriority => 20;

    public BackendProbe Probe()
    {
        var (device, error) = s_device.Value;
        return device is null ? BackendProbe.Unavailable(error!) : BackendProbe.Available(new IlgpuBackend(device));
    }

    public BackendProbe ProbeForAuto()
    {
        var (device, error) = s_device.Value;
        if (device is null) return BackendProbe.Unavailable(error!);
        if (!device.IsGpu)
            return BackendProbe.Unavailable(
                "no CUDA GPU for ILGPU; its CPU accelerator is a test device, slower than the cpu backend (use --backend ilgpu to force it)");
        return BackendProbe.Available(new IlgpuBackend(device));
    }
}
