using System.CommandLine;
using System.Globalization;
using UltraGen.Core;
using UltraGen.Generation.Data;
using UltraGen.Generation.Pipeline;
using UltraGen.Generation.Training;
using UltraGen.Model;
using UltraGen.Ops.Backends;

namespace UltraGen.Cli.Commands;

/// <summary>
/// <c>ultragen train</c>: flow-matching training of a pixel-space video model on the procedural dataset. Starts from a new
/// random model (<c>--from random</c>, the bundled miniature's configuration) or from a model file; <c>--ultragen</c>
/// decomposes every block (UltraGen attention, new parameters initialised as spec §1.7 with LoRA B zeroed) — the
/// paper's recipe of scaling a low-resolution base to a higher resolution. Resumes from its checkpoint when one exists;
/// Ctrl+C writes a checkpoint and stops. The finished model is written atomically to <c>--output</c>.
/// </summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--output") { Description = "the trained model file to write", Required = true };
        var from = new Option<string>("--from") { Description = "'random' (a new miniature model) or a model file to start from", DefaultValueFactory = _ => "random" };
        var ultragen = new Option<bool>("--ultragen") { Description = "decompose every block into UltraGen attention (new parameters initialised, LoRA B = 0)" };
        var globalKFromWk = new Option<bool>("--global-k-from-wk") { Description = "with --ultragen: the global branch's K projection uses W_k (a model trained here); default W_q, the released checkpoint's quirk (spec §4.4), which at the UltraGen step feeds a base trained with W_k a foreign attention (measured: motion transposed)" };
        var coordinates = new Option<bool>("--coordinates") { Description = "feed x/y/t coordinate channels beside the video (a loaded model's patch embedding is widened with random weights of the existing RMS)" };
        var frames = new Option<int>("--frames") { DefaultValueFactory = _ => 8 };
        var height = new Option<int>("--height") { DefaultValueFactory = _ => 16 };
        var width = new Option<int>("--width") { DefaultValueFactory = _ => 16 };
        var steps = new Option<long>("--steps") { Description = "total optimiser steps of the run", DefaultValueFactory = _ => 2000 };
        var stopAt = new Option<long?>("--stop-at") { Description = "end this session at this step (resume later; the schedule still spans --steps)" };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 16 };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => 1e-3 };
        var warmup = new Option<long>("--warmup") { DefaultValueFactory = _ => 100 };
        var cosine = new Option<bool>("--cosine") { Description = "cosine decay of the learning rate to 10% over the run" };
        var mode = new Option<TrainingMode>("--mode") { Description = "full or lora (domain-aware LoRA: base frozen)", DefaultValueFactory = _ => TrainingMode.Full };
        var weighting = new Option<LossWeighting>("--weighting") { Description = "bell (spec §2.6) or uniform", DefaultValueFactory = _ => LossWeighting.Uniform };
        var shift = new Option<double>("--shift") { DefaultValueFactory = _ => 5.0 };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 1 };
        var checkpointEvery = new Option<long>("--checkpoint-every") { DefaultValueFactory = _ => 100 };
        var recompute = new Option<bool>("--recompute") { Description = "recompute each block in the backward pass (less memory, ~1 more forward)" };
        var backend = new Option<string>("--backend") { Description = "auto, cpu, ilgpu, cuda or reference", DefaultValueFactory = _ => "auto" };
        var subset = new Option<string?>("--subset") { Description = "train only on the training prompts matching field=word pairs, e.g. \"color=red,shape=square,background=black\" (a curriculum's first stage; alternatives with |)" };
        var notes = new Option<string?>("--notes") { Description = "text stored in the model file (how it was made)" };

        var command = new Command("train", "Train a pixel-space text-to-video model on the procedural dataset (flow matching, AdamW)");
        foreach (var option in new Option[] { output, from, ultragen, globalKFromWk, coordinates, frames, height, width, steps, stopAt, batch, lr, warmup, cosine, mode, weighting, shift, seed,
                     checkpointEvery, recompute, backend, subset, notes })
            command.Options.Add(option);
        command.SetAction(result => CommandGuard.Run(() =>
        {
            string outputPath = Path.GetFullPath(result.GetValue(output)!);
            var format = new VideoFormat(result.GetValue(frames), result.GetValue(height), result.GetValue(width));
            ulong runSeed = result.GetValue(seed);
            string? subsetFilter = result.GetValue(subset);
            var prompts = subsetFilter is null ? null : PromptGrammar.Subset(subsetFilter);   // a bad filter fails before any work
            using var model = LoadOrCreate(result.GetValue(from)!, result.GetValue(ultragen), result.GetValue(globalKFromWk), result.GetValue(coordinates), format, runSeed);
            using var device = SampleCommand.OpenBackend(result.GetValue(backend)!, out string why, model.Config);
            var settings = new VideoTrainingSettings
            {
                Format = format, BatchSize = result.GetValue(batch), Mode = result.GetValue(mode), Shift = result.GetValue(shift),
                Weighting = result.GetValue(weighting), Seed = runSeed, Prompts = prompts, PromptsFilter = subsetFilter, DitOptions = new() { RecomputeBlocks = result.GetValue(recompute) },
            };
            using var task = new VideoTrainingTask(model, device, settings);
            string checkpoint = outputPath + ".ckpt";
            var options = new TrainingOptions
            {
                TotalSteps = result.GetValue(steps), StopAtStep = result.GetValue(stopAt),
                LearningRate = new LearningRateSchedule(result.GetValue(lr), result.GetValue(warmup), result.GetValue(cosine), result.GetValue(lr) * 0.1),
                CheckpointEvery = result.GetValue(checkpointEvery), CheckpointPath = checkpoint,
                ResumeFrom = File.Exists(checkpoint) ? checkpoint : null, LossLogPath = outputPath + ".loss.csv", Seed = runSeed,
                Config = task.Describe(),
            };
            long parameters = task.Parameters.Sum(p => p.Master.ElementCount);
            Console.WriteLine($"backend: {device.Name} ({why})");
            Console.WriteLine(FormattableString.Invariant(
                $"model: dim {model.Config.Dim}, {model.Config.Layers} layers, heads {model.Config.Heads}, full blocks {model.Config.FullAttentionBlocks}, {model.Config.InChannels} input channels; training {parameters:N0} parameters ({settings.Mode})"));
            Console.WriteLine($"data: {format} (frames×height×width), batch {settings.BatchSize}, {(prompts is null ? $"all {PromptGrammar.Training.Count} training prompts" : $"{prompts.Count} training prompts matching {subsetFilter}")}; {options.Config}");
            if (options.ResumeFrom is not null) Console.WriteLine($"resuming from {checkpoint} (step {Checkpoint.ReadStep(checkpoint)})");

            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                e.Cancel = true;
                cancel.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            try
            {
                var bar = new ProgressLine("train");
                var outcome = new TrainingLoop(task, options).Run(p => bar.Update(p.Step, p.TotalSteps,
                    FormattableString.Invariant($"loss {p.Loss:F4}  |g| {p.GradNorm:F3}  lr {p.LearningRate:G3}  {p.StepsPerSecond:F2} steps/s  ETA {p.Eta:hh\\:mm\\:ss}")), cancel.Token);
                bar.Done();
                model.Notes = result.GetValue(notes) ?? model.Notes;
                model.Save(outputPath);
                Console.WriteLine(FormattableString.Invariant($"steps {outcome.StartStep} → {outcome.CompletedSteps}, last loss {outcome.LastLoss:F4}; wrote {outputPath}"));
                return 0;
            }
            catch (OperationCanceledException)
            {
                Console.WriteLine();
                Console.WriteLine($"stopped; the checkpoint {checkpoint} resumes the run");
                return 130;
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        }));
        return command;
    }

    /// <summary>The bundled miniature's DiT: dim 96, 3 heads (head dim 32), 4 layers, FFN 384, 3-channel pixel space.</summary>
    public static ModelConfig MiniatureConfig { get; } = new()
    {
        Dim = 96,
        FfnDim = 384,
        FreqDim = 64,
        TextDim = 32,
        TextLen = 12,
        Heads = 3,
        Layers = 4,
        InChannels = 3,
        OutChannels = 3,
        LoraRank = 8,
        FullAttentionBlocks = BlockSet.All(4),
    };

    private static VideoModel LoadOrCreate(string from, bool ultragen, bool globalKFromWk, bool coordinates, VideoFormat format, ulong seed)
    {
        bool random = string.Equals(from, "random", StringComparison.OrdinalIgnoreCase);
        var model = random
            ? VideoModel.CreateRandom(MiniatureConfig with { InChannels = coordinates ? 6 : 3 }, format, unchecked((long)seed))
            : VideoModel.Load(from);
        var config = model.Config;
        if (coordinates && model.CoordinateChannels == 0) config = config with { InChannels = 2 * VideoFormat.Channels };
        if (ultragen) config = config.WithAllDecomposed();
        if (globalKFromWk)
        {
            if (!ultragen && config.DecomposedBlockCount == 0)
                throw new OpParameterException("--global-k-from-wk needs UltraGen blocks (--ultragen, or a model that has them)");
            config = config with { GlobalKUsesWq = false };
        }
        return config == model.Config && model.Format == format ? model : Reformat(model, config, format, seed);
    }

    private static VideoModel Reformat(VideoModel model, ModelConfig config, VideoFormat format, ulong seed)
    {
        using (model) return model.WithConfig(config, format, unchecked((long)seed), zeroInitLoraB: true, randomNewInputChannels: true);
    }
}

/// <summary>A one-line text progress bar (redrawn in place on a terminal, a line every few percent otherwise).</summary>
internal sealed class ProgressLine(string label)
{
    private readonly bool _interactive = !Console.IsOutputRedirected;
    private int _lastPercent = -1;

    public void Update(long done, long total, string detail)
    {
        int percent = total > 0 ? (int)(100 * done / total) : 100;
        const int width = 24;
        int filled = total > 0 ? (int)(width * done / total) : width;
        string line = string.Create(CultureInfo.InvariantCulture,
            $"{label} [{new string('#', filled)}{new string('.', width - filled)}] {done}/{total}  {detail}");
        if (_interactive) Console.Write("\r" + line.PadRight(Math.Min(Console.BufferWidth - 1, 150)));
        else if (percent / 5 != _lastPercent / 5 || done == total)
        {
            Console.WriteLine(line);
            _lastPercent = percent;
        }
    }

    public void Done()
    {
        if (_interactive) Console.WriteLine();
    }
}
