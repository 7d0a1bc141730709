using System.Numerics.Tensors;
using UltraGen.Core;
using Tensor = UltraGen.Core.Tensor;
using UltraGen.Ops;
using static UltraGen.Cpu.CpuParallel;

namespace UltraGen.Cpu;

/// <summary>
/// rms_norm, layer_norm (over the last dim D) and modulate (adaLN) on f32 host tensors (references:
/// <see cref="RmsNormOp"/>, <see cref="LayerNormOp"/>, <see cref="ModulateOp"/>). Rows run in parallel chunks; each
/// row is a handful of TensorPrimitives passes over D (row sums use its multi-accumulator vector reductions). The
/// weight/bias gradients are column sums over rows: per chunk in <see cref="ColumnSums"/>, combined in f64.
/// </summary>
public static unsafe class CpuNorms
{
    /// <summary>Rows per chunk: at least ~32K elements of work.</summary>
    private static int RowGrain(int d) => CpuElementwise.RowsPerChunk(d);

    private static int RowsOf(Tensor x, int d) => checked((int)(x.ElementCount / d));

    // ---- rms_norm: y = x·r ⊙ w, r = (mean(x²) + eps)^(−1/2) ----

    private static float InverseRms(ReadOnlySpan<float> row, double eps) =>
        (float)(1.0 / Math.Sqrt(TensorPrimitives.SumOfSquares(row) / row.Length + eps));

    public static void RmsNormForward(Tensor x, Tensor weight, Tensor y, double eps)
    {
        int d = weight.Dim(0);
        float* px = Ptr(x), pw = Ptr(weight), py = Ptr(y);
        For(RowsOf(x, d), RowGrain(d), (s, e) =>
        {
            var w = Span(pw, d);
            for (int row = s; row < e; row++)
            {
                var xs = Span(px + (long)row * d, d);
                var ys = Span(py + (long)row * d, d);
                TensorPrimitives.Multiply(xs, InverseRms(xs, eps), ys);
                TensorPrimitives.Multiply(ys, w, ys);
            }
        });
    }

