"""The Wan2.1 VAE decoder (tools/ultragen_tools/wan_vae.py) and tools/decode_latents.py, on a tiny random VAE.

The tiny VAE has Wan's tensor names with reduced widths (base dim 8, dim_mult [1, 2, 2, 2], 1 res block, z_dim 16); its
state dict is generated here from Wan's naming rules, not from the module under test. The reference decoder below is
an independent whole-sequence implementation in float64 written from the same description: every causal 3-D conv as
a sum of per-frame 2-D convs over past frames, RMS norm as x / rms(x), attention as explicit softmax matrices, nearest
upsampling by repeat_interleave, frame doubling by an explicit loop.
"""

import contextlib
import io
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

import numpy as np
import torch
import torch.nn.functional as F

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, TOOLS)
import decode_latents  # noqa: E402
from ultragen_tools import safetensors_io, wan_vae  # noqa: E402

# Spec §2.5, typed again here so that the test does not read the constants it checks.
SPEC_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
             0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
SPEC_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
            3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


def tiny_state_dict(seed, dim=8, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                    temporal_downsample=(False, True, True)):
    """A random VAE state dict under Wan's names (the decoder side, plus encoder-side tensors to be ignored)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, out_c, in_c, *kernel, gain=1.0):
        fan_in = in_c * math.prod(kernel)
        sd[name + ".weight"] = torch.randn(out_c, in_c, *kernel, generator=g) * (gain / math.sqrt(fan_in))
        sd[name + ".bias"] = 0.05 * torch.randn(out_c, generator=g)

    def gamma(name, c, spatial):
        sd[name + ".gamma"] = 1.0 + 0.2 * torch.randn(c, *([1] * spatial), generator=g)

    def residual(prefix, in_c, out_c):
        gamma(prefix + ".residual.0", in_c, 3)
        conv(prefix + ".residual.2", out_c, in_c, 3, 3, 3)
        gamma(prefix + ".residual.3", out_c, 3)
        conv(prefix + ".residual.6", out_c, out_c, 3, 3, 3, gain=0.5)
        if in_c != out_c:
            conv(prefix + ".shortcut", out_c, in_c, 1, 1, 1)

    dims = [dim * m for m in [dim_mult[-1]] + list(dim_mult[::-1])]
    temporal_upsample = list(temporal_downsample[::-1])
    conv("conv2", z_dim, z_dim, 1, 1, 1)
    conv("decoder.conv1", dims[0], z_dim, 3, 3, 3)
    residual("decoder.middle.0", dims[0], dims[0])
    gamma("decoder.middle.1.norm", dims[0], 2)
    conv("decoder.middle.1.to_qkv", 3 * dims[0], dims[0], 1, 1, gain=2.0)
    conv("decoder.middle.1.proj", dims[0], dims[0], 1, 1)
    residual("decoder.middle.2", dims[0], dims[0])
    k = 0
    for i in range(len(dim_mult)):
        in_c = dims[i] if i == 0 else dims[i] // 2
        out_c = dims[i + 1]
        for _ in range(num_res_blocks + 1):
            residual(f"decoder.upsamples.{k}", in_c, out_c)
            in_c = out_c
            k += 1
        if i < len(dim_mult) - 1:
            conv(f"decoder.upsamples.{k}.resample.1", out_c // 2, out_c, 3, 3)
            if temporal_upsample[i]:
                conv(f"decoder.upsamples.{k}.time_conv", 2 * out_c, out_c, 3, 1, 1)
            k += 1
    gamma("decoder.head.0", dims[-1], 3)
    conv("decoder.head.2", 3, dims[-1], 3, 3, 3, gain=0.5)
    conv("encoder.conv1", dims[1], 3, 3, 3, 3)  # encoder side: present in Wan2.1_VAE.pth, unused by the decoder
    conv("conv1", 2 * z_dim, 2 * z_dim, 1, 1, 1)
    return sd


# ----------------------------------------------------------------------------------------------------------------------
# Independent whole-sequence reference (float64, tensors without a batch axis: (C, T, H, W)).

def ref_causal_conv(x, w, b):
    """out[t] = b + Σ_j conv2d(x[t − (k_t − 1) + j], w[:, :, j]), frames before 0 being zero."""
    _, _, kt, kh, kw = w.shape
    frames = []
    for t in range(x.shape[1]):
        acc = b.view(-1, 1, 1).expand(w.shape[0], x.shape[2], x.shape[3]).clone()
        for j in range(kt):
            source = t - (kt - 1) + j
            if source >= 0:
                acc += F.conv2d(x[:, source][None], w[:, :, j], padding=(kh // 2, kw // 2))[0]
        frames.append(acc)
    return torch.stack(frames, dim=1)


def ref_rms(x, g):
    return x / x.pow(2).mean(dim=0, keepdim=True).sqrt() * g


def ref_residual(sd, p, x):
    h = ref_causal_conv(x, sd[p + ".shortcut.weight"], sd[p + ".shortcut.bias"]) if p + ".shortcut.weight" in sd else x
    y = ref_causal_conv(F.silu(ref_rms(x, sd[p + ".residual.0.gamma"])), sd[p + ".residual.2.weight"],
                        sd[p + ".residual.2.bias"])
    y = ref_causal_conv(F.silu(ref_rms(y, sd[p + ".residual.3.gamma"])), sd[p + ".residual.6.weight"],
                        sd[p + ".residual.6.bias"])
    return y + h


def ref_attention(sd, p, x):
    c, t, h, w = x.shape
    frames = []
    for i in range(t):
        f = ref_rms(x[:, i], sd[p + ".norm.gamma"])
        qkv = F.conv2d(f[None], sd[p + ".to_qkv.weight"], sd[p + ".to_qkv.bias"])[0].reshape(3 * c, h * w)
        q, k, v = qkv[:c], qkv[c:2 * c], qkv[2 * c:]
        scores = (q.T @ k) / math.sqrt(c)  # (hw, hw)
        attn = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        attn = attn / attn.sum(dim=1, keepdim=True)
        o = (attn @ v.T).T.reshape(c, h, w)
        frames.append(F.conv2d(o[None], sd[p + ".proj.weight"], sd[p + ".proj.bias"])[0] + x[:, i])
    return torch.stack(frames, dim=1)


def ref_resample(sd, p, x, first_frame_context=False):
    if p + ".time_conv.weight" in sd:
        c = x.shape[0]
        frames = [x[:, 0]]
        # Wan: frame 0 is not doubled and is no context for the time conv. The variant `first_frame_context` (a
        # plausible misreading) lets the conv see it, to show that the comparison can tell the two apart.
        if first_frame_context:
            y = ref_causal_conv(x, sd[p + ".time_conv.weight"], sd[p + ".time_conv.bias"])[:, 1:]
        else:
            y = ref_causal_conv(x[:, 1:], sd[p + ".time_conv.weight"], sd[p + ".time_conv.bias"])
        for j in range(y.shape[1]):
            frames += [y[:c, j], y[c:, j]]
        x = torch.stack(frames, dim=1)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    return torch.stack([F.conv2d(up[:, i][None], sd[p + ".resample.1.weight"], sd[p + ".resample.1.bias"],
                                 padding=1)[0] for i in range(up.shape[1])], dim=1)


def ref_decode(sd, mu, first_frame_context=False):
    """mu (16, T, h, w) float64 → (3, 4(T−1)+1, 8h, 8w)."""
    x = torch.einsum("oc,cthw->othw", sd["conv2.weight"][:, :, 0, 0, 0], mu) + sd["conv2.bias"].view(-1, 1, 1, 1)
    x = ref_causal_conv(x, sd["decoder.conv1.weight"], sd["decoder.conv1.bias"])
    x = ref_residual(sd, "decoder.middle.0", x)
    x = ref_attention(sd, "decoder.middle.1", x)
    x = ref_residual(sd, "decoder.middle.2", x)
    k = 0
    while f"decoder.upsamples.{k}.resample.1.weight" in sd or f"decoder.upsamples.{k}.residual.2.weight" in sd:
        p = f"decoder.upsamples.{k}"
        x = ref_resample(sd, p, x, first_frame_context) if p + ".resample.1.weight" in sd else ref_residual(sd, p, x)
        k += 1
    x = F.silu(ref_rms(x, sd["decoder.head.0.gamma"]))
    return ref_causal_conv(x, sd["decoder.head.2.weight"], sd["decoder.head.2.bias"])


def as64(sd):
    return {k: v.double() for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Independent tile weighting, written from DiffSynth's description: 1-D masks of ones with ramps (1..r)/r at interior
# edges, the 2-D mask the minimum of the row and column masks, Σ mask·pixels / Σ mask.

def diffsynth_starts(size, tile, stride):
    starts = []
    for s in range(0, size, stride):
        if s - stride >= 0 and s - stride + tile >= size:
            continue
        starts.append(s)
    return starts


def diffsynth_weights(height, width, tile, stride, factor=8):
    """{(row0, col0): normalised (8·rows, 8·cols) weight} for stride ≥ tile/2 (where DiffSynth's ramps don't meet)."""

    def mask_1d(length, ramp, left_bound, right_bound):
        m = torch.ones(length, dtype=torch.float64)
        if ramp and not left_bound:
            m[:ramp] = (torch.arange(ramp, dtype=torch.float64) + 1) / ramp
        if ramp and not right_bound:
            m[-ramp:] = torch.flip((torch.arange(ramp, dtype=torch.float64) + 1) / ramp, dims=(0,))
        return m

    total = torch.zeros(height * factor, width * factor, dtype=torch.float64)
    masks = {}
    for r in diffsynth_starts(height, tile[0], stride[0]):
        for c in diffsynth_starts(width, tile[1], stride[1]):
            r1, c1 = min(r + tile[0], height), min(c + tile[1], width)
            mh = mask_1d((r1 - r) * factor, (tile[0] - stride[0]) * factor, r == 0, r + tile[0] >= height)
            mw = mask_1d((c1 - c) * factor, (tile[1] - stride[1]) * factor, c == 0, c + tile[1] >= width)
            mask = torch.minimum(mh[:, None], mw[None, :])
            masks[(r, c)] = (r1, c1, mask)
            total[r * factor:r1 * factor, c * factor:c1 * factor] += mask
    return {key: mask / total[key[0] * factor:r1 * factor, key[1] * factor:c1 * factor]
            for key, (r1, c1, mask) in masks.items()}


# ----------------------------------------------------------------------------------------------------------------------
# A PNG reader (all five filter types) for checking the written frames.

def read_png(path):
    with open(path, "rb") as stream:
        data = stream.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"CRC of {kind}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    out = np.zeros((height, 3 * width), dtype=np.int64)
    for y in range(height):
        kind, row = raw[y, 0], raw[y, 1:].astype(np.int64)
        above = out[y - 1] if y else np.zeros(3 * width, dtype=np.int64)
        for x in range(3 * width):
            left = out[y, x - 3] if x >= 3 else 0
            upper_left = above[x - 3] if (x >= 3 and y) else 0
            if kind == 0:
                predictor = 0
            elif kind == 1:
                predictor = left
            elif kind == 2:
                predictor = above[x]
            elif kind == 3:
                predictor = (left + above[x]) // 2
            else:
                p = left + above[x] - upper_left
                pa, pb, pc = abs(p - left), abs(p - above[x]), abs(p - upper_left)
                predictor = left if pa <= pb and pa <= pc else (above[x] if pb <= pc else upper_left)
            out[y, x] = (row[x] + predictor) % 256
    return out.reshape(height, width, 3).astype(np.uint8)


def expected_uint8(video):
    """(3, F, H, W) float → (F, H, W, 3) uint8 by DiffSynth's rule ⌊clip((x + 1)·127.5, 0, 255)⌋, in numpy."""
    v = np.clip(video.numpy().astype(np.float64), -1.0, 1.0)
    return np.floor(np.clip((v + 1.0) * 127.5, 0, 255)).astype(np.uint8).transpose(1, 2, 3, 0)


