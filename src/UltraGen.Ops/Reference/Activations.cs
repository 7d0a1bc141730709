namespace UltraGen.Ops;

/// <summary>
/// Scalar activations and their derivatives in float64, plus elementwise <see cref="RefTensor"/> versions, shared by the
/// pointwise references and the composite ones (time gates, FFN).
/// </summary>
public static class Activations
{
    /// <summary>√(2/π), the constant of torch's GELU(approximate='tanh').</summary>
    public const double GeluTanhC = 0.79788456080286535587989211986876;

    /// <summary>The cubic coefficient of torch's GELU(approximate='tanh').</summary>
    public const double GeluTanhA = 0.044715;

    /// <summary>σ(x) = 1 / (1 + e^(−x)), written so neither tail overflows.</summary>
    public static double Sigmoid(double x)
    {
        if (x >= 0) return 1.0 / (1.0 + Math.Exp(-x));
        double e = Math.Exp(x);
        return e / (1.0 + e);
    }

    /// <summary>dσ/dx = σ(x)(1 − σ(x)).</summary>
    public static double SigmoidDerivative(double x)
    {
        double s = Sigmoid(x);
        return s * (1.0 - s);
    }

    /// <summary>SiLU(x) = x·σ(x) (torch.nn.SiLU).</summary>
    public static double Silu(double x) => x * Sigmoid(x);

    /// <summary>d SiLU/dx = σ(x)(1 + x(1 − σ(x))).</summary>
    public static double SiluDerivative(double x)
    {
        double s = Sigmoid(x);
        return s * (1.0 + x * (1.0 - s));
    }

    /// <summary>GELU(approximate='tanh'): 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))).</summary>
    public static double GeluTanh(double x)
    {
        double u = GeluTanhC * (x + GeluTanhA * x * x * x);
        return 0.5 * x * (1.0 + Math.Tanh(u));
    }

    /// <summary>d GELU_tanh/dx = 0.5(1 + tanh u) + 0.5·x·(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²).</summary>
    public static double GeluTanhDerivative(double x)
    {
        double u = GeluTanhC * (x + GeluTanhA * x * x * x);
        double th = Math.Tanh(u);
        return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GeluTanhC * (1.0 + 3.0 * GeluTanhA * x * x);
    }

    /// <summary>Applies <paramref name="f"/> to every element into a new tensor of the same shape.</summary>
    public static RefTensor Map(RefTensor x, Func<double, double> f)
    {
        var y = new RefTensor((int[])x.Shape.Clone());
        for (int i = 0; i < x.Length; i++) y.Data[i] = f(x.Data[i]);
        return y;
    }

    /// <summary>dy ⊙ f′(x): the backward of an elementwise activation whose derivative is <paramref name="derivative"/>.</summary>
    public static RefTensor MapBackward(RefTensor x, RefTensor dy, Func<double, double> derivative)
    {
        if (dy.Length != x.Length)
            throw new Core.ShapeMismatchException(
                $"gradient {Core.Shape.Format(dy.Shape)} does not match input {Core.Shape.Format(x.Shape)}");
        var dx = new RefTensor((int[])x.Shape.Clone());
        for (int i = 0; i < x.Length; i++) dx.Data[i] = dy.Data[i] * derivative(x.Data[i]);
        return dx;
    }

    public static RefTensor Silu(RefTensor x) => Map(x, Silu);

    public static RefTensor SiluBackward(RefTensor x, RefTensor dy) => MapBackward(x, dy, SiluDerivative);

    public static RefTensor Sigmoid(RefTensor x) => Map(x, Sigmoid);

    public static RefTensor SigmoidBackward(RefTensor x, RefTensor dy) => MapBackward(x, dy, SigmoidDerivative);
}
