using UltraGen.Core;
using UltraGen.Core.Layout;
using UltraGen.Ops;
using UltraGen.Ops.Backends;

namespace UltraGen.Model.Dit;

/// <summary>
/// One forward pass of a <see cref="Dit"/>: the embeddings, every block's saved activations (or only its input when the
/// model recomputes blocks) and the head's, on the backend, plus the velocity on the host.
/// </summary>
public sealed class DitPass : IDisposable
{
    private static readonly OpParams s_none = new();
    private readonly DeviceScope _scope;
    private Tensor? _velocity;

    internal DitPass(Dit owner, int batch, Grid3 grid, bool keepActivations)
    {
        Owner = owner;
        Batch = batch;
        Grid = grid;
        KeepsActivations = keepActivations;
        _scope = new DeviceScope(owner.Backend);
        var patch = owner.Config.Patch;
        VelocityShape = [batch, owner.Config.OutChannels, grid.T * patch.T, grid.H * patch.H, grid.W * patch.W];
    }

    internal Dit Owner { get; }
    internal bool KeepsActivations { get; }
    internal int Batch { get; }
    internal Grid3 Grid { get; }
    internal int[] VelocityShape { get; }
    internal int[] LatentShape { get; private set; } = [];

    /// <summary>The predicted velocity (B, C_out, T, Hl, Wl) on the host; owned by the pass.</summary>
    public Tensor Velocity => _velocity ?? throw new InvalidOperationException("dit: the pass has no velocity");

    // ---- saved activations (device, owned by _scope unless noted) ----
    internal Tensor Timestep = null!;       // (B)
    internal Tensor Patches = null!;        // (B, N, C_in·pt·ph·pw)
    internal Tensor Sinusoid = null!, TimeHidden = null!, TimeAct = null!, E = null!, ESilu = null!;
    internal Tensor Context = null!, TextHidden = null!, TextAct = null!, C = null!;
    internal float[] EHost = [], E6Host = [];
    internal DitBlock[] Blocks = [];
    internal Tensor[] BlockInputs = [];     // with recomputation: each block's input (x for block 0 is the patch embedding)
    internal Tensor XFinal = null!;
    internal Tensor HeadShift = null!, HeadScale = null!, HeadNorm = null!, HeadIn = null!, HeadOut = null!;

    internal DeviceScope Scope => _scope;

    /// <summary>A device copy of <paramref name="host"/>, owned by <paramref name="owner"/> (default: the pass).</summary>
    internal Tensor Upload(Tensor host, DeviceScope? owner = null)
    {
        var device = (owner ?? _scope).Adopt(_scope.Backend.Allocate(DType.F32, host.ShapeArray));
        if (host.DType == DType.F32) _scope.Backend.CopyFromHost(host, device);
        else
        {
            using var wide = Tensor.Host(DType.F32, host.ShapeArray);
            host.ToFloats().CopyTo(wide.HostSpan<float>());
            _scope.Backend.CopyFromHost(wide, device);
        }
        return device;
    }

    internal float[] Download(Tensor device)
    {
        using var host = Tensor.Host(DType.F32, device.ShapeArray);
        _scope.Backend.CopyToHost(device, host);
        return host.HostSpan<float>().ToArray();
    }

    internal Tensor UploadFloats(float[] values, int[] shape, DeviceScope? owner = null)
    {
        using var host = Tensor.Host(DType.F32, shape);
        values.CopyTo(host.HostSpan<float>());
        return Upload(host, owner);
    }

