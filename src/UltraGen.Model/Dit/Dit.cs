using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Core.Safetensors;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Model.Dit;

/// <summary>Options of a <see cref="Dit"/> instance.</summary>
public sealed record DitOptions
{
    /// <summary>
    /// Activation recomputation per block: the training forward keeps only each block's input and the backward pass
    /// recomputes the block before walking it back. Peak activation memory drops from every block's intermediates to one
    /// block's, for about one extra forward pass of compute (what lets a 1080P backward fit on one GPU).
    /// </summary>
    public bool RecomputeBlocks { get; init; }
}

/// <summary>Gradients of one <see cref="Dit.Backward"/> call, on the host, f32.</summary>
/// <param name="Parameters">Parameter gradients by checkpoint name (only the trainable ones when a filter was given).</param>
/// <param name="Latent">dL/dlatent (B, C_in, T, Hl, Wl), or null when not requested.</param>
/// <param name="Context">dL/dcontext (B, L, textDim) (feeds a trainable text encoder).</param>
public sealed record DitHostGradients(IReadOnlyDictionary<string, Tensor> Parameters, Tensor? Latent, Tensor Context) : IDisposable
{
    public void Dispose()
    {
        foreach (var tensor in Parameters.Values) tensor.Dispose();
        Latent?.Dispose();
        Context.Dispose();
    }
}

/// <summary>
/// The Wan2.1 DiT with UltraGen self-attention (spec §2.2, §1.3) on any <see cref="IBackend"/>: every layer is a
/// catalogue op running on the backend's memory, so the same code runs on Cpu, Ilgpu, Cuda and the float64 reference
/// backend, and <see cref="Reference.DitReference"/> is the definition it is tested against. Forward and backward are
/// written out layer by layer with saved activations (llm.c style, <see cref="DitBlock"/>); the self-attention layer is
/// the <c>ultragen_self_attention</c> composite op, whose backward recomputes its branches' intermediates.
/// </summary>
/// <remarks>
/// Weights live on the backend as f32 (bf16/f16 files are widened on upload). The per-sample modulation vectors
/// ((modulation + e6).chunk(6), B × 6 × D numbers per block) are formed on the host: they are tiny and it keeps the
/// broadcast-and-chunk bookkeeping out of the kernels.
/// </remarks>
public sealed class Dit : IDisposable
{
    private readonly Dictionary<string, Tensor> _weights = new(StringComparer.Ordinal);
    private readonly Dictionary<string, float[]> _hostModulations = new(StringComparer.Ordinal);

    /// <summary>Uploads <paramref name="weights"/> (every parameter of <paramref name="config"/>, any float dtype).</summary>
    public Dit(ModelConfig config, IBackend backend, IReadOnlyDictionary<string, Tensor> weights, DitOptions? options = null)
        : this(config, backend, options, UploadFrom(config, weights))
    {
    }

    /// <summary>
    /// Why <paramref name="backend"/> cannot run a DiT of <paramref name="config"/>, or null: the attention ops at the model's
    /// head dim (kernel families are compiled for some head dims only: cuda takes 32, 64 and 128) and every primitive the
    /// self-attention composites use. <c>--backend auto</c> uses it to skip such a backend.
    /// </summary>
    public static string? Limitation(IBackend backend, ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(config);
        var heads = OpParams.Of(("heads", config.Heads));
        var tokens = new Dictionary<string, int[]> { ["x"] = [1, 1, config.Dim] };
        var query = new Dictionary<string, int[]> { ["q"] = [1, 1, config.Dim] };
        foreach (var (op, shapes) in new[] { ("ultragen_self_attention", tokens), ("wan_self_attention", tokens), ("cross_attention", query) })
            if (!backend.SupportsCase(OpCatalog.Get(op), DType.F32, shapes, heads, out var reason))
                return reason;
        return null;
    }

    /// <summary>Checks that <paramref name="weights"/> holds every parameter (before anything is allocated) and returns its upload.</summary>
    private static Action<Dit> UploadFrom(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        if (config is not null)
            foreach (var spec in ParameterCatalog.List(config.Validate()))
                if (!weights.ContainsKey(spec.Name))
                    throw new ShapeMismatchException($"dit: weight '{spec.Name}' {Shape.Format(spec.Shape.AsSpan())} is missing from the weights given");
        return dit => dit.SetWeights(weights.Where(kv => dit._weights.ContainsKey(kv.Key)));
    }

