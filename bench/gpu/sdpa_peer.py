#!/usr/bin/env python3
"""Peer timings for the window_attention kernels: PyTorch SDPA (flash backend, bf16) on the shapes UltraGen runs.

Shapes (d = 128, 12 heads, B = 1):
  full_N{8K,16K,32K}   full attention over N tokens
  1080p_*              spec §1.4 at T = 21, 68×120, each layout's windows as a batch of independent sequences
                       (what a gather-free window kernel computes, minus the gather):
                       local_even 4×4 × 10,710 · local_odd 5×5 × 7,056 · global 1 × 10,710 ·
                       hier_even 2×2 × 10,710 · hier_odd 3×3 × 4,620
  1080p_full           naive full attention over all 171,360 tokens (forward only): what the windows replace
FLOPs counted (useful): forward 4·N²·d per (window, head); backward 2.5× that.
Writes CSV columns layer,shape,tflops,ms (layer = <name>.<fwd|bwd>), the columns bench/gpu/run.sh joins with the .NET side.
"""
import argparse
import csv
import statistics
import sys

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # older torch
    sdpa_kernel = None

HEADS, HEAD_DIM = 12, 128

SHAPES = [
    # name, windows (batched sequences), tokens per window, run backward
    ("full_N8K", 1, 8192, True),
    ("full_N16K", 1, 16384, True),
    ("full_N32K", 1, 32768, True),
    ("1080p_local_even", 16, 21 * 17 * 30, True),
    ("1080p_local_odd", 25, 21 * 14 * 24, True),
    ("1080p_global", 1, 21 * 17 * 30, True),
    ("1080p_hier_even", 4, 21 * 17 * 30, True),
    ("1080p_hier_odd", 9, 21 * 11 * 20, True),
    ("1080p_full", 1, 21 * 68 * 120, False),
]


def time_ms(fn, warmup=3, reps=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def write_csv(path, rows):
    """rows of (layer, shape, tflops, ms) in the columns bench/gpu/run.sh joins with the .NET side."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "shape", "tflops", "ms"])
        for layer, shape, tf, ms in rows:
            w.writerow([layer, shape, f"{tf:.2f}", f"{ms:.4f}"])


def flash_context():
    if sdpa_kernel is not None:
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True, help="output CSV (layer,shape,tflops,ms)")
    parser.add_argument("--only", default="", help="comma-separated shape names to run (default: all)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("sdpa_peer: no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    wanted = set(filter(None, args.only.split(",")))
    rows = []
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    for name, windows, tokens, backward in SHAPES:
        if wanted and name not in wanted:
            continue
        shape = f"B{windows} H{HEADS} N{tokens} d{HEAD_DIM}"
        q, k, v = (torch.randn(windows, HEADS, tokens, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
                   for _ in range(3))
        flops = 4.0 * tokens * tokens * HEAD_DIM * HEADS * windows
        with flash_context():
            ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
            rows.append((f"{name}.fwd", shape, flops / ms / 1e9, ms))
            if backward:
                o = F.scaled_dot_product_attention(q, k, v)
                do = torch.randn_like(o)
                ms_b = time_ms(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
                rows.append((f"{name}.bwd", shape, 2.5 * flops / ms_b / 1e9, ms_b))
        for layer, shp, tf, t in rows[-(2 if backward else 1):]:
            print(f"{layer:24s} {shp:28s} {tf:8.1f} TFLOP/s {t:10.3f} ms", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    write_csv(args.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
