using UltraGen.Core;
using UltraGen.Core.Layout;

namespace UltraGen.Cpu;

/// <summary>Flash-style windowed attention on the CPU (placeholder until the kernel lands: see the issue).</summary>
public static class CpuWindowAttention
{
    public static void Forward(Tensor q, Tensor k, Tensor v, Tensor o, int heads, WindowLayout layout, bool rope, double ropeTheta) =>
        throw new UnsupportedConfigurationException("cpu window_attention forward is not implemented yet");

    public static void Backward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv,
        int heads, WindowLayout layout, bool rope, double ropeTheta) =>
        throw new UnsupportedConfigurationException("cpu window_attention backward is not implemented yet");
}
