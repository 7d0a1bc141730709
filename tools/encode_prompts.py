#!/usr/bin/env python3
"""Encodes prompts with the umT5-XXL text encoder into the [512, 4096] embeddings the Wan2.1 / UltraGen DiT takes.

Exactly as Wan2.1 (spec §2.4): clean the text (ftfy, html-unescape twice, collapse whitespace), tokenize with the
google/umt5-xxl tokenizer adding EOS and truncating to --text-len (512), run the encoder in the weights' dtype (bf16 for
Wan's file), keep the real tokens' rows (EOS included) and zero every row after them. One safetensors file per prompt
(shared contract 2): tensor `context` [text_len, 4096] F32, metadata ultragen.embeddings.{encoder,prompt,tokens}.
The C# side reads them with `ultragen sample --text-embeddings POS --negative-embeddings NEG`.

Weights: Wan's `models_t5_umt5-xxl-enc-bf16.pth`, or a Hugging Face google/umt5-xxl checkpoint (a .safetensors/.bin
file or a directory of shards; only the encoder's tensors are read). Tokenizer: a directory with tokenizer.json (Wan2.1
ships it as google/umt5-xxl/), read with the `tokenizers` package, else `transformers.AutoTokenizer`.
Exit status 2 on bad input (missing file, missing or mis-shaped tensor, unusable tokenizer), with a one-line message.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, NamedTuple, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from ultragen_tools import text_embeddings  # noqa: E402
from ultragen_tools.umt5 import UMT5Encoder, WeightsError  # noqa: E402
from ultragen_tools.umt5_tokenizer import TokenizerError, clean_prompt, load_tokenizer  # noqa: E402

# UltraGen's default negative prompt (English; spec §2.4). Wan's own default is a Chinese string.
DEFAULT_NEGATIVE_PROMPT = ("Aerial view, overexposed, low quality, deformation, bad composition, bad hands, bad teeth, "
                           "bad eyes, bad limbs, distortion, blurring, text, subtitles")

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}

EXAMPLES = """examples:
  # one prompt and UltraGen's default negative prompt, Wan2.1's files
  python tools/encode_prompts.py --weights Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth \\
      --tokenizer Wan2.1-T2V-1.3B/google/umt5-xxl \\
      --prompt "a red fox running through fresh snow, golden hour" --output fox.safetensors \\
      --negative-output negative.safetensors

  # several prompts, one model load, batched
  python tools/encode_prompts.py --weights enc.pth --tokenizer umt5-xxl/ \\
      --prompt "a cat" --output cat.safetensors --prompt "a dog" --output dog.safetensors

  # one prompt per line -> OUT/prompt_0001.safetensors, ... (numbered by line; blank lines skipped)
  python tools/encode_prompts.py --weights enc.pth --tokenizer umt5-xxl/ --prompts-file prompts.txt --output-dir OUT

  # then: ultragen sample --text-embeddings fox.safetensors --negative-embeddings negative.safetensors ...
