using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>patchify</c>: video (B, C, T·pt, H·ph, W·pw) → tokens (B, T·H·W, C·pt·ph·pw), the DiT's input side (spec §2.2: the
/// patch-embedding Conv3d with stride = kernel is patchify followed by a linear layer on the flattened weight). Tokens are
/// frame-major (f, h, w); features (c, p, q, r) with c slowest, or (p, q, r, c) with c fastest when channels_last (then
/// this is the adjoint of the head's unpatchify). A pure permutation: the backward is <see cref="UnpatchifyOp"/>.
/// The loops are DitReference's, so the model's references and this op agree element for element.
/// </summary>
public sealed class PatchifyOp : Op
{
    private const string OpName = "patchify";

    public override string Name => OpName;

    public override string Summary => "video (B, C, T·pt, H·ph, W·pw) → tokens (B, T·H·W, C·pt·ph·pw), features (c,p,q,r) or (p,q,r,c)";

    public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("video", "(B, C, T·pt, H·ph, W·pw)")];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("tokens", "(B, T·H·W, C·pt·ph·pw)")];

    public override IReadOnlyList<ParamSpec> Parameters => PatchLayout.PatchParameters;

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var video = RequireShape(shapes, "video", 5);
        return Single("tokens", PatchLayout.OfVideo(video, parameters, OpName).TokenShape);
    }

    /// <summary>Permutations copy every value exactly, in every storage dtype.</summary>
    public override double ForwardTolerance(DType dtype) => 0;

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters)
    {
        var video = inputs.Get("video");
        outputs.SetIfRequested("tokens", Forward(video, PatchLayout.OfVideo(video.Shape, parameters, OpName)));
    }

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var layout = PatchLayout.OfVideo(inputs.Get("video").Shape, parameters, OpName);
        inputGradients.SetIfRequested("video", Backward(outputGradients.Get("tokens"), layout));
    }

    /// <summary>Patchifies <paramref name="video"/> with patch (pt, ph, pw); the token grid follows from the video's size.</summary>
    public static RefTensor Forward(RefTensor video, int pt, int ph, int pw, bool channelsLast) =>
        Forward(video, PatchLayout.OfVideo(video.Shape,
            OpParams.Of(("pt", pt), ("ph", ph), ("pw", pw), ("channels_last", channelsLast)), OpName));

    public static RefTensor Forward(RefTensor video, PatchLayout layout)
    {
        ExpectLength(video, layout.VideoShape, "video");
        int features = layout.Features;
        var tokens = new RefTensor(layout.TokenShape);
        ForEachPatchElement(layout, (videoIndex, tokenIndex, feature) => tokens.Data[tokenIndex * features + feature] = video.Data[videoIndex]);
        return tokens;
    }

    /// <summary>dvideo = unpatchify(dtokens) with the same layout (the adjoint of a permutation is its inverse).</summary>
    public static RefTensor Backward(RefTensor dTokens, PatchLayout layout) => UnpatchifyOp.Forward(dTokens, layout);

    internal static void ExpectLength(RefTensor tensor, int[] shape, string what)
    {
        if (!tensor.Shape.AsSpan().SequenceEqual(shape))
            throw new ShapeMismatchException($"patch layout: {what} must be {Shape.Format(shape)}, got {Shape.Format(tensor.Shape)}");
    }

    internal delegate void PatchVisitor(int videoIndex, int tokenIndex, int feature);

    /// <summary>Visits every video element with its token and its feature index (DitReference's loop nest).</summary>
    internal static void ForEachPatchElement(PatchLayout layout, PatchVisitor visit)
    {
        var (grid, channels) = (layout.Grid, layout.Channels);
        int depth = grid.T * layout.Pt, height = grid.H * layout.Ph, width = grid.W * layout.Pw;
        for (int b = 0; b < layout.Batch; b++)
            for (int ch = 0; ch < channels; ch++)
                for (int f = 0; f < grid.T; f++)
                    for (int p = 0; p < layout.Pt; p++)
                        for (int h = 0; h < grid.H; h++)
                            for (int q = 0; q < layout.Ph; q++)
                                for (int w = 0; w < grid.W; w++)
                                    for (int r = 0; r < layout.Pw; r++)
                                    {
                                        int videoIndex = (((b * channels + ch) * depth + f * layout.Pt + p) * height + h * layout.Ph + q) * width + w * layout.Pw + r;
                                        int tokenIndex = (b * grid.T + f) * grid.H * grid.W + h * grid.W + w;
                                        int offset = (p * layout.Ph + q) * layout.Pw + r;
                                        int feature = layout.ChannelsLast ? offset * channels + ch : ch * layout.Volume + offset;
                                        visit(videoIndex, tokenIndex, feature);
                                    }
    }

    private static OpCase Case(string name, int[] video, OpParams parameters, bool gradientCheck = true) =>
        new(name, new Dictionary<string, int[]> { ["video"] = video }, parameters) { GradientCheck = gradientCheck };

    public override IEnumerable<OpCase> Cases()
    {
        // Wan's patch (1, 2, 2), odd grid 3×3×5, 3 channels.
        yield return Case("b2_c3_t3_h6w10_p122", [2, 3, 3, 6, 10], new OpParams());
        yield return Case("b1_c3_t3_h6w10_p122_channels_last", [1, 3, 3, 6, 10], OpParams.Of(("channels_last", true)));
        // Every patch dimension different and > 1, grid 2×1×3.
        yield return Case("b1_c2_t4_h3w6_p232", [1, 2, 4, 3, 6], OpParams.Of(("pt", 2), ("ph", 3), ("pw", 2)));
        yield return Case("b2_c2_t4_h3w6_p232_channels_last", [2, 2, 4, 3, 6], OpParams.Of(("pt", 2), ("ph", 3), ("pw", 2), ("channels_last", true)));
        // Wan's 16 latent channels on a 3×9×15 grid (64 features per token).
        yield return Case("b1_c16_t3_h18w30_p122", [1, 16, 3, 18, 30], new OpParams(), gradientCheck: false);
    }
}
