using System.Globalization;
using System.Text;
using UltraGen.Core;
using UltraGen.Core.Safetensors;

namespace UltraGen.Model;

/// <summary>A tensor present in both the configuration and the file, with different shapes.</summary>
public sealed record ShapeMismatch(ParameterSpec Expected, SafetensorsTensorInfo Actual)
{
    public override string ToString() =>
        $"{Expected.Name}: expected {Shape.Format(Expected.Shape.AsSpan())}, file has {Shape.Format(Actual.ShapeSpan)}";
}

/// <summary>
/// Compares a safetensors file's header with a configuration's <see cref="ParameterCatalog"/>, without reading any
/// tensor data: every missing, unexpected and mis-shaped tensor, and tensors whose dtype the loader cannot convert.
/// With <see cref="WeightsLoadOptions.InitializeMissingUltraGen"/>, a decomposed block whose UltraGen tensors are all
/// absent (a base Wan file) is listed under <see cref="ToInitialize"/> instead of <see cref="Missing"/>; a block holding
/// only some of them is a damaged checkpoint and its absent tensors stay missing.
/// </summary>
public sealed class WeightsCheck
{
    /// <summary>How many names of each kind a message lists before it only counts.</summary>
    public const int DefaultListLimit = 20;

    private WeightsCheck(string filePath, ModelConfig config, List<ParameterSpec> missing, List<ParameterSpec> toInitialize,
        List<SafetensorsTensorInfo> unexpected, List<ShapeMismatch> misshaped, List<SafetensorsTensorInfo> unsupported)
    {
        FilePath = filePath;
        Config = config;
        Missing = missing.AsReadOnly();
        ToInitialize = toInitialize.AsReadOnly();
        Unexpected = unexpected.AsReadOnly();
        Misshaped = misshaped.AsReadOnly();
        UnsupportedDTypes = unsupported.AsReadOnly();
    }

    public string FilePath { get; }

    public ModelConfig Config { get; }

    /// <summary>Parameters the configuration needs that the file lacks (and that will not be initialised).</summary>
    public IReadOnlyList<ParameterSpec> Missing { get; }

    /// <summary>UltraGen parameters the file lacks that the loader will initialise (spec §1.7).</summary>
    public IReadOnlyList<ParameterSpec> ToInitialize { get; }

    /// <summary>File tensors the configuration has no parameter for.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Unexpected { get; }

    public IReadOnlyList<ShapeMismatch> Misshaped { get; }

    /// <summary>File tensors of the right name and shape whose dtype is not F32, BF16, F16 or F64.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> UnsupportedDTypes { get; }

    /// <summary>True when the file can be loaded into the configuration.</summary>
    public bool IsMatch => Missing.Count == 0 && Unexpected.Count == 0 && Misshaped.Count == 0 && UnsupportedDTypes.Count == 0;

    /// <summary>Checks <paramref name="file"/> against <paramref name="config"/>.</summary>
    public static WeightsCheck Run(SafetensorsFile file, ModelConfig config, WeightsLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(config);
        options ??= WeightsLoadOptions.Strict;
        var expected = ParameterCatalog.List(config);

        // Decomposed blocks the file holds no UltraGen tensor for at all: the only ones the loader may initialise.
        var blocksWithUltraGen = new HashSet<int>();
        foreach (var name in file.Names)
            if (ParameterCatalog.IsUltraGenName(name) && ParameterCatalog.TryParseBlockName(name, out int block, out _))
                blocksWithUltraGen.Add(block);

        var missing = new List<ParameterSpec>();
        var toInitialize = new List<ParameterSpec>();
        var misshaped = new List<ShapeMismatch>();
        var unsupported = new List<SafetensorsTensorInfo>();
        var known = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in expected)
        {
            known.Add(spec.Name);
            if (!file.TryGetInfo(spec.Name, out var info))
            {
                bool initialise = options.InitializeMissingUltraGen && spec.IsUltraGen && !blocksWithUltraGen.Contains(spec.Block);
                (initialise ? toInitialize : missing).Add(spec);
            }
            else if (!info.ShapeSpan.SequenceEqual(spec.Shape.AsSpan()))
            {
                misshaped.Add(new ShapeMismatch(spec, info));
            }
            else if (info.DType is null)
            {
                unsupported.Add(info);
            }
        }
        var unexpected = file.Tensors.Where(t => !known.Contains(t.Name)).ToList();
        return new WeightsCheck(file.Path, config, missing, toInitialize, unexpected, misshaped, unsupported);
    }

    /// <summary>
    /// Multi-line description: a summary line, then up to <paramref name="limit"/> names of each kind with their shapes
    /// and "… and N more".
    /// </summary>
    public string Describe(int limit = DefaultListLimit)
    {
        var text = new StringBuilder();
        if (IsMatch)
        {
            text.Append(CultureInfo.InvariantCulture, $"{FilePath}: every tensor the config needs is present with the expected shape");
            if (ToInitialize.Count > 0)
                text.Append(CultureInfo.InvariantCulture, $"; {ToInitialize.Count} UltraGen tensors will be initialised (spec §1.7)");
            return text.ToString();
        }
        var counts = new List<string>();
        if (Missing.Count > 0) counts.Add($"{Missing.Count} missing");
        if (Unexpected.Count > 0) counts.Add($"{Unexpected.Count} unexpected");
        if (Misshaped.Count > 0) counts.Add($"{Misshaped.Count} mis-shaped");
        if (UnsupportedDTypes.Count > 0) counts.Add($"{UnsupportedDTypes.Count} of an unsupported dtype");
        text.Append(CultureInfo.InvariantCulture,
            $"{FilePath}: weights do not match the model config ({Config.Dim} dim, {Config.Layers} layers, full attention {Config.FullAttentionBlocks.ToRangeString()}): {string.Join(", ", counts)}");
        AppendList(text, "missing", Missing, s => s.ToString(), limit);
        AppendList(text, "unexpected", Unexpected, t => $"{t.Name} {t.DTypeName}{Shape.Format(t.ShapeSpan)}", limit);
        AppendList(text, "mis-shaped", Misshaped, m => m.ToString(), limit);
        AppendList(text, "unsupported dtype", UnsupportedDTypes, t => $"{t.Name} {t.DTypeName} (loadable: F32, BF16, F16, F64)", limit);
        return text.ToString();
    }

    private static void AppendList<T>(StringBuilder text, string title, IReadOnlyList<T> items, Func<T, string> describe, int limit)
    {
        if (items.Count == 0) return;
        text.Append(CultureInfo.InvariantCulture, $"\n  {title} ({items.Count}):");
        foreach (var item in items.Take(Math.Max(limit, 0))) text.Append("\n    ").Append(describe(item));
        if (items.Count > limit) text.Append(CultureInfo.InvariantCulture, $"\n    … and {items.Count - limit} more");
    }

    /// <summary>The exception <see cref="ModelWeights.Load(SafetensorsFile, ModelConfig, WeightsLoadOptions?)"/> throws for a failed check.</summary>
    public WeightsMismatchException ToException() =>
        new(FilePath, Describe(),
            Missing.Select(s => s.Name).ToList(),
            Unexpected.Select(t => t.Name).ToList(),
            Misshaped.Select(m => m.Expected.Name).ToList(),
            UnsupportedDTypes.Select(t => t.Name).ToList());
}
