using System.Numerics.Tensors;
using UltraGen.Core;
using Tensor = UltraGen.Core.Tensor;
using UltraGen.Ops;
using static UltraGen.Cpu.CpuParallel;

namespace UltraGen.Cpu;

/// <summary>
/// bilinear_resize, depthwise_conv2d and depthwise_conv3d on channels-last f32 video (B, T, H, W, C) (references:
/// <see cref="BilinearResizeOp"/>, <see cref="DepthwiseConv2dOp"/>, <see cref="DepthwiseConv3dOp"/>). Every inner
/// operation is a TensorPrimitives pass over C (or over a whole W·C row), so the vectorisation runs along channels;
/// parallel tasks own output rows (b, t, h), so no two threads write one element. Conv weights are transposed once per
/// call from (C, 1, k…) to (tap, C) so a tap's weights are one contiguous C-vector. Weight/bias gradients are column
/// sums over pixels in <see cref="ColumnSums"/> per chunk, combined in f64.
/// </summary>
public static unsafe class CpuSpatial
{
    /// <summary>Minimum f32 elements of work per parallel chunk.</summary>
    private const int ChunkElements = 1 << 15;

    private static int RowGrain(long rowElements) => (int)Math.Max(1, ChunkElements / Math.Max(rowElements, 1));

    // ---- bilinear_resize ----

    /// <summary>Per output index along one axis: the two source indices and their f32 weights (torch's align_corners=False rule).</summary>
    private static (int I0, int I1, float W0, float W1)[] Taps(int inSize, int outSize)
    {
        var taps = new (int, int, float, float)[outSize];
        for (int o = 0; o < outSize; o++)
        {
            var (i0, i1, lambda) = BilinearResizeOp.SourceIndex(o, inSize, outSize);
            taps[o] = (i0, i1, (float)(1 - lambda), (float)lambda);
        }
        return taps;
    }

