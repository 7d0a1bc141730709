"""The DiT's parameter names and shapes, config inference from tensor shapes, and checkpoint verification.

This is the Python twin of the C# model code, and follows its rules so that both sides agree on every file:
  - `DitConfig` and `DitConfig.problems()` mirror src/UltraGen.Model/ModelConfig.cs (`Validate`),
  - `parameter_list` mirrors ParameterCatalog.List (Wan's names, spec §2.3, plus UltraGen's for decomposed blocks,
    spec §1.3, in the catalogue's order: Wan2.1's state_dict order, with a decomposed block's UltraGen tensors after
    its self_attn norms; the released UltraGen code's own state_dict differs slightly, see `parameter_list`),
  - `infer_config` mirrors ConfigDetector.Detect (sizes from shapes; what shapes cannot tell from metadata or defaults),
  - `DitConfig.metadata()` mirrors ModelWeights.MetadataOf (the `__metadata__` of a converted file, contract 1).
One deliberate difference: where several tensors tell the same size (the FFN width in every block, the LoRA rank in
every decomposed block), the most common value wins instead of the first one, so a single damaged tensor is reported as
mis-shaped rather than skewing the whole config. For a valid file the two rules give the same config.
Nothing here reads files or needs torch.
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
import math
import re
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

WAN_HEAD_DIM = 128            # heads = dim / 128 when nothing says otherwise (Wan 1.3B: 12, 14B: 40)
DEFAULT_WINDOW_BASE = 4       # K: local windows per side on even blocks
GLOBAL_DOWN = 4               # the global branch's compression stride; the C# layouts support only this one
HIERARCHICAL_DOWN = 2         # the hierarchical branch's compression stride; likewise
DEFAULT_LORA_RANK = 64
DEFAULT_TEXT_LEN = 512
DEFAULT_EPS = 1e-6
WINDOW_MODES = ("ResizeToDivisible", "Ragged")

# __metadata__ keys (src/UltraGen.Model/WeightsOptions.cs, WeightsMetadata).
META_HEADS = "ultragen.heads"
META_TEXT_LEN = "ultragen.text_len"
META_EPS = "ultragen.eps"
META_WINDOW_BASE = "ultragen.window_base"
META_LORA_RANK = "ultragen.lora_rank"
META_GLOBAL_K_USES_WQ = "ultragen.global_k_uses_wq"
META_WINDOW_MODE = "ultragen.window_mode"
META_FULL_BLOCKS = "ultragen.full_blocks"

# The six LoRA modules of a decomposed block's self_attn: _1 global branch, _2 hierarchical branch.
ULTRAGEN_LORA_MODULES = ("q_lora_1", "k_lora_1", "v_lora_1", "q_lora_2", "k_lora_2", "v_lora_2")
# A tensor under blocks.{i}.self_attn.<one of these> marks block i as decomposed.
ULTRAGEN_MODULE_PREFIXES = ("q_lora_", "k_lora_", "v_lora_", "alpha_time_embedding", "alpha_time_projection",
                            "downsample_conv", "upsample_conv")

# Tensors some checkpoints carry that are not parameters of the model (RoPE tables): dropped with a note.
NON_PARAMETER_LEAVES = ("freqs", "freqs_cos", "freqs_sin", "inv_freq")

_BLOCK_NAME = re.compile(r"^blocks\.(0|[1-9][0-9]*)\.(.+)$")


@dataclasses.dataclass(frozen=True)
class DitConfig:
    """A Wan2.1-style DiT with UltraGen attention; the fields and defaults of C#'s ModelConfig."""
    dim: int
    ffn_dim: int
    freq_dim: int
    text_dim: int
    text_len: int
    heads: int
    layers: int
    full_blocks: FrozenSet[int]
    in_channels: int = 16
    out_channels: int = 16
    patch: Tuple[int, int, int] = (1, 2, 2)
    eps: float = DEFAULT_EPS
    qk_norm: bool = True
    cross_attn_norm: bool = True
    window_base: int = DEFAULT_WINDOW_BASE
    global_down: int = GLOBAL_DOWN
    hierarchical_down: int = HIERARCHICAL_DOWN
    lora_rank: int = DEFAULT_LORA_RANK
    global_k_uses_wq: bool = True
    window_mode: str = "ResizeToDivisible"

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads if self.heads > 0 else 0

    @property
    def patch_volume(self) -> int:
        return self.patch[0] * self.patch[1] * self.patch[2]

    def is_decomposed(self, block: int) -> bool:
        return block not in self.full_blocks

    @property
    def decomposed_blocks(self) -> List[int]:
        return [b for b in range(self.layers) if b not in self.full_blocks]

    def problems(self) -> List[str]:
        """Every rule of ModelConfig.Validate this config breaks (empty when valid)."""
        p: List[str] = []
        if self.dim < 1:
            p.append(f"dim must be >= 1, got {self.dim}")
        if self.heads < 1:
            p.append(f"heads must be >= 1, got {self.heads}")
        if self.dim >= 1 and self.heads >= 1:
            if self.dim % self.heads != 0:
                p.append(f"dim {self.dim} is not divisible by heads {self.heads}")
            elif self.head_dim % 2 != 0 or self.head_dim < 6:
                p.append(f"head dim {self.head_dim} (dim {self.dim} / heads {self.heads}) must be even and >= 6 "
                         f"(3-D RoPE splits it into time/row/column pairs)")
        if self.ffn_dim < 1:
            p.append(f"ffn dim must be >= 1, got {self.ffn_dim}")
        if self.freq_dim < 2 or self.freq_dim % 2 != 0:
            p.append(f"freq dim must be even and >= 2 (cos half, sin half), got {self.freq_dim}")
        if self.text_dim < 1:
            p.append(f"text dim must be >= 1, got {self.text_dim}")
        if self.text_len < 1:
            p.append(f"text len must be >= 1, got {self.text_len}")
        if self.layers < 1:
            p.append(f"layers must be >= 1, got {self.layers}")
        if self.in_channels < 1:
            p.append(f"in channels must be >= 1, got {self.in_channels}")
        if self.out_channels < 1:
            p.append(f"out channels must be >= 1, got {self.out_channels}")
        if min(self.patch) < 1:
            p.append(f"patch size {self.patch} must be positive in every dimension")
        if not (self.eps > 0) or math.isinf(self.eps):
            p.append(f"eps must be a positive finite number, got {self.eps!r}")
        if self.full_blocks and min(self.full_blocks) < 0:
            p.append("block indices must be non-negative")
        if self.layers >= 1 and self.full_blocks and max(self.full_blocks) >= self.layers:
            p.append(f"full-attention block {max(self.full_blocks)} is past the last block {self.layers - 1}")
        if self.window_base < 2 or self.window_base % 2 != 0:
            p.append(f"window base K must be even and >= 2 (hierarchical windows are K/2 per side), "
                     f"got {self.window_base}")
        if self.global_down != GLOBAL_DOWN:
            p.append(f"global down must be {GLOBAL_DOWN} (the attention layouts support only the reference stride), "
                     f"got {self.global_down}")
        if self.hierarchical_down != HIERARCHICAL_DOWN:
            p.append(f"hierarchical down must be {HIERARCHICAL_DOWN} (the attention layouts support only the reference "
                     f"stride), got {self.hierarchical_down}")
        if self.lora_rank < 1 or (self.dim >= 1 and self.lora_rank > self.dim):
            p.append(f"LoRA rank must be in 1..dim ({self.dim}), got {self.lora_rank}")
        if self.window_mode not in WINDOW_MODES:
            p.append(f"unknown window mode {self.window_mode!r} (expected {' or '.join(WINDOW_MODES)})")
        return p

    def metadata(self) -> Dict[str, str]:
        """The `__metadata__` of a converted file: exactly what C#'s ModelWeights.MetadataOf writes for this config."""
        return {
            "format": "pt",
            META_HEADS: str(self.heads),
            META_TEXT_LEN: str(self.text_len),
            META_EPS: dotnet_round_trip(self.eps),
            META_WINDOW_BASE: str(self.window_base),
            META_LORA_RANK: str(self.lora_rank),
            META_GLOBAL_K_USES_WQ: "true" if self.global_k_uses_wq else "false",
            META_WINDOW_MODE: self.window_mode,
            META_FULL_BLOCKS: ",".join(str(b) for b in sorted(self.full_blocks)) if self.full_blocks else "none",
        }

    def describe(self) -> str:
        decomposed = self.decomposed_blocks
        heads = f"heads {self.heads} (head dim {self.head_dim})" if self.heads > 0 else "heads unknown"
        text = (f"dim {self.dim}, {heads}, ffn {self.ffn_dim}, layers {self.layers}, "
                f"freq {self.freq_dim}, text {self.text_dim}x{self.text_len}, in {self.in_channels}, "
                f"out {self.out_channels}, patch {self.patch}, eps {self.eps:g}, qk_norm {self.qk_norm}, "
                f"cross_attn_norm {self.cross_attn_norm}; ")
        if decomposed:
            text += (f"UltraGen attention in blocks {format_ranges(decomposed)} (full attention in "
                     f"{format_ranges(sorted(self.full_blocks))}), K {self.window_base}, LoRA rank {self.lora_rank}")
        else:
            text += f"no decomposed block (plain Wan); LoRA rank {self.lora_rank} recorded for later UltraGen use"
        return text


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: Tuple[int, ...]
    group: str      # "base", "lora", "gate" or "conv"
    block: int      # -1 outside the blocks

    @property
    def numel(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count

    @property
    def is_ultragen(self) -> bool:
        return self.group != "base"


def _attention_rows(module: str, c: DitConfig) -> List[Tuple[str, Tuple[int, ...], str]]:
    rows: List[Tuple[str, Tuple[int, ...], str]] = []
    for projection in ("q", "k", "v", "o"):
        rows.append((f"{module}.{projection}.weight", (c.dim, c.dim), "base"))
        rows.append((f"{module}.{projection}.bias", (c.dim,), "base"))
    if c.qk_norm:
        rows.append((f"{module}.norm_q.weight", (c.dim,), "base"))
        rows.append((f"{module}.norm_k.weight", (c.dim,), "base"))
    return rows


def _ultragen_rows(c: DitConfig) -> List[Tuple[str, Tuple[int, ...], str]]:
    rows: List[Tuple[str, Tuple[int, ...], str]] = []
    for lora in ULTRAGEN_LORA_MODULES:
        rows.append((f"self_attn.{lora}.lora_A.weight", (c.lora_rank, c.dim), "lora"))
        rows.append((f"self_attn.{lora}.lora_A.bias", (c.lora_rank,), "lora"))
        rows.append((f"self_attn.{lora}.lora_B.weight", (c.dim, c.lora_rank), "lora"))
        rows.append((f"self_attn.{lora}.lora_B.bias", (c.dim,), "lora"))
    for gate in ("", "2"):
        rows.append((f"self_attn.alpha_time_embedding{gate}.0.weight", (c.dim, c.freq_dim), "gate"))
        rows.append((f"self_attn.alpha_time_embedding{gate}.0.bias", (c.dim,), "gate"))
        rows.append((f"self_attn.alpha_time_embedding{gate}.2.weight", (c.dim, c.dim), "gate"))
        rows.append((f"self_attn.alpha_time_embedding{gate}.2.bias", (c.dim,), "gate"))
        rows.append((f"self_attn.alpha_time_projection{gate}.1.weight", (c.dim, c.dim), "gate"))
        rows.append((f"self_attn.alpha_time_projection{gate}.1.bias", (c.dim,), "gate"))
    rows.append(("self_attn.downsample_conv.weight", (c.dim, 1, c.global_down, c.global_down), "conv"))
    rows.append(("self_attn.downsample_conv.bias", (c.dim,), "conv"))
    rows.append(("self_attn.upsample_conv.weight", (c.dim, 1, 3, 3, 3), "conv"))
    rows.append(("self_attn.upsample_conv.bias", (c.dim,), "conv"))
    rows.append(("self_attn.downsample_conv_hierachcal.weight", (c.dim, 1, c.hierarchical_down, c.hierarchical_down),
                 "conv"))
    rows.append(("self_attn.downsample_conv_hierachcal.bias", (c.dim,), "conv"))
    rows.append(("self_attn.upsample_conv_hierachcal.weight", (c.dim, 1, 3, 3, 3), "conv"))
    rows.append(("self_attn.upsample_conv_hierachcal.bias", (c.dim,), "conv"))
    return rows


def parameter_list(c: DitConfig) -> List[ParamSpec]:
    """Every parameter of `c` in C#'s catalogue order: Wan2.1's state_dict order (a module's own parameters, then its
    children's in registration order: modulation, self_attn, norm3, cross_attn, ffn), with a decomposed block's
    UltraGen tensors right after its self_attn.norm_k. (The released UltraGen code registers norm_q/norm_k after its
    UltraGen modules and norm3 after cross_attn; names, not order, are what loaders match.)"""
    specs: List[ParamSpec] = []
    head = [
        ("patch_embedding.weight", (c.dim, c.in_channels) + tuple(c.patch)),
        ("patch_embedding.bias", (c.dim,)),
        ("text_embedding.0.weight", (c.dim, c.text_dim)),
        ("text_embedding.0.bias", (c.dim,)),
        ("text_embedding.2.weight", (c.dim, c.dim)),
        ("text_embedding.2.bias", (c.dim,)),
        ("time_embedding.0.weight", (c.dim, c.freq_dim)),
        ("time_embedding.0.bias", (c.dim,)),
        ("time_embedding.2.weight", (c.dim, c.dim)),
        ("time_embedding.2.bias", (c.dim,)),
        ("time_projection.1.weight", (6 * c.dim, c.dim)),
        ("time_projection.1.bias", (6 * c.dim,)),
    ]
    specs.extend(ParamSpec(name, shape, "base", -1) for name, shape in head)
    ultragen = _ultragen_rows(c)
    for block in range(c.layers):
        prefix = f"blocks.{block}."
        rows = [("modulation", (1, 6, c.dim), "base")] + _attention_rows("self_attn", c)
        if c.is_decomposed(block):
            rows += ultragen
        if c.cross_attn_norm:
            rows += [("norm3.weight", (c.dim,), "base"), ("norm3.bias", (c.dim,), "base")]
        rows += _attention_rows("cross_attn", c)
        rows += [("ffn.0.weight", (c.ffn_dim, c.dim), "base"), ("ffn.0.bias", (c.ffn_dim,), "base"),
                 ("ffn.2.weight", (c.dim, c.ffn_dim), "base"), ("ffn.2.bias", (c.dim,), "base")]
        specs.extend(ParamSpec(prefix + suffix, shape, group, block) for suffix, shape, group in rows)
    tail = [
        ("head.modulation", (1, 2, c.dim)),
        ("head.head.weight", (c.out_channels * c.patch_volume, c.dim)),
        ("head.head.bias", (c.out_channels * c.patch_volume,)),
    ]
    specs.extend(ParamSpec(name, shape, "base", -1) for name, shape in tail)
    return specs


def parse_block_name(name: str) -> Optional[Tuple[int, str]]:
    """(i, rest) for `blocks.{i}.{rest}` (no leading zeros in i, as C#'s TryParseBlockName), else None."""
    match = _BLOCK_NAME.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def is_ultragen_name(name: str) -> bool:
    """True for a tensor of an UltraGen module of some block (LoRA, gates, convs); C#'s IsUltraGenName."""
    parsed = parse_block_name(name)
    if parsed is None or not parsed[1].startswith("self_attn."):
        return False
    module = parsed[1][len("self_attn."):]
    return any(module.startswith(prefix) for prefix in ULTRAGEN_MODULE_PREFIXES)


def is_non_parameter(name: str) -> bool:
    """A RoPE table or similar buffer some checkpoints carry: not a parameter, safe to drop."""
    return name.rsplit(".", 1)[-1] in NON_PARAMETER_LEAVES


# ---------------------------------------------------------------------------------------------------- inference

@dataclasses.dataclass
class Inference:
    """`config` is None when the tensors do not determine the parameter list; with `problems` it is provisional
    (right names and shapes, unusable settings such as an unknown head count, heads = 0)."""
    config: Optional[DitConfig]
    notes: List[str]
    problems: List[str]

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.problems


@dataclasses.dataclass
class Overrides:
    """What the user gave on the command line; None means: read the file's metadata, else the default."""
    heads: Optional[int] = None
    text_len: Optional[int] = None
    eps: Optional[float] = None
    window_base: Optional[int] = None
    lora_rank: Optional[int] = None


def _most_common(values: Sequence[Tuple[int, ...]]) -> Optional[Tuple[int, ...]]:
    if not values:
        return None
    counts = collections.Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)  # ties: the first in block order, as C# would take


