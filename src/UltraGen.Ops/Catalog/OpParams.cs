using System.Globalization;
using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>One parameter an op accepts (<c>--param name=value</c>), with its type, default and meaning.</summary>
public sealed record ParamSpec(string Name, string Type, string? Default, string Description)
{
    public bool Required => Default is null;
}

/// <summary>
/// Parameter values given to an op, as text (they arrive from the command line and from test cases alike).
/// Typed getters validate and fall back to the op's declared defaults.
/// </summary>
public sealed class OpParams
{
    private readonly Dictionary<string, string> _values;

    public OpParams() => _values = new(StringComparer.Ordinal);

    public OpParams(IEnumerable<KeyValuePair<string, string>> values)
    {
        _values = new(StringComparer.Ordinal);
        foreach (var (key, value) in values) _values[key] = value;
    }

    /// <summary>Builds parameters from anonymous-object-like pairs: <c>OpParams.Of(("T", 2), ("heads", 4))</c>.</summary>
    public static OpParams Of(params (string Name, object Value)[] values)
    {
        var result = new OpParams();
        foreach (var (name, value) in values)
            result._values[name] = Convert.ToString(value, CultureInfo.InvariantCulture) switch
            {
                "True" => "true",
                "False" => "false",
                var text => text ?? "",
            };
        return result;
    }

    /// <summary>Parses "k=v" items (the CLI's <c>--param</c>).</summary>
    public static OpParams Parse(IEnumerable<string> items)
    {
        var result = new OpParams();
        foreach (var item in items)
        {
            int eq = item.IndexOf('=');
            if (eq <= 0) throw new OpParameterException($"parameter '{item}' is not of the form name=value");
            result._values[item[..eq].Trim()] = item[(eq + 1)..].Trim();
        }
        return result;
    }

    public IReadOnlyDictionary<string, string> Values => _values;

    public OpParams With(string name, object value)
    {
        var copy = new OpParams(_values);
        copy._values[name] = Convert.ToString(value, CultureInfo.InvariantCulture)!;
        return copy;
    }

    /// <summary>Throws if a value names no declared parameter or a required one is missing.</summary>
    public void Validate(string opName, IReadOnlyList<ParamSpec> specs)
    {
        foreach (var key in _values.Keys)
            if (!specs.Any(s => s.Name == key))
                throw new OpParameterException(
                    $"op '{opName}' has no parameter '{key}' (it takes: {(specs.Count == 0 ? "none" : string.Join(", ", specs.Select(s => s.Name)))})");
        foreach (var spec in specs)
            if (spec.Required && !_values.ContainsKey(spec.Name))
                throw new OpParameterException($"op '{opName}' needs parameter '{spec.Name}' ({spec.Description})");
    }

    public bool Has(string name) => _values.ContainsKey(name);

    public string GetString(string name, string? fallback = null) =>
        _values.TryGetValue(name, out var value) ? value
        : fallback ?? throw new OpParameterException($"parameter '{name}' is required");

    public int GetInt(string name, int? fallback = null)
    {
        if (!_values.TryGetValue(name, out var text))
            return fallback ?? throw new OpParameterException($"parameter '{name}' is required");
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value)
            ? value
            : throw new OpParameterException($"parameter '{name}' must be an integer, got '{text}'");
    }

    public double GetDouble(string name, double? fallback = null)
    {
        if (!_values.TryGetValue(name, out var text))
            return fallback ?? throw new OpParameterException($"parameter '{name}' is required");
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value)
            ? value
            : throw new OpParameterException($"parameter '{name}' must be a number, got '{text}'");
    }

    public bool GetBool(string name, bool? fallback = null)
    {
        if (!_values.TryGetValue(name, out var text))
            return fallback ?? throw new OpParameterException($"parameter '{name}' is required");
        return text.ToLowerInvariant() switch
        {
            "true" or "1" or "yes" => true,
            "false" or "0" or "no" => false,
            _ => throw new OpParameterException($"parameter '{name}' must be true or false, got '{text}'"),
        };
    }

    public override string ToString() =>
        string.Join(",", _values.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}"));
}
