using System.Globalization;
using System.Numerics;
using UltraGen.Core;

namespace UltraGen.Generation.Training;

/// <summary>
/// AdamW hyper-parameters. Defaults are torch.optim.AdamW's (weight decay 0.01 included), which is what DiffSynth's
/// trainer uses when it only sets the learning rate.
/// </summary>
public sealed record AdamWSettings(double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8, double WeightDecay = 0.01)
{
    /// <exception cref="ArgumentOutOfRangeException">A β outside [0, 1), a non-positive ε or a negative weight decay.</exception>
    public void Validate()
    {
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "β1 must be in [0, 1)");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "β2 must be in [0, 1)");
        if (!(Epsilon > 0 && double.IsFinite(Epsilon))) throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "ε must be positive");
        if (!(WeightDecay >= 0 && double.IsFinite(WeightDecay)))
            throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "weight decay must be ≥ 0");
    }

    /// <summary>A canonical one-line form (round-trip numbers) stored in checkpoints and compared on resume.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"adamw beta1={Beta1:R} beta2={Beta2:R} eps={Epsilon:R} weight_decay={WeightDecay:R}");
}

/// <summary>
/// AdamW (Loshchilov &amp; Hutter) over host f32 master weights, in torch's formulation: decoupled decay
/// p ← p·(1 − lr·λ), then m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², p ← p − (lr/(1−β1ᵗ))·m / (√v/√(1−β2ᵗ) + ε).
/// The moments m and v are f32 host tensors shaped like their parameter, so a checkpoint writes them without a copy.
/// </summary>
/// <remarks>
/// Per-step scalars are formed in double and rounded once to float; the element loop is f32 with
/// <see cref="Vector{T}"/> and a scalar tail doing the same operations in the same order, so the result does not
/// depend on the machine's vector width.
/// </remarks>
public sealed class AdamW : IDisposable
{
    private readonly IReadOnlyList<(string Name, Tensor Master)> _parameters;
    private readonly Dictionary<string, (Tensor M, Tensor V)> _state = new(StringComparer.Ordinal);

