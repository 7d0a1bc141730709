using UltraGen.Core;

namespace UltraGen.Model;

/// <summary>
/// A model configuration is invalid (dim not divisible by heads, a full-attention block past the last layer, …), names an
/// unknown preset, or cannot be inferred from a weights file. The message lists every problem found.
/// </summary>
public class ModelConfigException : UltraGenException
{
    public ModelConfigException(string message) : base(message) { }
}

/// <summary>
/// A weights file does not match the model configuration. One exception reports every problem at once; the message lists
/// the missing, unexpected and mis-shaped tensors (and tensors of a dtype that cannot be loaded), the first few of each
/// with their shapes, and how many there are in all.
/// </summary>
public class WeightsMismatchException : UltraGenException
{
    public WeightsMismatchException(string filePath, string message, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected,
        IReadOnlyList<string> misshaped, IReadOnlyList<string> unsupportedDTypes)
        : base(message)
    {
        FilePath = filePath;
        Missing = missing;
        Unexpected = unexpected;
        Misshaped = misshaped;
        UnsupportedDTypes = unsupportedDTypes;
    }

    public string FilePath { get; }

    /// <summary>Names the configuration needs that the file does not hold.</summary>
    public IReadOnlyList<string> Missing { get; }

    /// <summary>Names the file holds that the configuration does not have.</summary>
    public IReadOnlyList<string> Unexpected { get; }

    /// <summary>Names present in both with a different shape.</summary>
    public IReadOnlyList<string> Misshaped { get; }

    /// <summary>Names whose dtype is not a float type the loader converts (F32, BF16, F16, F64).</summary>
    public IReadOnlyList<string> UnsupportedDTypes { get; }
}
