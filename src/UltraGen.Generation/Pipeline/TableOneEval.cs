using System.Diagnostics;
using UltraGen.Generation.Data;
using UltraGen.Generation.Eval;
using UltraGen.Ops.Backends;

namespace UltraGen.Generation.Pipeline;

/// <summary>
/// One generation method of the miniature Table 1: a model sampled at <see cref="SampleFormat"/>, its output enlarged
/// bilinearly by <see cref="Upscale"/> (1 = native; 4 = the two-stage "low resolution + upscaler" baseline).
/// </summary>
public sealed record EvalMethod(string Name, VideoModel Model, VideoFormat SampleFormat, int Upscale = 1);

/// <summary>One row of the table: averages over every (prompt, seed) video.</summary>
public sealed record EvalRow(string Method, VideoFormat OutputFormat, AdherenceSummary Adherence, double HdMse, double TemporalConsistency,
    double SelfAttentionGflops, double CrossAttentionGflops, double SecondsPerVideo);

/// <summary>A generated video of the evaluation (for contact sheets).</summary>
public sealed record EvalVideo(string Method, VideoPrompt Prompt, ulong Seed, VideoFormat Format, float[] Pixels, AdherenceResult Adherence);

/// <summary>
/// The miniature of the paper's Table 1 (spec §3.3): the same prompts and seeds through every method, each video measured
/// at the output resolution with HD-MSE, prompt adherence and temporal consistency (<see cref="Eval"/>), plus the
/// attention FLOPs of one DiT forward pass and the wall time per video.
/// </summary>
public static class TableOneEval
{
    public static (IReadOnlyList<EvalRow> Rows, IReadOnlyList<EvalVideo> Videos) Run(IReadOnlyList<EvalMethod> methods,
        IReadOnlyList<VideoPrompt> prompts, IReadOnlyList<ulong> seeds, Func<VideoModel, IBackend, VideoSampler> samplerFactory,
        IBackend backend, int steps, double cfg, double shift, Action<string>? log = null)
    {
        var rows = new List<EvalRow>();
        var videos = new List<EvalVideo>();
        foreach (var method in methods)
        {
            using var sampler = samplerFactory(method.Model, backend);
            var outputFormat = method.SampleFormat with
            {
                Height = method.SampleFormat.Height * method.Upscale, Width = method.SampleFormat.Width * method.Upscale,
            };
            var adherence = new List<AdherenceResult>();
            double hdMse = 0, consistency = 0, seconds = 0;
            foreach (var prompt in prompts)
                foreach (var seed in seeds)
                {
                    var clock = Stopwatch.StartNew();
                    var pixels = sampler.Sample(new SampleRequest
                    {
                        Prompt = prompt.Text, Seed = seed, Steps = steps, Cfg = cfg, Shift = shift, Format = method.SampleFormat,
                    });
                    if (method.Upscale > 1) pixels = UpscaleBilinear(pixels, method.SampleFormat, method.Upscale);
                    seconds += clock.Elapsed.TotalSeconds;
                    var f = outputFormat;
                    var result = PromptAdherence.Measure(pixels, f.Frames, f.Height, f.Width, prompt);
                    adherence.Add(result);
                    hdMse += HdMse.Compute(pixels, f.Frames, f.Height, f.Width).Value;
                    consistency += TemporalConsistency.Compute(pixels, f.Frames, f.Height, f.Width);
                    videos.Add(new EvalVideo(method.Name, prompt, seed, f, pixels, result));
                    log?.Invoke($"{method.Name}: \"{prompt.Text}\" seed {seed}: {result} ({clock.Elapsed.TotalSeconds:F1} s)");
                }
            int count = prompts.Count * seeds.Count;
            var (self, cross) = AttentionFlops.PerForward(method.Model.Config, method.SampleFormat);
            rows.Add(new EvalRow(method.Name, outputFormat, AdherenceSummary.Of(adherence), hdMse / count, consistency / count,
                self / 1e9, cross / 1e9, seconds / count));
        }
        return (rows, videos);
    }

    /// <summary>Bilinear enlargement (half-pixel centres, edges clamped) of every frame and channel by an integer factor.</summary>
    public static float[] UpscaleBilinear(float[] video, VideoFormat format, int factor)
    {
        int planes = VideoFormat.Channels * format.Frames, plane = format.Height * format.Width;
        int outHeight = format.Height * factor, outWidth = format.Width * factor;
        var result = new float[planes * outHeight * outWidth];
        var source = new double[plane];
        for (int p = 0; p < planes; p++)
        {
            for (int i = 0; i < plane; i++) source[i] = video[p * plane + i];
            var resized = HdMse.BilinearResize(source, format.Height, format.Width, outHeight, outWidth);
            for (int i = 0; i < resized.Length; i++) result[p * outHeight * outWidth + i] = (float)resized[i];
        }
        return result;
    }
}
