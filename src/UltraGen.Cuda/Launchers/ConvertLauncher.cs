using UltraGen.Core;
using static UltraGen.Cuda.Launchers.LaunchGeometry;
using UltraGen.Cuda.Interop;

namespace UltraGen.Cuda.Launchers;

/// <summary>
/// Typed launcher of module <c>convert</c> (kernels/convert.cu), parameters as in kernels/ABI.md: dtype conversions, round to nearest even, NaN kept; 1-D grid.
/// <code>
/// f32_to_bf16(const float* x, ushort* y, long long n)     bf16_to_f32(const ushort* x, float* y, long long n)
/// f32_to_f16(const float* x, ushort* y, long long n)      f16_to_f32(const ushort* x, float* y, long long n)
/// </code>
/// bf16 ↔ f16 goes through an f32 temporary.
/// </summary>
public sealed class ConvertLauncher(LaunchContext context)
{
    public const string Module = "convert";

    /// <summary>The entry point converting <paramref name="from"/> to <paramref name="to"/>, or null when one of them is f32-less.</summary>
    public static string? EntryPoint(DType from, DType to) => (from, to) switch
    {
        (DType.F32, DType.BF16) => "f32_to_bf16",
        (DType.BF16, DType.F32) => "bf16_to_f32",
        (DType.F32, DType.F16) => "f32_to_f16",
        (DType.F16, DType.F32) => "f16_to_f32",
        _ => null,
    };

    public void Convert(DType from, DType to, IntPtr x, IntPtr y, long n)
    {
        if (from == to) throw new ArgumentException("same dtype: copy instead", nameof(to));
        if (EntryPoint(from, to) is { } direct)
        {
            context.Launch(Module, direct, new Dim3(ElementwiseBlocks(n)), new Dim3(ElementwiseThreads),
                new KernelArgs().Ptr(x).Ptr(y).Add(n));
            return;
        }
        if (from == DType.F64 || to == DType.F64)
            throw new UnsupportedConfigurationException($"cuda backend: no {DTypes.Lower(from)} → {DTypes.Lower(to)} conversion kernel (f64 is reference-only)");
        using var wide = context.Scratch(4 * n);
        Convert(from, DType.F32, x, wide.Pointer, n);
        Convert(DType.F32, to, wide.Pointer, y, n);
    }
}
