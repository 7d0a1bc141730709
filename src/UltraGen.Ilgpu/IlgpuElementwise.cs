using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using UltraGen.Core;

namespace UltraGen.Ilgpu;

/// <summary>
/// Pointwise kernels: add, gelu_tanh / silu / sigmoid (forward and backward), modulate, gate_fusion and gated_residual.
/// Every kernel is a grid-stride loop (a few groups per multiprocessor, consecutive threads on consecutive elements, so
/// loads are coalesced); the (B, D) gates and adaLN vectors broadcast over tokens are indexed from the element index.
/// The parameter gradients that sum over tokens (dshift, dscale, dgate, dα, dβ) go to <see cref="IlgpuReductions"/> or to the
/// gate-fusion reduction kernel here: one group per (32-channel block, batch), no atomics.
/// </summary>
internal sealed class IlgpuElementwise
{
    public const int GeluTanh = 0, Silu = 1, Sigmoid = 2;

    private const float GeluC = 0.7978845608028654f; // √(2/π)
    private const float GeluA = 0.044715f;

    private readonly LaunchShape _shape;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _add;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _activation;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _activationBackward;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs> _modulate;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs> _modulateBackward;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs> _gatedResidual;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs> _gatedResidualBackward;
    private readonly Action<KernelConfig, GateViews, ArrayView<float>, TokenArgs> _gateFusion;
    private readonly Action<KernelConfig, GateViews, ArrayView<float>, GateGradients, TokenArgs> _gateFusionBackward;
    private readonly Action<KernelConfig, GateViews, ArrayView<float>, GateGradients, TokenArgs> _gateFusionReduce;

    public IlgpuElementwise(Accelerator accelerator, LaunchShape shape)
    {
        _shape = shape;
        _add = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(AddKernel);
        _activation = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int>(ActivationKernel);
        _activationBackward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(ActivationBackwardKernel);
        _modulate = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs>(ModulateKernel);
        _modulateBackward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs>(ModulateBackwardKernel);
        _gatedResidual = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs>(GatedResidualKernel);
        _gatedResidualBackward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, TokenArgs>(GatedResidualBackwardKernel);
        _gateFusion = accelerator.LoadStreamKernel<GateViews, ArrayView<float>, TokenArgs>(GateFusionKernel);
        _gateFusionBackward = accelerator.LoadStreamKernel<GateViews, ArrayView<float>, GateGradients, TokenArgs>(GateFusionBackwardKernel);
        _gateFusionReduce = accelerator.LoadStreamKernel<GateViews, ArrayView<float>, GateGradients, TokenArgs>(GateFusionReduceKernel);
    }

    /// <summary>Sizes of a (B, N, D) token tensor with per-(batch, channel) vectors.</summary>
    internal struct TokenArgs
    {
        public int Batches, Tokens, Channels, Count;

        public static TokenArgs Of(Tensor x) => new()
        {
            Batches = x.Dim(0), Tokens = x.Dim(1), Channels = x.Dim(2), Count = checked((int)x.ElementCount),
        };

        /// <summary>Index of the (batch, channel) vector entry that element <paramref name="i"/> reads.</summary>
        public readonly int Vector(int i) => i / (Tokens * Channels) * Channels + i % Channels;
    }

    internal struct GateViews
    {
        public ArrayView<float> Local, Hier, Glob, Alpha, Beta;
    }

    /// <summary>Gradient outputs of gate_fusion; Has* = 0 marks one the caller did not ask for.</summary>
    internal struct GateGradients
    {
        public ArrayView<float> Local, Hier, Glob, Alpha, Beta;
        public int HasLocal, HasHier, HasGlob, HasAlpha, HasBeta;
    }

    private static ArrayView<float> F32(Tensor t) => IlgpuBackend.F32(t);

    private static ArrayView<float> F32(Tensor? t, out int has)
    {
        has = t is null ? 0 : 1;
        return IlgpuBackend.F32OrEmpty(t);
    }