    /// <summary>Allocates every parameter on the backend (f32), then lets <paramref name="upload"/> fill them.</summary>
    private Dit(ModelConfig config, IBackend backend, DitOptions? options, Action<Dit> upload)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(backend);
        Config = config.Validate();
        if (!config.QkNorm)
            throw new UnsupportedConfigurationException("dit: qk_norm = false is not supported (the attention ops always apply norm_q/norm_k)");
        if (Limitation(backend, Config) is { } limitation)
            throw new UnsupportedConfigurationException(
                $"dit: backend '{backend.Name}' cannot run this model: {limitation}; pick another with --backend (auto skips it)");
        Backend = backend;
        Options = options ?? new DitOptions();
        Specs = ParameterCatalog.List(config);
        try
        {
            foreach (var spec in Specs) _weights[spec.Name] = backend.Allocate(DType.F32, [.. spec.Shape]);
            upload(this);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>
    /// The DiT of <paramref name="file"/>'s weights (Wan + UltraGen names; F32, BF16, F16 or F64), checked against
    /// <paramref name="config"/> first (<see cref="WeightsCheck"/>: one <see cref="WeightsMismatchException"/> naming every
    /// missing, unexpected or mis-shaped tensor, before anything is allocated), then streamed to the backend one tensor at a
    /// time, so the host holds at most one tensor besides the file's mapping (a 1.3B model does not need a second f32 copy
    /// in host memory).
    /// </summary>
    public static Dit Load(SafetensorsFile file, ModelConfig config, IBackend backend, DitOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(config);
        var check = WeightsCheck.Run(file, config, WeightsLoadOptions.Strict);
        if (!check.IsMatch) throw check.ToException();
        return new Dit(config, backend, options, dit =>
        {
            foreach (var spec in dit.Specs)
            {
                using var tensor = file.ReadTensor(spec.Name);
                dit.SetWeights([new(spec.Name, tensor)]);
            }
        });
    }

    public ModelConfig Config { get; }

    public IBackend Backend { get; }

    public DitOptions Options { get; }

    /// <summary>Every parameter of <see cref="Config"/> in checkpoint order.</summary>
    public IReadOnlyList<ParameterSpec> Specs { get; }

    /// <summary>Copies host tensors into the named device weights (shapes must match; any float dtype).</summary>
    public void SetWeights(IEnumerable<KeyValuePair<string, Tensor>> hostWeights)
    {
        foreach (var (name, source) in hostWeights)
        {
            if (!_weights.TryGetValue(name, out var destination))
                throw new ShapeMismatchException($"dit: '{name}' is not a parameter of this model");
            if (!source.Shape.SequenceEqual(destination.Shape))
                throw new ShapeMismatchException($"dit: weight '{name}' must be {Shape.Format(destination.Shape)}, got {Shape.Format(source.Shape)}");
            if (!source.IsHost) throw new ArgumentException($"dit: weight '{name}' must be a host tensor", nameof(hostWeights));
            if (source.DType == DType.F32) Backend.CopyFromHost(source, destination);
            else
            {
                using var wide = Tensor.Host(DType.F32, source.ShapeArray);
                source.ToFloats().CopyTo(wide.HostSpan<float>());
                Backend.CopyFromHost(wide, destination);
            }
            if (name.EndsWith("modulation", StringComparison.Ordinal)) _hostModulations[name] = source.ToFloats();
        }
    }

    /// <summary>The velocity (B, C_out, T, Hl, Wl) for a host latent (B, C_in, T, Hl, Wl), timesteps (B) and context (B, L, textDim).</summary>
    public Tensor Forward(Tensor latent, Tensor timestep, Tensor context)
    {
        using var pass = Run(latent, timestep, context, keepActivations: false);
        return pass.TakeVelocity();
    }

    /// <summary>A forward pass that keeps what <see cref="Backward"/> needs; dispose it after the backward pass.</summary>
    public DitPass ForwardForBackward(Tensor latent, Tensor timestep, Tensor context) => Run(latent, timestep, context, keepActivations: true);

    /// <summary>
    /// Back-propagates <paramref name="dVelocity"/> (host, the velocity's shape) through <paramref name="pass"/>. With a
    /// <paramref name="trainable"/> filter only those parameters get gradients (frozen weight gradients are not even
    /// computed); gradients still flow through every activation.
    /// </summary>
    public DitHostGradients Backward(DitPass pass, Tensor dVelocity, Func<string, bool>? trainable = null, bool latentGradient = false)
    {
        ArgumentNullException.ThrowIfNull(pass);
        ArgumentNullException.ThrowIfNull(dVelocity);
        if (!ReferenceEquals(pass.Owner, this) || !pass.KeepsActivations)
            throw new ArgumentException("dit: the pass must come from this model's ForwardForBackward", nameof(pass));
        if (!dVelocity.Shape.SequenceEqual(pass.VelocityShape))
            throw new ShapeMismatchException($"dit: velocity gradient must be {Shape.Format(pass.VelocityShape)}, got {Shape.Format(dVelocity.Shape)}");
        return new DitBackward(this, pass, trainable ?? (_ => true)).Run(dVelocity, latentGradient);
    }

    internal Tensor Weight(string name) =>
        _weights.TryGetValue(name, out var tensor) ? tensor : throw new KeyNotFoundException($"dit: weight '{name}' is missing");

    internal float[] HostModulation(string name) =>
        _hostModulations.TryGetValue(name, out var values) ? values : throw new KeyNotFoundException($"dit: weight '{name}' is missing");

    internal static string BlockName(int block, string rest) =>
        ParameterCatalog.BlockPrefix + block.ToString(CultureInfo.InvariantCulture) + "." + rest;

    /// <summary>The <c>ultragen_self_attention</c> parameters of this model's block <paramref name="block"/>.</summary>
    internal OpParams SelfAttentionParams(Grid3 grid, int block)
    {
        var full = Config.FullAttentionBlocks.ToList();
        return OpParams.Of(
            ("T", grid.T), ("H", grid.H), ("W", grid.W), ("heads", Config.Heads), ("block", block),
            ("full_blocks", full.Count == 0 ? "none" : string.Join(",", full.Select(b => b.ToString(CultureInfo.InvariantCulture)))),
            ("window_base", Config.WindowBase), ("k_uses_wq", Config.GlobalKUsesWq), ("ragged", Config.WindowMode == WindowMode.Ragged),
            ("eps", Config.Eps));
    }

    /// <summary>Block <paramref name="block"/>'s self-attention tensors under the op's input names (prefix stripped).</summary>
    internal IEnumerable<(string OpName, string Name)> SelfAttentionWeights(int block)
    {
        string prefix = BlockName(block, "self_attn.");
        foreach (var spec in Specs)
            if (spec.Block == block && spec.Name.StartsWith(prefix, StringComparison.Ordinal) && (spec.IsBase || Config.IsDecomposed(block)))
                yield return (spec.Name[prefix.Length..], spec.Name);
    }

    private (int Batch, Grid3 Grid) CheckInputs(Tensor latent, Tensor timestep, Tensor context)
    {
        var patch = Config.Patch;
        if (latent.Rank != 5 || latent.Dim(1) != Config.InChannels)
            throw new ShapeMismatchException($"dit: latent must be (B, {Config.InChannels}, T, H, W), got {Shape.Format(latent.Shape)}");
        int batch = latent.Dim(0);
        if (latent.Dim(2) % patch.T != 0 || latent.Dim(3) % patch.H != 0 || latent.Dim(4) % patch.W != 0)
            throw new ShapeMismatchException($"dit: latent {Shape.Format(latent.Shape)} is not divisible by the patch size {patch}");
        if (timestep.Rank != 1 || timestep.Dim(0) != batch)
            throw new ShapeMismatchException($"dit: timestep must be ({batch}), got {Shape.Format(timestep.Shape)}");
        if (context.Rank != 3 || context.Dim(0) != batch || context.Dim(2) != Config.TextDim)
            throw new ShapeMismatchException($"dit: context must be ({batch}, L, {Config.TextDim}), got {Shape.Format(context.Shape)}");
        foreach (var (name, tensor) in new[] { ("latent", latent), ("timestep", timestep), ("context", context) })
            if (!tensor.IsHost) throw new ArgumentException($"dit: {name} must be a host tensor");
        return (batch, new Grid3(latent.Dim(2) / patch.T, latent.Dim(3) / patch.H, latent.Dim(4) / patch.W));
    }

    private DitPass Run(Tensor latent, Tensor timestep, Tensor context, bool keepActivations)
    {
        ArgumentNullException.ThrowIfNull(latent);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(context);
        var (batch, grid) = CheckInputs(latent, timestep, context);
        var pass = new DitPass(this, batch, grid, keepActivations);
        try
        {
            pass.Run(latent, timestep, context);
            return pass;
        }
        catch
        {
            pass.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var tensor in _weights.Values) tensor.Dispose();
        _weights.Clear();
    }
}
