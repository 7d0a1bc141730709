"""The umT5 text encoder (T5 v1.1 family, encoder only) that Wan2.1 conditions its DiT on (spec §2.4).

Architecture, per block i (pre-norm residual; no biases anywhere; dropout is inference-off):
    x = x + O · Attn(RMSNorm₁(x))                  per-layer relative position bias (umT5: not shared across layers)
    x = x + W₂ · (GELU_tanh(W_g · h) ⊙ (W₁ · h)),  h = RMSNorm₂(x)
and a final RMSNorm. RMSNorm is T5's: x / sqrt(mean(x²) + 1e-6) · w (no mean subtraction, no bias). Attention is
softmax(q·kᵀ + bias) **without** the 1/sqrt(head_dim) scale (T5 folds it into the initialisation of W_q).
umT5-XXL: vocab 256,384, d_model 4096, 64 heads × 64, d_ff 10,240, 24 layers, 32 buckets, max distance 128.

Weights are plain tensors (no nn.Module, so a 5.7 B-parameter model is never randomly initialised first), named as
Wan's `models_t5_umt5-xxl-enc-bf16.pth`:
    token_embedding.weight                         [vocab, d_model]
    blocks.{i}.norm1.weight, blocks.{i}.norm2.weight   [d_model]
    blocks.{i}.attn.{q,k,v}.weight                 [d_attn, d_model]      (d_attn = heads · head_dim)
    blocks.{i}.attn.o.weight                       [d_model, d_attn]
    blocks.{i}.ffn.gate.0.weight                   [d_ff, d_model]        (the GELU branch)
    blocks.{i}.ffn.fc1.weight                      [d_ff, d_model]        (the linear branch)
    blocks.{i}.ffn.fc2.weight                      [d_model, d_ff]
    blocks.{i}.pos_embedding.embedding.weight      [num_buckets, heads]
    norm.weight                                    [d_model]
Hugging Face `UMT5EncoderModel` / `UMT5ForConditionalGeneration` checkpoints (google/umt5-xxl) are accepted through the
name map in `HF_TO_WAN` (decoder and lm_head tensors are ignored). All dimensions are inferred from the tensors.

Precision follows Wan (`wan/modules/t5.py`), which computes in the weights' dtype (bf16):
  * RMSNorm statistics and the normalisation in float32; the normalised value is rounded to the weight's dtype when
    that is 16-bit, then scaled by the weight in that dtype.
  * q·kᵀ, the bias add and attn·v in the compute dtype; the softmax itself in float32, rounded back.
  * GELU written out as 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in the compute dtype (Wan's and HF's "gelu_new").
  * In float16 the residual stream is clamped to ±(max − 1000) when it holds an infinity (Wan's fp16_clamp).
Padding: Wan pads to 512 and masks padded keys with finfo.min before the float32 softmax, which gives them weight
exactly 0, so each real position sees only real tokens. Here a batch is padded only to its longest prompt and masked
the same way; the result is the same (up to summation order inside the matmuls).
"""

from __future__ import annotations

import glob
import inspect
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from . import safetensors_io

# umT5-XXL's dimensions (Wan2.1 `umt5_xxl`; HF google/umt5-xxl config.json).
UMT5_XXL = dict(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24, num_buckets=32)
MAX_DISTANCE = 128  # relative_attention_max_distance; not stored in the weights
EPS = 1e-6          # layer_norm_epsilon


class WeightsError(ValueError):
    """Weights that are missing, mis-shaped or unreadable; the message names the file and the tensor."""


