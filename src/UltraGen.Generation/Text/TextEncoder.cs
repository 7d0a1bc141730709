using UltraGen.Core;
using UltraGen.Generation.Data;

namespace UltraGen.Generation.Text;

/// <summary>
/// The miniature model's text encoder, trained with the DiT: a token embedding plus a learned position embedding, one
/// row per word, in place of Wan's umT5 (spec §2.4). Rows past the prompt are zero, like Wan's zero padding to 512, so
/// the DiT's cross-attention sees the same kind of context. Weights are host f32 tensors under the names
/// <see cref="TokenEmbeddingName"/> [vocab, textDim] and <see cref="PositionEmbeddingName"/> [textLen, textDim].
/// </summary>
/// <remarks>
/// Token ids come as a flat (batch, textLen) array as <see cref="WordTokenizer.Encode"/> makes them: a prompt's ids, then
/// padding (id 0) to the end. A padding id followed by a real one is rejected, so "zero rows" always means "after the
/// prompt". The padding row of the token table is never read and never receives gradient.
/// </remarks>
public sealed class TextEncoder : IDisposable
{
    public const string TokenEmbeddingName = "text_encoder.token_embedding.weight";
    public const string PositionEmbeddingName = "text_encoder.position_embedding.weight";

    private readonly bool _ownsWeights;

    /// <summary>Wraps existing weights (e.g. read from a checkpoint); the caller keeps ownership.</summary>
    /// <exception cref="ShapeMismatchException">A table is not a rank-2 f32 host tensor, or their widths differ.</exception>
    public TextEncoder(Tensor tokenEmbedding, Tensor positionEmbedding) : this(tokenEmbedding, positionEmbedding, ownsWeights: false) { }

    private TextEncoder(Tensor tokenEmbedding, Tensor positionEmbedding, bool ownsWeights)
    {
        ArgumentNullException.ThrowIfNull(tokenEmbedding);
        ArgumentNullException.ThrowIfNull(positionEmbedding);
        CheckTable(tokenEmbedding, TokenEmbeddingName);
        CheckTable(positionEmbedding, PositionEmbeddingName);
        if (tokenEmbedding.Dim(1) != positionEmbedding.Dim(1))
            throw new ShapeMismatchException(
                $"{TokenEmbeddingName} is {Shape.Format(tokenEmbedding.ShapeArray)} but {PositionEmbeddingName} is " +
                $"{Shape.Format(positionEmbedding.ShapeArray)}: the text dims differ");
        TokenEmbedding = tokenEmbedding;
        PositionEmbedding = positionEmbedding;
        _ownsWeights = ownsWeights;
    }

