"""The Wan2.1 video VAE's decoder (spec §2.5), written from the public description of `wan/modules/vae.py`.

Only the decoding path is here: the post-quant 1×1×1 conv `conv2` and the `decoder.*` tree. Parameter names are those of
`Wan2.1_VAE.pth`, so its state dict loads as it is (the encoder's tensors in the file are ignored).

Architecture (Wan2.1: z_dim 16, base dim 96, dim_mult [1, 2, 4, 4], num_res_blocks 2, temporal upsampling
[True, True, False] = the encoder's temporal downsampling [False, True, True] reversed):

    z (B, 16, T, h, w) ─ conv2 (1×1×1) ─ decoder.conv1 (3×3×3, 16 → 384)
      ─ middle: ResidualBlock(384), MiddleAttention(384), ResidualBlock(384)
      ─ level 0: 3 × ResidualBlock(→384), Resample 384 → 192, ×2 in time and space     (h, w)   → (2h, 2w)
      ─ level 1: 3 × ResidualBlock(192 → 384, …), Resample 384 → 192, ×2 time and space (2h, 2w) → (4h, 4w)
      ─ level 2: 3 × ResidualBlock(→192), Resample 192 → 96, ×2 in space only        (4h, 4w) → (8h, 8w)
      ─ level 3: 3 × ResidualBlock(→96)
      ─ head: RMSNorm, SiLU, CausalConv3d(96 → 3)          →  video (B, 3, 4(T−1)+1, 8h, 8w) in about [−1, 1]

Every 3-D convolution is causal in time: zeros are padded on the past side only (k−1 frames), and the usual "same"
zero padding in space. RMS norm: x / ‖x‖₂ over channels × √C × γ (Wan's RMS_norm with bias=False: the checkpoint has
no bias). The middle attention is single-head softmax attention within each frame over its h·w positions.

Temporal upsampling (Resample with `time_conv`) treats the first frame of the sequence apart: frame 0 passes through
undoubled and is not context for the time conv; frames 1.. go through a causal (3,1,1) conv to 2C channels (zero
past at frame 1), and output frame pair (2j, 2j+1) of input frame j is channels [0, C) and [C, 2C). Hence T latent
frames → 1 + 2(T−1) → 1 + 4(T−1) frames.

Decoding runs latent frame by latent frame, as Wan does, with a feature cache: every causal conv keeps the last k−1
input frames it has seen, so the chunked result equals one whole-sequence causal pass (tests check this against an
independent whole-sequence implementation). The cache here is a dict keyed by module rather than Wan's list + index.

Tiled decoding (`decode_tiled`, UltraGen's pipeline: tile (30, 52), stride (15, 26) latent rows × columns, the whole
time axis per tile) follows DiffSynth's `tiled_decode`; see `tile_plan` for the weighting.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# Per-channel latent statistics of the Wan2.1 VAE (spec §2.5): the DiT works on z = (μ − mean) / std.
LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

SPATIAL_FACTOR = 8   # pixels per latent row/column
TEMPORAL_FACTOR = 4  # pixel frames per latent frame after the first
DEFAULT_TILE = (30, 52)    # latent rows, columns (UltraGen's pipeline)
DEFAULT_STRIDE = (15, 26)


def pixel_frames(latent_frames: int) -> int:
    """F = 4(T − 1) + 1."""
    return TEMPORAL_FACTOR * (latent_frames - 1) + 1


class WeightsError(ValueError):
    """A VAE state dict that does not fit the decoder, with the tensor's name and what was expected."""


