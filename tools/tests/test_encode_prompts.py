"""tools/encode_prompts.py and tools/ultragen_tools/umt5.py on a tiny random umT5 (vocab 50, d_model 16, 2 heads × 8,
d_ff 24, 2 layers, 32 buckets) written with Wan's tensor names.

The references here are independent of the code under test: bucket tables by hand and by exact integer arithmetic,
and a float64 encoder written as loops over layers, heads, query and key positions with the formulas spelled out.
"""

import contextlib
import io
import math
import os
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import torch

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, TOOLS)
import encode_prompts  # noqa: E402
from ultragen_tools import safetensors_io, text_embeddings  # noqa: E402
from ultragen_tools.umt5 import UMT5Encoder, relative_position_bucket  # noqa: E402

VOCAB, DIM, HEADS, HEAD_DIM, FFN, LAYERS, BUCKETS, MAX_DISTANCE = 50, 16, 2, 8, 24, 2, 32, 128
EOS = 1


def _importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def tiny_state(seed, dtype=torch.float32):
    """Random weights, Wan names. Scales chosen so attention scores are O(1) (a peaked, not uniform, softmax) and the
    residual stream stays O(1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    state = {"token_embedding.weight": randn(VOCAB, DIM)}
    for i in range(LAYERS):
        p = f"blocks.{i}."
        state[p + "norm1.weight"] = (1 + 0.2 * torch.randn(DIM, generator=g)).to(dtype)
        for name in "qkv":
            state[p + f"attn.{name}.weight"] = randn(HEADS * HEAD_DIM, DIM, std=DIM ** -0.5)
        state[p + "attn.o.weight"] = randn(DIM, HEADS * HEAD_DIM, std=(HEADS * HEAD_DIM) ** -0.5)
        state[p + "norm2.weight"] = (1 + 0.2 * torch.randn(DIM, generator=g)).to(dtype)
        state[p + "ffn.gate.0.weight"] = randn(FFN, DIM, std=DIM ** -0.5)
        state[p + "ffn.fc1.weight"] = randn(FFN, DIM, std=DIM ** -0.5)
        state[p + "ffn.fc2.weight"] = randn(DIM, FFN, std=FFN ** -0.5)
        state[p + "pos_embedding.embedding.weight"] = randn(BUCKETS, HEADS)
    state["norm.weight"] = (1 + 0.2 * torch.randn(DIM, generator=g)).to(dtype)
    return state


def exact_bucket(relative, num_buckets=BUCKETS, max_distance=MAX_DISTANCE):
    """T5's bidirectional bucket with integer arithmetic only: for d >= e (e = num_buckets/4, m = num_buckets/4 log
    buckets), bucket e + k with k the largest integer <= m·log(d/e)/log(max/e), i.e. the largest k with
    d^m · e^k >= max^k · e^m, capped at m − 1. Keys after the query (relative > 0) use the upper half."""
    half = num_buckets // 2
    e = half // 2
    m = half - e
    d = abs(relative)
    base = half if relative > 0 else 0
    if d < e:
        return base + d
    k = 0
    while k + 1 <= m - 1 and d ** m * e ** (k + 1) >= max_distance ** (k + 1) * e ** m:
        k += 1
    return base + e + k


def naive_encode(state, ids):
    """float64 reference for ONE prompt (no padding, no mask): loops over layers, heads, query i and key j."""
    w = {name: t.double() for name, t in state.items()}

    def rms(vector, weight):
        return vector / math.sqrt(float((vector * vector).mean()) + 1e-6) * weight

    def gelu(vector):
        return 0.5 * vector * (1 + torch.tanh(math.sqrt(2 / math.pi) * (vector + 0.044715 * vector ** 3)))

    n = len(ids)
    x = [w["token_embedding.weight"][t].clone() for t in ids]
    for layer in range(LAYERS):
        p = f"blocks.{layer}."
        h = [rms(v, w[p + "norm1.weight"]) for v in x]
        q = [w[p + "attn.q.weight"] @ v for v in h]
        k = [w[p + "attn.k.weight"] @ v for v in h]
        val = [w[p + "attn.v.weight"] @ v for v in h]
        table = w[p + "pos_embedding.embedding.weight"]
        attended = [torch.zeros(HEADS * HEAD_DIM, dtype=torch.float64) for _ in range(n)]
        for head in range(HEADS):
            s = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
            for i in range(n):
                scores = [float(q[i][s] @ k[j][s]) + float(table[exact_bucket(j - i), head]) for j in range(n)]
                top = max(scores)
                exps = [math.exp(score - top) for score in scores]
                total = sum(exps)
                for j in range(n):
                    attended[i][s] += exps[j] / total * val[j][s]
        x = [x[i] + w[p + "attn.o.weight"] @ attended[i] for i in range(n)]
        h = [rms(v, w[p + "norm2.weight"]) for v in x]
        x = [x[i] + w[p + "ffn.fc2.weight"] @ (gelu(w[p + "ffn.gate.0.weight"] @ h[i]) * (w[p + "ffn.fc1.weight"] @ h[i]))
             for i in range(n)]
    return torch.stack([rms(v, w["norm.weight"]) for v in x])


def wan_to_hf(state):
    """The Hugging Face UMT5 names, written out independently of umt5.HF_TO_WAN."""
    hf = {"shared.weight": state["token_embedding.weight"],
          "encoder.embed_tokens.weight": state["token_embedding.weight"],
          "encoder.final_layer_norm.weight": state["norm.weight"]}
    for i in range(LAYERS):
        a, f, p = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1.", f"blocks.{i}."
        hf[a + "layer_norm.weight"] = state[p + "norm1.weight"]
        for name in "qkvo":
            hf[a + f"SelfAttention.{name}.weight"] = state[p + f"attn.{name}.weight"]
        hf[a + "SelfAttention.relative_attention_bias.weight"] = state[p + "pos_embedding.embedding.weight"]
        hf[f + "layer_norm.weight"] = state[p + "norm2.weight"]
        hf[f + "DenseReluDense.wi_0.weight"] = state[p + "ffn.gate.0.weight"]
        hf[f + "DenseReluDense.wi_1.weight"] = state[p + "ffn.fc1.weight"]
        hf[f + "DenseReluDense.wo.weight"] = state[p + "ffn.fc2.weight"]
    return hf


def stub_word_ids(text):
    """The stub tokenizer: one id per space-separated word (2..VOCAB-1, from the letters), then EOS."""
    return [2 + sum(map(ord, word)) % (VOCAB - 2) for word in text.split(" ") if word] + [EOS]


class StubTokenizer:
    description = "stub"

    def __init__(self):
        self.seen = []

    def __call__(self, text, text_len=512):
        self.seen.append(text)
        ids = stub_word_ids(text)
        return ids if len(ids) <= text_len else ids[:text_len - 1] + [EOS]  # truncation keeps the EOS, as HF's


def run_main(argv, tokenizer=None):
    """encode_prompts.main in-process with a stub tokenizer; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.object(encode_prompts, "load_tokenizer", lambda source: tokenizer or StubTokenizer()):
        code = encode_prompts.main(argv)
    return code, out.getvalue(), err.getvalue()