class TinyVae(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        cls.sd = tiny_state_dict(seed=11)
        cls.model = wan_vae.build_decoder(cls.sd)

    def latent(self, t, h, w, seed):
        return torch.randn(16, t, h, w, generator=torch.Generator().manual_seed(seed))

    def test_config_is_read_off_the_names_and_wan21_layout(self):
        self.assertEqual(self.model.config, wan_vae.DecoderConfig.from_wan_args(
            dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1))
        full = wan_vae.DecoderConfig.wan21()
        self.assertEqual((full.z_dim, full.middle_dim, full.level_dims, full.blocks_per_level, full.temporal_upsample),
                         (16, 384, (384, 384, 192, 96), 3, (True, True, False)))
        # The full layout (dim_mult [1, 2, 4, 4], 2 res blocks) at a small base dim has exactly Wan's names.
        layout = wan_vae.DecoderConfig.from_wan_args(dim=2, dim_mult=(1, 2, 4, 4))
        names = set(wan_vae.WanVaeDecoder(layout).state_dict())
        expected = set(wan_vae.decoder_state_dict(tiny_state_dict(seed=0, dim=2, dim_mult=(1, 2, 4, 4),
                                                                  num_res_blocks=2)))
        self.assertEqual(names, expected)

    def test_cached_decoding_equals_whole_sequence_reference(self):
        mu = self.latent(4, 3, 4, seed=1) * 2.0
        got = self.model.decode(mu[None], chunked=True)[0].double()
        reference = ref_decode(as64(self.sd), mu.double())
        self.assertEqual(tuple(got.shape), tuple(reference.shape))
        scale = reference.abs().max().item()
        error = (got - reference).abs().max().item()
        self.assertLess(error, 2e-5 * scale, f"max |cached f32 − reference f64| = {error:.3g} (scale {scale:.3g})")
        # The module's own whole-sequence pass agrees too.
        whole = self.model.decode(mu[None], chunked=False)[0].double()
        self.assertLess((whole - reference).abs().max().item(), 2e-5 * scale)
        # Sensitivity: a decoder that let frame 0 feed the temporal upsampling differs by far more than the tolerance.
        variant = ref_decode(as64(self.sd), mu.double(), first_frame_context=True)
        self.assertGreater((variant - reference).abs().max().item(), 1e-2 * scale)
        # Frame 0 depends on latent frame 0 only (causality): changing later latents leaves it bit-identical.
        changed = mu.clone()
        changed[:, 1:] += 1.0
        again = self.model.decode(changed[None], chunked=True)[0]
        self.assertTrue(torch.equal(again[:, 0], got[:, 0].float()))
        self.assertGreater((again[:, 1:] - got[:, 1:].float()).abs().max().item(), 1e-3)

    def test_attention_paths_agree_with_explicit_softmax(self):
        g = torch.Generator().manual_seed(6)
        q, k, v = (torch.randn(3, 50, 8, generator=g) for _ in range(3))
        scores = q.double() @ k.double().transpose(1, 2) / math.sqrt(8)
        reference = torch.softmax(scores, dim=-1) @ v.double()
        for max_scores in (1, 7 * 3 * 50, 1 << 26):  # one query per block, uneven blocks, one block
            got = wan_vae.blocked_attention(q, k, v, max_scores=max_scores)
            self.assertLess((got.double() - reference).abs().max().item(), 1e-5, f"max_scores {max_scores}")
        self.assertLess((wan_vae.single_head_attention(q, k, v).double() - reference).abs().max().item(), 1e-5)

    def test_output_shape(self):
        for t, h, w in ((1, 2, 3), (3, 4, 6), (2, 5, 3)):
            video = wan_vae.decode_video(self.model, self.latent(t, h, w, seed=t), tile=None)
            self.assertEqual(tuple(video.shape), (3, 4 * (t - 1) + 1, 8 * h, 8 * w))
            self.assertEqual(video.dtype, torch.float32)

    def test_single_covering_tile_equals_untiled_exactly(self):
        z = self.latent(2, 4, 6, seed=3)
        untiled = wan_vae.decode_video(self.model, z, tile=None)
        for tile, stride in (((4, 6), (2, 3)), ((30, 52), (15, 26)), ((5, 9), (5, 9))):
            tiled = wan_vae.decode_video(self.model, z, tile=tile, stride=stride)
            self.assertTrue(torch.equal(tiled, untiled), f"tile {tile} stride {stride}")

    def test_overlapping_tiles_blend_the_tile_decodes(self):
        z = self.latent(2, 6, 7, seed=4)
        tile, stride = (4, 4), (2, 3)
        tiled = wan_vae.decode_video(self.model, z, tile=tile, stride=stride)
        mu = torch.tensor(SPEC_STD).view(16, 1, 1, 1) * z + torch.tensor(SPEC_MEAN).view(16, 1, 1, 1)
        expected = torch.zeros_like(tiled, dtype=torch.float64)
        weights = diffsynth_weights(6, 7, tile, stride)
        self.assertEqual(len(weights), 4)
        for (r, c), weight in weights.items():
            crop = mu[:, :, r:r + tile[0], c:c + tile[1]]
            pixels = self.model.decode(crop[None])[0].double()
            expected[:, :, 8 * r:8 * r + pixels.shape[2], 8 * c:8 * c + pixels.shape[3]] += pixels * weight
        self.assertLess((tiled.double() - expected).abs().max().item(), 1e-5)
        # The blend is not the untiled decode (the tiles see zero padding at their edges) but stays close to it here.
        self.assertFalse(torch.equal(tiled, wan_vae.decode_video(self.model, z, tile=None)))

    def test_normalisation_is_undone_before_decoding(self):
        self.assertEqual(list(wan_vae.LATENT_MEAN), SPEC_MEAN)
        self.assertEqual(list(wan_vae.LATENT_STD), SPEC_STD)
        z = self.latent(2, 3, 4, seed=5)
        by_hand = z * torch.tensor(SPEC_STD).view(16, 1, 1, 1) + torch.tensor(SPEC_MEAN).view(16, 1, 1, 1)
        expected = self.model.decode(by_hand[None])[0]
        got = wan_vae.decode_video(self.model, z, tile=None)
        self.assertLess((got - expected).abs().max().item(), 1e-6)
        self.assertGreater((got - self.model.decode(z[None])[0]).abs().max().item(), 1e-2)

    def test_uint8_conversion(self):
        video = torch.tensor([-3.0, -1.0, -0.999, 0.0, 0.004, 0.5, 0.99999, 1.0, 7.0]).view(3, 1, 1, 3)
        got = wan_vae.to_uint8_frames(video).numpy()
        self.assertTrue(np.array_equal(got, expected_uint8(video)))
        self.assertEqual(got.shape, (1, 1, 3, 3))
        self.assertEqual(got[0, 0, :, 1].tolist(), [127, 128, 191])  # 0, 0.004, 0.5: truncated, not rounded
        self.assertEqual(got[0, 0, :, 2].tolist(), [254, 255, 255])  # 0.99999, 1, 7 (clamped)


class TileWeights(unittest.TestCase):
    CASES = [
        (4, 6, (30, 52), (15, 26)),     # one tile bigger than the latent
        (45, 7, (30, 52), (15, 26)),    # two row tiles exactly
        (136, 240, (30, 52), (15, 26)),  # 1088×1920: 9 × 9 tiles
        (17, 23, (6, 8), (4, 5)),       # sizes not multiples of the stride, clipped last tiles
        (10, 10, (4, 4), (4, 4)),       # stride = tile: no overlap
        (31, 53, (30, 52), (15, 26)),   # one latent past a tile
        (9, 13, (5, 7), (2, 3)),        # stride < tile/2: ramps of one tile meet, several tiles overlap
    ]

    def test_partition_of_unity_and_coverage(self):
        for height, width, tile, stride in self.CASES:
            with self.subTest(size=(height, width), tile=tile, stride=stride):
                plan = wan_vae.tile_plan(height, width, tile, stride)
                self.assertEqual([t.rows[0] for t in plan[::len(diffsynth_starts(width, tile[1], stride[1]))]],
                                 diffsynth_starts(height, tile[0], stride[0]))
                self.assertEqual(len(plan), len(diffsynth_starts(height, tile[0], stride[0]))
                                 * len(diffsynth_starts(width, tile[1], stride[1])))
                total = torch.zeros(8 * height, 8 * width, dtype=torch.float64)
                for t in plan:
                    (r0, r1), (c0, c1) = t.rows, t.cols
                    self.assertTrue(0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width)
                    self.assertEqual(tuple(t.weight.shape), (8 * (r1 - r0), 8 * (c1 - c0)))
                    self.assertGreater(t.weight.min().item(), 0.0)
                    self.assertLessEqual(t.weight.max().item(), 1.0 + 1e-7)
                    total[8 * r0:8 * r1, 8 * c0:8 * c1] += t.weight.double()
                self.assertLess((total - 1.0).abs().max().item(), 1e-6)
                if 2 * stride[0] >= tile[0] and 2 * stride[1] >= tile[1]:
                    reference = diffsynth_weights(height, width, tile, stride)
                    for t in plan:
                        ref = reference[(t.rows[0], t.cols[0])]
                        self.assertLess((t.weight.double() - ref).abs().max().item(), 1e-6)
        self.assertEqual(len(wan_vae.tile_plan(136, 240)), 81)

    def test_two_tiles_blend_linearly(self):
        first, second = wan_vae.tile_plan(45, 6, (30, 52), (15, 26))
        self.assertEqual((first.rows, second.rows), ((0, 30), (15, 45)))
        ramp = 8 * 15
        j = torch.arange(ramp, dtype=torch.float64)
        rising = second.weight[:ramp].double()  # pixel rows 120..239 of the image
        self.assertLess((rising - ((j + 1) / (ramp + 1))[:, None]).abs().max().item(), 1e-6)
        self.assertLess((first.weight[ramp:].double() + rising - 1.0).abs().max().item(), 1e-6)
        self.assertTrue(torch.equal(first.weight[:ramp], torch.ones(ramp, 48)))
        self.assertTrue(torch.equal(second.weight[ramp:], torch.ones(240 - ramp, 48)))

    def test_bad_tiles_are_rejected(self):
        with self.assertRaises(ValueError):
            wan_vae.tile_plan(10, 10, (4, 4), (5, 2))
        with self.assertRaises(ValueError):
            wan_vae.tile_plan(10, 10, (0, 4), (1, 2))


def write_latents(path, tensor, name="latents", metadata=None, t=None, h=None, w=None):
    if metadata is None:
        t, h, w = tensor.shape[1:] if tensor.dim() == 4 else (1, 1, 1)
        metadata = {"ultragen.latents.format": "wan2.1-vae", "ultragen.latents.frames": str(4 * (t - 1) + 1),
                    "ultragen.latents.height": str(8 * h), "ultragen.latents.width": str(8 * w),
                    "ultragen.latents.fps": "15", "ultragen.latents.prompt": "a tiny test",
                    "ultragen.latents.seed": "1",
                    "ultragen.latents.steps": "2", "ultragen.latents.cfg": "5"}
    safetensors_io.save({name: tensor}, path, metadata)


class CommandLine(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.TemporaryDirectory()
        cls.sd = tiny_state_dict(seed=21)
        cls.vae = os.path.join(cls.directory.name, "tiny_vae.pth")
        torch.save(cls.sd, cls.vae)
        cls.z = torch.randn(16, 2, 4, 6, generator=torch.Generator().manual_seed(22))
        cls.latents = os.path.join(cls.directory.name, "clip.safetensors")
        write_latents(cls.latents, cls.z)

    @classmethod
    def tearDownClass(cls):
        cls.directory.cleanup()

    def path(self, name):
        return os.path.join(self.directory.name, name)

    def run_cli(self, *args, env=None):
        return subprocess.run([sys.executable, os.path.join(TOOLS, "decode_latents.py"), *args], cwd=TOOLS,
                              capture_output=True, text=True, env=env, timeout=120)

    def run_main(self, *args):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = decode_latents.main(list(args))
        return code, stderr.getvalue()

    def test_png_frames_end_to_end(self):
        out = self.path("frames")
        result = self.run_cli(self.latents, "--vae", self.vae, "--format", "png", "-o", out, "--device", "cpu",
                              "--tile", "3", "4", "--stride", "2", "2")
        self.assertEqual(result.returncode, 0, result.stderr)
        files = sorted(os.listdir(out))
        self.assertEqual(files, [f"frame_{i:05d}.png" for i in range(5)])
        model = wan_vae.build_decoder(self.sd)
        expected = expected_uint8(wan_vae.decode_video(model, self.z, tile=(3, 4), stride=(2, 2)))
        for i, name in enumerate(files):
            frame = read_png(os.path.join(out, name))
            self.assertEqual(frame.shape, (32, 48, 3))
            self.assertTrue(np.array_equal(frame, expected[i]), f"frame {i}")
        self.assertFalse([n for n in os.listdir(self.directory.name) if n.startswith(".")], "temporary left behind")

    @unittest.skipUnless(shutil.which("ffmpeg"), "ffmpeg is not on PATH: the MP4 path is not exercised")
    def test_mp4_end_to_end(self):
        out = self.path("clip.mp4")
        result = self.run_cli(self.latents, "--vae", self.vae, "-o", out, "--device", "cpu", "--crf", "10")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertGreater(os.path.getsize(out), 0)
        if not shutil.which("ffprobe"):
            self.skipTest("ffprobe is not on PATH: the MP4 was written but not inspected")
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name,width,height,pix_fmt,nb_read_frames,r_frame_rate",
                                "-of", "default=noprint_wrappers=1", out], capture_output=True, text=True, check=True)
        fields = dict(line.split("=", 1) for line in probe.stdout.split())
        self.assertEqual(fields, {"codec_name": "h264", "width": "48", "height": "32", "pix_fmt": "yuv420p",
                                  "r_frame_rate": "15/1", "nb_read_frames": "5"})

    def test_without_ffmpeg_auto_writes_png_and_mp4_is_refused(self):
        empty = self.path("empty_bin")
        os.makedirs(empty, exist_ok=True)
        env = dict(os.environ, PATH=empty)
        result = self.run_cli(self.latents, "--vae", self.vae, "--format", "mp4", "--device", "cpu", env=env)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("needs ffmpeg", result.stderr)
        result = self.run_cli(self.latents, "--vae", self.vae, "-o", self.path("auto.mp4"), "--device", "cpu",
                              "--no-tiling", env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ffmpeg not found", result.stderr)
        self.assertEqual(len(os.listdir(self.path("auto_frames"))), 5)

    def test_help_has_examples(self):
        result = self.run_cli("--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("examples:", result.stdout)

    def assert_fails(self, expected_message, *args):
        code, err = self.run_main(*args)
        self.assertEqual(code, 2, err)
        self.assertIn(expected_message, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_bad_latents(self):
        out = ["-o", self.path("never"), "--format", "png", "--device", "cpu"]
        wrong_name = self.path("wrong_name.safetensors")
        write_latents(wrong_name, self.z, name="samples")
        self.assert_fails("no tensor 'latents' (found: 'samples')", wrong_name, "--vae", self.vae, *out)
        three = self.path("three.safetensors")
        write_latents(three, torch.zeros(3, 2, 4, 6))
        self.assert_fails("has 3 channels", three, "--vae", self.vae, *out)
        flat = self.path("flat.safetensors")
        write_latents(flat, torch.zeros(16, 24), metadata={})
        self.assert_fails("expected 4 dimensions", flat, "--vae", self.vae, *out)
        inconsistent = self.path("inconsistent.safetensors")
        write_latents(inconsistent, self.z, metadata={"ultragen.latents.frames": "9"})
        self.assert_fails("ultragen.latents.frames = 9 does not match", inconsistent, "--vae", self.vae, *out)
        self.assert_fails("latents file not found", self.path("nothing.safetensors"), "--vae", self.vae, *out)
        not_safetensors = self.path("junk.safetensors")
        with open(not_safetensors, "wb") as stream:
            stream.write(b"\x01" * 20)
        self.assert_fails("not a valid safetensors file", not_safetensors, "--vae", self.vae, *out)
        self.assert_fails("must not exceed --tile", self.latents, "--vae", self.vae, "--tile", "4", "4",
                          "--stride", "5", "2", *out)
        self.assertFalse(os.path.exists(self.path("never")))

    def test_bad_vae(self):
        out = ["-o", self.path("never"), "--format", "png", "--device", "cpu"]
        self.assert_fails("VAE weights not found", self.latents, "--vae", self.path("absent.pth"), *out)
        partial = dict(self.sd)
        del partial["decoder.head.2.weight"]
        path = self.path("partial.pth")
        torch.save(partial, path)
        self.assert_fails("missing tensor 'decoder.head.2.weight'", self.latents, "--vae", path, *out)
        reshaped = dict(self.sd)
        reshaped["decoder.middle.1.proj.weight"] = torch.zeros(16, 15, 1, 1)
        path = self.path("reshaped.pth")
        torch.save(reshaped, path)
        self.assert_fails("'decoder.middle.1.proj.weight' has shape [16, 15, 1, 1], expected [16, 16, 1, 1]",
                          self.latents, "--vae", path, *out)
        self.assertFalse(os.path.exists(self.path("never")))

    def test_safetensors_vae_loads(self):
        path = self.path("tiny_vae.safetensors")
        safetensors_io.save(self.sd, path)
        code, err = self.run_main(self.latents, "--vae", path, "--format", "png", "-o", self.path("st_frames"),
                                  "--device", "cpu", "--no-tiling", "--quiet")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(os.listdir(self.path("st_frames"))), 5)


if __name__ == "__main__":
    unittest.main()
