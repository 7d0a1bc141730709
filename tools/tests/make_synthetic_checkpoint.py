#!/usr/bin/env python3
"""Builds small synthetic DiT checkpoints with the real Wan2.1 / UltraGen tensor names, for the converter's tests.

The checkpoints come from torch modules laid out as the real ones are (independently of tools/ultragen_tools), so
their names and their state_dict order are PyTorch's own:
  - kind "wan": Wan2.1's WanModel (blocks register norm1, self_attn, norm3, cross_attn, norm2, ffn, modulation),
    written as safetensors (optionally sharded with an index, in diffusers' naming, or in BF16/F16);
  - kind "ultragen": the released UltraGen DiT (DiffSynth's layout: blocks register self_attn, cross_attn, norm1-3,
    ffn, modulation; a decomposed block's self_attn registers q, k, v, o, the six LoRAs, the gates, the four convs and
    only then norm_q, norm_k), written as a torch pickle, by default wrapped as {"state_dict": {"module." + name: ...},
    "epoch": ..., "global_step": ...}.
Sizes are tiny (dim 32, 2 heads, FFN 64, text 24, sinusoid 16, 4 layers with blocks 1-2 decomposed, LoRA rank 4).
Values are seeded random numbers at realistic scales. `--reference-output` writes the same tensors, Wan-named, as F32
safetensors in the source's order (exact, whatever the source dtype): what a conversion must reproduce.

Examples:
  python3 tests/make_synthetic_checkpoint.py --kind ultragen --output /tmp/ug.ckpt \\
      --reference-output /tmp/ug-ref.safetensors
  python3 tests/make_synthetic_checkpoint.py --kind wan --dtype bf16 --output /tmp/wan.safetensors \\
      --reference-output /tmp/wan-ref.safetensors
  python3 tests/make_synthetic_checkpoint.py --kind wan --shards 3 --output /tmp/wan/model.safetensors.index.json \\
      --reference-output /tmp/wan-ref.safetensors
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import sys
from typing import Dict, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ultragen_tools import safetensors_io  # noqa: E402  (file I/O only)


@dataclasses.dataclass(frozen=True)
class Dims:
    dim: int = 32
    heads: int = 2
    ffn_dim: int = 64
    text_dim: int = 24
    freq_dim: int = 16
    layers: int = 4
    decomposed: Tuple[int, ...] = (1, 2)
    lora_rank: int = 4
    in_channels: int = 16
    out_channels: int = 16
    patch: Tuple[int, int, int] = (1, 2, 2)


SMALL = Dims()
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


# ---------------------------------------------------------------------------------------------------- the modules

class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class LoRA(nn.Module):
    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.lora_A = nn.Linear(dim, rank)
        self.lora_B = nn.Linear(rank, dim)


class Attention(nn.Module):
    """Wan's self- and cross-attention parameters (q, k, v, o, then the q/k RMSNorms)."""

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim)
        self.norm_k = RMSNorm(dim)


class UltraGenSelfAttention(nn.Module):
    """The released UltraGen self-attention: base projections, then (decomposed blocks only) the UltraGen modules, and
    the q/k norms last."""

    def __init__(self, d: Dims, decomposed: bool):
        super().__init__()
        dim = d.dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        if decomposed:
            self.q_lora_1 = LoRA(dim, d.lora_rank)
            self.k_lora_1 = LoRA(dim, d.lora_rank)
            self.v_lora_1 = LoRA(dim, d.lora_rank)
            self.q_lora_2 = LoRA(dim, d.lora_rank)
            self.k_lora_2 = LoRA(dim, d.lora_rank)
            self.v_lora_2 = LoRA(dim, d.lora_rank)
            self.alpha_time_embedding = nn.Sequential(nn.Linear(d.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            self.alpha_time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim), nn.Sigmoid())
            self.alpha_time_embedding2 = nn.Sequential(nn.Linear(d.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            self.alpha_time_projection2 = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim), nn.Sigmoid())
            self.downsample_conv = nn.Conv2d(dim, dim, kernel_size=4, stride=4, groups=dim)
            self.upsample_conv = nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)
            self.downsample_conv_hierachcal = nn.Conv2d(dim, dim, kernel_size=2, stride=2, groups=dim)
            self.upsample_conv_hierachcal = nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm_q = RMSNorm(dim)
        self.norm_k = RMSNorm(dim)


def _ffn(d: Dims) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d.dim, d.ffn_dim), nn.GELU(), nn.Linear(d.ffn_dim, d.dim))


class WanBlock(nn.Module):
    def __init__(self, d: Dims):
        super().__init__()
        self.norm1 = nn.LayerNorm(d.dim, elementwise_affine=False)
        self.self_attn = Attention(d.dim)
        self.norm3 = nn.LayerNorm(d.dim)
        self.cross_attn = Attention(d.dim)
        self.norm2 = nn.LayerNorm(d.dim, elementwise_affine=False)
        self.ffn = _ffn(d)
        self.modulation = nn.Parameter(torch.zeros(1, 6, d.dim))


