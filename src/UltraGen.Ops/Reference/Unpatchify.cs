using UltraGen.Core;

namespace UltraGen.Ops;

/// <summary>
/// <c>unpatchify</c>: tokens (B, T·H·W, C·pt·ph·pw) → video (B, C, T·pt, H·ph, W·pw), the exact inverse of
/// <see cref="PatchifyOp"/> with the same parameters. With channels_last it is Wan's head unpatchify
/// "b (f h w) (p q r c) -> b c (f p) (h q) (w r)" (spec §2.2); without, the adjoint of the patch embedding's patchify.
/// The token grid (T, H, W) and the channel count are parameters because a token tensor does not carry them.
/// </summary>
public sealed class UnpatchifyOp : Op
{
    private const string OpName = "unpatchify";

    public override string Name => OpName;

    public override string Summary => "tokens (B, T·H·W, C·pt·ph·pw) → video (B, C, T·pt, H·ph, W·pw); the inverse of patchify";

    public override IReadOnlyList<TensorSpec> Inputs { get; } = [new("tokens", "(B, T·H·W, C·pt·ph·pw)")];

    public override IReadOnlyList<TensorSpec> Outputs { get; } = [new("video", "(B, C, T·pt, H·ph, W·pw)")];

    public override IReadOnlyList<ParamSpec> Parameters { get; } =
    [
        new("channels", "int", null, "video channels C (≥ 1)"),
        new("T", "int", null, "token grid frames; N = T·H·W"),
        new("H", "int", null, "token grid rows"),
        new("W", "int", null, "token grid columns"),
        .. PatchLayout.PatchParameters,
    ];

    public override IReadOnlyDictionary<string, int[]> OutputShapes(IReadOnlyDictionary<string, int[]> shapes, OpParams parameters)
    {
        var tokens = RequireShape(shapes, "tokens", 3);
        return Single("video", PatchLayout.OfTokens(tokens, parameters, OpName).VideoShape);
    }

    /// <summary>Permutations copy every value exactly, in every storage dtype.</summary>
    public override double ForwardTolerance(DType dtype) => 0;

    public override void ReferenceForward(RefArgs inputs, RefArgs outputs, OpParams parameters)
    {
        var tokens = inputs.Get("tokens");
        outputs.SetIfRequested("video", Forward(tokens, PatchLayout.OfTokens(tokens.Shape, parameters, OpName)));
    }

    public override void ReferenceBackward(RefArgs inputs, RefArgs outputGradients, RefArgs inputGradients, OpParams parameters)
    {
        var layout = PatchLayout.OfTokens(inputs.Get("tokens").Shape, parameters, OpName);
        inputGradients.SetIfRequested("tokens", Backward(outputGradients.Get("video"), layout));
    }

    public static RefTensor Forward(RefTensor tokens, PatchLayout layout)
    {
        PatchifyOp.ExpectLength(tokens, layout.TokenShape, "tokens");
        int features = layout.Features;
        var video = new RefTensor(layout.VideoShape);
        PatchifyOp.ForEachPatchElement(layout, (videoIndex, tokenIndex, feature) => video.Data[videoIndex] = tokens.Data[tokenIndex * features + feature]);
        return video;
    }

    /// <summary>dtokens = patchify(dvideo) with the same layout.</summary>
    public static RefTensor Backward(RefTensor dVideo, PatchLayout layout) => PatchifyOp.Forward(dVideo, layout);

    private static OpCase Case(string name, int[] tokens, int channels, int t, int h, int w, OpParams patch, bool gradientCheck = true)
    {
        var parameters = patch.With("channels", channels).With("T", t).With("H", h).With("W", w);
        return new(name, new Dictionary<string, int[]> { ["tokens"] = tokens }, parameters) { GradientCheck = gradientCheck };
    }

    public override IEnumerable<OpCase> Cases()
    {
        // Wan's head: channels_last, patch (1, 2, 2), odd grid 3×3×5, 3 channels (12 features).
        yield return Case("b2_c3_t3_h3w5_p122_channels_last", [2, 45, 12], 3, 3, 3, 5, OpParams.Of(("channels_last", true)));
        yield return Case("b1_c3_t3_h3w5_p122", [1, 45, 12], 3, 3, 3, 5, new OpParams());
        // Every patch dimension different and > 1, grid 2×1×3, 2 channels (24 features).
        yield return Case("b2_c2_t2_h1w3_p232", [2, 6, 24], 2, 2, 1, 3, OpParams.Of(("pt", 2), ("ph", 3), ("pw", 2)));
        yield return Case("b1_c2_t2_h1w3_p232_channels_last", [1, 6, 24], 2, 2, 1, 3,
            OpParams.Of(("pt", 2), ("ph", 3), ("pw", 2), ("channels_last", true)));
        // The head at model width: 16 output channels on a 3×9×15 grid.
        yield return Case("b1_c16_t3_h9w15_p122_channels_last", [1, 405, 64], 16, 3, 9, 15, OpParams.Of(("channels_last", true)), gradientCheck: false);
    }
}
