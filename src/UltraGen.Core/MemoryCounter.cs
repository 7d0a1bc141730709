namespace UltraGen.Core;

/// <summary>
/// Live and peak bytes of the tensors a backend has allocated and not yet freed (thread-safe). A backend that counts
/// passes it to the storage it creates, which reports its bytes back when freed; tests and the memory estimate of
/// <c>ultragen sample</c> read <see cref="Peak"/> around a piece of work (<see cref="ResetPeak"/> first).
/// </summary>
public sealed class MemoryCounter
{
    private long _live, _peak, _allocations;

    /// <summary>Bytes allocated and not yet freed.</summary>
    public long Live => Interlocked.Read(ref _live);

    /// <summary>The largest <see cref="Live"/> since creation or the last <see cref="ResetPeak"/>.</summary>
    public long Peak => Interlocked.Read(ref _peak);

    /// <summary>Allocations made since creation.</summary>
    public long Allocations => Interlocked.Read(ref _allocations);

    /// <summary>Starts a new peak measurement at the current live bytes.</summary>
    public void ResetPeak() => Interlocked.Exchange(ref _peak, Live);

    public void Allocated(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Interlocked.Increment(ref _allocations);
        long live = Interlocked.Add(ref _live, bytes);
        long peak;
        while (live > (peak = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, live, peak) != peak) { }
    }

    public void Freed(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Interlocked.Add(ref _live, -bytes);
    }
}