@dataclass(frozen=True)
class UMT5Config:
    vocab: int
    dim: int
    dim_attn: int
    dim_ffn: int
    num_heads: int
    num_layers: int
    num_buckets: int
    max_distance: int = MAX_DISTANCE
    eps: float = EPS

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads

    def is_umt5_xxl(self) -> bool:
        return all(getattr(self, key) == value for key, value in UMT5_XXL.items())

    def describe(self) -> str:
        """'umt5-xxl' for the real model, else the dimensions (a tiny test model must not pass for umT5-XXL)."""
        if self.is_umt5_xxl():
            return "umt5-xxl"
        return (f"umt5(vocab={self.vocab},dim={self.dim},heads={self.num_heads}x{self.head_dim},ffn={self.dim_ffn},"
                f"layers={self.num_layers},buckets={self.num_buckets})")

    def expected_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Every tensor the encoder needs, by Wan name, with its shape."""
        shapes: Dict[str, Tuple[int, ...]] = {"token_embedding.weight": (self.vocab, self.dim)}
        for i in range(self.num_layers):
            p = f"blocks.{i}."
            shapes[p + "norm1.weight"] = (self.dim,)
            for name in ("q", "k", "v"):
                shapes[p + f"attn.{name}.weight"] = (self.dim_attn, self.dim)
            shapes[p + "attn.o.weight"] = (self.dim, self.dim_attn)
            shapes[p + "norm2.weight"] = (self.dim,)
            shapes[p + "ffn.gate.0.weight"] = (self.dim_ffn, self.dim)
            shapes[p + "ffn.fc1.weight"] = (self.dim_ffn, self.dim)
            shapes[p + "ffn.fc2.weight"] = (self.dim, self.dim_ffn)
            shapes[p + "pos_embedding.embedding.weight"] = (self.num_buckets, self.num_heads)
        shapes["norm.weight"] = (self.dim,)
        return shapes


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face names -> Wan names. UMT5Stack: encoder.block.{i}.layer.0 = self-attention (+ its layer_norm, and in umT5
# every block has its own relative_attention_bias), layer.1 = gated FFN: wi_0 is the activated branch (Wan gate.0),
# wi_1 the linear one (Wan fc1), wo the output (Wan fc2). shared.weight is tied to encoder.embed_tokens.weight.
HF_TO_WAN: Sequence[Tuple[str, str]] = (
    (r"^(?:shared|encoder\.embed_tokens)\.weight$", "token_embedding.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight$", r"blocks.\1.norm1.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight$", r"blocks.\1.attn.\2.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight$",
     r"blocks.\1.pos_embedding.embedding.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight$", r"blocks.\1.norm2.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight$", r"blocks.\1.ffn.gate.0.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight$", r"blocks.\1.ffn.fc1.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight$", r"blocks.\1.ffn.fc2.weight"),
    (r"^encoder\.final_layer_norm\.weight$", "norm.weight"),
)
_HF_PATTERNS = [(re.compile(pattern), target) for pattern, target in HF_TO_WAN]


def hf_to_wan_name(name: str) -> Optional[str]:
    """The Wan name of a Hugging Face UMT5 encoder tensor, or None for anything else (decoder, lm_head...)."""
    for pattern, target in _HF_PATTERNS:
        if pattern.match(name):
            return pattern.sub(target, name)
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Reading tensors from a .pth / .bin (torch.load), a .safetensors file, or a directory of either (HF shards).

class TensorSource:
    """Names, shapes and lazy reads of the tensors of one checkpoint (one file or a directory of shards)."""

    def __init__(self, description: str, shapes: Dict[str, Tuple[int, ...]], dtypes: Dict[str, torch.dtype],
                 read: Callable[[str], torch.Tensor], close: Callable[[], None] = lambda: None):
        self.description = description
        self.shapes = shapes
        self.dtypes = dtypes
        self.read = read
        self.close = close

    @staticmethod
    def from_state_dict(state: Mapping[str, torch.Tensor], description: str = "state dict") -> "TensorSource":
        tensors = {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}
        return TensorSource(description, {n: tuple(t.shape) for n, t in tensors.items()},
                            {n: t.dtype for n, t in tensors.items()}, tensors.__getitem__)

    @staticmethod
    def open(path: str) -> "TensorSource":
        if not os.path.exists(path):
            raise WeightsError(f"weights not found: {path}")
        if os.path.isdir(path):
            files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
            if not files:
                files = sorted(glob.glob(os.path.join(path, "*.pth")) + glob.glob(os.path.join(path, "*.bin")))
            if not files:
                raise WeightsError(f"{path}: directory holds no *.safetensors, *.pth or *.bin weights")
        else:
            files = [path]
        shapes: Dict[str, Tuple[int, ...]] = {}
        dtypes: Dict[str, torch.dtype] = {}
        readers: Dict[str, Callable[[], torch.Tensor]] = {}
        handles: List[safetensors_io.SafetensorsFile] = []

        def close() -> None:
            for handle in handles:
                handle.close()

        for file in files:
            if file.endswith(".safetensors"):
                try:
                    handle = safetensors_io.SafetensorsFile(file)
                except (OSError, safetensors_io.SafetensorsError) as error:
                    close()
                    raise WeightsError(str(error)) from None
                handles.append(handle)
                for name in handle.keys():
                    shapes[name], dtypes[name] = handle.shape(name), handle.dtype(name)
                    readers[name] = (lambda h, n: lambda: h.get(n))(handle, name)
            else:
                try:
                    state = _torch_load(file)
                except WeightsError:
                    close()
                    raise
                for name, tensor in state.items():
                    shapes[name], dtypes[name] = tuple(tensor.shape), tensor.dtype
                    readers[name] = (lambda t: lambda: t)(tensor)
        description = path if len(files) == 1 else f"{path} ({len(files)} files)"
        return TensorSource(description, shapes, dtypes, lambda name: readers[name](), close)


def _torch_load(file: str) -> Dict[str, torch.Tensor]:
    kwargs = {"map_location": "cpu"}
    parameters = inspect.signature(torch.load).parameters
    if "weights_only" in parameters:  # torch >= 1.13: no arbitrary unpickling
        kwargs["weights_only"] = True
    if "mmap" in parameters:          # torch >= 2.1: tensors stay on disk until used
        kwargs["mmap"] = True
    try:
        state = torch.load(file, **kwargs)
    except Exception as error:  # a zip/pickle error of any kind: report it as bad weights
        if kwargs.pop("mmap", None):  # old-format (non-zip) files cannot be memory-mapped
            try:
                state = torch.load(file, **kwargs)
            except Exception as second:
                raise WeightsError(f"{file}: cannot read as a PyTorch checkpoint: {second}") from None
        else:
            raise WeightsError(f"{file}: cannot read as a PyTorch checkpoint: {error}") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{file}: holds a {type(state).__name__}, not a state dict of tensors")
    return {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}


def _wan_view(source: TensorSource) -> Tuple[Dict[str, str], str]:
    """Maps each Wan name to the source's name; says which naming the checkpoint uses."""
    if "token_embedding.weight" in source.shapes or any(n.startswith("blocks.") for n in source.shapes):
        return {name: name for name in source.shapes}, "wan"
    if any(n.startswith("encoder.block.") for n in source.shapes):
        view: Dict[str, str] = {}
        for name in sorted(source.shapes):  # shared.weight and encoder.embed_tokens.weight are tied (equal)
            wan = hf_to_wan_name(name)
            if wan is not None:
                view[wan] = name
        return view, "hf"
    sample = ", ".join(sorted(source.shapes)[:5]) or "no tensors"
    raise WeightsError(f"{source.description}: not umT5 encoder weights (expected Wan names such as "
                       f"'token_embedding.weight' or HF names such as 'encoder.block.0.layer.0.SelfAttention.q.weight'; "
                       f"found {sample})")


