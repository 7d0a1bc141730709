using UltraGen.Core;

namespace UltraGen.Ops.Backends;

/// <summary>A kernel backend whose tensors live in host memory: allocation, copies and dtype conversion done once here.</summary>
public abstract class HostKernelBackend : KernelBackend
{
    private readonly MemoryCounter _allocations = new();

    public override Tensor Allocate(DType dtype, int[] shape)
    {
        long bytes = checked(Shape.ElementCount(shape) * DTypes.SizeOf(dtype));
        return new Tensor(dtype, shape, new HostStorage(bytes, _allocations));
    }

    /// <summary>Every tensor this backend allocated and has not freed (host tensors made elsewhere are not counted).</summary>
    public override MemoryCounter Allocations => _allocations;

    /// <summary>The host memory available to the process (physical memory, or the container's limit).</summary>
    public override long? MemoryCapacity => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    public override void CopyFromHost(Tensor host, Tensor destination) => CopySameShape(host, destination);

    public override void CopyToHost(Tensor source, Tensor host) => CopySameShape(source, host);

    private static void CopySameShape(Tensor source, Tensor destination)
    {
        if (source.DType != destination.DType || !source.Shape.SequenceEqual(destination.Shape))
            throw new ShapeMismatchException($"cannot copy {source} into {destination}");
        source.HostBytes.CopyTo(destination.HostBytes);
    }

    public override void Convert(Tensor source, Tensor destination)
    {
        if (source.ElementCount != destination.ElementCount)
            throw new ShapeMismatchException($"cannot convert {source} into {destination}: element counts differ");
        if (source.DType == destination.DType)
        {
            source.HostBytes.CopyTo(destination.HostBytes);
            return;
        }
        // Chunked through double so no temporary is larger than a few KiB, whatever the tensor's size.
        const int chunk = 4096;
        Span<double> buffer = stackalloc double[chunk];
        int sourceSize = DTypes.SizeOf(source.DType), destinationSize = DTypes.SizeOf(destination.DType);
        var from = source.HostBytes;
        var to = destination.HostBytes;
        for (long start = 0; start < source.ElementCount; start += chunk)
        {
            int count = (int)Math.Min(chunk, source.ElementCount - start);
            FloatConversions.Decode(source.DType, from.Slice((int)(start * sourceSize), count * sourceSize), buffer[..count]);
            FloatConversions.Encode(destination.DType, buffer[..count], to.Slice((int)(start * destinationSize), count * destinationSize));
        }
    }
}