    /// <summary>With g = dy ⊙ w: dx = r·g − (r³·Σ g·x / D)·x; dw = Σ_rows dy ⊙ x·r.</summary>
    public static void RmsNormBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dWeight, double eps)
    {
        int d = weight.Dim(0), rows = RowsOf(x, d);
        float* px = Ptr(x), pw = Ptr(weight), pdy = Ptr(dy), pdx = PtrOrNull(dx);
        var sums = new ColumnSums?[Chunks(rows, RowGrain(d))];
        For(rows, RowGrain(d), (chunk, s, e) =>
        {
            var w = Span(pw, d);
            var g = new float[d];
            var acc = dWeight is null ? null : sums[chunk] = new ColumnSums(d);
            for (int row = s; row < e; row++)
            {
                var xs = Span(px + (long)row * d, d);
                var dys = Span(pdy + (long)row * d, d);
                float r = InverseRms(xs, eps);
                if (acc is not null)
                {
                    TensorPrimitives.Multiply(dys, xs, g);
                    TensorPrimitives.MultiplyAdd(g, r, acc.Partial, acc.Partial);
                    acc.EndRow();
                }
                if (pdx == null) continue;
                TensorPrimitives.Multiply(dys, w, g);
                float correction = (float)((double)r * r * r * TensorPrimitives.Dot(g, xs) / d);
                var dxs = Span(pdx + (long)row * d, d);
                TensorPrimitives.Multiply(g, r, dxs);
                TensorPrimitives.MultiplyAdd(xs, -correction, dxs, dxs);
            }
        });
        if (dWeight is not null) ColumnSums.Combine(sums, dWeight.HostSpan<float>());
    }

    // ---- layer_norm: y = (x − μ)·rstd ⊙ w + b ----

    /// <summary>Writes x̂ = (x − μ)·rstd into <paramref name="xhat"/>; returns rstd.</summary>
    private static float Normalize(ReadOnlySpan<float> x, Span<float> xhat, double eps)
    {
        float mean = TensorPrimitives.Sum(x) / x.Length;
        TensorPrimitives.Subtract(x, mean, xhat);
        float rstd = (float)(1.0 / Math.Sqrt(TensorPrimitives.SumOfSquares(xhat) / x.Length + eps));
        TensorPrimitives.Multiply(xhat, rstd, xhat);
        return rstd;
    }

    public static void LayerNormForward(Tensor x, Tensor? weight, Tensor? bias, Tensor y, double eps)
    {
        int d = x.Dim(-1);
        float* px = Ptr(x), pw = PtrOrNull(weight), pb = PtrOrNull(bias), py = Ptr(y);
        For(RowsOf(x, d), RowGrain(d), (s, e) =>
        {
            for (int row = s; row < e; row++)
            {
                var ys = Span(py + (long)row * d, d);
                Normalize(Span(px + (long)row * d, d), ys, eps);
                if (pw != null) TensorPrimitives.Multiply(ys, Span(pw, d), ys);
                if (pb != null) TensorPrimitives.Add(ys, Span(pb, d), ys);
            }
        });
    }

    /// <summary>With g = dy ⊙ w: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)); dw = Σ_rows dy ⊙ x̂; db = Σ_rows dy.</summary>
    public static void LayerNormBackward(Tensor x, Tensor? weight, Tensor dy, Tensor? dx, Tensor? dWeight, Tensor? dBias, double eps)
    {
        int d = x.Dim(-1), rows = RowsOf(x, d);
        float* px = Ptr(x), pw = PtrOrNull(weight), pdy = Ptr(dy), pdx = PtrOrNull(dx);
        int chunks = Chunks(rows, RowGrain(d));
        var weightSums = new ColumnSums?[chunks];
        var biasSums = new ColumnSums?[chunks];
        For(rows, RowGrain(d), (chunk, s, e) =>
        {
            var xhat = new float[d];
            var g = new float[d];
            var accW = dWeight is null ? null : weightSums[chunk] = new ColumnSums(d);
            var accB = dBias is null ? null : biasSums[chunk] = new ColumnSums(d);
            for (int row = s; row < e; row++)
            {
                var dys = Span(pdy + (long)row * d, d);
                float rstd = Normalize(Span(px + (long)row * d, d), xhat, eps);
                if (accW is not null)
                {
                    TensorPrimitives.MultiplyAdd(dys, xhat, accW.Partial, accW.Partial);
                    accW.EndRow();
                }
                if (accB is not null)
                {
                    TensorPrimitives.Add(dys, accB.Partial, accB.Partial);
                    accB.EndRow();
                }
                if (pdx == null) continue;
                ReadOnlySpan<float> gs = dys;
                if (pw != null)
                {
                    TensorPrimitives.Multiply(dys, Span(pw, d), g);
                    gs = g;
                }
                float meanG = TensorPrimitives.Sum(gs) / d, meanGX = TensorPrimitives.Dot(gs, xhat) / d;
                var dxs = Span(pdx + (long)row * d, d);
                TensorPrimitives.MultiplyAdd(xhat, -meanGX, gs, dxs);
                TensorPrimitives.Add(dxs, -meanG, dxs);
                TensorPrimitives.Multiply(dxs, rstd, dxs);
            }
        });
        if (dWeight is not null) ColumnSums.Combine(weightSums, dWeight.HostSpan<float>());
        if (dBias is not null) ColumnSums.Combine(biasSums, dBias.HostSpan<float>());
    }

    // ---- modulate: y = x·(1 + scale) + shift, (B, D) broadcast over N ----

    public static void ModulateForward(Tensor x, Tensor shift, Tensor scale, Tensor y)
    {
        int b = x.Dim(0), n = x.Dim(1), d = x.Dim(2);
        var onePlusScale = new float[b * d];
        TensorPrimitives.Add(scale.HostSpan<float>(), 1f, onePlusScale);
        float* px = Ptr(x), pshift = Ptr(shift), py = Ptr(y);
        For((long)b * n, RowGrain(d), (s, e) =>
        {
            for (int row = s; row < e; row++)
            {
                int p = row / n * d;
                long o = (long)row * d;
                TensorPrimitives.MultiplyAdd(Span(px + o, d), onePlusScale.AsSpan(p, d), Span(pshift + p, d), Span(py + o, d));
            }
        });
    }

    /// <summary>dx = dy·(1 + scale); dshift = Σ_N dy; dscale = Σ_N dy·x. Tasks own (b, channel block).</summary>
    public static void ModulateBackward(Tensor x, Tensor scale, Tensor dy, Tensor? dx, Tensor? dShift, Tensor? dScale)
    {
        int b = x.Dim(0), n = x.Dim(1), d = x.Dim(2);
        int block = CpuElementwise.ChannelBlock, blocks = (d + block - 1) / block;
        float* px = Ptr(x), pscale = Ptr(scale), pdy = Ptr(dy);
        float* pdx = PtrOrNull(dx), pdShift = PtrOrNull(dShift), pdScale = PtrOrNull(dScale);
        Parallel.For(0, b * blocks, task =>
        {
            int batch = task / blocks, c0 = task % blocks * block, width = Math.Min(block, d - c0), p = batch * d + c0;
            Span<float> onePlusScale = stackalloc float[width];
            TensorPrimitives.Add(Span(pscale + p, width), 1f, onePlusScale);
            var shiftSums = pdShift == null ? null : new ColumnSums(width);
            var scaleSums = pdScale == null ? null : new ColumnSums(width);
            for (int t = 0; t < n; t++)
            {
                long o = ((long)batch * n + t) * d + c0;
                var g = Span(pdy + o, width);
                if (pdx != null) TensorPrimitives.Multiply(g, onePlusScale, Span(pdx + o, width));
                if (shiftSums is not null)
                {
                    TensorPrimitives.Add(g, shiftSums.Partial, shiftSums.Partial);
                    shiftSums.EndRow();
                }
                if (scaleSums is not null)
                {
                    TensorPrimitives.MultiplyAdd(g, Span(px + o, width), scaleSums.Partial, scaleSums.Partial);
                    scaleSums.EndRow();
                }
            }
            if (shiftSums is not null) Store(shiftSums.Totals, pdShift + p);
            if (scaleSums is not null) Store(scaleSums.Totals, pdScale + p);
        });
    }

    private static void Store(ReadOnlySpan<double> totals, float* destination)
    {
        for (int i = 0; i < totals.Length; i++) destination[i] = (float)totals[i];
    }
}
