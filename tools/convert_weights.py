#!/usr/bin/env python3
"""Converts a Wan2.1 or UltraGen DiT checkpoint into this project's weights file (what `ultragen` loads).

Inputs (told apart by content, not by extension):
  - Wan2.1's diffusion_pytorch_model.safetensors (F32 or BF16), a sharded set through its *.safetensors.index.json,
    or the same in diffusers' naming (renamed to Wan's);
  - the official UltraGen checkpoint (.ckpt/.pt/.pth: a torch pickle of the full DiT state dict, possibly wrapped as
    {"state_dict": ...}/{"module": ...} or with a "module."/"dit."/"model." name prefix, both removed and reported).

Output: one safetensors file with Wan's names (spec §2.3) plus UltraGen's for the decomposed blocks, in the order of
C#'s ParameterCatalog, BF16 by default, and the `__metadata__` C#'s ModelWeights.MetadataOf writes (heads, text length,
eps, ...), so `ultragen` detects the config from the file alone.

Before anything is written, every tensor is checked against the config the tensors imply (spec §2.1/§1.3; the rules of
C#'s ConfigDetector): dim, input channels and patch from patch_embedding, layers, FFN width, sinusoid and text widths,
output channels, decomposed blocks (those holding UltraGen tensors) and the LoRA rank. The heads cannot be read from
shapes: --heads, else the file's ultragen.heads metadata, else dim/128 (Wan's head dim: 12 for dim 1536). Missing,
unexpected, mis-shaped and non-float tensors and partly decomposed blocks are all reported in one message, and the tool
exits with status 2 without writing. RoPE tables some checkpoints carry (`freqs`, `*.freqs`, `freqs_cos`, `freqs_sin`,
`inv_freq`) are not parameters: they are dropped with a note.

Rounding: F32 output is bit-exact for F32/BF16/F16 sources. BF16 and F16 output round to nearest, ties to even, exactly
what torch's `.to(torch.bfloat16)` / `.to(torch.float16)` do (F64 sources are narrowed to F32 first, as torch does).
F16 overflows to inf above 65504; any value that is not finite in the output is reported.

Exit status: 0 converted (or, with --dry-run, the check passed), 2 bad input (nothing written), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ultragen_tools import checkpoint_io, dit_params, safetensors_io  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
PROG = "convert_weights.py"

DESCRIPTION = """\
Convert a Wan2.1 or UltraGen DiT checkpoint into this project's weights file (what `ultragen sample --weights`
loads): Wan's tensor names plus UltraGen's, BF16 by default, with the model settings in the file's metadata.

Every tensor's name, shape and dtype is checked first against the config the tensors imply (sizes, layers, which
blocks are decomposed, LoRA rank); any problem is reported in one message, with exit status 2 and nothing written.
Accepted: Wan2.1's diffusion_pytorch_model.safetensors (F32 or BF16), a sharded set's .safetensors.index.json,
diffusers-named files (renamed to Wan's), and the official UltraGen .ckpt/.pt/.pth (a torch pickle; a wrapping
{"state_dict": ...} and a "module."-style name prefix are removed and reported). RoPE tables (`freqs`) are dropped.
"""

EXAMPLES = """\
after converting, `ultragen inspect FILE` shows the config, counts and layer plan C# reads from the file.

examples:
  # the official UltraGen 1080P checkpoint -> BF16 weights for `ultragen sample --weights`
  python3 tools/convert_weights.py checkpoints/ultragen_1080p.ckpt -o weights/ultragen-1080p.safetensors

  # base Wan2.1-T2V-1.3B, kept in F32 (the UltraGen tensors are initialised when it is loaded into an UltraGen model)
  python3 tools/convert_weights.py Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors \\
      -o weights/wan2.1-t2v-1.3b.safetensors --dtype f32

  # a sharded checkpoint, through its index (the shards are read from the index's folder)
  python3 tools/convert_weights.py checkpoint/diffusion_pytorch_model.safetensors.index.json -o model.safetensors

  # only check a file and print the config it implies
  python3 tools/convert_weights.py model.ckpt --dry-run

  # a model whose width is not a multiple of 128 needs its head count
  python3 tools/convert_weights.py small.ckpt -o small.safetensors --heads 2