class BucketTests(unittest.TestCase):
    # relative position (key - query) -> bucket, umT5's 32 buckets / max distance 128, computed by hand:
    # |d| < 8 exact; else 8 + floor(2·log2(|d|/8)) capped at 15; keys after the query add 16.
    HAND_32_128 = {0: 0, -1: 1, 1: 17, -7: 7, 7: 23, -8: 8, 8: 24, -11: 8, -12: 9, 12: 25, -16: 10, 16: 26,
                   -22: 10, -23: 11, -31: 11, -32: 12, 32: 28, -45: 12, 45: 28, -46: 13, 46: 29, -64: 14, 64: 30,
                   -90: 14, -91: 15, 91: 31, -127: 15, -128: 15, 128: 31, -129: 15, 129: 31, -1000: 15, 1000: 31}
    # 8 buckets / max distance 16: |d| < 2 exact; else 2 + floor(2·log(|d|/2)/log(8)) capped at 3; after: +4.
    HAND_8_16 = {0: 0, -1: 1, 1: 5, -2: 2, 2: 6, -5: 2, -6: 3, 6: 7, -15: 3, -16: 3, -17: 3, 100: 7}

    def check(self, table, num_buckets, max_distance):
        relative = torch.tensor(list(table))
        got = relative_position_bucket(relative, num_buckets, max_distance).tolist()
        for (distance, want), have in zip(table.items(), got):
            self.assertEqual(have, want, f"distance {distance} ({num_buckets} buckets, max {max_distance})")

    def test_hand_table_umt5(self):
        self.check(self.HAND_32_128, 32, 128)

    def test_hand_table_small(self):
        self.check(self.HAND_8_16, 8, 16)

    def test_every_distance_against_integer_arithmetic(self):
        for buckets, max_distance in ((32, 128), (8, 16), (16, 64)):
            relative = torch.arange(-700, 701)
            got = relative_position_bucket(relative, buckets, max_distance).tolist()
            want = [exact_bucket(d, buckets, max_distance) for d in range(-700, 701)]
            self.assertEqual(got, want, f"{buckets} buckets, max {max_distance}")
        self.assertEqual([exact_bucket(d) for d in self.HAND_32_128], list(self.HAND_32_128.values()))