    /// <summary>Allocates zeroed moments for every parameter (host f32 tensors with unique names).</summary>
    public AdamW(IReadOnlyList<(string Name, Tensor Master)> parameters, AdamWSettings? settings = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Settings = settings ?? new AdamWSettings();
        Settings.Validate();
        _parameters = parameters;
        try
        {
            foreach (var (name, master) in parameters)
            {
                if (string.IsNullOrEmpty(name)) throw new ArgumentException("parameter names must be non-empty", nameof(parameters));
                if (master is null || !master.IsHost || master.DType != DType.F32)
                    throw new ArgumentException($"parameter '{name}' must be a host f32 tensor, got {master}", nameof(parameters));
                if (_state.ContainsKey(name)) throw new ArgumentException($"duplicate parameter name '{name}'", nameof(parameters));
                var m = Tensor.Host(DType.F32, master.ShapeArray);
                var v = Tensor.Host(DType.F32, master.ShapeArray);
                m.HostSpan<float>().Clear();
                v.HostSpan<float>().Clear();
                _state.Add(name, (m, v));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public AdamWSettings Settings { get; }

    /// <summary>Number of updates applied so far (t in the bias corrections).</summary>
    public long StepCount { get; private set; }

    public IReadOnlyList<(string Name, Tensor Master)> Parameters => _parameters;

    /// <summary>The first moment m of <paramref name="name"/> (live; a checkpoint load writes into it).</summary>
    public Tensor FirstMoment(string name) => State(name).M;

    /// <summary>The second moment v of <paramref name="name"/> (live).</summary>
    public Tensor SecondMoment(string name) => State(name).V;

    /// <summary>Sets the update count after the moments were restored from a checkpoint.</summary>
    public void RestoreStepCount(long stepCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(stepCount);
        StepCount = stepCount;
    }

    /// <summary>Applies one update to every parameter from <paramref name="gradients"/> (host f32, same shapes).</summary>
    public void Step(IReadOnlyDictionary<string, Tensor> gradients, double learningRate)
    {
        ArgumentNullException.ThrowIfNull(gradients);
        if (!(learningRate >= 0 && double.IsFinite(learningRate)))
            throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "learning rate must be finite and ≥ 0");
        foreach (var (name, master) in _parameters)
        {
            if (!gradients.TryGetValue(name, out var gradient))
                throw new ArgumentException($"no gradient for parameter '{name}'", nameof(gradients));
            if (gradient.DType != DType.F32 || !Shape.Equal(gradient.Shape, master.Shape))
                throw new ShapeMismatchException($"gradient of '{name}' is {gradient}, expected f32 {Shape.Format(master.Shape)}");
        }
        long step = StepCount + 1;
        foreach (var (name, master) in _parameters)
        {
            var (m, v) = _state[name];
            Update(master.HostSpan<float>(), gradients[name].HostSpan<float>(), m.HostSpan<float>(), v.HostSpan<float>(),
                step, learningRate, Settings);
        }
        StepCount = step;
    }

    /// <summary>
    /// The AdamW update of one parameter at update number <paramref name="step"/> (1-based), in place on the
    /// parameter and its moments.
    /// </summary>
    public static void Update(Span<float> parameter, ReadOnlySpan<float> gradient, Span<float> m, Span<float> v,
        long step, double learningRate, AdamWSettings settings)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(step, 1);
        int n = parameter.Length;
        if (gradient.Length != n || m.Length != n || v.Length != n)
            throw new ShapeMismatchException($"AdamW: parameter {n}, gradient {gradient.Length}, m {m.Length}, v {v.Length} elements");
        float decay = (float)(1 - learningRate * settings.WeightDecay);
        float beta1 = (float)settings.Beta1, oneMinusBeta1 = (float)(1 - settings.Beta1);
        float beta2 = (float)settings.Beta2, oneMinusBeta2 = (float)(1 - settings.Beta2);
        float stepSize = (float)(learningRate / (1 - Math.Pow(settings.Beta1, step)));
        float inverseSqrtCorrection2 = (float)(1 / Math.Sqrt(1 - Math.Pow(settings.Beta2, step)));
        float epsilon = (float)settings.Epsilon;
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var vDecay = new Vector<float>(decay);
            var vBeta1 = new Vector<float>(beta1);
            var vOneMinusBeta1 = new Vector<float>(oneMinusBeta1);
            var vBeta2 = new Vector<float>(beta2);
            var vOneMinusBeta2 = new Vector<float>(oneMinusBeta2);
            var vStepSize = new Vector<float>(stepSize);
            var vCorrection = new Vector<float>(inverseSqrtCorrection2);
            var vEpsilon = new Vector<float>(epsilon);
            for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
            {
                var g = new Vector<float>(gradient[i..]);
                var mi = vBeta1 * new Vector<float>(m[i..]) + vOneMinusBeta1 * g;
                var vi = vBeta2 * new Vector<float>(v[i..]) + vOneMinusBeta2 * (g * g);
                var denominator = Vector.SquareRoot(vi) * vCorrection + vEpsilon;
                var p = new Vector<float>(parameter[i..]) * vDecay - vStepSize * mi / denominator;
                mi.CopyTo(m[i..]);
                vi.CopyTo(v[i..]);
                p.CopyTo(parameter[i..]);
            }
        }
        for (; i < n; i++)
        {
            float g = gradient[i];
            float mi = beta1 * m[i] + oneMinusBeta1 * g;
            float vi = beta2 * v[i] + oneMinusBeta2 * (g * g);
            float denominator = MathF.Sqrt(vi) * inverseSqrtCorrection2 + epsilon;
            m[i] = mi;
            v[i] = vi;
            parameter[i] = parameter[i] * decay - stepSize * mi / denominator;
        }
    }

    private (Tensor M, Tensor V) State(string name) =>
        _state.TryGetValue(name, out var state) ? state : throw new ArgumentException($"no parameter named '{name}'", nameof(name));

    public void Dispose()
    {
        foreach (var (m, v) in _state.Values)
        {
            m.Dispose();
            v.Dispose();
        }
        _state.Clear();
    }
}