def infer_config(shapes: Mapping[str, Tuple[int, ...]], metadata: Mapping[str, str] = None,
                 overrides: Overrides = None) -> Inference:
    """Infers the config from tensor shapes (names already in Wan naming, non-parameters removed), the file's
    `ultragen.*` metadata and the user's overrides; the rules of C#'s ConfigDetector.Detect."""
    metadata = metadata or {}
    overrides = overrides or Overrides()
    problems: List[str] = []   # the parameter list cannot be built
    settings: List[str] = []   # it can, but the config is not usable as it stands
    notes: List[str] = []
    defaults: List[str] = []

    def need(name: str, rank: int) -> Optional[Tuple[int, ...]]:
        if name not in shapes:
            problems.append(f"no tensor '{name}' (the config is read from it)")
            return None
        if len(shapes[name]) != rank:
            problems.append(f"'{name}' has shape {list(shapes[name])}, expected rank {rank} (the config is read from it)")
            return None
        return tuple(shapes[name])

    patch = need("patch_embedding.weight", 5)
    text = need("text_embedding.0.weight", 2)
    time = need("time_embedding.0.weight", 2)
    head = need("head.head.weight", 2)

    blocks = set()
    decomposed = set()
    qk_norm = cross_attn_norm = False
    ffn: List[Tuple[int, ...]] = []
    lora_a: List[Tuple[int, ...]] = []
    global_conv: List[Tuple[int, ...]] = []
    hierarchical_conv: List[Tuple[int, ...]] = []
    for name in sorted(shapes, key=lambda n: (parse_block_name(n) or (-1, n))[0]):
        parsed = parse_block_name(name)
        if parsed is None:
            continue
        block, rest = parsed
        shape = tuple(shapes[name])
        blocks.add(block)
        if is_ultragen_name(name):
            decomposed.add(block)
        if rest == "self_attn.norm_q.weight":
            qk_norm = True
        elif rest == "norm3.weight":
            cross_attn_norm = True
        elif rest == "ffn.0.weight" and len(shape) == 2:
            ffn.append(shape)
        elif rest == "self_attn.q_lora_1.lora_A.weight" and len(shape) == 2:
            lora_a.append(shape)
        elif rest == "self_attn.downsample_conv.weight" and len(shape) == 4:
            global_conv.append(shape)
        elif rest == "self_attn.downsample_conv_hierachcal.weight" and len(shape) == 4:
            hierarchical_conv.append(shape)
    if not blocks:
        problems.append("no 'blocks.{i}.' tensors")
    elif not ffn:
        problems.append("no 'blocks.{i}.ffn.0.weight' of rank 2 (the FFN width is read from it)")

    dim = patch[0] if patch else 0
    heads = 0
    if overrides.heads is not None:
        heads = overrides.heads
        notes.append(f"heads {heads}: given")
    elif META_HEADS in metadata:
        heads = _parse_int(metadata[META_HEADS], META_HEADS, settings)
        notes.append(f"heads {heads}: from metadata {META_HEADS}")
    elif dim > 0 and dim % WAN_HEAD_DIM == 0:
        heads = dim // WAN_HEAD_DIM
        notes.append(f"heads {heads}: assumed dim/{WAN_HEAD_DIM} (Wan's head dim; not stored in the file)")
    elif patch is not None:
        # Not needed for the names and shapes: reported, and the check goes on with the count unknown (0).
        settings.append(f"cannot infer the head count of dim {dim} (not a multiple of Wan's head dim {WAN_HEAD_DIM}): "
                        f"give it with --heads")

    if problems:
        return Inference(None, notes, problems + settings)

    patch_size = tuple(patch[2:5])
    volume = patch_size[0] * patch_size[1] * patch_size[2]
    if volume <= 0 or head[0] % volume != 0:
        problems.append(f"head.head.weight has {head[0]} rows, not a multiple of the patch volume {volume}")
        return Inference(None, notes, problems)

    def setting(value, key: str, default, parse, label: str):
        if value is not None:
            return value
        if key in metadata:
            return parse(metadata[key], key, settings)
        defaults.append(f"{label} {default}")
        return default

    text_len = setting(overrides.text_len, META_TEXT_LEN, DEFAULT_TEXT_LEN, _parse_int, "text_len")
    eps = setting(overrides.eps, META_EPS, DEFAULT_EPS, _parse_float, "eps")
    window_base = setting(overrides.window_base, META_WINDOW_BASE, DEFAULT_WINDOW_BASE, _parse_int, "window_base")
    global_k_uses_wq = True
    if META_GLOBAL_K_USES_WQ in metadata:
        text_value = metadata[META_GLOBAL_K_USES_WQ].strip().lower()
        if text_value not in ("true", "false"):
            settings.append(f"metadata {META_GLOBAL_K_USES_WQ} = '{metadata[META_GLOBAL_K_USES_WQ]}' is not true/false")
        global_k_uses_wq = text_value != "false"
    window_mode = "ResizeToDivisible"
    if META_WINDOW_MODE in metadata:
        matches = [m for m in WINDOW_MODES if m.lower() == metadata[META_WINDOW_MODE].strip().lower()]
        if matches:
            window_mode = matches[0]
        else:
            settings.append(f"metadata {META_WINDOW_MODE} = '{metadata[META_WINDOW_MODE]}' is not "
                            f"{' or '.join(WINDOW_MODES)}")

    rank_shape = _most_common(lora_a)
    if rank_shape is not None:
        lora_rank = rank_shape[0]
        if overrides.lora_rank is not None and overrides.lora_rank != lora_rank:
            settings.append(f"--lora-rank {overrides.lora_rank} contradicts the LoRA tensors (rank {lora_rank} in "
                            f"self_attn.q_lora_1.lora_A.weight)")
    elif not decomposed:
        lora_rank = setting(overrides.lora_rank, META_LORA_RANK, DEFAULT_LORA_RANK, _parse_int, "lora_rank")
    else:
        problems.append(f"block {min(decomposed)} has UltraGen tensors but no self_attn.q_lora_1.lora_A.weight of "
                        f"rank 2 to read the LoRA rank from")
        lora_rank = 0
    if problems:
        return Inference(None, notes, problems + settings)
    if defaults:
        notes.append(f"not stored in the file, defaults used: {', '.join(defaults)}")

    layers = max(blocks) + 1
    global_shape = _most_common(global_conv)
    hierarchical_shape = _most_common(hierarchical_conv)
    config = DitConfig(
        dim=dim, ffn_dim=_most_common(ffn)[0], freq_dim=time[1], text_dim=text[1], text_len=text_len, heads=heads,
        layers=layers, in_channels=patch[1], out_channels=head[0] // volume, patch=patch_size, eps=eps,
        qk_norm=qk_norm, cross_attn_norm=cross_attn_norm,
        full_blocks=frozenset(b for b in range(layers) if b not in decomposed),
        window_base=window_base,
        global_down=global_shape[2] if global_shape else GLOBAL_DOWN,
        hierarchical_down=hierarchical_shape[2] if hierarchical_shape else HIERARCHICAL_DOWN,
        lora_rank=lora_rank, global_k_uses_wq=global_k_uses_wq, window_mode=window_mode)
    invalid = config.problems()
    if invalid and not decomposed and overrides.lora_rank is None and META_LORA_RANK not in metadata \
            and any("LoRA rank" in p for p in invalid):
        invalid.append(f"a checkpoint without UltraGen tensors records the LoRA rank UltraGen will use: "
                       f"give one in 1..{dim} with --lora-rank")
    if heads < 1:  # already reported as unknown or unparsable
        invalid = [p for p in invalid if "heads" not in p]
    if invalid:
        settings.append("the inferred config is not valid: " + "; ".join(invalid))
    # With `settings` problems the config is provisional: its names and shapes are right, so the check can still run
    # and every problem be reported at once; nothing may be written from it.
    return Inference(config, notes, settings)