class EncoderTests(unittest.TestCase):
    def setUp(self):
        self.state = tiny_state(seed=11)
        g = torch.Generator().manual_seed(12)
        # 37 tokens: distances up to 36 reach the logarithmic buckets (>= 8) in both directions.
        self.long = torch.randint(2, VOCAB, (36,), generator=g).tolist() + [EOS]
        self.short = torch.randint(2, VOCAB, (4,), generator=g).tolist() + [EOS]

    def test_matches_naive_float64_loops(self):
        encoder = UMT5Encoder.load(self.state)  # float32 weights -> float32 compute
        self.assertEqual(encoder.dtype, torch.float32)
        text_len = 40
        out = encoder.encode_ids([self.long, self.short], text_len)  # one batch: the short prompt is padded, masked
        self.assertEqual(tuple(out.shape), (2, text_len, DIM))
        for row, ids in enumerate((self.long, self.short)):
            want = naive_encode(self.state, ids)
            self.assertGreater(float(want.abs().max()), 0.5)  # O(1) outputs: the tolerance below is meaningful
            error = float((out[row, :len(ids)].double() - want).abs().max())
            # float32 against float64 through 2 layers: rounding leaves ~1e-6; a formula error leaves >= 1e-2.
            self.assertLess(error, 2e-5, f"prompt {row}: max |f32 - f64 reference| = {error:.3g}")
            self.assertEqual(torch.count_nonzero(out[row, len(ids):]).item(), 0, "rows past the tokens must be 0")

    def test_padding_does_not_leak(self):
        # the short prompt alone, and next to the long one (padded to 37 and masked), give the same rows
        encoder = UMT5Encoder.load(self.state)
        alone = encoder.encode_ids([self.short], 16)[0]
        batched = encoder.encode_ids([self.long, self.short], 16 + 24)[1, :16]
        self.assertLess(float((alone - batched).abs().max()), 1e-6)

    def test_bf16_weights_compute_in_bf16(self):
        state = {name: t.to(torch.bfloat16) for name, t in self.state.items()}
        encoder = UMT5Encoder.load(state)
        self.assertEqual(encoder.dtype, torch.bfloat16)
        out = encoder.encode_ids([self.long], 40)[0, :len(self.long)].double()
        want = naive_encode(state, self.long)  # the same bf16-rounded weights, computed in float64
        relative = float((out - want).norm() / want.norm())
        # bf16 (8-bit mantissa, 2^-8 = 0.4 %) through 2 layers: about 1 %; float32 compute would give ~1e-6.
        self.assertLess(relative, 2 ** -5, f"relative error {relative:.3g}")
        self.assertGreater(relative, 1e-4, "bf16 weights should be computed in bf16 (as Wan does), not float32")
        as_f32 = UMT5Encoder.load(state, dtype=torch.float32).encode_ids([self.long], 40)[0, :len(self.long)].double()
        self.assertLess(float((as_f32 - want).abs().max()), 2e-5)  # --dtype f32 on the same weights

    def test_hf_names_map_to_wan_names(self):
        wan = UMT5Encoder.load(self.state).encode_ids([self.long], 40)
        hf_state = wan_to_hf(self.state)
        hf_state["decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(3, 3)  # ignored: not the encoder
        hf_state["lm_head.weight"] = torch.zeros(VOCAB, DIM)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.safetensors")
            safetensors_io.save(hf_state, path)
            for source in (path, folder):  # a file, and a directory of shards
                hf = UMT5Encoder.load(source).encode_ids([self.long], 40)
                self.assertTrue(torch.equal(hf, wan), source)

    @unittest.skipUnless(_importable("transformers"), "transformers is not installed (Debian ships no "
                                                      "python3-transformers): no comparison against UMT5EncoderModel")
    def test_matches_transformers_umt5(self):
        from transformers import UMT5Config, UMT5EncoderModel

        config = UMT5Config(vocab_size=VOCAB, d_model=DIM, d_kv=HEAD_DIM, d_ff=FFN, num_layers=LAYERS,
                            num_heads=HEADS, relative_attention_num_buckets=BUCKETS,
                            relative_attention_max_distance=MAX_DISTANCE, feed_forward_proj="gated-gelu",
                            layer_norm_epsilon=1e-6, dropout_rate=0.0)
        torch.manual_seed(5)
        model = UMT5EncoderModel(config).eval()
        state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        ids = torch.tensor([self.long, self.short + [0] * (len(self.long) - len(self.short))])
        mask = torch.tensor([[1] * len(self.long), [1] * len(self.short) + [0] * (len(self.long) - len(self.short))])
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = UMT5Encoder.load(state).encode_ids([self.long, self.short], len(self.long))
        for row, count in enumerate((len(self.long), len(self.short))):
            error = float((ours[row, :count] - want[row, :count]).abs().max())
            self.assertLess(error, 1e-4, f"row {row}: max |ours - transformers| = {error:.3g}")


class CliTests(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.dir = self.folder.name
        self.state = tiny_state(seed=21)
        self.weights = os.path.join(self.dir, "models_t5_tiny-enc.pth")
        torch.save(self.state, self.weights)

    def tearDown(self):
        self.folder.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def test_file_contract(self):
        prompt = "  a red&amp;amp;fox \t runs\n\nthrough snow  "
        tokenizer = StubTokenizer()
        code, out, err = run_main(["--weights", self.weights, "--tokenizer", "stub", "--prompt", prompt,
                                   "--output", self.path("pos.safetensors"), "--negative-output",
                                   self.path("neg.safetensors"), "--device", "cpu"], tokenizer)
        self.assertEqual(code, 0, err)
        # Wan's cleaning: html-unescape twice, whitespace runs -> one space, stripped
        self.assertEqual(tokenizer.seen[0], "a red&fox runs through snow")
        self.assertEqual(tokenizer.seen[1], encode_prompts.DEFAULT_NEGATIVE_PROMPT)
        for name, text, cleaned in (("pos", prompt, tokenizer.seen[0]),
                                    ("neg", encode_prompts.DEFAULT_NEGATIVE_PROMPT, tokenizer.seen[1])):
            tensors, metadata = safetensors_io.load(self.path(f"{name}.safetensors"))
            self.assertEqual(list(tensors), ["context"])
            context = tensors["context"]
            self.assertEqual((context.dtype, tuple(context.shape)), (torch.float32, (512, DIM)))
            ids = stub_word_ids(cleaned)
            self.assertEqual(metadata["ultragen.embeddings.tokens"], str(len(ids)))
            self.assertEqual(metadata["ultragen.embeddings.prompt"], text)
            self.assertEqual(metadata["ultragen.embeddings.role"], "positive" if name == "pos" else "negative")
            self.assertTrue(metadata["ultragen.embeddings.encoder"].startswith("umt5("))  # not umt5-xxl: tiny dims
            self.assertEqual(torch.count_nonzero(context[len(ids):]).item(), 0)
            self.assertEqual(torch.count_nonzero(context[:len(ids)].abs().sum(dim=1)).item(), len(ids))
            error = float((context[:len(ids)].double() - naive_encode(self.state, ids)).abs().max())
            self.assertLess(error, 2e-5, name)
            text_embeddings.load(self.path(f"{name}.safetensors"))  # the contract's own checks pass
        self.assertNotIn(".tmp", " ".join(os.listdir(self.dir)))

    def test_prompts_file_and_batches(self):
        lines = ["a cat", "", "a dog on a very long road under a grey sky", "   ", "snow"]
        with open(self.path("prompts.txt"), "w", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")
        code, out, err = run_main(["--weights", self.weights, "--tokenizer", "stub", "--prompts-file",
                                   self.path("prompts.txt"), "--output-dir", self.path("out"), "--batch-size", "2",
                                   "--text-len", "32", "--save-dtype", "bf16"])
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(os.listdir(self.path("out"))),
                         ["prompt_0001.safetensors", "prompt_0003.safetensors", "prompt_0005.safetensors"])
        for number in (1, 3, 5):
            context, metadata = text_embeddings.load(self.path(f"out/prompt_{number:04d}.safetensors"))
            self.assertEqual((context.dtype, tuple(context.shape)), (torch.bfloat16, (32, DIM)))
            self.assertEqual(metadata["ultragen.embeddings.prompt"], lines[number - 1])
            ids = stub_word_ids(lines[number - 1])
            want = naive_encode(self.state, ids).float().to(torch.bfloat16)
            self.assertLess(float((context[:len(ids)].float() - want.float()).abs().max()), 2e-2)  # bf16 storage

    def test_truncation_keeps_text_len(self):
        prompt = " ".join(f"w{i}" for i in range(20))
        code, _, err = run_main(["--weights", self.weights, "--tokenizer", "stub", "--prompt", prompt, "--output",
                                 self.path("t.safetensors"), "--text-len", "8"])
        self.assertEqual(code, 0, err)
        context, metadata = text_embeddings.load(self.path("t.safetensors"))
        self.assertEqual((tuple(context.shape), metadata["ultragen.embeddings.tokens"]), ((8, DIM), "8"))
        self.assertEqual(torch.count_nonzero(context.abs().sum(dim=1)).item(), 8)

    def test_float16_works_or_is_refused_clearly(self):
        code, _, err = run_main(["--weights", self.weights, "--tokenizer", "stub", "--prompt", "a cat", "--output",
                                 self.path("h.safetensors"), "--dtype", "f16", "--device", "cpu"])
        try:
            (torch.ones(2, 2, dtype=torch.float16) @ torch.ones(2, 2, dtype=torch.float16))
        except RuntimeError:  # torch 1.13: no float16 matmul on the CPU
            self.assertEqual(code, 2)
            self.assertIn("cannot compute in float16 on cpu", err)
            return
        self.assertEqual(code, 0, err)
        context, _ = text_embeddings.load(self.path("h.safetensors"))
        ids = stub_word_ids("a cat")
        self.assertLess(float((context[:len(ids)].double() - naive_encode(self.state, ids)).abs().max()), 2e-2)

    @unittest.skipUnless(_importable("tokenizers"), "the 'tokenizers' package is not installed (Debian bookworm has "
                                                    "no python3-tokenizers): no end-to-end run with a tokenizer.json")
    def test_cli_end_to_end_with_tokenizer_json(self):
        from tokenizers import Tokenizer, models, pre_tokenizers, processors

        words = ["<pad>", "</s>", "<unk>", "a", "red", "fox", "runs", "&"]
        tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        os.makedirs(self.path("tok"))
        tokenizer.save(self.path("tok/tokenizer.json"))
        result = subprocess.run([sys.executable, os.path.join(TOOLS, "encode_prompts.py"), "--weights", self.weights,
                                 "--tokenizer", self.path("tok"), "--prompt", "a  red fox&amp;amp;runs", "--output",
                                 self.path("e.safetensors"), "--text-len", "16"],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        context, metadata = text_embeddings.load(self.path("e.safetensors"))
        ids = [3, 4, 2, 1]  # "a red fox&runs" -> a, red, <unk> ("fox&runs"), </s>
        self.assertEqual(metadata["ultragen.embeddings.tokens"], str(len(ids)))
        self.assertLess(float((context[:4].double() - naive_encode(self.state, ids)).abs().max()), 2e-5)
        self.assertEqual(torch.count_nonzero(context[4:]).item(), 0)


class BadInputTests(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.dir = self.folder.name
        self.state = tiny_state(seed=31)

    def tearDown(self):
        self.folder.cleanup()

    def run_cli(self, state=None, weights=None, extra=()):
        if weights is None:
            weights = os.path.join(self.dir, "w.pth")
            torch.save(state, weights)
        return run_main(["--weights", weights, "--tokenizer", "stub", "--prompt", "a cat", "--output",
                         os.path.join(self.dir, "o.safetensors"), *extra])

    def test_missing_weights_file_subprocess(self):
        missing = os.path.join(self.dir, "nope.pth")
        result = subprocess.run([sys.executable, os.path.join(TOOLS, "encode_prompts.py"), "--weights", missing,
                                 "--tokenizer", "any", "--prompt", "x", "--output", os.path.join(self.dir, "o.st")],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(f"weights not found: {missing}", result.stderr)

    def test_missing_tensor(self):
        del self.state["blocks.1.attn.k.weight"]
        code, _, err = self.run_cli(self.state)
        self.assertEqual(code, 2)
        self.assertIn("missing tensor 'blocks.1.attn.k.weight' (expected shape [16, 16])", err)

    def test_misshaped_tensor(self):
        self.state["blocks.0.ffn.fc2.weight"] = torch.zeros(DIM, FFN + 1)
        code, _, err = self.run_cli(self.state)
        self.assertEqual(code, 2)
        self.assertIn("tensor 'blocks.0.ffn.fc2.weight' has shape [16, 25], expected [16, 24]", err)

    def test_hf_missing_tensor_named_both_ways(self):
        hf = wan_to_hf(self.state)
        del hf["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"]
        path = os.path.join(self.dir, "hf.safetensors")
        safetensors_io.save(hf, path)
        code, _, err = self.run_cli(weights=path)
        self.assertEqual(code, 2)
        self.assertIn("missing tensor 'blocks.1.ffn.gate.0.weight'", err)
        hf = wan_to_hf(self.state)
        hf["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"] = torch.zeros(FFN, DIM + 2)
        safetensors_io.save(hf, path)
        code, _, err = self.run_cli(weights=path)
        self.assertEqual(code, 2)
        self.assertIn("tensor 'encoder.block.1.layer.1.DenseReluDense.wi_0.weight' (blocks.1.ffn.gate.0.weight) has "
                      "shape [24, 18], expected [24, 16]", err)

    def test_not_umt5_weights_and_unreadable_file(self):
        code, _, err = self.run_cli({"conv.weight": torch.zeros(2, 2)})
        self.assertEqual(code, 2)
        self.assertIn("not umT5 encoder weights", err)
        junk = os.path.join(self.dir, "junk.pth")
        with open(junk, "wb") as stream:
            stream.write(b"not a checkpoint")
        code, _, err = self.run_cli(weights=junk)
        self.assertEqual(code, 2)
        self.assertIn("cannot read as a PyTorch checkpoint", err)

    def test_usage_errors(self):
        weights = os.path.join(self.dir, "w.pth")
        torch.save(self.state, weights)
        code, _, err = run_main(["--weights", weights, "--tokenizer", "stub", "--prompt", "a", "--prompt", "b",
                                 "--output", os.path.join(self.dir, "o.safetensors")])
        self.assertEqual(code, 2)
        self.assertIn("2 --prompt but 1 --output", err)
        code, _, err = run_main(["--weights", weights, "--tokenizer", "stub", "--negative-prompt", "blurry"])
        self.assertEqual(code, 2)
        self.assertIn("--negative-prompt needs --negative-output", err)

    def test_tokenizer_vocabulary_mismatch(self):
        class Wide(StubTokenizer):
            def __call__(self, text, text_len=512):
                return [VOCAB + 3, EOS]

        weights = os.path.join(self.dir, "w.pth")
        torch.save(self.state, weights)
        code, _, err = run_main(["--weights", weights, "--tokenizer", "stub", "--prompt", "a", "--output",
                                 os.path.join(self.dir, "o.safetensors")], Wide())
        self.assertEqual(code, 2)
        self.assertIn(f"token id {VOCAB + 3} >= the model's vocabulary {VOCAB}", err)

    def test_unusable_tokenizer(self):
        weights = os.path.join(self.dir, "w.pth")
        torch.save(self.state, weights)
        argv = [sys.executable, os.path.join(TOOLS, "encode_prompts.py"), "--weights", weights, "--tokenizer",
                os.path.join(self.dir, "no-such-tokenizer"), "--prompt", "x", "--output", os.path.join(self.dir, "o.st")]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 2, result.stderr)
        if not _importable("tokenizers") and not _importable("transformers"):
            self.assertIn("neither the 'tokenizers' package", result.stderr)
            self.assertIn("nor 'transformers'", result.stderr)
        else:
            self.assertIn("tokenizer not found", result.stderr)


if __name__ == "__main__":
    unittest.main()
