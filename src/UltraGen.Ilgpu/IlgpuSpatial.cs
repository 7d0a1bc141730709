using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using UltraGen.Core;

namespace UltraGen.Ilgpu;

/// <summary>
/// Spatial ops on channels-last video (B, T, H, W, C): depthwise_conv2d (k×k, stride k, remainder dropped),
/// depthwise_conv3d (odd kernel, stride 1, zero pad k/2) and bilinear_resize (align_corners=False), forward and backward.
/// <para>
/// Kernel design: every output (or input-gradient) element is one thread of a grid-stride loop, channel fastest, so a warp
/// reads 32 consecutive channels of the same pixel (coalesced) and the weights (C, 1, taps) of 32 channels. Every
/// input gradient is a gather (no atomics): conv2d's windows do not overlap, so each input pixel has at most one output
/// window; conv3d's dx is the transposed convolution (flipped taps); resize's dx walks the few output pixels whose
/// bilinear stencil touches the input pixel, recomputing their weights with the forward's own index rule. Weight and
/// bias gradients are reductions over positions: one group per (32-channel block, tap), 32 channels × (group/32) position
/// slices, chunked fp32 sums, one barrier, fixed-order combine (the last tap index is the bias).
/// </para>
/// </summary>
internal sealed class IlgpuSpatial
{
    private readonly LaunchShape _shape;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs> _conv2d;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs> _conv2dDx;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs> _conv2dDw;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs> _conv3d;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs> _conv3dDx;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs> _conv3dDw;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ResizeArgs> _resize;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ResizeArgs> _resizeDx;

    public IlgpuSpatial(Accelerator accelerator, LaunchShape shape)
    {
        _shape = shape;
        _conv2d = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs>(Conv2dKernel);
        _conv2dDx = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs>(Conv2dDxKernel);
        _conv2dDw = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs>(Conv2dDwKernel);
        _conv3d = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs>(Conv3dKernel);
        _conv3dDx = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs>(Conv3dDxKernel);
        _conv3dDw = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvArgs>(Conv3dDwKernel);
        _resize = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ResizeArgs>(ResizeKernel);
        _resizeDx = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ResizeArgs>(ResizeDxKernel);
    }

    /// <summary>Input (B, T, H, W, C), kernel kt×kh×kw (kt = 1 for conv2d), output (B, T, Ho, Wo, C).</summary>
    internal struct ConvArgs
    {
        public int Batch, T, H, W, C, Kt, Kh, Kw, Ho, Wo;
        public int HasBias, HasDWeight, HasDBias;

        public readonly int Taps => Kt * Kh * Kw;
    }

    private static ConvArgs Conv(Tensor x, Tensor weight, bool is3d)
    {
        var args = new ConvArgs
        {
            Batch = x.Dim(0), T = x.Dim(1), H = x.Dim(2), W = x.Dim(3), C = x.Dim(4),
            Kt = is3d ? weight.Dim(2) : 1, Kh = weight.Dim(is3d ? 3 : 2), Kw = weight.Dim(is3d ? 4 : 3),
        };
        args.Ho = is3d ? args.H : args.H / args.Kh;
        args.Wo = is3d ? args.W : args.W / args.Kw;
        if (x.ElementCount > int.MaxValue) throw new UnsupportedConfigurationException($"ilgpu kernels index with int: {x} is too large");
        return args;
    }

    private KernelConfig TapConfig(ConvArgs args) =>
        new(new Index2D((args.C + IlgpuReductions.Columns - 1) / IlgpuReductions.Columns, args.Taps + 1), new Index2D(_shape.GroupSize, 1));