def _parse_int(text: str, key: str, problems: List[str]) -> int:
    try:
        return int(text.strip())
    except ValueError:
        problems.append(f"metadata {key} = '{text}' is not an integer")
        return 0


def _parse_float(text: str, key: str, problems: List[str]) -> float:
    try:
        return float(text.strip())
    except ValueError:
        problems.append(f"metadata {key} = '{text}' is not a number")
        return 0.0


# ---------------------------------------------------------------------------------------------------- verification

FLOAT_DTYPE_NAMES = ("F64", "F32", "F16", "BF16")


@dataclasses.dataclass
class Check:
    """A source's tensors against a config's parameter list; `ok` when every name, shape and dtype fits."""
    config: DitConfig
    missing: List[ParamSpec]
    misshaped: List[Tuple[ParamSpec, Tuple[int, ...]]]
    unexpected: List[Tuple[str, str, Tuple[int, ...]]]
    bad_dtype: List[Tuple[str, str]]
    partial_blocks: List[Tuple[int, int, int]]   # (block, UltraGen tensors present, expected)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.misshaped or self.unexpected or self.bad_dtype or self.partial_blocks)

    @property
    def problem_count(self) -> int:
        return len(self.missing) + len(self.misshaped) + len(self.unexpected) + len(self.bad_dtype)

    def describe(self, limit: int = 0) -> List[str]:
        """The problems as indented lines; `limit` > 0 caps each list (the rest is counted)."""
        lines: List[str] = []

        def section(title: str, items: List[str]) -> None:
            if not items:
                return
            lines.append(f"  {title} ({len(items)}):")
            shown = items if limit <= 0 else items[:limit]
            lines.extend(f"    {item}" for item in shown)
            if len(shown) < len(items):
                lines.append(f"    ... and {len(items) - len(shown)} more (--max-listed 0 lists all)")

        section("partly decomposed blocks (a block has all of UltraGen's tensors or none)",
                [f"block {b}: {present} of its {expected} UltraGen tensors present "
                 f"(the absent ones are listed as missing)"
                 for b, present, expected in self.partial_blocks])
        section("missing", [f"{s.name} {list(s.shape)}" for s in self.missing])
        section("wrong shape", [f"{s.name}: expected {list(s.shape)}, file has {list(actual)}"
                                for s, actual in self.misshaped])
        section("unexpected (not a parameter of this config)",
                [f"{name} {dtype} {list(shape)}" for name, dtype, shape in self.unexpected])
        section("not floating point", [f"{name}: dtype {dtype}, expected one of {', '.join(FLOAT_DTYPE_NAMES)}"
                                        for name, dtype in self.bad_dtype])
        return lines


