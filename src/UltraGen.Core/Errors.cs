namespace UltraGen.Core;

/// <summary>Base of every error this library raises on bad input; the message is meant for the user.</summary>
public class UltraGenException : Exception
{
    public UltraGenException(string message) : base(message) { }
    public UltraGenException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A tensor has the wrong rank, size or dtype for the op or model that received it.</summary>
public class ShapeMismatchException : UltraGenException
{
    public ShapeMismatchException(string message) : base(message) { }
}

/// <summary>An op or backend does not support the requested dtype, head dim or configuration.</summary>
public class UnsupportedConfigurationException : UltraGenException
{
    public UnsupportedConfigurationException(string message) : base(message) { }
}

/// <summary>A parameter given to an op (<c>--param k=v</c>) is unknown, missing or malformed.</summary>
public class OpParameterException : UltraGenException
{
    public OpParameterException(string message) : base(message) { }
}

/// <summary>A safetensors file violates the format. Names the file and, where one is involved, the tensor.</summary>
public class SafetensorsFormatException : UltraGenException
{
    public string FilePath { get; }
    public string? TensorName { get; }

    public SafetensorsFormatException(string filePath, string? tensorName, string problem)
        : base(Compose(filePath, tensorName, problem))
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    private static string Compose(string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}";
}

/// <summary>A tensor was asked for by name but the safetensors file does not hold it.</summary>
public class MissingTensorException : UltraGenException
{
    public string FilePath { get; }
    public string TensorName { get; }

    public MissingTensorException(string filePath, string tensorName)
        : base($"{filePath}: no tensor named '{tensorName}'")
    {
        FilePath = filePath;
        TensorName = tensorName;
    }
}
