using System.Text.Json;
using UltraGen.Core;
using UltraGen.Generation.Data;

namespace UltraGen.Generation.Text;

/// <summary>A prompt does not fit the text length, or a serialised vocabulary is malformed.</summary>
public class TokenizerException : UltraGenException
{
    public TokenizerException(string message) : base(message) { }
}

/// <summary>
/// Word-level tokenizer of the bundled miniature model. Its vocabulary is part of the model: the text encoder's
/// embedding rows are indexed by these ids, so the vocabulary travels with the weights (serialised into the
/// safetensors metadata under <see cref="MetadataKey"/>) and is validated when read back.
/// </summary>
/// <remarks>
/// Text is lower-cased (invariant culture) and split on every character that is not a letter, so punctuation and any
/// whitespace separate words and never reach the vocabulary. Id 0 is padding (<see cref="PaddingToken"/>), id 1 stands
/// for any word not in the vocabulary (<see cref="UnknownToken"/>); the vocabulary words follow from id 2.
/// </remarks>
public sealed class WordTokenizer
{
    public const int PaddingId = 0;
    public const int UnknownId = 1;
    public const string PaddingToken = "<pad>";
    public const string UnknownToken = "<unk>";

    /// <summary>The safetensors <c>__metadata__</c> key the serialised vocabulary is stored under.</summary>
    public const string MetadataKey = "text_encoder.vocabulary";

    private readonly string[] _vocabulary;
    private readonly Dictionary<string, int> _ids;

    /// <summary>A tokenizer over <paramref name="words"/> (ids 2, 3, … in the given order).</summary>
    /// <exception cref="TokenizerException">A word is empty, not all lowercase letters, or repeated.</exception>
    public WordTokenizer(IEnumerable<string> words)
    {
        ArgumentNullException.ThrowIfNull(words);
        _vocabulary = [PaddingToken, UnknownToken, .. words];
        _ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 2; id < _vocabulary.Length; id++)
        {
            string word = _vocabulary[id] ?? throw new TokenizerException($"vocabulary entry {id} is null");
            if (word.Length == 0 || !word.All(c => char.IsLetter(c) && char.ToLowerInvariant(c) == c))
                throw new TokenizerException($"vocabulary entry {id} '{word}' is not a non-empty run of lowercase letters");
            if (!_ids.TryAdd(word, id))
                throw new TokenizerException($"vocabulary entry {id} '{word}' repeats entry {_ids[word]}");
        }
    }

    /// <summary>The tokenizer of the prompt grammar: its 22 words plus padding and unknown, 24 ids.</summary>
    public static WordTokenizer FromGrammar() => new(PromptGrammar.Words);

    /// <summary>Every token by id, padding and unknown included.</summary>
    public IReadOnlyList<string> Vocabulary => _vocabulary;

    public int VocabularySize => _vocabulary.Length;

    /// <summary>Lower-cases <paramref name="text"/> and splits it on non-letters.</summary>
    public static IReadOnlyList<string> SplitWords(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = new List<string>();
        int start = -1;
        for (int i = 0; i <= text.Length; i++)
        {
            bool letter = i < text.Length && char.IsLetter(text[i]);
            if (letter && start < 0) start = i;
            else if (!letter && start >= 0)
            {
                words.Add(text[start..i].ToLowerInvariant());
                start = -1;
            }
        }
        return words;
    }

    /// <summary>The id of one (already lower-cased) word, <see cref="UnknownId"/> when it is not in the vocabulary.</summary>
    public int IdOf(string word) => _ids.TryGetValue(word, out int id) ? id : UnknownId;

    /// <summary>
    /// <paramref name="prompt"/>'s ids, followed by <see cref="PaddingId"/> up to <paramref name="textLen"/>. An empty
    /// prompt gives all padding.
    /// </summary>
    /// <exception cref="TokenizerException">The prompt has more words than <paramref name="textLen"/>.</exception>
    public int[] Encode(string prompt, int textLen)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(textLen, 1);
        var words = SplitWords(prompt);
        if (words.Count > textLen)
            throw new TokenizerException(
                $"prompt \"{prompt}\" has {words.Count} words, more than the text length {textLen}; shorten it");
        var ids = new int[textLen];
        for (int i = 0; i < words.Count; i++) ids[i] = IdOf(words[i]);
        return ids;
    }

    /// <summary>The words of <paramref name="ids"/> up to the first padding, joined by spaces (for logs and tests).</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var words = new List<string>();
        foreach (int id in ids)
        {
            if (id == PaddingId) break;
            words.Add(id > 0 && id < _vocabulary.Length ? _vocabulary[id]
                : throw new TokenizerException($"id {id} is outside the vocabulary of {_vocabulary.Length}"));
        }
        return string.Join(' ', words);
    }

    /// <summary>The vocabulary as a JSON array of strings, id order, padding and unknown first.</summary>
    public string Serialize() => JsonSerializer.Serialize(_vocabulary);

    /// <summary>Reads a vocabulary written by <see cref="Serialize"/>.</summary>
    /// <exception cref="TokenizerException">Not a JSON array of strings, the first two entries are not padding and
    /// unknown, or a word is invalid or repeated.</exception>
    public static WordTokenizer Deserialize(string serialized)
    {
        ArgumentNullException.ThrowIfNull(serialized);
        string?[]? entries;
        try
        {
            entries = JsonSerializer.Deserialize<string?[]>(serialized);
        }
        catch (JsonException error)
        {
            throw new TokenizerException($"the vocabulary is not a JSON array of strings: {error.Message}");
        }
        if (entries is null) throw new TokenizerException("the vocabulary is JSON null, expected an array of strings");
        if (entries.Length < 2 || entries[0] != PaddingToken || entries[1] != UnknownToken)
            throw new TokenizerException(
                $"the vocabulary must start with \"{PaddingToken}\", \"{UnknownToken}\"; it starts with " +
                string.Join(", ", entries.Take(2).Select(e => e is null ? "null" : $"\"{e}\"")));
        for (int i = 2; i < entries.Length; i++)
            if (entries[i] is null) throw new TokenizerException($"vocabulary entry {i} is null");
        return new WordTokenizer(entries.Skip(2).Select(e => e!));
    }
}