def check(shapes: Mapping[str, Tuple[int, ...]], dtypes: Mapping[str, str], config: DitConfig) -> Check:
    """Compares every name, shape and dtype (safetensors dtype names) with `config`'s parameter list."""
    expected = parameter_list(config)
    known = {spec.name for spec in expected}
    missing, misshaped, bad_dtype = [], [], []
    for spec in expected:
        if spec.name not in shapes:
            missing.append(spec)
        elif tuple(shapes[spec.name]) != spec.shape:
            misshaped.append((spec, tuple(shapes[spec.name])))
        elif dtypes[spec.name] not in FLOAT_DTYPE_NAMES:
            bad_dtype.append((spec.name, dtypes[spec.name]))
    unexpected = [(name, dtypes[name], tuple(shapes[name])) for name in shapes if name not in known]
    per_block = len(_ultragen_rows(config))
    present = collections.Counter(parse_block_name(n)[0] for n in shapes if n in known and is_ultragen_name(n))
    partial = [(b, present[b], per_block) for b in sorted(present) if present[b] < per_block]
    return Check(config, missing, misshaped, unexpected, bad_dtype, partial)


# ---------------------------------------------------------------------------------------------------- formatting

def format_ranges(ascending: Iterable[int]) -> str:
    """'0-2, 27-29' for [0, 1, 2, 27, 28, 29], 'none' for nothing; C#'s BlockSet.FormatRanges."""
    parts: List[str] = []
    start = previous = None
    for value in ascending:
        if start is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if previous == start else f"{start}-{previous}")
        start = previous = value
    if start is not None:
        parts.append(str(start) if previous == start else f"{start}-{previous}")
    return ", ".join(parts) if parts else "none"


def dotnet_round_trip(value: float) -> str:
    """A double as .NET's `ToString("R", InvariantCulture)` writes it (shortest round-trip digits; scientific with
    'E+XX'/'E-XX' from 1e-5 down and from 1e17 up, as checked with .NET 10), so the metadata matches what C# writes
    byte for byte: 1e-06 -> '1E-06'."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = decimal.Decimal(repr(value)).normalize().as_tuple()
    text = "".join(str(d) for d in digits)
    scientific_exponent = exponent + len(digits) - 1
    prefix = "-" if sign else ""
    if -5 < scientific_exponent < 17:
        if exponent >= 0:
            return prefix + text + "0" * exponent
        point = len(text) + exponent
        if point > 0:
            return prefix + text[:point] + "." + text[point:]
        return prefix + "0." + "0" * (-point) + text
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{prefix}{mantissa}E{'+' if scientific_exponent >= 0 else '-'}{abs(scientific_exponent):02d}"
