using NUnit.Framework;
using UltraGen.Core;
using UltraGen.Generation.Data;
using UltraGen.Generation.Text;

namespace UltraGen.Tests.Generation;

public class WordTokenizerTests
{
    [Test]
    public void GrammarVocabularyHasEveryWordOnce()
    {
        var tokenizer = WordTokenizer.FromGrammar();
        Assert.That(tokenizer.Vocabulary[0], Is.EqualTo(WordTokenizer.PaddingToken));
        Assert.That(tokenizer.Vocabulary[1], Is.EqualTo(WordTokenizer.UnknownToken));
        Assert.That(tokenizer.VocabularySize, Is.EqualTo(2 + 4 + 8 + 3 + 4 + 3));
        foreach (var prompt in PromptGrammar.All)
        {
            var ids = tokenizer.Encode(prompt.Text, 12);
            Assert.That(ids.Take(9), Has.All.GreaterThan(WordTokenizer.UnknownId), prompt.Text);
            Assert.That(ids.Skip(9), Has.All.EqualTo(WordTokenizer.PaddingId));
            Assert.That(tokenizer.Decode(ids), Is.EqualTo(prompt.Text));
        }
    }

    [Test]
    public void EncodeLowercasesSplitsOnNonLettersAndMarksUnknownWords()
    {
        var tokenizer = WordTokenizer.FromGrammar();
        int[] ids = tokenizer.Encode("A RED,circle -- moving purple!", 8);
        Assert.That(ids, Is.EqualTo(new[]
        {
            tokenizer.IdOf("a"), tokenizer.IdOf("red"), tokenizer.IdOf("circle"), tokenizer.IdOf("moving"),
            WordTokenizer.UnknownId, 0, 0, 0,
        }));
        Assert.That(tokenizer.IdOf("red"), Is.GreaterThan(WordTokenizer.UnknownId));
        Assert.That(tokenizer.Encode("  ", 3), Is.EqualTo(new[] { 0, 0, 0 }));
    }

    [Test]
    public void EncodeRejectsPromptsLongerThanTheTextLength()
    {
        var tokenizer = WordTokenizer.FromGrammar();
        var error = Assert.Throws<TokenizerException>(() => tokenizer.Encode("a red circle moving left on a black background", 8))!;
        Assert.That(error.Message, Does.Contain("9 words").And.Contain("text length 8"));
        Assert.That(tokenizer.Encode("a red circle moving left on a black background", 9), Has.Length.EqualTo(9));
    }

    [Test]
    public void VocabularyRoundTripsThroughItsString()
    {
        var tokenizer = WordTokenizer.FromGrammar();
        var loaded = WordTokenizer.Deserialize(tokenizer.Serialize());
        Assert.That(loaded.Vocabulary, Is.EqualTo(tokenizer.Vocabulary));
        Assert.That(loaded.Encode("a cyan square moving up on a navy background", 16),
            Is.EqualTo(tokenizer.Encode("a cyan square moving up on a navy background", 16)));
    }

    [TestCase("not json", "JSON")]
    [TestCase("{\"a\": 1}", "JSON")]
    [TestCase("null", "null")]
    [TestCase("[\"<unk>\", \"<pad>\", \"red\"]", "must start with")]
    [TestCase("[\"<pad>\", \"<unk>\", \"red\", \"red\"]", "repeats")]
    [TestCase("[\"<pad>\", \"<unk>\", \"Red\"]", "lowercase")]
    [TestCase("[\"<pad>\", \"<unk>\", \"red car\"]", "lowercase")]
    [TestCase("[\"<pad>\", \"<unk>\", null]", "null")]
    public void MalformedVocabulariesAreRejected(string serialized, string expected)
    {
        var error = Assert.Throws<TokenizerException>(() => WordTokenizer.Deserialize(serialized))!;
        Assert.That(error.Message, Does.Contain(expected));
    }
}

public class TextEncoderTests
{
    private const int TextLen = 6, TextDim = 5, Batch = 2;

    // Two prompts: the second repeats token 3 (scatter-add must accumulate) and has two padding rows.
    private static readonly int[] Ids = [2, 3, 4, 5, 6, 7, 3, 8, 3, 9, 0, 0];

    [Test]
    public void ForwardAddsPositionsAndZeroesPadding()
    {
        using var encoder = TextEncoder.CreateRandom(vocabularySize: 10, TextLen, TextDim, seed: 3);
        using var context = encoder.Forward(Ids, Batch);
        Assert.That(context.ShapeArray, Is.EqualTo(new[] { Batch, TextLen, TextDim }));
        var tokens = encoder.TokenEmbedding.ToFloats();
        var positions = encoder.PositionEmbedding.ToFloats();
        var output = context.ToFloats();
        for (int row = 0; row < Batch * TextLen; row++)
        for (int k = 0; k < TextDim; k++)
        {
            float expected = Ids[row] == 0 ? 0f : tokens[Ids[row] * TextDim + k] + positions[row % TextLen * TextDim + k];
            Assert.That(output[row * TextDim + k], Is.EqualTo(expected), $"row {row}, channel {k}");
        }
        Assert.That(output.Take(TextDim).Select(Math.Abs).Min(), Is.GreaterThan(0f), "real rows are not zero");
    }