# ----------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DecoderConfig:
    """Channel layout of the decoder, coarsest level first.

    middle_dim: channels of conv1's output, the middle blocks and level 0's input (Wan: dim · dim_mult[-1]).
    level_dims: output channels of each level's residual blocks (Wan: dim · dim_mult reversed).
    blocks_per_level: residual blocks per level (Wan's num_res_blocks + 1).
    temporal_upsample: for each level but the last, whether its Resample also doubles the frames.
    """

    z_dim: int
    middle_dim: int
    level_dims: Tuple[int, ...]
    blocks_per_level: int
    temporal_upsample: Tuple[bool, ...]

    def __post_init__(self):
        if len(self.temporal_upsample) != len(self.level_dims) - 1:
            raise ValueError(f"temporal_upsample needs {len(self.level_dims) - 1} entries, "
                             f"got {self.temporal_upsample}")
        if sum(self.temporal_upsample) != 2 or len(self.level_dims) != 4:
            # The latent contract (F = 4(T−1)+1, 8× in space) needs two temporal and three spatial doublings.
            raise ValueError(f"a Wan2.1-style decoder has 4 levels and 2 temporal upsamplings; got {self}")

    @staticmethod
    def from_wan_args(dim: int = 96, z_dim: int = 16, dim_mult: Sequence[int] = (1, 2, 4, 4), num_res_blocks: int = 2,
                      temporal_downsample: Sequence[bool] = (False, True, True)) -> "DecoderConfig":
        """The decoder of Wan's `WanVAE_(dim, z_dim, dim_mult, num_res_blocks, temperal_downsample=…)`."""
        dims = [dim * m for m in [dim_mult[-1]] + list(dim_mult[::-1])]
        return DecoderConfig(z_dim=z_dim, middle_dim=dims[0], level_dims=tuple(dims[1:]),
                             blocks_per_level=num_res_blocks + 1,
                             temporal_upsample=tuple(bool(t) for t in temporal_downsample[::-1]))

    @staticmethod
    def wan21() -> "DecoderConfig":
        return DecoderConfig.from_wan_args()

    @staticmethod
    def from_state_dict(state: Mapping[str, torch.Tensor]) -> "DecoderConfig":
        """Reads the layout off the tensor names and shapes (so reduced test VAEs load too)."""

        def need(name: str) -> torch.Tensor:
            if name not in state:
                raise WeightsError(f"missing tensor {name!r} (not a Wan2.1 VAE state dict?)")
            return state[name]

        z_dim = need("conv2.weight").shape[0]
        middle_dim = need("decoder.conv1.weight").shape[0]
        indices = sorted({int(m.group(1)) for m in (re.match(r"decoder\.upsamples\.(\d+)\.", k) for k in state) if m})
        if not indices:
            raise WeightsError("missing tensors 'decoder.upsamples.*' (not a Wan2.1 VAE state dict?)")
        levels: List[List[int]] = [[]]  # output channels of each level's residual blocks
        temporal: List[bool] = []
        for i in range(indices[-1] + 1):
            prefix = f"decoder.upsamples.{i}."
            if prefix + "resample.1.weight" in state:
                temporal.append(prefix + "time_conv.weight" in state)
                levels.append([])
            else:
                levels[-1].append(need(prefix + "residual.6.weight").shape[0])
        counts = {len(level) for level in levels}
        if len(counts) != 1 or 0 in counts:
            raise WeightsError(f"decoder levels have different residual block counts {[len(l) for l in levels]}")
        try:
            return DecoderConfig(z_dim=z_dim, middle_dim=middle_dim, level_dims=tuple(level[-1] for level in levels),
                                 blocks_per_level=counts.pop(), temporal_upsample=tuple(temporal))
        except ValueError as error:
            raise WeightsError(str(error)) from None


# ----------------------------------------------------------------------------------------------------------------------
# Layers. A `cache` argument is None for a whole-sequence pass, or the dict that carries each causal conv's past
# frames from one chunk to the next.

Cache = Optional[Dict[nn.Module, object]]


class CausalConv3d(nn.Conv3d):
    """Conv3d over (T, H, W) with k_t − 1 zero frames padded before the sequence (none after) and (k−1)/2 zeros on
    each side in space. With a cache, the previous chunks' last k_t − 1 input frames stand in for the zeros."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size):
        super().__init__(in_channels, out_channels, kernel_size, padding=0)
        kt, kh, kw = self.kernel_size
        self.past_frames = kt - 1
        self.spatial_padding = (kw // 2, kw // 2, kh // 2, kh // 2)

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        zero_frames = self.past_frames
        if self.past_frames:
            past = cache.get(self) if cache is not None else None
            if past is not None:
                x = torch.cat([past, x], dim=2)
                zero_frames -= past.shape[2]
            if cache is not None:
                cache[self] = x[:, :, -self.past_frames:].clone()  # the last k_t − 1 frames of the sequence so far
        x = F.pad(x, self.spatial_padding + (zero_frames, 0))
        return F.conv3d(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    """x / ‖x‖₂(channels) · √C · γ, computed in float32. γ has shape (C, 1, 1, 1) for video, (C, 1, 1) for images."""

    def __init__(self, dim: int, spatial_dims: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones((dim,) + (1,) * spatial_dims))
        self.scale = dim ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.normalize(x.float(), dim=1) * self.scale * self.gamma.float()
        return y.to(x.dtype)


class ResidualBlock(nn.Module):
    """x ↦ shortcut(x) + conv(SiLU(norm(conv(SiLU(norm(x)))))); shortcut is a 1×1×1 conv when channels change.
    Indices in `residual` follow Wan's Sequential (2 and 6 are the convs; 5 was dropout)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, 3), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3),
            RMSNorm(out_dim, 3), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


