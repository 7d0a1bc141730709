#!/usr/bin/env python3
"""PyTorch peer of the 1080P self-attention layer rows of bench/UltraGen.GpuBench.

The whole layer in plain PyTorch, attention by SDPA (flash backend), bf16: Wan's full self-attention
(`wan_self_attention`) and UltraGen's decomposed layer (`ultragen_self_attention`, spec §1.3/§1.8, block 4 as the
.NET rows: 4×4 local windows, 2×2 hierarchical windows on the ×2-compressed grid, full attention on the ×4-compressed
grid, LoRA rank 16 on the two compressed branches, time gates), so the layer rows get a ratio to a peer too.

Modes:
  --csv out.csv               time both layers at T = 21, 68×120, D = 1536, 12 heads on the GPU (CUDA events, median)
  --check in.safetensors ...  run one layer in float64 on the CPU from a file of the op's inputs and write y (the .NET
                              tests hold this to the op's reference, so the peer computes the same function)
Rows: 1080p_ultragen_layer.fwd and 1080p_full_layer.fwd (layer,shape,tflops,ms), FLOPs as LayerSetup.cs counts them.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

from sdpa_peer import flash_context, time_ms, write_csv  # the attention peer's timing (CUDA events, median), flash backend, CSV

HEADS, HEAD_DIM, LORA_RANK, SINUSOID, BLOCK = 12, 128, 16, 256, 4
GRID_1080P = (21, 68, 120)


# ---- the pieces (tensors channels-last: (B, T, H, W, D) or tokens (B, N, D)) --------------------------------------

def closest_divisible(x, n):
    """The multiple of n nearest to x, the lower one on a tie (never 0)."""
    lower = x // n * n
    result = lower if x - lower <= lower + n - x else lower + n
    return result if result > 0 else n


def linear(x, p, name):
    return F.linear(x, p[f"{name}.weight"], p[f"{name}.bias"])


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


_ROPE_CACHE = {}


def rope_tables(grid, head_dim, theta, dtype, device):
    """cos, sin of shape (T·h·w, head_dim/2) for window-local coordinates: Wan's 3-D split (time, height, width),
    in float64 then cast; built once per grid (the timed calls reuse them)."""
    key = (tuple(grid), head_dim, theta, dtype, str(device))
    if key not in _ROPE_CACHE:
        _ROPE_CACHE[key] = _rope_tables(grid, head_dim, theta, dtype, device)
    return _ROPE_CACHE[key]


def _rope_tables(grid, head_dim, theta, dtype, device):
    spatial = 2 * (head_dim // 6)
    dims = (head_dim - 2 * spatial, spatial, spatial)
    angles = []
    for axis, (size, d) in enumerate(zip(grid, dims)):
        inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        pos = torch.arange(size, dtype=torch.float64)
        shape = [1, 1, 1, d // 2]
        shape[axis] = size
        angles.append((pos[:, None] * inv[None, :]).reshape(shape).expand(grid[0], grid[1], grid[2], d // 2))
    a = torch.cat(angles, dim=-1).reshape(-1, head_dim // 2)
    return a.cos().to(dtype=dtype, device=device), a.sin().to(dtype=dtype, device=device)


def rope(x, cos, sin):
    """x: (B, heads, L, d); adjacent real pairs are complex numbers rotated by the position's angles."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def _math_attention(q, k, v):
    """softmax(q·kᵀ/√d)·v: the check mode's attention (float64 on the CPU; also torch < 2.0, which has no SDPA)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v


def _sdpa(q, k, v):
    if q.is_cuda and hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v)
    return _math_attention(q, k, v)


def attention(q, k, v, grid, heads, theta=10000.0):
    """q, k, v: (B, L, D) with L = T·h·w tokens of one window each; window-local RoPE, SDPA, back to (B, L, D)."""
    b, length, dim = q.shape
    split = lambda t: t.view(b, length, heads, dim // heads).transpose(1, 2)
    cos, sin = rope_tables(grid, dim // heads, theta, q.dtype, q.device)
    o = _sdpa(rope(split(q), cos, sin), rope(split(k), cos, sin), split(v))
    return o.transpose(1, 2).reshape(b, length, dim)


def to_windows(x5, n):
    """(B, T, H, W, D) with n | H, W → (B·n·n, T·(H/n)·(W/n), D), window g = row·n + col, localCol fastest."""
    b, t, h, w, d = x5.shape
    x = x5.reshape(b, t, n, h // n, n, w // n, d).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(b * n * n, t * (h // n) * (w // n), d)


def from_windows(xw, b, t, h, w, n):
    d = xw.shape[-1]
    x = xw.reshape(b, n, n, t, h // n, w // n, d).permute(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(b, t, h, w, d)


def resize(x5, h, w):
    """Bilinear (align_corners=False, no antialias) per frame; identity at the same size."""
    b, t, h0, w0, d = x5.shape
    if (h0, w0) == (h, w):
        return x5
    x = x5.reshape(b * t, h0, w0, d).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(b, t, h, w, d)


def down_conv(x5, weight, bias, k):
    """Depthwise k×k conv, stride k, per frame (remainder rows/columns dropped)."""
    b, t, h, w, d = x5.shape
    x = x5.reshape(b * t, h, w, d).permute(0, 3, 1, 2)
    y = F.conv2d(x, weight, bias, stride=k, groups=d)
    return y.permute(0, 2, 3, 1).reshape(b, t, h // k, w // k, d)


def conv3d(x5, weight, bias):
    """Depthwise 3×3×3, zero padding 1."""
    y = F.conv3d(x5.permute(0, 4, 1, 2, 3), weight, bias, padding=1, groups=x5.shape[-1])
    return y.permute(0, 2, 3, 4, 1)


def gate(t, p, embedding):
    """σ(P(SiLU(E(sin256(t))))): (B, 1, D), Wan's sinusoid (cos half first) of the raw timestep."""
    half = p[f"{embedding}.0.weight"].shape[1] // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half).to(t.device)
    args = t.to(torch.float64)[:, None] * freqs[None, :]
    s = torch.cat((args.cos(), args.sin()), dim=-1).to(p[f"{embedding}.0.weight"].dtype)
    e = linear(F.silu(linear(s, p, f"{embedding}.0")), p, f"{embedding}.2")
    projection = embedding.replace("embedding", "projection")
    return torch.sigmoid(linear(F.silu(e), p, f"{projection}.1"))[:, None, :]


