using UltraGen.Core;

namespace UltraGen.Cpu;

/// <summary>
/// Raw host pointers and chunked Parallel.For for the Cpu kernels. Spans cannot be captured by the lambdas that
/// Parallel.For runs, so kernels capture the tensors' f32 base pointers and rebuild spans inside each chunk.
/// </summary>
internal static unsafe class CpuParallel
{
    /// <summary>Chunks per core: enough to even out uneven chunks, few enough to amortise scheduling.</summary>
    private const int ChunksPerCore = 4;

    /// <summary>The f32 element pointer of a host tensor (views share their storage's start).</summary>
    public static float* Ptr(Tensor tensor) => (float*)((HostStorage)tensor.Storage).Pointer;

    /// <summary>Null when <paramref name="tensor"/> is absent (an optional input or an unrequested gradient).</summary>
    public static float* PtrOrNull(Tensor? tensor) => tensor is null ? null : Ptr(tensor);

    /// <summary>How many chunks <c>For</c> splits <paramref name="count"/> items into, given at least <paramref name="minItems"/> per chunk.</summary>
    public static int Chunks(long count, long minItems)
    {
        if (count <= 0) return 0;
        long byGrain = (count + Math.Max(minItems, 1) - 1) / Math.Max(minItems, 1);
        return (int)Math.Clamp(byGrain, 1, Math.Min(count, (long)Environment.ProcessorCount * ChunksPerCore));
    }

    /// <summary>
    /// Runs <paramref name="body"/>(chunk, start, end) over [0, <paramref name="count"/>) split into <see cref="Chunks"/>
    /// contiguous ranges; a single chunk runs inline on the caller's thread.
    /// </summary>
    public static void For(long count, long minItems, Action<int, int, int> body)
    {
        int chunks = Chunks(count, minItems);
        if (chunks == 0) return;
        if (chunks == 1)
        {
            body(0, 0, checked((int)count));
            return;
        }
        Parallel.For(0, chunks, c => body(c, (int)(count * c / chunks), (int)(count * (c + 1) / chunks)));
    }

    /// <summary><c>For</c> without the chunk index.</summary>
    public static void For(long count, long minItems, Action<int, int> body) => For(count, minItems, (_, start, end) => body(start, end));

    public static Span<float> Span(float* pointer, int start, int end) => new(pointer + start, end - start);

    public static Span<float> Span(float* pointer, long length) => new(pointer, checked((int)length));
}

/// <summary>
/// Column sums over many rows in f32 with f64 carries: rows add into a float partial that is flushed into doubles every
/// <see cref="FlushRows"/> rows, so a long reduction (tokens × frames) keeps f32 speed and f64-like error.
/// </summary>
internal sealed class ColumnSums(int width)
{
    public const int FlushRows = 64;

    private readonly float[] _partial = new float[width];
    private readonly double[] _total = new double[width];
    private int _rows;

    /// <summary>The running f32 partial; add one row into it, then call <see cref="EndRow"/>.</summary>
    public Span<float> Partial => _partial;

    public void EndRow()
    {
        if (++_rows == FlushRows) Flush();
    }

    public ReadOnlySpan<double> Totals
    {
        get
        {
            Flush();
            return _total;
        }
    }

    private void Flush()
    {
        for (int i = 0; i < _partial.Length; i++) _total[i] += _partial[i];
        Array.Clear(_partial);
        _rows = 0;
    }

    /// <summary>Sums the chunks' totals in f64 into <paramref name="destination"/> (chunks that ran no rows may be null).</summary>
    public static void Combine(ColumnSums?[] chunks, Span<float> destination)
    {
        var sum = new double[destination.Length];
        foreach (var chunk in chunks)
        {
            if (chunk is null) continue;
            var totals = chunk.Totals;
            for (int i = 0; i < sum.Length; i++) sum[i] += totals[i];
        }
        for (int i = 0; i < sum.Length; i++) destination[i] = (float)sum[i];
    }
}
