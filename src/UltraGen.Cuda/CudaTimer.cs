using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda;

/// <summary>Device-side timing of work queued on a stream, with CUDA events (resolution about 0.5 µs).</summary>
public sealed class CudaTimer : IDisposable
{
    private readonly IntPtr _stream;
    private IntPtr _start, _end;

    public CudaTimer(IntPtr stream)
    {
        _stream = stream;
        _start = CudaDriver.CreateEvent();
        _end = CudaDriver.CreateEvent();
    }

    /// <summary>Milliseconds the device spent on the work <paramref name="enqueue"/> queues (waits for it to finish).</summary>
    public float Measure(Action enqueue)
    {
        CudaDriver.RecordEvent(_start, _stream);
        enqueue();
        CudaDriver.RecordEvent(_end, _stream);
        CudaDriver.SynchronizeEvent(_end);
        return CudaDriver.ElapsedMilliseconds(_start, _end);
    }

    /// <summary>Runs <paramref name="warmup"/> untimed calls, then <paramref name="iterations"/> timed ones; the median and every sample.</summary>
    public (double MedianMilliseconds, double[] Samples) Median(Action enqueue, int warmup = 3, int iterations = 20)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        for (int i = 0; i < warmup; i++) enqueue();
        CudaDriver.SynchronizeStream(_stream);
        var samples = new double[iterations];
        for (int i = 0; i < iterations; i++) samples[i] = Measure(enqueue);
        return (MedianOf(samples), samples);
    }

    /// <summary>The median (mean of the middle two for an even count).</summary>
    public static double MedianOf(IReadOnlyList<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("no samples", nameof(values));
        var sorted = values.OrderBy(v => v).ToArray();
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    public void Dispose()
    {
        if (_start != IntPtr.Zero) CudaDriver.DestroyEvent(_start);
        if (_end != IntPtr.Zero) CudaDriver.DestroyEvent(_end);
        _start = _end = IntPtr.Zero;
    }
}
