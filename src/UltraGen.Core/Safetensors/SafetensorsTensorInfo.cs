namespace UltraGen.Core.Safetensors;

/// <summary>
/// One tensor entry of a safetensors header, already validated. <see cref="DataBegin"/> and <see cref="DataEnd"/>
/// are relative to the start of the data buffer (as in the header), not to the start of the file.
/// </summary>
public sealed record SafetensorsTensorInfo
{
    private readonly int[] _shape;

    internal SafetensorsTensorInfo(string name, string dtypeName, int[] shape, long elementCount, long dataBegin, long dataEnd)
    {
        Name = name;
        DTypeName = dtypeName;
        DType = SafetensorsDTypes.ToDType(dtypeName);
        _shape = shape;
        ElementCount = elementCount;
        DataBegin = dataBegin;
        DataEnd = dataEnd;
    }

    public string Name { get; }

    /// <summary>The dtype exactly as the header spells it ("F32", "I64", "F8_E4M3", ...).</summary>
    public string DTypeName { get; }

    /// <summary>The UltraGen dtype, or null for a valid safetensors dtype UltraGen cannot compute in (I64, U8, F8_*, ...).</summary>
    public DType? DType { get; }

    /// <summary>A copy of the shape (row-major, last dim fastest; empty for a scalar).</summary>
    public int[] Shape => (int[])_shape.Clone();

    public ReadOnlySpan<int> ShapeSpan => _shape;

    public long ElementCount { get; }

    public long DataBegin { get; }

    public long DataEnd { get; }

    public long ByteCount => DataEnd - DataBegin;

    public bool Equals(SafetensorsTensorInfo? other) =>
        other is not null && Name == other.Name && DTypeName == other.DTypeName && _shape.AsSpan().SequenceEqual(other._shape)
        && DataBegin == other.DataBegin && DataEnd == other.DataEnd;

    public override int GetHashCode() => HashCode.Combine(Name, DTypeName, _shape.Length, DataBegin, DataEnd);

    public override string ToString() => $"{Name}: {DTypeName}{Core.Shape.Format(_shape)} [{DataBegin}, {DataEnd})";
}