"""


class Job(NamedTuple):
    prompt: str
    path: str
    role: str  # "positive" or "negative"


class UsageError(ValueError):
    pass


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="encode_prompts.py", description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True,
                        help="umT5 encoder weights: Wan's models_t5_umt5-xxl-enc-bf16.pth, or an HF umt5 checkpoint "
                             "(.safetensors/.bin file or directory)")
    parser.add_argument("--tokenizer", required=True,
                        help="directory holding tokenizer.json (e.g. Wan2.1-T2V-1.3B/google/umt5-xxl), the "
                             "tokenizer.json itself, or (with transformers installed) a hub name")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt; repeat, each with its --output")
    parser.add_argument("--output", action="append", default=[], help="output .safetensors for the matching --prompt")
    parser.add_argument("--negative-prompt", default=None,
                        help="negative prompt (default with --negative-output: UltraGen's English one)")
    parser.add_argument("--negative-output", default=None, help="output .safetensors for the negative prompt")
    parser.add_argument("--prompts-file", default=None, help="text file, one prompt per line (UTF-8)")
    parser.add_argument("--output-dir", default=None,
                        help="directory for --prompts-file outputs: prompt_NNNN.safetensors, NNNN = line number")
    parser.add_argument("--text-len", type=int, default=512, help="tokens per prompt incl. EOS (default 512, Wan's)")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="compute dtype; auto = the weights' own (bf16 for Wan's file, as Wan computes; "
                             "for a float32 HF checkpoint, bf16 matches Wan and halves the memory)")
    parser.add_argument("--save-dtype", choices=["f32", "bf16"], default="f32", help="dtype of `context` (default f32)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto = cuda when available, else cpu")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per encoder call (default 8)")
    return parser.parse_args(argv)


def collect_jobs(args: argparse.Namespace) -> List[Job]:
    if len(args.prompt) != len(args.output):
        raise UsageError(f"{len(args.prompt)} --prompt but {len(args.output)} --output: give one --output per --prompt")
    jobs = [Job(p, o, "positive") for p, o in zip(args.prompt, args.output)]
    if args.negative_prompt is not None and args.negative_output is None:
        raise UsageError("--negative-prompt needs --negative-output")
    if args.negative_output is not None:
        negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
        jobs.append(Job(negative, args.negative_output, "negative"))
    if (args.prompts_file is None) != (args.output_dir is None):
        raise UsageError("--prompts-file and --output-dir go together")
    if args.prompts_file is not None:
        if not os.path.isfile(args.prompts_file):
            raise UsageError(f"prompts file not found: {args.prompts_file}")
        try:
            with open(args.prompts_file, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
        except UnicodeDecodeError as error:
            raise UsageError(f"{args.prompts_file}: not UTF-8 text ({error})") from None
        found = 0
        for number, line in enumerate(lines, start=1):
            if line.strip():
                jobs.append(Job(line, os.path.join(args.output_dir, f"prompt_{number:04d}.safetensors"), "positive"))
                found += 1
        if found == 0:
            raise UsageError(f"{args.prompts_file}: no prompts (every line is blank)")
    if not jobs:
        raise UsageError("nothing to encode: give --prompt/--output, --negative-output, or --prompts-file/--output-dir")
    paths = [os.path.abspath(job.path) for job in jobs]
    duplicate = next((p for i, p in enumerate(paths) if p in paths[:i]), None)
    if duplicate:
        raise UsageError(f"two prompts would be written to the same file: {duplicate}")
    if args.text_len < 1:
        raise UsageError(f"--text-len must be >= 1, got {args.text_len}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    return jobs


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    return name


def check_dtype_on_device(dtype: torch.dtype, device: str) -> None:
    """torch 1.13 has no float16 matmul on the CPU: say so instead of failing inside the encoder."""
    try:
        probe = torch.ones(2, 2, dtype=dtype, device=device)
        probe @ probe
    except RuntimeError as error:
        name = str(dtype).replace("torch.", "")
        raise UsageError(f"this torch ({torch.__version__}) cannot compute in {name} on {device} ({error}); "
                         f"use --dtype bf16 or f32") from None


def run(args: argparse.Namespace) -> None:
    jobs = collect_jobs(args)
    device = pick_device(args.device)
    if not os.path.exists(args.weights):
        raise UsageError(f"weights not found: {args.weights}")
    tokenizer = load_tokenizer(args.tokenizer)
    token_ids = [tokenizer(clean_prompt(job.prompt), args.text_len) for job in jobs]

    if args.dtype != "auto":
        check_dtype_on_device(DTYPES[args.dtype], device)
    start = time.perf_counter()
    encoder = UMT5Encoder.load(args.weights, dtype=None if args.dtype == "auto" else DTYPES[args.dtype], device=device)
    check_dtype_on_device(encoder.dtype, device)
    config = encoder.config
    print(f"loaded {config.describe()} ({config.num_layers} layers, d_model {config.dim}) from {encoder.source} "
          f"in {time.perf_counter() - start:.1f} s; computing in {str(encoder.dtype).replace('torch.', '')} on {device}")
    for job, ids in zip(jobs, token_ids):
        bad = [t for t in ids if t >= config.vocab]
        if bad:
            raise UsageError(f"prompt {job.prompt[:40]!r}: token id {bad[0]} >= the model's vocabulary {config.vocab}: "
                             f"the tokenizer {tokenizer.description} does not belong to these weights")

    extra = {
        "ultragen.embeddings.text_len": str(args.text_len),
        "ultragen.embeddings.compute_dtype": str(encoder.dtype).replace("torch.", ""),
        "ultragen.embeddings.weights": os.path.basename(os.path.normpath(args.weights)),
        "ultragen.embeddings.tokenizer": tokenizer.description,
    }
    save_dtype = DTYPES[args.save_dtype]
    start = time.perf_counter()
    order = sorted(range(len(jobs)), key=lambda i: len(token_ids[i]))  # similar lengths share a batch: less padding
    for first in range(0, len(order), args.batch_size):
        batch = order[first:first + args.batch_size]
        contexts = encoder.encode_ids([token_ids[i] for i in batch], args.text_len)
        for row, index in enumerate(batch):
            job, count = jobs[index], len(token_ids[index])
            directory = os.path.dirname(os.path.abspath(job.path))
            os.makedirs(directory, exist_ok=True)
            text_embeddings.save(job.path, contexts[row], job.prompt, count, config.describe(),
                                 dict(extra, **{"ultragen.embeddings.role": job.role}), save_dtype)
            print(f"wrote {job.path}: {count} tokens ({job.role}) {job.prompt[:60]!r}")
    print(f"encoded {len(jobs)} prompt(s) in {time.perf_counter() - start:.1f} s")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (UsageError, WeightsError, TokenizerError) as error:
        print(f"encode_prompts.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