def infer_config(source: TensorSource, view: Dict[str, str]) -> UMT5Config:
    def shape(wan: str, rank: int) -> Tuple[int, ...]:
        if wan not in view:
            raise WeightsError(f"{source.description}: missing tensor {_label(wan, view)}")
        found = source.shapes[view[wan]]
        if len(found) != rank:
            raise WeightsError(f"{source.description}: tensor {_label(wan, view)} has shape {list(found)}, "
                               f"expected a {rank}-d tensor")
        return found

    vocab, dim = shape("token_embedding.weight", 2)
    dim_attn = shape("blocks.0.attn.q.weight", 2)[0]
    dim_ffn = shape("blocks.0.ffn.fc1.weight", 2)[0]
    num_buckets, num_heads = shape("blocks.0.pos_embedding.embedding.weight", 2)
    num_layers = 0
    while any(name.startswith(f"blocks.{num_layers}.") for name in view):
        num_layers += 1
    if num_heads == 0 or dim_attn % num_heads:
        raise WeightsError(f"{source.description}: attention width {dim_attn} (from {_label('blocks.0.attn.q.weight', view)}) "
                           f"is not a multiple of the {num_heads} heads of {_label('blocks.0.pos_embedding.embedding.weight', view)}")
    if num_buckets < 4 or num_buckets % 2:
        raise WeightsError(f"{source.description}: {num_buckets} relative position buckets; expected an even count >= 4")
    return UMT5Config(vocab, dim, dim_attn, dim_ffn, num_heads, num_layers, num_buckets)


def _label(wan: str, view: Dict[str, str]) -> str:
    source = view.get(wan)
    return f"'{wan}'" if source is None or source == wan else f"'{source}' ({wan})"


