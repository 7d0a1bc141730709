#!/usr/bin/env python3
"""Tiny stand-ins for the text encoder and the VAE of the README's "Running the real model" chain, for the end-to-end
test (tests/UltraGen.Tests/Tools/RealModelPipelineTests.cs); the DiT comes from make_synthetic_checkpoint.py.

Subcommands:
  umt5    a random umT5 encoder with Wan's tensor names (models_t5_umt5-xxl-enc-bf16.pth layout), torch pickle;
          --dim must be the DiT's text_dim.
  encode  runs tools/encode_prompts.py's main() with the given arguments and a word-level stand-in tokenizer. The
          real tokenizer is a tokenizer.json read by the `tokenizers` package, which Debian (and so CI) lacks; only
          encode_prompts.load_tokenizer is replaced, everything else (argument checks, prompt cleaning, truncation
          to --text-len keeping the EOS, the encoder, zeroed padding rows, the contract-2 file) is the CLI's own code.
  vae     a random Wan2.1 VAE with Wan's tensor names and reduced widths (tests/test_decode_latents.py's
          tiny_state_dict: base dim 8, z_dim 16), torch pickle, for tools/decode_latents.py --vae.

Examples:
  python3 tests/make_pipeline_fixtures.py umt5 --dim 24 --output /tmp/umt5.pth
  python3 tests/make_pipeline_fixtures.py encode --weights /tmp/umt5.pth --text-len 8 --prompt "a red fox" \\
      --output /tmp/p.safetensors --negative-prompt "blurry" --negative-output /tmp/n.safetensors --device cpu
  python3 tests/make_pipeline_fixtures.py vae --output /tmp/vae.pth
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional
from unittest import mock

import torch

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, TOOLS)
import encode_prompts  # noqa: E402
from ultragen_tools import umt5_tokenizer  # noqa: E402

EOS = 1  # umT5's </s>
STUB_TOKENIZER = "stub-word-level"


def umt5_state(seed: int, dim: int, vocab: int = 64, heads: int = 2, head_dim: int = 8, ffn: int = 32,
               layers: int = 2, buckets: int = 32) -> dict:
    """Random umT5 encoder weights under Wan's names, at scales that keep the residual stream O(1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    attn = heads * head_dim
    state = {"token_embedding.weight": randn(vocab, dim)}
    for i in range(layers):
        p = f"blocks.{i}."
        state[p + "norm1.weight"] = 1 + 0.2 * randn(dim)
        for name in "qkv":
            state[p + f"attn.{name}.weight"] = randn(attn, dim, std=dim ** -0.5)
        state[p + "attn.o.weight"] = randn(dim, attn, std=attn ** -0.5)
        state[p + "norm2.weight"] = 1 + 0.2 * randn(dim)
        state[p + "ffn.gate.0.weight"] = randn(ffn, dim, std=dim ** -0.5)
        state[p + "ffn.fc1.weight"] = randn(ffn, dim, std=dim ** -0.5)
        state[p + "ffn.fc2.weight"] = randn(dim, ffn, std=ffn ** -0.5)
        state[p + "pos_embedding.embedding.weight"] = randn(buckets, heads)
    state["norm.weight"] = 1 + 0.2 * randn(dim)
    return state


def stub_tokenizer(vocab: int) -> umt5_tokenizer.PromptTokenizer:
    """One id per space-separated word (2..vocab-1, from its characters), then EOS; truncation keeps the EOS."""

    def encode(text: str, text_len: int) -> List[int]:
        ids = [2 + sum(map(ord, word)) % (vocab - 2) for word in text.split(" ") if word]
        return ids[:text_len - 1] + [EOS]

    return umt5_tokenizer.PromptTokenizer(encode, STUB_TOKENIZER)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.index("Examples:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    umt5 = commands.add_parser("umt5", help="write a tiny random umT5 encoder (Wan names)")
    umt5.add_argument("--dim", type=int, required=True, help="d_model: the DiT's text_dim")
    umt5.add_argument("--vocab", type=int, default=64)
    umt5.add_argument("--seed", type=int, default=0)
    umt5.add_argument("--output", required=True)
    commands.add_parser("encode", add_help=False,
                        help="encode_prompts.py's arguments (but --tokenizer), run with a stand-in tokenizer")
    vae = commands.add_parser("vae", help="write a tiny random Wan2.1 VAE (Wan names, z_dim 16)")
    vae.add_argument("--seed", type=int, default=0)
    vae.add_argument("--output", required=True)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["encode"]:
        rest = argv[1:]
        if "--tokenizer" in rest:
            parser.error("encode: the tokenizer is the stand-in; do not pass --tokenizer")
        weights = rest[rest.index("--weights") + 1] if "--weights" in rest[:-1] else None
        vocab = int(torch.load(weights, map_location="cpu")["token_embedding.weight"].shape[0]) \
            if weights and os.path.isfile(weights) else 64
        with mock.patch.object(encode_prompts, "load_tokenizer", lambda source: stub_tokenizer(vocab)):
            return encode_prompts.main(rest + ["--tokenizer", STUB_TOKENIZER])
    args = parser.parse_args(argv)
    if args.command == "umt5":
        state = umt5_state(args.seed, args.dim, args.vocab)
    else:
        from tests.test_decode_latents import tiny_state_dict  # noqa: E402  (imports numpy; only needed here)
        state = tiny_state_dict(seed=args.seed)
    temporary = args.output + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