    internal void Run(Tensor latent, Tensor timestep, Tensor context)
    {
        var dit = Owner;
        var config = dit.Config;
        var s = _scope;
        int dim = config.Dim;
        LatentShape = latent.ShapeArray;
        Tensor W(string name) => dit.Weight(name);
        Tensor Linear(Tensor x, string name) => s.Run("linear", s_none, ("x", x), ("weight", W(name + ".weight")), ("bias", W(name + ".bias")));

        Timestep = Upload(timestep);
        var latentDevice = Upload(latent);

        // Patch embedding: Conv3d with kernel = stride = patch is patchify + a linear on the flattened (c, pt, ph, pw) patch.
        Patches = s.Run("patchify", PatchParams(channelsLast: false), ("video", latentDevice));
        var patchWeight = W("patch_embedding.weight");
        var x = s.Run("linear", s_none, ("x", Patches), ("weight", patchWeight.Reshape(dim, (int)(patchWeight.ElementCount / dim))),
            ("bias", W("patch_embedding.bias")));

        // Time embedding e = Linear(SiLU(Linear(sin(t)))), e6 = Linear(SiLU(e)).
        Sinusoid = s.Run("timestep_embedding", OpParams.Of(("dim", config.FreqDim)), ("t", Timestep));
        TimeHidden = Linear(Sinusoid, "time_embedding.0");
        TimeAct = s.Run("silu", s_none, ("x", TimeHidden));
        E = Linear(TimeAct, "time_embedding.2");
        ESilu = s.Run("silu", s_none, ("x", E));
        var e6 = Linear(ESilu, "time_projection.1");
        EHost = Download(E);
        E6Host = Download(e6);

        // Text embedding c = Linear(GELU_tanh(Linear(context))) over every position.
        Context = Upload(context);
        TextHidden = Linear(Context, "text_embedding.0");
        TextAct = s.Run("gelu_tanh", s_none, ("x", TextHidden));
        C = Linear(TextAct, "text_embedding.2");

        bool recompute = KeepsActivations && dit.Options.RecomputeBlocks;
        if (!KeepsActivations)
        {
            // Inference: two token buffers in turn. Each block reads one and writes its output into the other, then frees
            // all of its intermediates, so the pass holds 2·B·N·D floats however many blocks there are.
            var spare = s.New(x.ShapeArray);
            for (int i = 0; i < config.Layers; i++)
            {
                using (var block = new DitBlock(this, i)) block.Forward(x, into: spare);
                (x, spare) = (spare, x);
            }
        }
        else
        {
            Blocks = new DitBlock[config.Layers];
            BlockInputs = new Tensor[config.Layers];
            for (int i = 0; i < config.Layers; i++)
            {
                var block = new DitBlock(this, i);
                BlockInputs[i] = x;
                var output = block.Forward(x);
                if (!recompute)
                {
                    Blocks[i] = block;
                    x = output;
                }
                else
                {
                    // Keep only the output (the next block's input): the block is recomputed when it is walked back.
                    x = s.New(output.ShapeArray);
                    s.Copy(output, x);
                    block.Dispose();
                }
            }
        }
        XFinal = x;

        // Head: (head.modulation + e).chunk(2) = shift, scale; Linear(LN(x)(1+scale)+shift); unpatchify.
        var headModulation = dit.HostModulation("head.modulation");
        HeadShift = UploadFloats(ModulationChunk(headModulation, EHost, 2, 0), [Batch, dim]);
        HeadScale = UploadFloats(ModulationChunk(headModulation, EHost, 2, 1), [Batch, dim]);
        HeadNorm = s.Run("layer_norm", OpParams.Of(("eps", config.Eps)), ("x", XFinal));
        HeadIn = s.Run("modulate", s_none, ("x", HeadNorm), ("shift", HeadShift), ("scale", HeadScale));
        HeadOut = Linear(HeadIn, "head.head");
        var velocity = s.Run("unpatchify", UnpatchifyParams(config.OutChannels, channelsLast: true), ("tokens", HeadOut));
        _velocity = Tensor.Host(DType.F32, VelocityShape);
        dit.Backend.CopyToHost(velocity, _velocity);
    }

    internal OpParams PatchParams(bool channelsLast)
    {
        var patch = Owner.Config.Patch;
        return OpParams.Of(("pt", patch.T), ("ph", patch.H), ("pw", patch.W), ("channels_last", channelsLast));
    }

    internal OpParams UnpatchifyParams(int channels, bool channelsLast)
    {
        var patch = Owner.Config.Patch;
        return OpParams.Of(("channels", channels), ("T", Grid.T), ("H", Grid.H), ("W", Grid.W),
            ("pt", patch.T), ("ph", patch.H), ("pw", patch.W), ("channels_last", channelsLast));
    }

    /// <summary>
    /// Chunk <paramref name="index"/> of (modulation (1, k, D) + time features) as (B, D): the features are (B, k·D) (a
    /// block's e6) or (B, D) broadcast to every chunk (the head's e).
    /// </summary>
    internal float[] ModulationChunk(float[] modulation, float[] time, int chunks, int index)
    {
        int dim = modulation.Length / chunks, timeWidth = time.Length / Batch;
        var result = new float[Batch * dim];
        for (int b = 0; b < Batch; b++)
            for (int i = 0; i < dim; i++)
                result[b * dim + i] = modulation[index * dim + i] + time[b * timeWidth + (timeWidth == dim ? i : index * dim + i)];
        return result;
    }

    /// <summary>Hands the velocity to the caller (who then owns it).</summary>
    internal Tensor TakeVelocity()
    {
        var velocity = Velocity;
        _velocity = null;
        return velocity;
    }

    public void Dispose()
    {
        foreach (var block in Blocks) block?.Dispose();
        Blocks = [];
        _scope.Dispose();
        _velocity?.Dispose();
        _velocity = null;
    }
}