    // ---- launchers ----

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        int n = checked((int)y.ElementCount);
        _add(_shape.Stride(n), F32(a), F32(b), F32(y), n);
    }

    public void Activation(int kind, Tensor x, Tensor y)
    {
        int n = checked((int)y.ElementCount);
        _activation(_shape.Stride(n), F32(x), F32(y), n, kind);
    }

    public void ActivationBackward(int kind, Tensor x, Tensor dy, Tensor? dx)
    {
        if (dx is null) return;
        int n = checked((int)dx.ElementCount);
        _activationBackward(_shape.Stride(n), F32(x), F32(dy), F32(dx), n, kind);
    }

    public void Modulate(Tensor x, Tensor shift, Tensor scale, Tensor y)
    {
        var args = TokenArgs.Of(x);
        _modulate(_shape.Stride(args.Count), F32(x), F32(shift), F32(scale), F32(y), args);
    }

    public void ModulateBackward(Tensor x, Tensor scale, Tensor dy, Tensor? dx, Tensor? dShift, Tensor? dScale, IlgpuReductions reductions)
    {
        var args = TokenArgs.Of(x);
        if (dx is not null) _modulateBackward(_shape.Stride(args.Count), F32(scale), F32(dy), F32(dx), args);
        if (dShift is not null)
            reductions.ColumnSum(IlgpuReductions.SumA, F32(dy), ArrayView<float>.Empty, ArrayView<float>.Empty, ArrayView<float>.Empty,
                F32(dShift), args.Batches, args.Tokens, args.Channels);
        if (dScale is not null)
            reductions.ColumnSum(IlgpuReductions.SumAB, F32(dy), F32(x), ArrayView<float>.Empty, ArrayView<float>.Empty,
                F32(dScale), args.Batches, args.Tokens, args.Channels);
    }

    public void GatedResidual(Tensor x, Tensor y, Tensor gate, Tensor output)
    {
        var args = TokenArgs.Of(x);
        _gatedResidual(_shape.Stride(args.Count), F32(x), F32(y), F32(gate), F32(output), args);
    }

    /// <summary>dx = dout (a copy), dy = dout·gate (pointwise), dgate = Σ_N dout·y (<see cref="IlgpuReductions.ColumnSum"/>).</summary>
    public void GatedResidualBackward(Tensor y, Tensor gate, Tensor dOut, Tensor? dx, Tensor? dy, Tensor? dGate, IlgpuReductions reductions)
    {
        var args = TokenArgs.Of(y);
        if (dx is not null) F32(dOut).CopyTo(F32(dx));
        if (dy is not null) _gatedResidualBackward(_shape.Stride(args.Count), F32(gate), F32(dOut), F32(dy), args);
        if (dGate is not null)
            reductions.ColumnSum(IlgpuReductions.SumAB, F32(dOut), F32(y), ArrayView<float>.Empty, ArrayView<float>.Empty,
                F32(dGate), args.Batches, args.Tokens, args.Channels);
    }

    private static GateViews Gates(Tensor local, Tensor hier, Tensor glob, Tensor alpha, Tensor beta) => new()
    {
        Local = F32(local), Hier = F32(hier), Glob = F32(glob), Alpha = F32(alpha), Beta = F32(beta),
    };

    public void GateFusion(Tensor local, Tensor hier, Tensor glob, Tensor alpha, Tensor beta, Tensor z)
    {
        var args = TokenArgs.Of(local);
        _gateFusion(_shape.Stride(args.Count), Gates(local, hier, glob, alpha, beta), F32(z), args);
    }

    public void GateFusionBackward(Tensor local, Tensor hier, Tensor glob, Tensor alpha, Tensor beta, Tensor dz,
        Tensor? dLocal, Tensor? dHier, Tensor? dGlob, Tensor? dAlpha, Tensor? dBeta)
    {
        var args = TokenArgs.Of(local);
        var gates = Gates(local, hier, glob, alpha, beta);
        var grads = new GateGradients();
        grads.Local = F32(dLocal, out grads.HasLocal);
        grads.Hier = F32(dHier, out grads.HasHier);
        grads.Glob = F32(dGlob, out grads.HasGlob);
        grads.Alpha = F32(dAlpha, out grads.HasAlpha);
        grads.Beta = F32(dBeta, out grads.HasBeta);
        if (grads.HasLocal + grads.HasHier + grads.HasGlob > 0)
            _gateFusionBackward(_shape.Stride(args.Count), gates, F32(dz), grads, args);
        if (grads.HasAlpha + grads.HasBeta > 0)
        {
            var config = new KernelConfig(
                new Index2D((args.Channels + IlgpuReductions.Columns - 1) / IlgpuReductions.Columns, args.Batches), new Index2D(_shape.GroupSize, 1));
            _gateFusionReduce(config, gates, F32(dz), grads, args);
        }
    }

    // ---- device functions ----

    private static float SigmoidOf(float x)
    {
        if (x >= 0) return 1f / (1f + XMath.Exp(-x));
        float e = XMath.Exp(x);
        return e / (1f + e);
    }

    private static float Apply(float x, int kind)
    {
        if (kind == GeluTanh) return 0.5f * x * (1f + XMath.Tanh(GeluC * (x + GeluA * x * x * x)));
        if (kind == Silu) return x * SigmoidOf(x);
        return SigmoidOf(x);
    }

    private static float Derivative(float x, int kind)
    {
        if (kind == GeluTanh)
        {
            float th = XMath.Tanh(GeluC * (x + GeluA * x * x * x));
            return 0.5f * (1f + th) + 0.5f * x * (1f - th * th) * GeluC * (1f + 3f * GeluA * x * x);
        }
        float s = SigmoidOf(x);
        return kind == Silu ? s * (1f + x * (1f - s)) : s * (1f - s);
    }

    // ---- kernels ----

    private static void AddKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int n)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i += Grid.DimX * Group.DimX) y[i] = a[i] + b[i];
    }

    private static void ActivationKernel(ArrayView<float> x, ArrayView<float> y, int n, int kind)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i += Grid.DimX * Group.DimX) y[i] = Apply(x[i], kind);
    }

    private static void ActivationBackwardKernel(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx, int n, int kind)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i += Grid.DimX * Group.DimX) dx[i] = dy[i] * Derivative(x[i], kind);
    }

    private static void ModulateKernel(ArrayView<float> x, ArrayView<float> shift, ArrayView<float> scale, ArrayView<float> y, TokenArgs args)
    {
        for (int i = Grid.GlobalIndex.X; i < args.Count; i += Grid.DimX * Group.DimX)
        {
            int p = args.Vector(i);
            y[i] = x[i] * (1f + scale[p]) + shift[p];
        }
    }

    private static void ModulateBackwardKernel(ArrayView<float> scale, ArrayView<float> dy, ArrayView<float> dx, TokenArgs args)
    {
        for (int i = Grid.GlobalIndex.X; i < args.Count; i += Grid.DimX * Group.DimX)
            dx[i] = dy[i] * (1f + scale[args.Vector(i)]);
    }

    private static void GatedResidualKernel(ArrayView<float> x, ArrayView<float> y, ArrayView<float> gate, ArrayView<float> output, TokenArgs args)
    {
        for (int i = Grid.GlobalIndex.X; i < args.Count; i += Grid.DimX * Group.DimX)
            output[i] = x[i] + gate[args.Vector(i)] * y[i];
    }

    private static void GatedResidualBackwardKernel(ArrayView<float> gate, ArrayView<float> dOut, ArrayView<float> dy, TokenArgs args)
    {
        for (int i = Grid.GlobalIndex.X; i < args.Count; i += Grid.DimX * Group.DimX)
            dy[i] = dOut[i] * gate[args.Vector(i)];
    }

    private static void GateFusionKernel(GateViews g, ArrayView<float> z, TokenArgs args)
    {
        for (int i = Grid.GlobalIndex.X; i < args.Count; i += Grid.DimX * Group.DimX)
        {
            int p = args.Vector(i);
            float a = g.Alpha[p], b = g.Beta[p];
            z[i] = a * (b * g.Local[i] + (1f - b) * g.Hier[i]) + (1f - a) * g.Glob[i];
        }
    }

    private static void GateFusionBackwardKernel(GateViews g, ArrayView<float> dz, GateGradients d, TokenArgs args)
    {
        for (int i = Grid.GlobalIndex.X; i < args.Count; i += Grid.DimX * Group.DimX)
        {
            int p = args.Vector(i);
            float a = g.Alpha[p], b = g.Beta[p], dzi = dz[i];
            if (d.HasLocal != 0) d.Local[i] = dzi * a * b;
            if (d.HasHier != 0) d.Hier[i] = dzi * a * (1f - b);
            if (d.HasGlob != 0) d.Glob[i] = dzi * (1f - a);
        }
    }

    /// <summary>
    /// dα[b, c] = Σ_t dz·(β·local + (1 − β)·hier − glob) and dβ[b, c] = Σ_t dz·α·(local − hier): one group per
    /// (32-channel block, batch), 32 channels × (group/32) token slices, chunked sums, one barrier, fixed-order combine.
    /// </summary>
    private static void GateFusionReduceKernel(GateViews g, ArrayView<float> dz, GateGradients d, TokenArgs args)
    {
        var alphaPartials = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        var betaPartials = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        const int columns = IlgpuReductions.Columns;
        int lane = Group.IdxX % columns, slice = Group.IdxX / columns, slices = Group.DimX / columns;
        int channel = Grid.IdxX * columns + lane, batch = Grid.IdxY;
        var alphaTotal = new IlgpuReductions.ChunkedSum();
        var betaTotal = new IlgpuReductions.ChunkedSum();
        if (channel < args.Channels)
        {
            int p = batch * args.Channels + channel;
            float a = g.Alpha[p], b = g.Beta[p];
            for (int t = slice; t < args.Tokens; t += slices)
            {
                int i = (batch * args.Tokens + t) * args.Channels + channel;
                float dzi = dz[i], l = g.Local[i], h = g.Hier[i];
                alphaTotal.Add(dzi * (b * l + (1f - b) * h - g.Glob[i]));
                betaTotal.Add(dzi * a * (l - h));
            }
        }
        float sumAlpha = IlgpuReductions.CombineSlices(alphaPartials, alphaTotal.Total, lane, slices);
        float sumBeta = IlgpuReductions.CombineSlices(betaPartials, betaTotal.Total, lane, slices);
        if (slice == 0 && channel < args.Channels)
        {
            int p = batch * args.Channels + channel;
            if (d.HasAlpha != 0) d.Alpha[p] = sumAlpha;
            if (d.HasBeta != 0) d.Beta[p] = sumBeta;
        }
    }
}