# ---------------------------------------------------------------------------------------------------------------------
# The math.

def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32,
                             max_distance: int = MAX_DISTANCE) -> torch.Tensor:
    """Bidirectional T5 bucketing of relative_position = key_position − query_position.

    Half of the buckets per direction: keys after the query (relative_position > 0) use buckets [n, 2n), the rest
    [0, n), with n = num_buckets / 2. Within a direction, distances 0 .. n/2 − 1 get their own bucket; larger distances
    share n/2 + floor(log(d / (n/2)) / log(max_distance / (n/2)) · n/2), capped at n − 1 (so every d >= max_distance
    shares the last bucket). The logarithm is taken in float32, as Wan and HF do (it decides the floor at d = 16, 32...).
    """
    half = num_buckets // 2
    exact = half // 2
    buckets = (relative_position > 0).long() * half
    distance = relative_position.abs()
    # clamp(min=exact) keeps log() finite; those entries are replaced by the exact branch below.
    scaled = torch.log(distance.clamp(min=exact).float() / exact) / math.log(max_distance / exact) * (half - exact)
    large = (exact + scaled.long()).clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, large)


def relative_position_bias(table: torch.Tensor, length: int, max_distance: int = MAX_DISTANCE) -> torch.Tensor:
    """(1, heads, length, length) bias from a [num_buckets, heads] table; entry [h, i, j] is for query i, key j."""
    positions = torch.arange(length, device=table.device)
    buckets = relative_position_bucket(positions[None, :] - positions[:, None], table.shape[0], max_distance)
    return table[buckets].permute(2, 0, 1).unsqueeze(0)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)  # statistics and normalisation in float32
    if weight.dtype in (torch.float16, torch.bfloat16):
        y = y.to(weight.dtype)
    return weight * y


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _fp16_clamp(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(torch.float16).max - 1000
        x = x.clamp(min=-limit, max=limit)
    return x


def self_attention(x: torch.Tensor, w: Mapping[str, torch.Tensor], prefix: str, bias: torch.Tensor,
                   num_heads: int) -> torch.Tensor:
    """x: (B, L, d_model), already normalised; bias: (B or 1, heads, L, L) position bias with masked keys at -max."""
    b, length, _ = x.shape
    q = (x @ w[prefix + "q.weight"].t()).view(b, length, num_heads, -1)
    k = (x @ w[prefix + "k.weight"].t()).view(b, length, num_heads, -1)
    v = (x @ w[prefix + "v.weight"].t()).view(b, length, num_heads, -1)
    scores = torch.einsum("bihc,bjhc->bhij", q, k) + bias        # T5: no 1/sqrt(head_dim)
    weights = torch.softmax(scores.float(), dim=-1).type_as(scores)  # softmax in float32, as Wan
    out = torch.einsum("bhij,bjhc->bihc", weights, v).reshape(b, length, -1)
    return out @ w[prefix + "o.weight"].t()


def feed_forward(x: torch.Tensor, w: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    hidden = (x @ w[prefix + "fc1.weight"].t()) * gelu_tanh(x @ w[prefix + "gate.0.weight"].t())
    return hidden @ w[prefix + "fc2.weight"].t()


def encoder_forward(weights: Mapping[str, torch.Tensor], config: UMT5Config, ids: torch.Tensor,
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ids: (B, L) int64; mask: (B, L), nonzero = real token (None = all real). Returns (B, L, d_model) in the
    weights' dtype. Outputs at masked positions are computed but meaningless (callers zero them)."""
    x = weights["token_embedding.weight"][ids]
    dtype, length = x.dtype, ids.shape[1]
    key_masked = None
    if mask is not None:
        key_masked = (mask == 0)[:, None, None, :]  # (B, 1, 1, L)
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        bias = relative_position_bias(weights[p + "pos_embedding.embedding.weight"], length, config.max_distance)
        bias = bias.to(dtype)
        if key_masked is not None:
            bias = bias.masked_fill(key_masked, torch.finfo(dtype).min)
        x = _fp16_clamp(x + self_attention(rms_norm(x, weights[p + "norm1.weight"], config.eps), weights, p + "attn.",
                                           bias, config.num_heads))
        x = _fp16_clamp(x + feed_forward(rms_norm(x, weights[p + "norm2.weight"], config.eps), weights, p + "ffn."))
    return rms_norm(x, weights["norm.weight"], config.eps)


# ---------------------------------------------------------------------------------------------------------------------

class UMT5Encoder:
    """umT5 encoder weights on one device in one dtype, plus the batch encoding that Wan's T5EncoderModel does."""

    def __init__(self, weights: Dict[str, torch.Tensor], config: UMT5Config, source: str = ""):
        self.weights = weights
        self.config = config
        self.source = source

    @property
    def dtype(self) -> torch.dtype:
        return self.weights["token_embedding.weight"].dtype

    @property
    def device(self) -> torch.device:
        return self.weights["token_embedding.weight"].device

    @staticmethod
    def load(path_or_state, dtype: Optional[torch.dtype] = None, device="cpu") -> "UMT5Encoder":
        """Loads from a path (.pth/.bin/.safetensors or a directory of shards) or an in-memory state dict, in Wan or
        HF names. dtype None keeps the weights' own dtype (bf16 for Wan's file), as Wan computes."""
        if isinstance(path_or_state, Mapping):
            source = TensorSource.from_state_dict(path_or_state)
        else:
            source = TensorSource.open(os.fspath(path_or_state))
        try:
            return UMT5Encoder._load(source, dtype, device)
        finally:
            source.close()

    @staticmethod
    def _load(source: TensorSource, dtype: Optional[torch.dtype], device) -> "UMT5Encoder":
        view, _ = _wan_view(source)
        config = infer_config(source, view)
        expected = config.expected_shapes()
        for wan, shape in expected.items():
            if wan not in view:
                raise WeightsError(f"{source.description}: missing tensor {_label(wan, view)} "
                                   f"(expected shape {list(shape)})")
            found = source.shapes[view[wan]]
            if tuple(found) != shape:
                raise WeightsError(f"{source.description}: tensor {_label(wan, view)} has shape {list(found)}, "
                                   f"expected {list(shape)}")
            if not source.dtypes[view[wan]].is_floating_point:
                raise WeightsError(f"{source.description}: tensor {_label(wan, view)} has dtype "
                                   f"{source.dtypes[view[wan]]}, expected a floating-point dtype")
        unexpected = sorted(name for name in view if name not in expected)
        if unexpected:
            raise WeightsError(f"{source.description}: unexpected tensor {_label(unexpected[0], view)} "
                               f"({len(unexpected)} in all) for a {config.num_layers}-layer umT5 encoder")
        if dtype is None:
            dtype = source.dtypes[view["token_embedding.weight"]]
        weights = {wan: source.read(view[wan]).to(device=device, dtype=dtype) for wan in expected}
        return UMT5Encoder(weights, config, source.description)

    def __call__(self, ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        with torch.no_grad():
            return encoder_forward(self.weights, self.config, ids.to(self.device),
                                   None if mask is None else mask.to(self.device))

    def encode_ids(self, token_ids: Sequence[Sequence[int]], text_len: int = 512) -> torch.Tensor:
        """Token id lists (EOS included, each at most text_len long) -> float32 (B, text_len, d_model) with rows at
        positions >= each list's length exactly 0 (Wan trims to the real length and zero-pads back to text_len)."""
        if not token_ids:
            return torch.zeros(0, text_len, self.config.dim)
        lengths = [len(ids) for ids in token_ids]
        if min(lengths) < 1 or max(lengths) > text_len:
            raise ValueError(f"token counts {min(lengths)}..{max(lengths)} outside 1..text_len={text_len}")
        for row, ids in enumerate(token_ids):
            bad = [t for t in ids if not 0 <= int(t) < self.config.vocab]
            if bad:
                raise ValueError(f"prompt {row}: token id {bad[0]} outside the model's vocabulary of {self.config.vocab} "
                                 f"(tokenizer and weights do not belong together)")
        length = max(lengths)
        ids = torch.zeros(len(token_ids), length, dtype=torch.long)
        mask = torch.zeros(len(token_ids), length, dtype=torch.long)
        for row, row_ids in enumerate(token_ids):
            ids[row, :len(row_ids)] = torch.tensor([int(t) for t in row_ids], dtype=torch.long)
            mask[row, :len(row_ids)] = 1
        hidden = self(ids, mask).float().cpu()
        out = torch.zeros(len(token_ids), text_len, self.config.dim)
        for row, count in enumerate(lengths):
            out[row, :count] = hidden[row, :count]
        return out