def qkv(x, p, lora, k_uses_wq, eps):
    """q = RMSNorm_q(W_q x + LoRA_q(x)), k likewise (W_q for the global branch's K when k_uses_wq), v = W_v x + LoRA_v(x)."""
    def project(base, name):
        y = linear(x, p, base)
        if lora is not None:
            prefix = f"{name}_lora_{lora}"
            y = y + linear(linear(x, p, f"{prefix}.lora_A"), p, f"{prefix}.lora_B")
        return y
    q = rms_norm(project("q", "q"), p["norm_q.weight"], eps)
    k = rms_norm(project("q" if k_uses_wq else "k", "k"), p["norm_k.weight"], eps)
    return q, k, project("v", "v")


# ---- the two layers -----------------------------------------------------------------------------------------------

def wan_layer(x, p, grid, heads, eps=1e-6):
    q, k, v = qkv(x, p, None, False, eps)
    return linear(attention(q, k, v, grid, heads), p, "o")


def ultragen_layer(x, t, p, grid, heads, block=BLOCK, window_base=4, k_uses_wq=True, eps=1e-6):
    """The decomposed block (resize-to-divisible windows, as the released code); spec §1.3."""
    T, H, W = grid
    b, _, d = x.shape
    x5 = x.reshape(b, T, H, W, d)
    n_local, n_hier = window_base + block % 2, window_base // 2 + block % 2
    alpha, beta = gate(t, p, "alpha_time_embedding"), gate(t, p, "alpha_time_embedding2")

    hl, wl = closest_divisible(H, n_local), closest_divisible(W, n_local)
    xl = resize(x5, hl, wl)
    q, k, v = qkv(xl, p, None, False, eps)
    win = lambda y, n: to_windows(y, n)
    local_grid = (T, hl // n_local, wl // n_local)
    ol = attention(win(q, n_local), win(k, n_local), win(v, n_local), local_grid, heads)
    z_local = resize(from_windows(ol, b, T, hl, wl, n_local), H, W)

    g = down_conv(x5, p["downsample_conv.weight"], p["downsample_conv.bias"], 4)
    hg, wg = g.shape[2], g.shape[3]
    q, k, v = qkv(g.reshape(b, -1, d), p, "1", k_uses_wq, eps)
    og = attention(q, k, v, (T, hg, wg), heads).reshape(b, T, hg, wg, d)
    z_global = conv3d(resize(og, H, W), p["upsample_conv.weight"], p["upsample_conv.bias"])

    c = down_conv(x5, p["downsample_conv_hierachcal.weight"], p["downsample_conv_hierachcal.bias"], 2)
    hc, wc = closest_divisible(c.shape[2], n_hier), closest_divisible(c.shape[3], n_hier)
    c = resize(c, hc, wc)
    q, k, v = qkv(c, p, "2", False, eps)
    oh = attention(win(q, n_hier), win(k, n_hier), win(v, n_hier), (T, hc // n_hier, wc // n_hier), heads)
    z_hier = conv3d(resize(from_windows(oh, b, T, hc, wc, n_hier), H, W),
                    p["upsample_conv_hierachcal.weight"], p["upsample_conv_hierachcal.bias"])

    tokens = lambda z: z.reshape(b, T * H * W, d)
    fused = alpha * (beta * tokens(z_local) + (1 - beta) * tokens(z_hier)) + (1 - alpha) * tokens(z_global)
    return linear(fused, p, "o")


# ---- check mode: float64 on the CPU from the op's inputs ----------------------------------------------------------

def check(args):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
    from ultragen_tools import safetensors_io
    tensors, _ = safetensors_io.load(args.check)
    p = {name: tensor.to(torch.float64) for name, tensor in tensors.items()}
    params = json.loads(args.params)
    grid, heads = (params["T"], params["H"], params["W"]), params["heads"]
    with torch.no_grad():
        full_blocks = params.get("full_blocks", [0, 1, 2, 27, 28, 29])
        if args.op == "wan_self_attention" or params.get("block", 3) in full_blocks:
            y = wan_layer(p["x"], p, grid, heads, params.get("eps", 1e-6))
        else:
            y = ultragen_layer(p["x"], p["t"], p, grid, heads, params.get("block", 3), params.get("window_base", 4),
                               params.get("k_uses_wq", True), params.get("eps", 1e-6))
    safetensors_io.save({"y": y.contiguous()}, args.output)
    return 0


# ---- timing mode --------------------------------------------------------------------------------------------------

def random_parameters(dim, device, dtype):
    r = 1 / math.sqrt(dim)
    u = lambda *shape: (torch.rand(*shape, device=device, dtype=torch.float32) * 2 * r - r).to(dtype)
    p = {}
    for name in ("q", "k", "v", "o"):
        p[f"{name}.weight"], p[f"{name}.bias"] = u(dim, dim), u(dim)
    p["norm_q.weight"] = p["norm_k.weight"] = torch.ones(dim, device=device, dtype=dtype)
    for branch in ("1", "2"):
        for name in ("q", "k", "v"):
            prefix = f"{name}_lora_{branch}"
            p[f"{prefix}.lora_A.weight"], p[f"{prefix}.lora_A.bias"] = u(LORA_RANK, dim), u(LORA_RANK)
            p[f"{prefix}.lora_B.weight"], p[f"{prefix}.lora_B.bias"] = u(dim, LORA_RANK), u(dim)
    for suffix in ("", "2"):
        e, pr = f"alpha_time_embedding{suffix}", f"alpha_time_projection{suffix}"
        p[f"{e}.0.weight"], p[f"{e}.0.bias"] = u(dim, SINUSOID), u(dim)
        p[f"{e}.2.weight"], p[f"{e}.2.bias"] = u(dim, dim), u(dim)
        p[f"{pr}.1.weight"], p[f"{pr}.1.bias"] = u(dim, dim), u(dim)
    p["downsample_conv.weight"], p["downsample_conv.bias"] = u(dim, 1, 4, 4), u(dim)
    p["downsample_conv_hierachcal.weight"], p["downsample_conv_hierachcal.bias"] = u(dim, 1, 2, 2), u(dim)
    for name in ("upsample_conv", "upsample_conv_hierachcal"):
        p[f"{name}.weight"], p[f"{name}.bias"] = u(dim, 1, 3, 3, 3), u(dim)
    return p


def layer_flops(grid, heads, head_dim, ultragen):
    """LayerSetup.cs's useful FLOPs: attention 4·Σ windows·tokens²·d per head, projections 2·tokens·in·out."""
    T, H, W = grid
    d = heads * head_dim
    proj = lambda tokens, i, o: 2.0 * tokens * i * o
    attn = lambda windows, tokens: 4.0 * windows * tokens * tokens * head_dim * heads
    if not ultragen:
        n = T * H * W
        return attn(1, n) + 4 * proj(n, d, d)
    n_local, n_hier = 4 + BLOCK % 2, 2 + BLOCK % 2
    hl, wl = closest_divisible(H, n_local), closest_divisible(W, n_local)
    hc, wc = closest_divisible(H // 2, n_hier), closest_divisible(W // 2, n_hier)
    branches = [  # (windows, tokens per window, tokens, LoRA)
        (n_local ** 2, T * (hl // n_local) * (wl // n_local), T * hl * wl, False),
        (n_hier ** 2, T * (hc // n_hier) * (wc // n_hier), T * hc * wc, True),
        (1, T * (H // 4) * (W // 4), T * (H // 4) * (W // 4), True),
    ]
    flops = proj(T * H * W, d, d)
    for windows, per_window, tokens, lora in branches:
        flops += attn(windows, per_window) + 3 * proj(tokens, d, d)
        if lora:
            flops += 3 * (proj(tokens, d, LORA_RANK) + proj(tokens, LORA_RANK, d))
    return flops


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", help="timing mode: output CSV (layer,shape,tflops,ms)")
    parser.add_argument("--check", help="check mode: safetensors file of the op's inputs")
    parser.add_argument("--op", choices=["ultragen_self_attention", "wan_self_attention"], default="ultragen_self_attention")
    parser.add_argument("--params", default="{}", help="check mode: the op's parameters as JSON (T, H, W, heads, block, …)")
    parser.add_argument("--output", help="check mode: safetensors file to write y to")
    args = parser.parse_args()
    if args.check:
        return check(args)
    if not args.csv:
        parser.error("--csv (timing) or --check (float64 check) is required")
    if not torch.cuda.is_available():
        print("layer_peer: no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    dim, dtype = HEADS * HEAD_DIM, torch.bfloat16
    p = random_parameters(dim, "cuda", dtype)
    T, H, W = GRID_1080P
    x = (torch.rand(1, T * H * W, dim, device="cuda") * 2 - 1).to(dtype)
    t = torch.tensor([500.0], device="cuda")
    shape = f"T{T} {H}x{W} D{dim}"
    rows = []
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    with torch.no_grad(), flash_context():
        for name, fn, ultragen in (("1080p_ultragen_layer", lambda: ultragen_layer(x, t, p, GRID_1080P, HEADS), True),
                                   ("1080p_full_layer", lambda: wan_layer(x, p, GRID_1080P, HEADS), False)):
            ms = time_ms(fn, warmup=1, reps=5)  # a layer call is long: fewer repetitions than the attention rows
            flops = layer_flops(GRID_1080P, HEADS, HEAD_DIM, ultragen)
            rows.append((f"{name}.fwd", shape, flops / ms / 1e9, ms))
            print(f"{name + '.fwd':28s} {shape:22s} {flops / ms / 1e9:8.1f} TFLOP/s {ms:10.3f} ms", flush=True)
    write_csv(args.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
