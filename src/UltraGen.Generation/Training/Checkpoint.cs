using System.Globalization;
using UltraGen.Core;
using UltraGen.Core.Safetensors;

namespace UltraGen.Generation.Training;

/// <summary>
/// A resumable training state in one safetensors file: every master weight under its own name (so the file also
/// loads as plain model weights), AdamW's moments under <c>optimizer.m.&lt;name&gt;</c> and <c>optimizer.v.&lt;name&gt;</c>,
/// and metadata: format, step, seed, optimizer settings, learning-rate schedule (informational) and the caller's
/// config string. Written through <see cref="SafetensorsWriter"/>, which writes a temporary file and renames it over
/// the target, so a kill at any moment leaves the previous checkpoint or the new one, never a torn file.
/// </summary>
public static class Checkpoint
{
    public const string Format = "ultragen-training-checkpoint/1";

    public const string FirstMomentPrefix = "optimizer.m.";

    public const string SecondMomentPrefix = "optimizer.v.";

    public const string FormatKey = "format", StepKey = "step", SeedKey = "seed", OptimizerKey = "optimizer",
        ScheduleKey = "learning_rate_schedule", ConfigKey = "config";

    /// <summary>Writes the masters and moments of <paramref name="optimizer"/> after <paramref name="step"/> completed steps.</summary>
    public static void Save(string path, AdamW optimizer, long step, ulong seed, string config, LearningRateSchedule? schedule = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        var entries = new List<KeyValuePair<string, Tensor>>(3 * optimizer.Parameters.Count);
        foreach (var (name, master) in optimizer.Parameters) entries.Add(new(name, master));
        foreach (var (name, _) in optimizer.Parameters) entries.Add(new(FirstMomentPrefix + name, optimizer.FirstMoment(name)));
        foreach (var (name, _) in optimizer.Parameters) entries.Add(new(SecondMomentPrefix + name, optimizer.SecondMoment(name)));
        var metadata = new Dictionary<string, string>
        {
            [FormatKey] = Format,
            [StepKey] = step.ToString(CultureInfo.InvariantCulture),
            [SeedKey] = seed.ToString(CultureInfo.InvariantCulture),
            [OptimizerKey] = optimizer.Settings.Describe(),
            [ConfigKey] = config,
        };
        if (schedule is not null) metadata[ScheduleKey] = schedule.Describe();
        SafetensorsWriter.Write(path, entries, metadata);
    }

    /// <summary>
    /// Loads a checkpoint into the masters and moments of <paramref name="optimizer"/> and returns its step. Every
    /// check (format, config, seed, optimizer settings, the exact set of tensor names, dtypes, shapes) runs before
    /// anything is written, so on an exception the optimizer and the masters are unchanged.
    /// </summary>
    /// <exception cref="SafetensorsFormatException">The file is missing or not valid safetensors.</exception>
    /// <exception cref="CheckpointMismatchException">The checkpoint does not belong to this run.</exception>
    public static long Load(string path, AdamW optimizer, ulong seed, string config)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(config);
        using var file = SafetensorsFile.Open(path);
        var metadata = file.Metadata;
        string Meta(string key) => metadata.TryGetValue(key, out var value) ? value
            : throw new CheckpointMismatchException(path, null, $"metadata has no '{key}'; not an UltraGen training checkpoint");

        if (Meta(FormatKey) != Format)
            throw new CheckpointMismatchException(path, null, $"format is '{Meta(FormatKey)}', expected '{Format}'");
        if (!long.TryParse(Meta(StepKey), NumberStyles.None, CultureInfo.InvariantCulture, out long step))
            throw new CheckpointMismatchException(path, null, $"step '{Meta(StepKey)}' is not a non-negative integer");
        string storedConfig = Meta(ConfigKey);
        if (storedConfig != config)
            throw new CheckpointMismatchException(path, null, "it was written for a different config: " + DescribeDifference(storedConfig, config));
        string seedText = seed.ToString(CultureInfo.InvariantCulture);
        if (Meta(SeedKey) != seedText)
            throw new CheckpointMismatchException(path, null, $"it was written with seed {Meta(SeedKey)}, this run uses {seedText}");
        if (Meta(OptimizerKey) != optimizer.Settings.Describe())
            throw new CheckpointMismatchException(path, null,
                $"optimizer settings differ: checkpoint '{Meta(OptimizerKey)}', this run '{optimizer.Settings.Describe()}'");

        var expected = new HashSet<string>(StringComparer.Ordinal);
        var targets = new List<(string Name, Tensor Target)>();
        foreach (var (name, master) in optimizer.Parameters)
        {
            targets.Add((name, master));
            targets.Add((FirstMomentPrefix + name, optimizer.FirstMoment(name)));
            targets.Add((SecondMomentPrefix + name, optimizer.SecondMoment(name)));
        }
        foreach (var (name, target) in targets)
        {
            expected.Add(name);
            if (!file.TryGetInfo(name, out var info))
                throw new CheckpointMismatchException(path, name, "missing from the checkpoint");
            if (info.DType != DType.F32)
                throw new CheckpointMismatchException(path, name, $"dtype is {info.DTypeName}, expected F32");
            if (!Shape.Equal(info.ShapeSpan, target.Shape))
                throw new CheckpointMismatchException(path, name,
                    $"shape is {Shape.Format(info.ShapeSpan)}, this run has {Shape.Format(target.Shape)}");
        }
        foreach (string name in file.Names)
            if (!expected.Contains(name))
                throw new CheckpointMismatchException(path, name, "is in the checkpoint but is not a trainable parameter of this run");

        foreach (var (name, target) in targets) file.GetBytes(name).CopyTo(target.HostBytes);
        optimizer.RestoreStepCount(step);
        return step;
    }

    /// <summary>The step recorded in a checkpoint's metadata (for a CLI that shows where a run stands).</summary>
    public static long ReadStep(string path)
    {
        using var file = SafetensorsFile.Open(path);
        if (!file.Metadata.TryGetValue(StepKey, out var text)
            || !long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long step))
            throw new CheckpointMismatchException(path, null, "metadata has no valid 'step'; not an UltraGen training checkpoint");
        return step;
    }

    private static string DescribeDifference(string stored, string current)
    {
        int i = 0;
        while (i < stored.Length && i < current.Length && stored[i] == current[i]) i++;
        static string Around(string s, int at) => s.Length <= at ? "<end>" : s.Substring(Math.Max(0, at - 20), Math.Min(s.Length, at + 20) - Math.Max(0, at - 20));
        return $"first difference at character {i}: checkpoint '…{Around(stored, i)}…', this run '…{Around(current, i)}…'";
    }
}