    /// <summary>
    /// New weights, every entry drawn from N(0, 1/textDim) so a context row (token + position) has a squared norm near 2,
    /// the scale of a normalised embedding. Each table has its own stream keyed by (seed, name). The encoder owns them.
    /// </summary>
    public static TextEncoder CreateRandom(int vocabularySize, int textLen, int textDim, long seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabularySize, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(textLen, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(textDim, 1);
        var token = RandomTable(vocabularySize, textDim, seed, TokenEmbeddingName);
        var position = RandomTable(textLen, textDim, seed, PositionEmbeddingName);
        return new TextEncoder(token, position, ownsWeights: true);
    }

    /// <summary>Wraps tables the encoder then owns (disposes), e.g. read from a model file.</summary>
    public static TextEncoder Owning(Tensor tokenEmbedding, Tensor positionEmbedding) => new(tokenEmbedding, positionEmbedding, ownsWeights: true);

    public Tensor TokenEmbedding { get; }
    public Tensor PositionEmbedding { get; }

    public int VocabularySize => TokenEmbedding.Dim(0);
    public int TextLen => PositionEmbedding.Dim(0);
    public int TextDim => TokenEmbedding.Dim(1);

    /// <summary>Both tables under their checkpoint names, for saving.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> Parameters =>
        [new(TokenEmbeddingName, TokenEmbedding), new(PositionEmbeddingName, PositionEmbedding)];

    /// <summary>The context (batch, textLen, textDim) as a new host f32 tensor the caller disposes.</summary>
    public Tensor Forward(ReadOnlySpan<int> tokenIds, int batch)
    {
        var context = Tensor.Host(DType.F32, batch, TextLen, TextDim);
        try
        {
            Forward(tokenIds, batch, context);
            return context;
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Writes the context into <paramref name="context"/> (batch, textLen, textDim), every element.</summary>
    public void Forward(ReadOnlySpan<int> tokenIds, int batch, Tensor context)
    {
        CheckIds(tokenIds, batch);
        CheckGradientOrContext(context, "context", batch, TextLen, TextDim);
        int dim = TextDim;
        var output = context.HostSpan<float>();
        var tokens = TokenEmbedding.HostSpan<float>();
        var positions = PositionEmbedding.HostSpan<float>();
        for (int row = 0; row < batch * TextLen; row++)
        {
            var destination = output.Slice(row * dim, dim);
            int id = tokenIds[row];
            if (id == WordTokenizer.PaddingId)
            {
                destination.Clear();
                continue;
            }
            var token = tokens.Slice(id * dim, dim);
            var position = positions.Slice(row % TextLen * dim, dim);
            for (int k = 0; k < dim; k++) destination[k] = token[k] + position[k];
        }
    }

    /// <summary>
    /// Adds the gradients of the loss w.r.t. both tables, given <paramref name="dContext"/> (batch, textLen, textDim), to
    /// <paramref name="dTokenEmbedding"/> and <paramref name="dPositionEmbedding"/> (shaped like the tables): a
    /// scatter-add, so a token that occurs several times accumulates every occurrence, and existing contents are kept
    /// (gradient accumulation over micro-batches). Padding rows contribute nothing.
    /// </summary>
    public void Backward(ReadOnlySpan<int> tokenIds, int batch, Tensor dContext, Tensor dTokenEmbedding, Tensor dPositionEmbedding)
    {
        CheckIds(tokenIds, batch);
        CheckGradientOrContext(dContext, "dContext", batch, TextLen, TextDim);
        CheckGradientOrContext(dTokenEmbedding, "dTokenEmbedding", VocabularySize, TextDim);
        CheckGradientOrContext(dPositionEmbedding, "dPositionEmbedding", TextLen, TextDim);
        int dim = TextDim;
        var upstream = dContext.HostSpan<float>();
        var dTokens = dTokenEmbedding.HostSpan<float>();
        var dPositions = dPositionEmbedding.HostSpan<float>();
        for (int row = 0; row < batch * TextLen; row++)
        {
            int id = tokenIds[row];
            if (id == WordTokenizer.PaddingId) continue;
            var source = upstream.Slice(row * dim, dim);
            var token = dTokens.Slice(id * dim, dim);
            var position = dPositions.Slice(row % TextLen * dim, dim);
            for (int k = 0; k < dim; k++)
            {
                token[k] += source[k];
                position[k] += source[k];
            }
        }
    }

    public void Dispose()
    {
        if (!_ownsWeights) return;
        TokenEmbedding.Dispose();
        PositionEmbedding.Dispose();
    }

    private void CheckIds(ReadOnlySpan<int> tokenIds, int batch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        if (tokenIds.Length != batch * TextLen)
            throw new ShapeMismatchException(
                $"{tokenIds.Length} token ids do not make a batch of {batch} × text length {TextLen}");
        for (int b = 0; b < batch; b++)
        {
            bool padded = false;
            for (int j = 0; j < TextLen; j++)
            {
                int id = tokenIds[b * TextLen + j];
                if ((uint)id >= (uint)VocabularySize)
                    throw new ArgumentOutOfRangeException(nameof(tokenIds),
                        $"token id {id} at batch {b}, position {j} is outside the vocabulary of {VocabularySize}");
                if (id == WordTokenizer.PaddingId) padded = true;
                else if (padded)
                    throw new ArgumentException(
                        $"batch {b}: token id {id} at position {j} follows padding; padding must come after the prompt",
                        nameof(tokenIds));
            }
        }
    }

    private static void CheckTable(Tensor table, string name)
    {
        if (table.DType != DType.F32 || table.Rank != 2 || !table.IsHost)
            throw new ShapeMismatchException($"{name} must be a rank-2 f32 host tensor, got {table}");
    }

    private static void CheckGradientOrContext(Tensor tensor, string name, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        if (tensor.DType != DType.F32 || !tensor.IsHost || !tensor.Shape.SequenceEqual(shape))
            throw new ShapeMismatchException($"{name} must be an f32 host tensor of shape {Shape.Format(shape)}, got {tensor}");
    }

    private static Tensor RandomTable(int rows, int dim, long seed, string name)
    {
        ulong key = 14695981039346656037UL; // FNV-1a of the name: one stream per table
        foreach (char c in name) key = (key ^ c) * 1099511628211UL;
        var random = new SeededRandom(seed, (long)key);
        var table = Tensor.Host(DType.F32, rows, dim);
        var values = table.HostSpan<float>();
        double std = 1 / Math.Sqrt(dim);
        for (int i = 0; i < values.Length; i++) values[i] = (float)(std * random.NextGaussian());
        return table;
    }
}
