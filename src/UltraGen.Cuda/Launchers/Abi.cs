using System.Runtime.InteropServices;
using UltraGen.Core.Layout;

namespace UltraGen.Cuda.Launchers;

/// <summary>Mirror of <c>WindowLayoutParams</c> (kernels/common/abi.cuh): 16 bytes, no padding.</summary>
[StructLayout(LayoutKind.Sequential)]
public readonly struct WindowLayoutParams(int t, int h, int w, int windowsPerSide)
{
    public readonly int T = t;
    public readonly int H = h;
    public readonly int W = w;
    public readonly int WindowsPerSide = windowsPerSide;

    public static WindowLayoutParams From(WindowLayout layout) => new(layout.Grid.T, layout.Grid.H, layout.Grid.W, layout.WindowsPerSide);

    public int WindowCount => WindowsPerSide * WindowsPerSide;

    /// <summary>ug_max_window_rows / ug_max_window_cols: ⌈H/n⌉, ⌈W/n⌉.</summary>
    public int MaxWindowRows => (H + WindowsPerSide - 1) / WindowsPerSide;
    public int MaxWindowCols => (W + WindowsPerSide - 1) / WindowsPerSide;

    /// <summary>ug_max_tokens_in_window: T·⌈H/n⌉·⌈W/n⌉.</summary>
    public long MaxTokensInWindow => (long)T * MaxWindowRows * MaxWindowCols;

    public long TokensPerSample => (long)T * H * W;
}

/// <summary>
/// Mirror of <c>RopeParams</c> (abi.cuh): enabled, the number of positions in the table, and the device address of the
/// cos/sin table <c>cosSin[2·(pos·(d/2) + pair) + {0,1}]</c>. 16 bytes, the pointer at offset 8.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public readonly struct RopeParams(int enabled, int positions, IntPtr cosSin)
{
    public readonly int Enabled = enabled;
    public readonly int Positions = positions;
    public readonly IntPtr CosSin = cosSin;

    public static RopeParams Disabled => new(0, 0, IntPtr.Zero);
}