"""


class InputError(Exception):
    """Bad input: reported on one line (or one message) and exit status 2."""


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="checkpoint: .safetensors, .safetensors.index.json, or a torch .ckpt/.pt/.pth")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="the .safetensors file to write (required unless --dry-run)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                        help="storage dtype of the output (default: bf16; rounding is to nearest even, as torch's)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the checkpoint and print the report and the config; write nothing")
    config = parser.add_argument_group(
        "model settings the tensor shapes cannot tell (recorded in the output's metadata)")
    config.add_argument("--heads", type=int, metavar="N",
                        help="attention heads (default: the input's ultragen.heads metadata, else dim/128, which is "
                             "12 for Wan 1.3B; required when dim is not a multiple of 128)")
    config.add_argument("--text-len", type=int, metavar="N",
                        help=f"text tokens the DiT attends to (default: metadata, else {dit_params.DEFAULT_TEXT_LEN})")
    config.add_argument("--eps", type=float, metavar="X",
                        help=f"LayerNorm/RMSNorm epsilon (default: metadata, else {dit_params.DEFAULT_EPS:g})")
    config.add_argument("--window-base", type=int, metavar="K",
                        help=f"UltraGen's window base K (default: metadata, else {dit_params.DEFAULT_WINDOW_BASE})")
    config.add_argument("--lora-rank", type=int, metavar="R",
                        help="LoRA rank to record for a checkpoint without UltraGen tensors (base Wan), used when it is "
                             f"loaded into an UltraGen model (default: metadata, else {dit_params.DEFAULT_LORA_RANK}); "
                             "for an UltraGen checkpoint it is read from the tensors and this must agree")
    source = parser.add_argument_group("reading the input")
    source.add_argument("--prefix", metavar="TEXT",
                        help="use only the tensors whose names start with this prefix, and strip it (e.g. 'ema.' when "
                             "a checkpoint holds several copies of the model; default: the prefix before "
                             "'patch_embedding.weight', if any, is stripped automatically)")
    source.add_argument("--max-listed", type=int, default=40, metavar="N",
                        help="list at most N tensors per kind of problem (default: 40; 0: list all)")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.output:
        parser.error("-o/--output is required (or --dry-run to only check)")
    for name in ("heads", "text_len", "window_base", "lora_rank"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.eps is not None and not args.eps > 0:
        parser.error(f"--eps must be > 0, got {args.eps}")
    return args


def _shape_text(shape: Tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _size_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit} ({size:,} bytes)"
    return f"{size} bytes"


def _check_output_path(args: argparse.Namespace) -> None:
    output = os.path.abspath(args.output)
    directory = os.path.dirname(output)
    if not os.path.isdir(directory):
        raise InputError(f"output folder {directory} does not exist")
    if os.path.isdir(output):
        raise InputError(f"output {output} is a directory; give a file name ending in .safetensors")
    if os.path.exists(output) and os.path.samefile(output, args.input):
        raise InputError(f"output {output} is the input file; choose another name")


def convert(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    started = time.time()
    target = DTYPES[args.dtype]
    try:
        source = checkpoint_io.open_source(args.input, args.prefix)
    except checkpoint_io.SourceError as error:
        raise InputError(str(error)) from None
    with source:
        if args.output:
            _check_output_path(args)
        dropped = [n for n in source.names if dit_params.is_non_parameter(n)]
        for name in dropped:
            source.notes.append(f"dropped '{source.raw_name(name)}' {source.dtypes[name]} "
                                f"{_shape_text(source.shapes[name])}: a RoPE table, not a parameter")
            source.drop(name)
        overrides = dit_params.Overrides(heads=args.heads, text_len=args.text_len, eps=args.eps,
                                         window_base=args.window_base, lora_rank=args.lora_rank)
        inference = dit_params.infer_config(source.shapes, source.metadata, overrides)
        header = f"{source.path} ({source.kind}, {source.naming} naming, {len(source.names)} tensors)"
        notes = [f"  note: {n}" for n in source.notes + inference.notes]
        if inference.config is None:
            lines = [f"{header}: cannot determine the model config, nothing written:"]
            lines += [f"  {p}" for p in inference.problems]
            if not any(n.startswith("blocks.") for n in source.names):
                first = ", ".join(source.names[:6]) or "none"
                lines.append(f"  this does not look like a Wan/UltraGen DiT checkpoint (first names: {first})")
            raise InputError("\n".join(lines + notes))
        config = inference.config
        report = dit_params.check(source.shapes, source.dtypes, config)
        if inference.problems or not report.ok:
            count = len(inference.problems) + report.problem_count
            lines = [f"{header}: {count} problem(s), nothing written:",
                     f"  config inferred from the tensors: {config.describe()}"]
            lines += [f"  {p}" for p in inference.problems]
            lines += report.describe(args.max_listed)
            raise InputError("\n".join(lines + notes))

        if config.layers == 30 and config.decomposed_blocks and config.decomposed_blocks != list(range(3, 27)):
            inference.notes.append("the decomposed blocks differ from the released checkpoint's (3-26); the file's "
                                   "own plan is kept")
        specs = dit_params.parameter_list(config)
        base = [s for s in specs if not s.is_ultragen]
        ultragen = [s for s in specs if s.is_ultragen]
        source_dtypes: Dict[str, int] = {}
        for spec in specs:
            source_dtypes[source.dtypes[spec.name]] = source_dtypes.get(source.dtypes[spec.name], 0) + 1
        element = torch.empty((), dtype=target).element_size()
        print(f"source:  {header}", file=out)
        for note in source.notes + inference.notes:
            print(f"         {note}", file=out)
        print(f"config:  {config.describe()}", file=out)
        print(f"tensors: {len(specs)} ({len(base)} Wan + {len(ultragen)} UltraGen), parameters "
              f"{sum(s.numel for s in specs):,} (Wan {sum(s.numel for s in base):,} + "
              f"UltraGen {sum(s.numel for s in ultragen):,}); every name and shape matches", file=out)
        rounding = "" if args.dtype == "f32" or set(source_dtypes) == {args.dtype.upper()} \
            else " (round to nearest even, as torch's .to())"
        print(f"dtype:   {', '.join(f'{d} x{c}' for d, c in sorted(source_dtypes.items()))} -> {args.dtype.upper()}"
              + rounding, file=out)
        if args.dtype == "f32" and set(source_dtypes) <= {"BF16", "F16"}:
            print("note:    the source is 16-bit; F32 output doubles the size without adding precision", file=out)
        if args.dry_run:
            data = sum(s.numel for s in specs) * element
            print(f"dry run: nothing written (the output would hold about {_size_text(data)} of tensor data)", file=out)
            return 0

        non_finite: List[str] = []

        def producer(spec: dit_params.ParamSpec):
            def produce() -> torch.Tensor:
                tensor = source.get(spec.name)
                source.drop(spec.name)
                if tensor.dtype != target:
                    tensor = tensor.to(torch.float32).to(target)
                if not bool(torch.isfinite(tensor).all()):
                    bad = int((~torch.isfinite(tensor)).sum())
                    non_finite.append(f"{spec.name}: {bad} of {tensor.numel()} values")
                return tensor
            return produce

        show_progress = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

        def progress(index: int, name: str) -> None:
            if show_progress and ((index + 1) % 25 == 0 or index + 1 == len(specs)):
                print(f"\rwriting {index + 1}/{len(specs)} tensors", end="", file=sys.stderr, flush=True)

        entries = [(s.name, target, s.shape, producer(s)) for s in specs]
        size = checkpoint_io.write_safetensors(args.output, entries, config.metadata(), progress)
        if show_progress:
            print(file=sys.stderr)
        print(f"output:  {os.path.abspath(args.output)}, {args.dtype.upper()}, {_size_text(size)}, "
              f"written in {time.time() - started:.1f} s", file=out)
        if non_finite:
            print(f"warning: {len(non_finite)} tensor(s) hold values that are not finite in the output"
                  + (" (F16 overflows above 65504)" if args.dtype == "f16" else "") + ": " + "; ".join(non_finite),
                  file=sys.stderr)
        return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return convert(args)
    except (InputError, checkpoint_io.SourceError, safetensors_io.SafetensorsError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