    [Test]
    public void InitIsSeededWithTheStatedSpread()
    {
        using var a = TextEncoder.CreateRandom(24, 16, 64, seed: 11);
        using var b = TextEncoder.CreateRandom(24, 16, 64, seed: 11);
        using var c = TextEncoder.CreateRandom(24, 16, 64, seed: 12);
        Assert.That(a.TokenEmbedding.ToFloats(), Is.EqualTo(b.TokenEmbedding.ToFloats()));
        Assert.That(a.TokenEmbedding.ToFloats(), Is.Not.EqualTo(c.TokenEmbedding.ToFloats()));
        Assert.That(a.TokenEmbedding.ToFloats().Take(64), Is.Not.EqualTo(a.PositionEmbedding.ToFloats().Take(64)));
        var values = a.TokenEmbedding.ToDoubles().Concat(a.PositionEmbedding.ToDoubles()).ToArray();
        double mean = values.Average(), std = Math.Sqrt(values.Average(v => (v - mean) * (v - mean)));
        // 2560 draws: the sample std of N(0, 1/64) is 0.125 ± ~0.002, the mean 0 ± ~0.0025.
        Assert.That(std, Is.EqualTo(0.125).Within(0.01));
        Assert.That(mean, Is.EqualTo(0).Within(0.01));
    }

    [Test]
    public void BackwardMatchesFiniteDifferencesAndAccumulates()
    {
        using var encoder = TextEncoder.CreateRandom(vocabularySize: 10, TextLen, TextDim, seed: 5);
        var random = new Random(17);
        var upstream = Enumerable.Range(0, Batch * TextLen * TextDim).Select(_ => random.NextDouble() * 2 - 1).ToArray();
        using var dContext = Tensor.FromDoubles(DType.F32, [Batch, TextLen, TextDim], upstream);
        // Start the gradients from non-zero values: Backward must add to them.
        var tokenStart = Enumerable.Range(0, 10 * TextDim).Select(i => 0.25 + 0.01 * i).ToArray();
        var positionStart = Enumerable.Range(0, TextLen * TextDim).Select(i => -0.5 + 0.02 * i).ToArray();
        using var dToken = Tensor.FromDoubles(DType.F32, [10, TextDim], tokenStart);
        using var dPosition = Tensor.FromDoubles(DType.F32, [TextLen, TextDim], positionStart);
        encoder.Backward(Ids, Batch, dContext, dToken, dPosition);

        double Loss()
        {
            using var context = encoder.Forward(Ids, Batch);
            var output = context.ToDoubles();
            double sum = 0;
            for (int i = 0; i < output.Length; i++) sum += output[i] * upstream[i];
            return sum;
        }

        const double Step = 1e-2; // the loss is linear in every weight: the central difference is exact up to rounding
        foreach (var (table, gradient, start) in new[]
                 { (encoder.TokenEmbedding, dToken, tokenStart), (encoder.PositionEmbedding, dPosition, positionStart) })
        {
            var analytic = gradient.ToDoubles();
            var weights = table.HostSpan<float>();
            for (int i = 0; i < weights.Length; i++)
            {
                float original = weights[i];
                weights[i] = original + (float)Step;
                double plus = Loss();
                weights[i] = original - (float)Step;
                double minus = Loss();
                weights[i] = original;
                double numeric = (plus - minus) / (2 * Step);
                Assert.That(analytic[i] - start[i], Is.EqualTo(numeric).Within(1e-4), $"element {i}");
            }
        }
        // Token 3 appears three times; token 0 (padding) and unused ids get nothing.
        var dTokenValues = dToken.ToDoubles();
        Assert.That(dTokenValues[0], Is.EqualTo(tokenStart[0]).Within(1e-7));
        Assert.That(dTokenValues[3 * TextDim] - tokenStart[3 * TextDim],
            Is.EqualTo(upstream[1 * TextDim] + upstream[6 * TextDim] + upstream[8 * TextDim]).Within(1e-5));
    }

    [Test]
    public void BadIdsAndShapesAreRejected()
    {
        using var encoder = TextEncoder.CreateRandom(vocabularySize: 10, TextLen, TextDim, seed: 5);
        Assert.Throws<ShapeMismatchException>(() => encoder.Forward(Ids.AsSpan(0, 5), 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => encoder.Forward([2, 3, 10, 0, 0, 0], 1));
        var error = Assert.Throws<ArgumentException>(() => encoder.Forward([2, 0, 3, 0, 0, 0], 1))!;
        Assert.That(error.Message, Does.Contain("follows padding"));
        using var wrong = Tensor.Host(DType.F32, 1, TextLen, TextDim + 1);
        Assert.Throws<ShapeMismatchException>(() => encoder.Forward([2, 3, 0, 0, 0, 0], 1, wrong));
        using var token = Tensor.Host(DType.F32, 10, 4);
        using var position = Tensor.Host(DType.F32, TextLen, 5);
        Assert.Throws<ShapeMismatchException>(() => _ = new TextEncoder(token, position));
    }
}
