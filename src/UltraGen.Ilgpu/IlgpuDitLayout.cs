using ILGPU;
using ILGPU.Runtime;
using UltraGen.Core;
using UltraGen.Ops;

namespace UltraGen.Ilgpu;

/// <summary>
/// patchify and unpatchify (references: <see cref="PatchifyOp"/>, <see cref="UnpatchifyOp"/>; index map
/// <see cref="PatchLayout.TokenElementIndex"/>). One grid-stride permutation kernel: each thread owns destination elements
/// (consecutive threads write consecutive addresses, coalesced) and gathers its source element through the inverse map,
/// token → video for patchify and video → token for unpatchify. Each op is the other's backward.
/// </summary>
internal sealed class IlgpuDitLayout
{
    private readonly LaunchShape _shape;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, PatchArgs> _permute;

    public IlgpuDitLayout(Accelerator accelerator, LaunchShape shape)
    {
        _shape = shape;
        _permute = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, PatchArgs>(PermuteKernel);
    }

    /// <summary>The <see cref="PatchLayout"/> as kernel scalars; ToTokens = 1 for patchify (video → tokens).</summary>
    internal struct PatchArgs
    {
        public int Batch, Channels, T, H, W, Pt, Ph, Pw, ChannelsLast, ToTokens, Count;

        public static PatchArgs Of(PatchLayout layout, bool toTokens) => new()
        {
            Batch = layout.Batch, Channels = layout.Channels, T = layout.Grid.T, H = layout.Grid.H, W = layout.Grid.W,
            Pt = layout.Pt, Ph = layout.Ph, Pw = layout.Pw, ChannelsLast = layout.ChannelsLast ? 1 : 0, ToTokens = toTokens ? 1 : 0,
            Count = checked((int)layout.ElementCount),
        };

        public readonly int Volume => Pt * Ph * Pw;

        /// <summary>Token-tensor index of video element <paramref name="v"/> (B, C, T·pt, H·ph, W·pw).</summary>
        public readonly int TokenIndexOf(int v)
        {
            int width = W * Pw, height = H * Ph, depth = T * Pt;
            int x = v % width, y = v / width % height, z = v / width / height % depth;
            int rest = v / width / height / depth, c = rest % Channels, b = rest / Channels;
            int token = ((b * T + z / Pt) * H + y / Ph) * W + x / Pw;
            int offset = (z % Pt * Ph + y % Ph) * Pw + x % Pw;
            int feature = ChannelsLast != 0 ? offset * Channels + c : c * Volume + offset;
            return token * Channels * Volume + feature;
        }

        /// <summary>Video index of token-tensor element <paramref name="i"/> (B, T·H·W, C·pt·ph·pw): the inverse of <see cref="TokenIndexOf"/>.</summary>
        public readonly int VideoIndexOf(int i)
        {
            int features = Channels * Volume, token = i / features, feature = i % features;
            int c = ChannelsLast != 0 ? feature % Channels : feature / Volume;
            int offset = ChannelsLast != 0 ? feature / Channels : feature % Volume;
            int r = offset % Pw, q = offset / Pw % Ph, p = offset / Pw / Ph;
            int w = token % W, h = token / W % H, f = token / W / H % T, b = token / W / H / T;
            return (((b * Channels + c) * (T * Pt) + f * Pt + p) * (H * Ph) + h * Ph + q) * (W * Pw) + w * Pw + r;
        }
    }

    private static ArrayView<float> F32(Tensor t) => IlgpuBackend.F32(t);

    public void Patchify(Tensor video, Tensor tokens, PatchLayout layout)
    {
        var args = PatchArgs.Of(layout, toTokens: true);
        _permute(_shape.Stride(args.Count), F32(video), F32(tokens), args);
    }

    public void Unpatchify(Tensor tokens, Tensor video, PatchLayout layout)
    {
        var args = PatchArgs.Of(layout, toTokens: false);
        _permute(_shape.Stride(args.Count), F32(tokens), F32(video), args);
    }

    private static void PermuteKernel(ArrayView<float> source, ArrayView<float> destination, PatchArgs args)
    {
        for (int i = Grid.GlobalIndex.X; i < args.Count; i += Grid.DimX * Group.DimX)
            destination[i] = source[args.ToTokens != 0 ? args.VideoIndexOf(i) : args.TokenIndexOf(i)];
    }
}