def single_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d) v for (N, L, d) tensors: torch's fused kernel where it has one (≥ 2.0), else
    `blocked_attention`."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
    return blocked_attention(q, k, v)


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, max_scores: int = 1 << 26) -> torch.Tensor:
    """softmax(q kᵀ / √d) v in float32, over blocks of queries so that at most `max_scores` scores exist at a time
    (a 1088×1920 frame has 32,640 latent positions: its whole score matrix would take 4 GiB)."""
    n, length, d = q.shape
    block = max(1, min(length, max_scores // max(1, n * k.shape[1])))
    out = torch.empty_like(q)
    kt, vf = k.transpose(1, 2).float(), v.float()
    for start in range(0, length, block):
        scores = torch.matmul(q[:, start:start + block].float(), kt) / math.sqrt(d)
        out[:, start:start + block] = torch.matmul(scores.softmax(dim=-1), vf).to(q.dtype)
    return out


class MiddleAttention(nn.Module):
    """Single-head self-attention inside each frame (Wan's AttentionBlock), with a residual connection."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames)).reshape(b * t, 3 * c, h * w).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=2)  # channels [0, C), [C, 2C), [2C, 3C)
        y = single_head_attention(q.contiguous(), k.contiguous(), v.contiguous())
        y = self.proj(y.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4) + x


class Upsample2x(nn.Module):
    """Nearest-neighbour ×2 in H and W (Wan: nn.Upsample 'nearest-exact', which equals 'nearest' at factor 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            return F.interpolate(x.float(), scale_factor=2.0, mode="nearest").to(x.dtype)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Resample(nn.Module):
    """Wan's Resample in 'upsample3d' (temporal=True) or 'upsample2d' mode: optional frame doubling by `time_conv`,
    then per frame nearest ×2 and a 3×3 conv that halves the channels."""

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        if temporal:
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1))

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        if self.temporal:
            parts = []
            if cache is None or self not in cache:  # the sequence starts here: frame 0 passes through undoubled
                parts.append(x[:, :, :1])
                x = x[:, :, 1:]
                if cache is not None:
                    cache[self] = True
            if x.shape[2]:
                y = self.time_conv(x, cache)
                b, c2, t, h, w = y.shape
                # (B, 2C, T) → (B, C, T, 2) → (B, C, 2T): frame j gives frames 2j (channels < C) and 2j+1
                y = y.reshape(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5)
                parts.append(y.reshape(b, c2 // 2, 2 * t, h, w))
            x = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        b, c, t, h, w = x.shape
        y = self.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return y.reshape(b, t, y.shape[1], 2 * h, 2 * w).permute(0, 2, 1, 3, 4)


class Decoder3d(nn.Module):
    """Wan's Decoder3d: conv1, middle, upsamples, head (names as in the checkpoint under `decoder.`)."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.conv1 = CausalConv3d(config.z_dim, config.middle_dim, 3)
        dim = config.middle_dim
        self.middle = nn.Sequential(ResidualBlock(dim, dim), MiddleAttention(dim), ResidualBlock(dim, dim))
        layers: List[nn.Module] = []
        in_dim = config.middle_dim
        for level, out_dim in enumerate(config.level_dims):
            for _ in range(config.blocks_per_level):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if level < len(config.level_dims) - 1:
                layers.append(Resample(out_dim, config.temporal_upsample[level]))
                in_dim = out_dim // 2
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(in_dim, 3), nn.SiLU(), CausalConv3d(in_dim, 3, 3))

    def forward(self, x: torch.Tensor, cache: Cache = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in list(self.middle) + list(self.upsamples):
            x = layer(x) if isinstance(layer, MiddleAttention) else layer(x, cache)
        for layer in self.head:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x


class WanVaeDecoder(nn.Module):
    """`conv2` + `decoder` of the Wan2.1 VAE. `decode` takes the VAE's own latent μ (not the DiT's normalised z)."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config)

    @torch.no_grad()
    def decode(self, mu: torch.Tensor, chunked: bool = True, out_device: Optional[torch.device] = None) -> torch.Tensor:
        """(B, z, T, h, w) → (B, 3, 4(T−1)+1, 8h, 8w), unclamped. chunked: one latent frame at a time with the feature
        cache (Wan's way; bounded memory); otherwise one whole-sequence pass. Chunks are moved to `out_device`
        (default: the input's device) as float32."""
        if mu.dim() != 5 or mu.shape[1] != self.config.z_dim:
            raise ValueError(f"latent must be (B, {self.config.z_dim}, T, h, w), got {tuple(mu.shape)}")
        out_device = mu.device if out_device is None else out_device
        x = self.conv2(mu)
        if not chunked:
            return self.decoder(x).to(out_device, torch.float32)
        cache: Dict[nn.Module, object] = {}
        chunks = [self.decoder(x[:, :, i:i + 1], cache).to(out_device, torch.float32) for i in range(x.shape[2])]
        return torch.cat(chunks, dim=2)


# ----------------------------------------------------------------------------------------------------------------------
# Loading


def decoder_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The decoder's tensors (`conv2.*`, `decoder.*`) of a full VAE state dict; a DiffSynth-style `model.` prefix is
    removed."""
    if "conv2.weight" not in state and "model.conv2.weight" in state:
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return {k: v for k, v in state.items() if k.startswith("conv2.") or k.startswith("decoder.")}


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """Reads `Wan2.1_VAE.pth` (a torch pickle of the state dict) or a .safetensors file with the same names."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VAE weights not found: {path}")
    if path.endswith(".safetensors"):
        from . import safetensors_io
        state, _ = safetensors_io.load(path)
        return state
    # weights_only (torch ≥ 1.13) unpickles tensors and containers only, never arbitrary objects.
    options = {"weights_only": True} if "weights_only" in inspect.signature(torch.load).parameters else {}
    try:
        state = torch.load(path, map_location="cpu", **options)
    except Exception as error:  # not a pickle, or one holding more than tensors
        raise WeightsError(f"{path}: cannot be read as a torch state dict ({type(error).__name__}: {error})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return state


def build_decoder(state: Mapping[str, torch.Tensor], config: Optional[DecoderConfig] = None) -> WanVaeDecoder:
    """A decoder holding `state`'s weights (float32). Every decoder tensor must be present with its exact shape."""
    state = decoder_state_dict(state)
    config = config or DecoderConfig.from_state_dict(state)
    model = WanVaeDecoder(config)
    expected = model.state_dict()
    missing = [name for name in expected if name not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"missing tensor {missing[0]!r}{more}, expected shape {list(expected[missing[0]].shape)}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise WeightsError(f"tensor {name!r} has shape {list(state[name].shape)}, expected {list(tensor.shape)}")
        if not state[name].is_floating_point():
            raise WeightsError(f"tensor {name!r} has dtype {state[name].dtype}, expected a floating-point type")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise WeightsError(f"unexpected decoder tensor {unexpected[0]!r} for the layout {config}")
    model.load_state_dict({name: state[name].float() for name in expected})
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------------------
# Latent normalisation and tiling


def denormalize(z: torch.Tensor) -> torch.Tensor:
    """The DiT's latent z (…, 16, T, h, w with channels at dim −4) → the VAE's μ = z · std + mean."""
    shape = (-1, 1, 1, 1)
    std = torch.tensor(LATENT_STD, dtype=torch.float32, device=z.device).view(shape)
    mean = torch.tensor(LATENT_MEAN, dtype=torch.float32, device=z.device).view(shape)
    return z.float() * std + mean


def tile_starts(size: int, tile: int, stride: int) -> List[int]:
    """Tile origins along one axis: 0, stride, 2·stride, … until a tile reaches the end (the last may stick out and is
    clipped). The same set as DiffSynth's loop over range(0, size, stride) that skips an origin whose predecessor
    already reached the end."""
    if tile < 1 or stride < 1 or stride > tile:
        raise ValueError(f"need 1 ≤ stride ≤ tile, got tile {tile}, stride {stride}")
    starts = [0]
    while starts[-1] + tile < size:
        starts.append(starts[-1] + stride)
    return starts


def _ramp(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1 everywhere, except a rise (1/r, 2/r, …, 1) over the first r samples and a fall (1, …, 1/r) over the last r."""
    w = torch.ones(length, dtype=torch.float64)
    r = min(ramp, length)
    if r > 0:
        steps = torch.arange(1, r + 1, dtype=torch.float64) / ramp
        if rise:
            w[:r] = torch.minimum(w[:r], steps)
        if fall:
            w[length - r:] = torch.minimum(w[length - r:], steps.flip(0))
    return w


@dataclass(frozen=True)
class Tile:
    rows: Tuple[int, int]      # latent rows [begin, end), clipped to the latent
    cols: Tuple[int, int]      # latent columns [begin, end)
    weight: torch.Tensor       # (8·rows, 8·cols) float32 blend weight of this tile's pixels


def tile_plan(height: int, width: int, tile: Tuple[int, int] = DEFAULT_TILE, stride: Tuple[int, int] = DEFAULT_STRIDE,
              factor: int = SPATIAL_FACTOR) -> List[Tile]:
    """Tiles of a (height, width) latent and their pixel blend weights, which sum to 1 at every pixel.

    The weighting is DiffSynth's `tiled_decode`: a tile's raw mask is, per axis, a linear ramp 1/r, 2/r, …, 1 over the
    r = 8·(tile − stride) pixels at each side where it overlaps a neighbour (no ramp at the image border), and the 2-D
    mask is the minimum of the row and column masks. DiffSynth accumulates mask · pixels and mask, then divides; here
    the division is done once on the masks, so each tile's weight is mask / Σ masks and the weights form a partition
    of unity (both give the same blend). Where two tiles overlap along one axis the later tile's weight rises as
    (j+1)/(r+1). The two ramps of one tile are combined by a minimum; they never meet when stride ≥ tile/2 (the default
    15/30, 26/52), where this equals DiffSynth's mask exactly."""
    th, tw = tile
    sh, sw = stride
    row_starts = tile_starts(height, th, sh)
    col_starts = tile_starts(width, tw, sw)

    def axis(starts: List[int], size: int, length: int, step: int):
        out = []
        for begin in starts:
            end = min(begin + length, size)
            out.append(((begin, end), _ramp((end - begin) * factor, (length - step) * factor,
                                            rise=begin > 0, fall=begin + length < size)))
        return out

    rows = axis(row_starts, height, th, sh)
    cols = axis(col_starts, width, tw, sw)
    total = torch.zeros(height * factor, width * factor, dtype=torch.float64)
    masks = []
    for (r0, r1), wr in rows:
        for (c0, c1), wc in cols:
            mask = torch.minimum(wr[:, None], wc[None, :])
            total[r0 * factor:r1 * factor, c0 * factor:c1 * factor] += mask
            masks.append(((r0, r1), (c0, c1), mask))
    return [Tile(rows=r, cols=c,
                 weight=(mask / total[r[0] * factor:r[1] * factor, c[0] * factor:c[1] * factor]).float())
            for r, c, mask in masks]


@torch.no_grad()
def decode_video(model: WanVaeDecoder, z: torch.Tensor, tile: Optional[Tuple[int, int]] = DEFAULT_TILE,
                 stride: Tuple[int, int] = DEFAULT_STRIDE, device: torch.device = torch.device("cpu"),
                 dtype: torch.dtype = torch.float32,
                 progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """The DiT's normalised latent z (16, T, h, w) → video (3, 4(T−1)+1, 8h, 8w) float32 on the CPU, unclamped.

    tile=None decodes the whole frame at once; otherwise spatial tiles with the whole time axis each, blended by
    `tile_plan`. The model must already sit on `device` in `dtype`; the output is accumulated in float32 on the CPU."""
    if z.dim() != 4:
        raise ValueError(f"latent must be (16, T, h, w), got {tuple(z.shape)}")
    mu = denormalize(z.float().cpu()).unsqueeze(0)
    _, _, t, h, w = mu.shape
    if tile is None:
        if progress:
            progress(0, 1)
        video = model.decode(mu.to(device, dtype), out_device=torch.device("cpu"))[0]
        if progress:
            progress(1, 1)
        return video
    plan = tile_plan(h, w, tile, stride)
    video = torch.zeros(3, pixel_frames(t), h * SPATIAL_FACTOR, w * SPATIAL_FACTOR)
    for index, part in enumerate(plan):
        if progress:
            progress(index, len(plan))
        (r0, r1), (c0, c1) = part.rows, part.cols
        pixels = model.decode(mu[:, :, :, r0:r1, c0:c1].to(device, dtype), out_device=torch.device("cpu"))[0]
        f = SPATIAL_FACTOR
        video[:, :, r0 * f:r1 * f, c0 * f:c1 * f] += pixels * part.weight
    if progress:
        progress(len(plan), len(plan))
    return video


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(3, F, H, W) in [−1, 1] → (F, H, W, 3) uint8: clamp, then ⌊(x + 1) · 127.5⌋ as DiffSynth's
    `vae_output_to_image` does (scale, clip to [0, 255], truncate)."""
    scaled = (video.float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous()