    public void Conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        var args = Conv(x, weight, is3d: false);
        args.HasBias = bias is null ? 0 : 1;
        _conv2d(_shape.Stride(y.ElementCount), IlgpuBackend.F32(x), IlgpuBackend.F32(weight), IlgpuBackend.F32OrEmpty(bias), IlgpuBackend.F32(y), args);
    }

    public void Conv2dBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        var args = Conv(x, weight, is3d: false);
        if (dx is not null) _conv2dDx(_shape.Stride(dx.ElementCount), IlgpuBackend.F32(weight), IlgpuBackend.F32(dy), IlgpuBackend.F32(dx), args);
        if (dWeight is null && dBias is null) return;
        args.HasDWeight = dWeight is null ? 0 : 1;
        args.HasDBias = dBias is null ? 0 : 1;
        _conv2dDw(TapConfig(args), IlgpuBackend.F32(x), IlgpuBackend.F32(dy), IlgpuBackend.F32OrEmpty(dWeight), IlgpuBackend.F32OrEmpty(dBias), args);
    }

    public void Conv3d(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        var args = Conv(x, weight, is3d: true);
        args.HasBias = bias is null ? 0 : 1;
        _conv3d(_shape.Stride(y.ElementCount), IlgpuBackend.F32(x), IlgpuBackend.F32(weight), IlgpuBackend.F32OrEmpty(bias), IlgpuBackend.F32(y), args);
    }

    public void Conv3dBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        var args = Conv(x, weight, is3d: true);
        if (dx is not null) _conv3dDx(_shape.Stride(dx.ElementCount), IlgpuBackend.F32(weight), IlgpuBackend.F32(dy), IlgpuBackend.F32(dx), args);
        if (dWeight is null && dBias is null) return;
        args.HasDWeight = dWeight is null ? 0 : 1;
        args.HasDBias = dBias is null ? 0 : 1;
        _conv3dDw(TapConfig(args), IlgpuBackend.F32(x), IlgpuBackend.F32(dy), IlgpuBackend.F32OrEmpty(dWeight), IlgpuBackend.F32OrEmpty(dBias), args);
    }

    /// <summary>Frames (B·T) of an (inH, inW) → (outH, outW) resize with C channels; scales in/out per axis.</summary>
    internal struct ResizeArgs
    {
        public int Frames, InH, InW, OutH, OutW, C, Count;
        public float ScaleH, ScaleW;
    }

    private static ResizeArgs Resize(Tensor input, Tensor output, Tensor counted) => new()
    {
        Frames = input.Dim(0) * input.Dim(1), InH = input.Dim(2), InW = input.Dim(3), OutH = output.Dim(2), OutW = output.Dim(3),
        C = input.Dim(4), Count = checked((int)counted.ElementCount),
        ScaleH = (float)((double)input.Dim(2) / output.Dim(2)), ScaleW = (float)((double)input.Dim(3) / output.Dim(3)),
    };

    public void Resize(Tensor x, Tensor y)
    {
        var args = Resize(x, y, y);
        _resize(_shape.Stride(args.Count), IlgpuBackend.F32(x), IlgpuBackend.F32(y), args);
    }

    /// <summary>dx (the input's shape) from dy; x itself is never read, only its shape (carried by dx).</summary>
    public void ResizeBackward(Tensor dy, Tensor dx)
    {
        var args = Resize(dx, dy, dx);
        _resizeDx(_shape.Stride(args.Count), IlgpuBackend.F32(dy), IlgpuBackend.F32(dx), args);
    }

    // ---- conv2d kernels ----

    private static void Conv2dKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias, ArrayView<float> y, ConvArgs a)
    {
        int count = a.Batch * a.T * a.Ho * a.Wo * a.C;
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
        {
            int c = i % a.C, pixel = i / a.C;
            int ow = pixel % a.Wo, oh = pixel / a.Wo % a.Ho, frame = pixel / (a.Wo * a.Ho);
            float sum = a.HasBias != 0 ? bias[c] : 0f;
            for (int r = 0; r < a.Kh; r++)
            {
                int rowBase = ((frame * a.H + oh * a.Kh + r) * a.W + ow * a.Kw) * a.C + c;
                for (int s = 0; s < a.Kw; s++) sum += weight[(c * a.Kh + r) * a.Kw + s] * x[rowBase + s * a.C];
            }
            y[i] = sum;
        }
    }

    /// <summary>Each input pixel lies in at most one stride-k window: dx = dy[window]·w[tap], zero in the dropped remainder.</summary>
    private static void Conv2dDxKernel(ArrayView<float> weight, ArrayView<float> dy, ArrayView<float> dx, ConvArgs a)
    {
        int count = a.Batch * a.T * a.H * a.W * a.C;
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
        {
            int c = i % a.C, pixel = i / a.C;
            int iw = pixel % a.W, ih = pixel / a.W % a.H, frame = pixel / (a.W * a.H);
            int oh = ih / a.Kh, ow = iw / a.Kw;
            dx[i] = oh < a.Ho && ow < a.Wo
                ? dy[((frame * a.Ho + oh) * a.Wo + ow) * a.C + c] * weight[(c * a.Kh + ih % a.Kh) * a.Kw + iw % a.Kw]
                : 0f;
        }
    }

    /// <summary>dW[c, tap] = Σ_windows dy·x[window + tap]; the tap index Taps is the bias (Σ dy).</summary>
    private static void Conv2dDwKernel(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dWeight, ArrayView<float> dBias, ConvArgs a)
    {
        var partials = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        const int columns = IlgpuReductions.Columns;
        int lane = Group.IdxX % columns, slice = Group.IdxX / columns, slices = Group.DimX / columns;
        int c = Grid.IdxX * columns + lane, tap = Grid.IdxY;
        bool isBias = tap == a.Taps;
        bool active = c < a.C && (isBias ? a.HasDBias != 0 : a.HasDWeight != 0);
        int r = isBias ? 0 : tap / a.Kw, s = isBias ? 0 : tap % a.Kw;
        int windows = a.Batch * a.T * a.Ho * a.Wo;
        var total = new IlgpuReductions.ChunkedSum();
        if (active)
        {
            for (int p = slice; p < windows; p += slices)
            {
                float g = dy[p * a.C + c];
                if (!isBias)
                {
                    int ow = p % a.Wo, oh = p / a.Wo % a.Ho, frame = p / (a.Wo * a.Ho);
                    g *= x[((frame * a.H + oh * a.Kh + r) * a.W + ow * a.Kw + s) * a.C + c];
                }
                total.Add(g);
            }
        }
        float sum = IlgpuReductions.CombineSlices(partials, total.Total, lane, slices);
        if (slice == 0 && active)
        {
            if (isBias) dBias[c] = sum;
            else dWeight[c * a.Taps + tap] = sum;
        }
    }

    // ---- conv3d kernels ----

    private static void Conv3dKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias, ArrayView<float> y, ConvArgs a)
    {
        int count = a.Batch * a.T * a.H * a.W * a.C;
        int pt = a.Kt / 2, ph = a.Kh / 2, pw = a.Kw / 2;
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
        {
            int c = i % a.C, pixel = i / a.C;
            int ow = pixel % a.W, oh = pixel / a.W % a.H, ot = pixel / (a.W * a.H) % a.T, b = pixel / (a.W * a.H * a.T);
            float sum = a.HasBias != 0 ? bias[c] : 0f;
            for (int dt = 0; dt < a.Kt; dt++)
            {
                int it = ot + dt - pt;
                if (it < 0 || it >= a.T) continue;
                for (int dh = 0; dh < a.Kh; dh++)
                {
                    int ih = oh + dh - ph;
                    if (ih < 0 || ih >= a.H) continue;
                    for (int dw = 0; dw < a.Kw; dw++)
                    {
                        int iw = ow + dw - pw;
                        if (iw < 0 || iw >= a.W) continue;
                        sum += weight[((c * a.Kt + dt) * a.Kh + dh) * a.Kw + dw] * x[(((b * a.T + it) * a.H + ih) * a.W + iw) * a.C + c];
                    }
                }
            }
            y[i] = sum;
        }
    }

    /// <summary>dx[i] = Σ_taps dy[i − tap + pad]·w[tap]: the transposed convolution, gathered per input element.</summary>
    private static void Conv3dDxKernel(ArrayView<float> weight, ArrayView<float> dy, ArrayView<float> dx, ConvArgs a)
    {
        int count = a.Batch * a.T * a.H * a.W * a.C;
        int pt = a.Kt / 2, ph = a.Kh / 2, pw = a.Kw / 2;
        for (int i = Grid.GlobalIndex.X; i < count; i += Grid.DimX * Group.DimX)
        {
            int c = i % a.C, pixel = i / a.C;
            int iw = pixel % a.W, ih = pixel / a.W % a.H, it = pixel / (a.W * a.H) % a.T, b = pixel / (a.W * a.H * a.T);
            float sum = 0;
            for (int dt = 0; dt < a.Kt; dt++)
            {
                int ot = it - dt + pt;
                if (ot < 0 || ot >= a.T) continue;
                for (int dh = 0; dh < a.Kh; dh++)
                {
                    int oh = ih - dh + ph;
                    if (oh < 0 || oh >= a.H) continue;
                    for (int dw = 0; dw < a.Kw; dw++)
                    {
                        int ow = iw - dw + pw;
                        if (ow < 0 || ow >= a.W) continue;
                        sum += weight[((c * a.Kt + dt) * a.Kh + dh) * a.Kw + dw] * dy[(((b * a.T + ot) * a.H + oh) * a.W + ow) * a.C + c];
                    }
                }
            }
            dx[i] = sum;
        }
    }

    /// <summary>dW[c, tap] = Σ_positions dy[o]·x[o + tap − pad] (zero outside); the tap index Taps is the bias (Σ dy).</summary>
    private static void Conv3dDwKernel(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dWeight, ArrayView<float> dBias, ConvArgs a)
    {
        var partials = SharedMemory.Allocate<float>(LaunchShape.MaxGroupSize);
        const int columns = IlgpuReductions.Columns;
        int lane = Group.IdxX % columns, slice = Group.IdxX / columns, slices = Group.DimX / columns;
        int c = Grid.IdxX * columns + lane, tap = Grid.IdxY;
        bool isBias = tap == a.Taps;
        bool active = c < a.C && (isBias ? a.HasDBias != 0 : a.HasDWeight != 0);
        int dt = isBias ? 0 : tap / (a.Kh * a.Kw), dh = isBias ? 0 : tap / a.Kw % a.Kh, dw = isBias ? 0 : tap % a.Kw;
        int st = dt - a.Kt / 2, sh = dh - a.Kh / 2, sw = dw - a.Kw / 2;
        int positions = a.Batch * a.T * a.H * a.W;
        var total = new IlgpuReductions.ChunkedSum();
        if (active)
        {
            for (int p = slice; p < positions; p += slices)
            {
                float g = dy[p * a.C + c];
                if (!isBias)
                {
                    int ow = p % a.W, oh = p / a.W % a.H, ot = p / (a.W * a.H) % a.T, b = p / (a.W * a.H * a.T);
                    int it = ot + st, ih = oh + sh, iw = ow + sw;
                    g = it < 0 || it >= a.T || ih < 0 || ih >= a.H || iw < 0 || iw >= a.W
                        ? 0f
                        : g * x[(((b * a.T + it) * a.H + ih) * a.W + iw) * a.C + c];
                }
                total.Add(g);
            }
        }
        float sum = IlgpuReductions.CombineSlices(partials, total.Total, lane, slices);
        if (slice == 0 && active)
        {
            if (isBias) dBias[c] = sum;
            else dWeight[c * a.Taps + tap] = sum;
        }
    }

    // ---- bilinear resize kernels ----

    /// <summary>torch's align_corners=False source rule along one axis: indices i0, i1 and the weight λ of i1.</summary>
    private static void Source(int o, int inSize, float scale, out int i0, out int i1, out float lambda)
    {
        float source = (o + 0.5f) * scale - 0.5f;
        if (source < 0) source = 0;
        i0 = XMath.Min((int)XMath.Floor(source), inSize - 1);
        i1 = XMath.Min(i0 + 1, inSize - 1);
        lambda = source - i0;
    }

    /// <summary>The weight output index <paramref name="o"/> gives input index <paramref name="i"/> (both taps when they coincide).</summary>
    private static float Weight(int o, int i, int inSize, float scale)
    {
        Source(o, inSize, scale, out int i0, out int i1, out float lambda);
        float w = 0;
        if (i0 == i) w += 1f - lambda;
        if (i1 == i) w += lambda;
        return w;
    }

    private static void ResizeKernel(ArrayView<float> x, ArrayView<float> y, ResizeArgs a)
    {
        for (int i = Grid.GlobalIndex.X; i < a.Count; i += Grid.DimX * Group.DimX)
        {
            int c = i % a.C, pixel = i / a.C;
            int ow = pixel % a.OutW, oh = pixel / a.OutW % a.OutH, frame = pixel / (a.OutW * a.OutH);
            Source(oh, a.InH, a.ScaleH, out int h0, out int h1, out float lh);
            Source(ow, a.InW, a.ScaleW, out int w0, out int w1, out float lw);
            int rowBase = frame * a.InH;
            float top = (1f - lw) * x[((rowBase + h0) * a.InW + w0) * a.C + c] + lw * x[((rowBase + h0) * a.InW + w1) * a.C + c];
            float bottom = (1f - lw) * x[((rowBase + h1) * a.InW + w0) * a.C + c] + lw * x[((rowBase + h1) * a.InW + w1) * a.C + c];
            y[i] = (1f - lh) * top + lh * bottom;
        }
    }

    /// <summary>
    /// First and last output index whose stencil may touch input index <paramref name="i"/>: i0(o) ∈ {i − 1, i} needs
    /// (i − 0.5)/scale − 0.5 ≤ o &lt; (i + 1.5)/scale − 0.5; one index of slack each side absorbs float rounding
    /// (<see cref="Weight"/> decides exactly).
    /// </summary>
    private static void Candidates(int i, int outSize, float scale, out int first, out int last)
    {
        first = XMath.Max(0, (int)XMath.Floor((i - 0.5f) / scale - 0.5f) - 1);
        last = XMath.Min(outSize - 1, (int)XMath.Ceiling((i + 1.5f) / scale - 0.5f) + 1);
    }

    private static void ResizeDxKernel(ArrayView<float> dy, ArrayView<float> dx, ResizeArgs a)
    {
        for (int i = Grid.GlobalIndex.X; i < a.Count; i += Grid.DimX * Group.DimX)
        {
            int c = i % a.C, pixel = i / a.C;
            int iw = pixel % a.InW, ih = pixel / a.InW % a.InH, frame = pixel / (a.InW * a.InH);
            Candidates(ih, a.OutH, a.ScaleH, out int ohFirst, out int ohLast);
            Candidates(iw, a.OutW, a.ScaleW, out int owFirst, out int owLast);
            float sum = 0;
            for (int oh = ohFirst; oh <= ohLast; oh++)
            {
                float wh = Weight(oh, ih, a.InH, a.ScaleH);
                if (wh == 0f) continue;
                float row = 0;
                for (int ow = owFirst; ow <= owLast; ow++)
                {
                    float ww = Weight(ow, iw, a.InW, a.ScaleW);
                    if (ww != 0f) row += ww * dy[(((frame * a.OutH) + oh) * a.OutW + ow) * a.C + c];
                }
                sum += wh * row;
            }
            dx[i] = sum;
        }
    }
}