class UltraGenBlock(nn.Module):
    def __init__(self, d: Dims, decomposed: bool):
        super().__init__()
        self.self_attn = UltraGenSelfAttention(d, decomposed)
        self.cross_attn = Attention(d.dim)
        self.norm1 = nn.LayerNorm(d.dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(d.dim, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(d.dim)
        self.ffn = _ffn(d)
        self.modulation = nn.Parameter(torch.zeros(1, 6, d.dim))


class Head(nn.Module):
    def __init__(self, d: Dims):
        super().__init__()
        self.norm = nn.LayerNorm(d.dim, elementwise_affine=False)
        self.head = nn.Linear(d.dim, d.out_channels * math.prod(d.patch))
        self.modulation = nn.Parameter(torch.zeros(1, 2, d.dim))


class DiT(nn.Module):
    def __init__(self, d: Dims, kind: str):
        super().__init__()
        self.patch_embedding = nn.Conv3d(d.in_channels, d.dim, kernel_size=d.patch, stride=d.patch)
        self.text_embedding = nn.Sequential(nn.Linear(d.text_dim, d.dim), nn.GELU(), nn.Linear(d.dim, d.dim))
        self.time_embedding = nn.Sequential(nn.Linear(d.freq_dim, d.dim), nn.SiLU(), nn.Linear(d.dim, d.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d.dim, 6 * d.dim))
        if kind == "wan":
            self.blocks = nn.ModuleList(WanBlock(d) for _ in range(d.layers))
        else:
            self.blocks = nn.ModuleList(UltraGenBlock(d, b in d.decomposed) for b in range(d.layers))
        self.head = Head(d)


# ---------------------------------------------------------------------------------------------------- values

def _values(name: str, shape: Tuple[int, ...], dim: int, generator: torch.Generator) -> torch.Tensor:
    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).mul(bound).to(torch.float32)

    if name.endswith("modulation"):
        return uniform(1 / math.sqrt(dim))
    if name.endswith("bias"):
        return uniform(0.05)
    if len(shape) == 1:                       # RMSNorm / LayerNorm weights
        return 1 + uniform(0.1)
    fan_in = math.prod(shape[1:])
    if "conv" in name:                        # depthwise convs scattered around average pooling / a box filter
        return (1 + uniform(0.5)) / fan_in
    return uniform(1 / math.sqrt(fan_in))


def build_state_dict(kind: str, dims: Dims = SMALL, seed: int = 0, dtype: torch.dtype = torch.float32
                     ) -> "collections.OrderedDict[str, torch.Tensor]":
    """The state dict of a `kind` ("wan" or "ultragen") model with seeded values, in PyTorch's order, stored as
    `dtype` (values drawn in F32, then rounded by torch)."""
    if kind not in ("wan", "ultragen"):
        raise ValueError(f"kind must be 'wan' or 'ultragen', not {kind!r}")
    with torch.no_grad():
        structure = DiT(dims, kind).state_dict()
    generator = torch.Generator().manual_seed(seed)
    return collections.OrderedDict(
        (name, _values(name, tuple(t.shape), dims.dim, generator).to(dtype)) for name, t in structure.items())


# diffusers' names for Wan's (diffusers' scripts/convert_wan_to_diffusers.py renames these fragments).
_TO_DIFFUSERS_TOP = {
    "time_embedding.0.": "condition_embedder.time_embedder.linear_1.",
    "time_embedding.2.": "condition_embedder.time_embedder.linear_2.",
    "text_embedding.0.": "condition_embedder.text_embedder.linear_1.",
    "text_embedding.2.": "condition_embedder.text_embedder.linear_2.",
    "time_projection.1.": "condition_embedder.time_proj.",
    "head.head.": "proj_out.",
}
_TO_DIFFUSERS_BLOCK = {
    "self_attn.q.": "attn1.to_q.", "self_attn.k.": "attn1.to_k.", "self_attn.v.": "attn1.to_v.",
    "self_attn.o.": "attn1.to_out.0.", "self_attn.norm_q.": "attn1.norm_q.", "self_attn.norm_k.": "attn1.norm_k.",
    "cross_attn.q.": "attn2.to_q.", "cross_attn.k.": "attn2.to_k.", "cross_attn.v.": "attn2.to_v.",
    "cross_attn.o.": "attn2.to_out.0.", "cross_attn.norm_q.": "attn2.norm_q.", "cross_attn.norm_k.": "attn2.norm_k.",
    "norm3.": "norm2.", "ffn.0.": "ffn.net.0.proj.", "ffn.2.": "ffn.net.2.",
}


def to_diffusers_name(name: str) -> str:
    if name == "head.modulation":
        return "scale_shift_table"
    for old, new in _TO_DIFFUSERS_TOP.items():
        if name.startswith(old):
            return new + name[len(old):]
    parts = name.split(".", 2)
    if parts[0] == "blocks":
        prefix, rest = f"blocks.{parts[1]}.", parts[2]
        if rest == "modulation":
            return prefix + "scale_shift_table"
        for old, new in _TO_DIFFUSERS_BLOCK.items():
            if rest.startswith(old):
                return prefix + new + rest[len(old):]
    return name


# ---------------------------------------------------------------------------------------------------- writing

def write_checkpoint(kind: str, output: str, reference_output: Optional[str] = None, seed: int = 0,
                     dtype: str = "f32", naming: str = "wan", shards: int = 1, wrap: Optional[str] = None,
                     prefix: Optional[str] = None, rope_freqs: bool = False, legacy_pickle: bool = False,
                     dims: Dims = SMALL) -> Dict[str, torch.Tensor]:
    """Writes the checkpoint (and the F32 reference); returns the source tensors under Wan names.
    kind "wan": safetensors (`shards` > 1: `output` is the index JSON, shards beside it); kind "ultragen": a torch
    pickle. `wrap`/`prefix` default to "state_dict"/"module." for "ultragen" and to none for "wan"."""
    state = build_state_dict(kind, dims, seed, DTYPES[dtype])
    if reference_output:
        safetensors_io.save(collections.OrderedDict((n, t.to(torch.float32)) for n, t in state.items()),
                            reference_output, {"synthetic.kind": kind, "synthetic.seed": str(seed)})
    named = collections.OrderedDict(
        ((to_diffusers_name(n) if naming == "diffusers" else n), t) for n, t in state.items())
    if prefix is None:
        prefix = "module." if kind == "ultragen" else ""
    named = collections.OrderedDict((prefix + n, t) for n, t in named.items())
    if rope_freqs:
        # A RoPE table as some wrappers register it (Wan's layout: 1024 positions x head_dim/2 complex pairs).
        half = dims.dim // dims.heads // 2
        angles = torch.outer(torch.arange(1024, dtype=torch.float64),
                             1.0 / torch.pow(10000.0, torch.arange(half, dtype=torch.float64) / half))
        named[prefix + "freqs"] = (torch.polar(torch.ones_like(angles), angles) if kind == "ultragen"
                                   else torch.stack([angles.cos(), angles.sin()], -1).to(torch.float32))
    if kind == "wan":
        if wrap:
            raise ValueError("a safetensors file cannot be wrapped")
        _write_safetensors(named, output, shards)
    else:
        if shards != 1:
            raise ValueError("only a safetensors checkpoint can be sharded")
        wrap = "state_dict" if wrap is None else wrap
        payload: object = named
        if wrap and wrap != "none":
            payload = {"epoch": 3, "global_step": 1200, wrap: named}
        torch.save(payload, output, _use_new_zipfile_serialization=not legacy_pickle)
    return state


def _write_safetensors(named: "collections.OrderedDict[str, torch.Tensor]", output: str, shards: int) -> None:
    if shards <= 1:
        safetensors_io.save(named, output, {"format": "pt"})
        return
    if not output.endswith(".index.json"):
        raise ValueError("a sharded checkpoint's --output is its index, ending in .index.json")
    directory = os.path.dirname(os.path.abspath(output))
    stem = os.path.basename(output)[:-len(".safetensors.index.json")] if output.endswith(".safetensors.index.json") \
        else os.path.basename(output)[:-len(".index.json")]
    names = list(named)
    per_shard = math.ceil(len(names) / shards)
    weight_map = {}
    total = 0
    for index in range(shards):
        part = names[index * per_shard:(index + 1) * per_shard]
        shard_name = f"{stem}-{index + 1:05d}-of-{shards:05d}.safetensors"
        safetensors_io.save(collections.OrderedDict((n, named[n]) for n in part), os.path.join(directory, shard_name),
                            {"format": "pt"})
        weight_map.update({n: shard_name for n in part})
        total += sum(named[n].numel() * named[n].element_size() for n in part)
    with open(output, "w", encoding="utf-8") as stream:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, stream, indent=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__[__doc__.index("Examples:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("wan", "ultragen"), required=True)
    parser.add_argument("--output", required=True, help="checkpoint to write (.safetensors, .index.json or .ckpt)")
    parser.add_argument("--reference-output", help="also write the source tensors, Wan-named, as F32 safetensors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="the checkpoint's storage dtype")
    parser.add_argument("--naming", choices=("wan", "diffusers"), default="wan")
    parser.add_argument("--shards", type=int, default=1, help="wan only: split into N shards with an index")
    parser.add_argument("--wrap", help="ultragen only: key of the wrapping dict (default state_dict; 'none': bare)")
    parser.add_argument("--prefix", help="prefix of every name (default: 'module.' for ultragen, none for wan)")
    parser.add_argument("--rope-freqs", action="store_true", help="add a 'freqs' RoPE table (not a parameter)")
    parser.add_argument("--legacy-pickle", action="store_true", help="ultragen only: torch's pre-1.6 pickle format")
    args = parser.parse_args(argv)
    state = write_checkpoint(args.kind, args.output, args.reference_output, args.seed, args.dtype, args.naming,
                             args.shards, args.wrap, args.prefix, args.rope_freqs, args.legacy_pickle)
    print(json.dumps({"kind": args.kind, "tensors": len(state), "parameters": sum(t.numel() for t in state.values()),
                      "dims": dataclasses.asdict(SMALL)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