    /// <summary>Separable: per output row, blend the two source rows (one W·C-long pass), then blend column pairs over C.</summary>
    public static void ResizeForward(Tensor x, Tensor y)
    {
        int frames = x.Dim(0) * x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4), outH = y.Dim(2), outW = y.Dim(3);
        var rows = Taps(h, outH);
        var cols = Taps(w, outW);
        float* px = Ptr(x), py = Ptr(y);
        long inRow = (long)w * c, outRow = (long)outW * c;
        For((long)frames * outH, RowGrain(inRow + outRow), (s, e) =>
        {
            var blended = new float[inRow];
            for (int task = s; task < e; task++)
            {
                int f = task / outH, oh = task % outH;
                var (h0, h1, wh0, wh1) = rows[oh];
                TensorPrimitives.Multiply(Span(px + ((long)f * h + h0) * inRow, inRow), wh0, blended);
                TensorPrimitives.MultiplyAdd(Span(px + ((long)f * h + h1) * inRow, inRow), wh1, blended, blended);
                float* yRow = py + ((long)f * outH + oh) * outRow;
                for (int ow = 0; ow < outW; ow++)
                {
                    var (w0, w1, ww0, ww1) = cols[ow];
                    var ys = Span(yRow + (long)ow * c, c);
                    TensorPrimitives.Multiply(blended.AsSpan(w0 * c, c), ww0, ys);
                    TensorPrimitives.MultiplyAdd(blended.AsSpan(w1 * c, c), ww1, ys, ys);
                }
            }
        });
    }

    /// <summary>
    /// The transpose, as a gather over input rows: input row h sums the dy rows that read it (weighted, one
    /// outW·C-long pass each), then scatters that sum's columns onto its own W·C row. A task owns whole input rows.
    /// </summary>
    public static void ResizeBackward(Tensor dy, Tensor dx)
    {
        int frames = dx.Dim(0) * dx.Dim(1), h = dx.Dim(2), w = dx.Dim(3), c = dx.Dim(4), outH = dy.Dim(2), outW = dy.Dim(3);
        var rows = Taps(h, outH);
        var cols = Taps(w, outW);
        var readers = new List<(int OutRow, float Weight)>[h];
        for (int i = 0; i < h; i++) readers[i] = [];
        for (int oh = 0; oh < outH; oh++)
        {
            var (h0, h1, wh0, wh1) = rows[oh];
            if (wh0 != 0) readers[h0].Add((oh, wh0));
            if (wh1 != 0) readers[h1].Add((oh, wh1));
        }
        float* pdy = Ptr(dy), pdx = Ptr(dx);
        long inRow = (long)w * c, outRow = (long)outW * c;
        For((long)frames * h, RowGrain(inRow + 2 * outRow), (s, e) =>
        {
            var gathered = new float[outRow];
            for (int task = s; task < e; task++)
            {
                int f = task / h, ih = task % h;
                var dxRow = Span(pdx + ((long)f * h + ih) * inRow, inRow);
                dxRow.Clear();
                if (readers[ih].Count == 0) continue;
                bool first = true;
                foreach (var (oh, weight) in readers[ih])
                {
                    var dyRow = Span(pdy + ((long)f * outH + oh) * outRow, outRow);
                    if (first) TensorPrimitives.Multiply(dyRow, weight, gathered);
                    else TensorPrimitives.MultiplyAdd(dyRow, weight, gathered, gathered);
                    first = false;
                }
                for (int ow = 0; ow < outW; ow++)
                {
                    var (w0, w1, ww0, ww1) = cols[ow];
                    var g = gathered.AsSpan(ow * c, c);
                    var d0 = dxRow.Slice(w0 * c, c);
                    TensorPrimitives.MultiplyAdd(g, ww0, d0, d0);
                    if (ww1 == 0) continue;
                    var d1 = dxRow.Slice(w1 * c, c);
                    TensorPrimitives.MultiplyAdd(g, ww1, d1, d1);
                }
            }
        });
    }

    // ---- weights as (tap, C) ----

    /// <summary>(C, 1, taps…) → (tap, C).</summary>
    private static float[] TapMajor(Tensor weight, int c)
    {
        int taps = checked((int)(weight.ElementCount / c));
        var source = weight.HostSpan<float>();
        var result = new float[taps * c];
        for (int ch = 0; ch < c; ch++)
            for (int tap = 0; tap < taps; tap++)
                result[tap * c + ch] = source[ch * taps + tap];
        return result;
    }

    /// <summary>(tap, C) f64 sums → (C, 1, taps…) f32.</summary>
    private static void StoreChannelMajor(ReadOnlySpan<double> tapMajor, int c, Span<float> destination)
    {
        int taps = tapMajor.Length / c;
        for (int ch = 0; ch < c; ch++)
            for (int tap = 0; tap < taps; tap++)
                destination[ch * taps + tap] = (float)tapMajor[tap * c + ch];
    }

    private static void CombineInto(ColumnSums?[] chunks, int width, int c, Tensor? destination, bool tapMajor)
    {
        if (destination is null) return;
        if (!tapMajor)
        {
            ColumnSums.Combine(chunks, destination.HostSpan<float>());
            return;
        }
        var sum = new double[width];
        foreach (var chunk in chunks)
        {
            if (chunk is null) continue;
            var totals = chunk.Totals;
            for (int i = 0; i < width; i++) sum[i] += totals[i];
        }
        StoreChannelMajor(sum, c, destination.HostSpan<float>());
    }

    private static void InitWithBias(Span<float> destination, float* bias)
    {
        if (bias == null) destination.Clear();
        else new ReadOnlySpan<float>(bias, destination.Length).CopyTo(destination);
    }

    // ---- depthwise_conv2d: kh×kw, stride = kernel, no padding, remainder dropped ----

    public static void Conv2dForward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        int frames = x.Dim(0) * x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kh = weight.Dim(2), kw = weight.Dim(3), ho = y.Dim(2), wo = y.Dim(3);
        var wt = TapMajor(weight, c);
        float* px = Ptr(x), pb = PtrOrNull(bias), py = Ptr(y);
        For((long)frames * ho, RowGrain((long)wo * kh * kw * c), (s, e) =>
        {
            for (int task = s; task < e; task++)
            {
                int f = task / ho, oh = task % ho;
                for (int ow = 0; ow < wo; ow++)
                {
                    var ys = Span(py + (((long)f * ho + oh) * wo + ow) * c, c);
                    InitWithBias(ys, pb);
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++)
                        {
                            var xs = Span(px + (((long)f * h + oh * kh + i) * w + ow * kw + j) * c, c);
                            TensorPrimitives.MultiplyAdd(xs, wt.AsSpan((i * kw + j) * c, c), ys, ys);
                        }
                }
            }
        });
    }

    /// <summary>
    /// Each x element feeds at most one output (stride = kernel): dx = dy·w on the covered pixels, 0 on the dropped
    /// remainder; dw[c, i, j] = Σ dy·x; db = Σ dy. A task owns output rows and the kh input rows under them.
    /// </summary>
    public static void Conv2dBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        int frames = x.Dim(0) * x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kh = weight.Dim(2), kw = weight.Dim(3), ho = h / kh, wo = w / kw, taps = kh * kw;
        var wt = TapMajor(weight, c);
        float* px = Ptr(x), pdy = Ptr(dy), pdx = PtrOrNull(dx);
        long rows = (long)frames * ho;
        int grain = RowGrain((long)wo * taps * c * 2);
        var weightSums = new ColumnSums?[Chunks(rows, grain)];
        var biasSums = new ColumnSums?[weightSums.Length];
        For(rows, grain, (chunk, s, e) =>
        {
            var accW = dWeight is null ? null : weightSums[chunk] = new ColumnSums(taps * c);
            var accB = dBias is null ? null : biasSums[chunk] = new ColumnSums(c);
            for (int task = s; task < e; task++)
            {
                int f = task / ho, oh = task % ho;
                for (int ow = 0; ow < wo; ow++)
                {
                    var g = Span(pdy + (((long)f * ho + oh) * wo + ow) * c, c);
                    if (accB is not null)
                    {
                        TensorPrimitives.Add(g, accB.Partial, accB.Partial);
                        accB.EndRow();
                    }
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++)
                        {
                            long at = (((long)f * h + oh * kh + i) * w + ow * kw + j) * c;
                            int tap = i * kw + j;
                            if (pdx != null) TensorPrimitives.Multiply(g, wt.AsSpan(tap * c, c), Span(pdx + at, c));
                            if (accW is not null)
                            {
                                var partial = accW.Partial.Slice(tap * c, c);
                                TensorPrimitives.MultiplyAdd(g, Span(px + at, c), partial, partial);
                            }
                        }
                    accW?.EndRow();
                }
                if (pdx == null) continue;
                for (int i = 0; i < kh; i++) // the dropped right-hand columns of these kh rows
                    Span(pdx + (((long)f * h + oh * kh + i) * w + wo * kw) * c, (long)(w - wo * kw) * c).Clear();
            }
        });
        if (pdx != null && h > ho * kh) // the dropped bottom rows
            For(frames, 1, (s, e) =>
            {
                for (int f = s; f < e; f++)
                    Span(pdx + ((long)f * h + ho * kh) * w * c, (long)(h - ho * kh) * w * c).Clear();
            });
        CombineInto(weightSums, taps * c, c, dWeight, tapMajor: true);
        CombineInto(biasSums, c, c, dBias, tapMajor: false);
    }

    // ---- depthwise_conv3d: kt×kh×kw (odd), stride 1, zero padding k/2 ----

    public static void Conv3dForward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        int batch = x.Dim(0), t = x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kt = weight.Dim(2), kh = weight.Dim(3), kw = weight.Dim(4);
        var wt = TapMajor(weight, c);
        float* px = Ptr(x), pb = PtrOrNull(bias), py = Ptr(y);
        For((long)batch * t * h, RowGrain((long)w * kt * kh * kw * c), (s, e) =>
        {
            for (int task = s; task < e; task++)
            {
                int b = task / (t * h), ot = task / h % t, oh = task % h;
                for (int ow = 0; ow < w; ow++)
                {
                    var ys = Span(py + ((long)task * w + ow) * c, c);
                    InitWithBias(ys, pb);
                    for (int dt = 0; dt < kt; dt++)
                    {
                        int it = ot + dt - kt / 2;
                        if (it < 0 || it >= t) continue;
                        for (int dh = 0; dh < kh; dh++)
                        {
                            int ih = oh + dh - kh / 2;
                            if (ih < 0 || ih >= h) continue;
                            for (int dw = 0; dw < kw; dw++)
                            {
                                int iw = ow + dw - kw / 2;
                                if (iw < 0 || iw >= w) continue;
                                var xs = Span(px + ((((long)b * t + it) * h + ih) * w + iw) * c, c);
                                TensorPrimitives.MultiplyAdd(xs, wt.AsSpan(((dt * kh + dh) * kw + dw) * c, c), ys, ys);
                            }
                        }
                    }
                }
            }
        });
    }

    /// <summary>
    /// dx gathers dy through the mirrored taps: dx[p] = Σ_tap w[tap]·dy[p − offset(tap)]; dw[tap] = Σ_p dy[p]·x[p + offset(tap)];
    /// db = Σ dy. A task owns rows (b, t, h): it writes their dx and adds their pixels' dw terms to its chunk's sums.
    /// </summary>
    public static void Conv3dBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        int batch = x.Dim(0), t = x.Dim(1), h = x.Dim(2), w = x.Dim(3), c = x.Dim(4);
        int kt = weight.Dim(2), kh = weight.Dim(3), kw = weight.Dim(4), taps = kt * kh * kw;
        int pt = kt / 2, ph = kh / 2, pw = kw / 2;
        var wt = TapMajor(weight, c);
        float* px = Ptr(x), pdy = Ptr(dy), pdx = PtrOrNull(dx);
        long rows = (long)batch * t * h;
        int grain = RowGrain((long)w * taps * c * 2);
        var weightSums = new ColumnSums?[Chunks(rows, grain)];
        var biasSums = new ColumnSums?[weightSums.Length];
        For(rows, grain, (chunk, s, e) =>
        {
            var accW = dWeight is null ? null : weightSums[chunk] = new ColumnSums(taps * c);
            var accB = dBias is null ? null : biasSums[chunk] = new ColumnSums(c);
            for (int task = s; task < e; task++)
            {
                int b = task / (t * h), pt0 = task / h % t, ph0 = task % h;
                for (int pw0 = 0; pw0 < w; pw0++)
                {
                    long here = ((long)task * w + pw0) * c;
                    var g = Span(pdy + here, c);
                    if (accB is not null)
                    {
                        TensorPrimitives.Add(g, accB.Partial, accB.Partial);
                        accB.EndRow();
                    }
                    var dxs = pdx == null ? default : Span(pdx + here, c);
                    dxs.Clear();
                    for (int dt = 0; dt < kt; dt++)
                        for (int dh = 0; dh < kh; dh++)
                            for (int dw = 0; dw < kw; dw++)
                            {
                                int tap = (dt * kh + dh) * kw + dw;
                                // dw term: dy here times x at here + offset(tap)
                                int xt = pt0 + dt - pt, xh = ph0 + dh - ph, xw = pw0 + dw - pw;
                                if (accW is not null && xt >= 0 && xt < t && xh >= 0 && xh < h && xw >= 0 && xw < w)
                                {
                                    var partial = accW.Partial.Slice(tap * c, c);
                                    var xs = Span(px + ((((long)b * t + xt) * h + xh) * w + xw) * c, c);
                                    TensorPrimitives.MultiplyAdd(g, xs, partial, partial);
                                }
                                // dx term: dy at here − offset(tap) times w[tap]
                                int yt = pt0 - dt + pt, yh = ph0 - dh + ph, yw = pw0 - dw + pw;
                                if (pdx != null && yt >= 0 && yt < t && yh >= 0 && yh < h && yw >= 0 && yw < w)
                                {
                                    var gy = Span(pdy + ((((long)b * t + yt) * h + yh) * w + yw) * c, c);
                                    TensorPrimitives.MultiplyAdd(gy, wt.AsSpan(tap * c, c), dxs, dxs);
                                }
                            }
                    accW?.EndRow();
                }
            }
        });
        CombineInto(weightSums, taps * c, c, dWeight, tapMajor: true);
        CombineInto(biasSums, c, c, dBias, tapMajor: false);
    }
}
