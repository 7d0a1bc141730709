#!/usr/bin/env python3
"""Decodes latents written by `ultragen sample --latents-out` into a video with the Wan2.1 VAE.

Input (contract 3): a safetensors file with the tensor `latents` [16, T, H/8, W/8] (float32) in the DiT's normalised
latent space and `ultragen.latents.*` metadata. The decoder (tools/ultragen_tools/wan_vae.py) undoes the per-channel
normalisation (μ = z·std + mean, spec §2.5), decodes latent frame by latent frame with Wan's causal feature cache
(F = 4(T−1)+1 frames), in spatial tiles of 30×52 latents with stride 15×26 blended with linear ramps as UltraGen's
pipeline does, clamps to [−1, 1] and converts to 8-bit RGB.

Output: an H.264 MP4 through ffmpeg (raw RGB piped in; libx264, yuv420p), or a folder of PNG frames
(frame_00000.png, …) with --format png, or when ffmpeg is missing and --format is auto. Written atomically.
Exit status: 0 done, 2 bad input (the message says which file, tensor or option and what was expected), 1 failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from ultragen_tools import safetensors_io, video_out, wan_vae  # noqa: E402

EXAMPLES = """examples:
  # 1088x1920 latents from ultragen sample, decoded on the GPU in bf16 with the default tiles, to out.mp4
  decode_latents.py out.latents.safetensors --vae Wan2.1_VAE.pth -o out.mp4

  # PNG frames on the CPU in float32, no tiling (small videos)
  decode_latents.py small.safetensors --vae Wan2.1_VAE.pth --format png -o frames/ --device cpu --no-tiling

  # smaller tiles for less GPU memory, higher quality H.264, 24 fps
  decode_latents.py out.safetensors --vae Wan2.1_VAE.pth --tile 20 32 --stride 10 16 --crf 12 --fps 24
"""

LATENTS_TENSOR = "latents"
LATENTS_FORMAT = "wan2.1-vae"
DEFAULT_FPS = 15.0


class InputError(Exception):
    """Bad input: reported in one line, exit status 2."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="decode_latents.py", description=__doc__.split("\n\n")[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("latents", help="latents safetensors file (tensor 'latents' [16, T, H/8, W/8])")
    parser.add_argument("--vae", required=True, help="Wan2.1 VAE weights: Wan2.1_VAE.pth (or a .safetensors with the "
                                                     "same tensor names)")
    parser.add_argument("-o", "--output", help="output .mp4 file or PNG folder (default: beside the latents, "
                                               "NAME.mp4 or NAME_frames/)")
    parser.add_argument("--format", choices=["auto", "mp4", "png"], default="auto",
                        help="auto (default): MP4 when ffmpeg is on PATH, else PNG frames")
    parser.add_argument("--fps", type=float, help="frame rate (default: the latents' ultragen.latents.fps, else 15)")
    parser.add_argument("--crf", type=int, default=18, help="libx264 constant rate factor, 0–51 (default 18)")
    parser.add_argument("--tile", type=int, nargs=2, metavar=("H", "W"), default=list(wan_vae.DEFAULT_TILE),
                        help="tile size in latent rows and columns (default 30 52)")
    parser.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), default=list(wan_vae.DEFAULT_STRIDE),
                        help="tile stride in latent rows and columns (default 15 26)")
    parser.add_argument("--no-tiling", action="store_true", help="decode each frame whole (more memory)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=["bf16", "f32"],
                        help="decoder precision (default: bf16 on cuda, f32 on cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def read_latents(path):
    """The latent tensor (16, T, h, w) float32 and the file's metadata, checked against contract 3."""
    if not os.path.isfile(path):
        raise InputError(f"latents file not found: {path}")
    try:
        with safetensors_io.SafetensorsFile(path) as file:
            if LATENTS_TENSOR not in file:
                found = ", ".join(repr(k) for k in file.keys()) or "none"
                raise InputError(f"{path}: no tensor {LATENTS_TENSOR!r} (found: {found})")
            shape, dtype = file.shape(LATENTS_TENSOR), file.dtype(LATENTS_TENSOR)
            if len(shape) != 4:
                raise InputError(f"{path}: tensor {LATENTS_TENSOR!r} has shape {list(shape)}, expected 4 dimensions "
                                 f"[16, T, H/8, W/8]")
            if shape[0] != 16:
                raise InputError(f"{path}: tensor {LATENTS_TENSOR!r} has {shape[0]} channels (shape {list(shape)}), "
                                 f"expected 16")
            if min(shape) < 1:
                raise InputError(f"{path}: tensor {LATENTS_TENSOR!r} is empty (shape {list(shape)})")
            if not torch.empty((), dtype=dtype).is_floating_point():
                raise InputError(f"{path}: tensor {LATENTS_TENSOR!r} has dtype {dtype}, expected float32")
            latents = file.get(LATENTS_TENSOR).float()
            metadata = dict(file.metadata)
    except safetensors_io.SafetensorsError as error:
        raise InputError(str(error)) from None
    if not torch.isfinite(latents).all():
        raise InputError(f"{path}: tensor {LATENTS_TENSOR!r} holds NaN or infinite values")
    _, t, h, w = latents.shape
    fmt = metadata.get("ultragen.latents.format")
    if fmt is not None and fmt != LATENTS_FORMAT:
        raise InputError(f"{path}: metadata ultragen.latents.format is {fmt!r}, expected {LATENTS_FORMAT!r}")
    for key, expected in (("frames", wan_vae.pixel_frames(t)), ("height", 8 * h), ("width", 8 * w)):
        text = metadata.get(f"ultragen.latents.{key}")
        if text is None:
            continue
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{path}: metadata ultragen.latents.{key} is {text!r}, not an integer") from None
        if value != expected:
            raise InputError(f"{path}: metadata ultragen.latents.{key} = {value} does not match the tensor "
                             f"{list(latents.shape)} (expected {expected})")
    return latents, metadata


def metadata_fps(path, metadata):
    text = metadata.get("ultragen.latents.fps")
    if text is None:
        return DEFAULT_FPS
    try:
        fps = float(text)
    except ValueError:
        fps = float("nan")
    if not fps > 0 or fps == float("inf"):
        raise InputError(f"{path}: metadata ultragen.latents.fps is {text!r}, expected a positive number")
    return fps


def choose_output(args, log):
    """(format, path): the container actually written and where."""
    stem = args.latents[:-len(".safetensors")] if args.latents.endswith(".safetensors") else args.latents
    ffmpeg = video_out.find_ffmpeg()
    fmt = args.format
    if fmt == "mp4" and ffmpeg is None:
        raise InputError("--format mp4 needs ffmpeg on PATH (install it, e.g. apt-get install ffmpeg), "
                         "or use --format png")
    if fmt == "auto":
        fmt = "mp4" if ffmpeg else "png"
    if fmt == "mp4":
        return fmt, args.output or stem + ".mp4"
    if args.output is None:
        path = stem + "_frames"
    elif args.format == "auto" and args.output.endswith(".mp4"):
        path = args.output[:-len(".mp4")] + "_frames"
    else:
        path = args.output.rstrip("/\\") or args.output
    if args.format == "auto":
        log(f"ffmpeg not found on PATH: writing PNG frames to {path}/ instead of an MP4 (install ffmpeg for MP4)")
    return fmt, path


def run(args, log) -> int:
    for name, pair in (("--tile", args.tile), ("--stride", args.stride)):
        if min(pair) < 1:
            raise InputError(f"{name} {pair[0]} {pair[1]}: both must be positive")
    if args.stride[0] > args.tile[0] or args.stride[1] > args.tile[1]:
        raise InputError(f"--stride {args.stride[0]} {args.stride[1]} must not exceed --tile {args.tile[0]} "
                         f"{args.tile[1]} (tiles would leave gaps)")
    if not 0 <= args.crf <= 51:
        raise InputError(f"--crf {args.crf}: expected 0..51")
    if args.fps is not None and not (0 < args.fps < float("inf")):
        raise InputError(f"--fps {args.fps}: expected a positive number")

    latents, metadata = read_latents(args.latents)
    fps = args.fps if args.fps is not None else metadata_fps(args.latents, metadata)
    fmt, output = choose_output(args, log)
    if os.path.isdir(output) and fmt == "mp4":
        raise InputError(f"output {output} is a folder; an MP4 needs a file name")
    if os.path.exists(output) and not os.path.isdir(output) and fmt == "png":
        raise InputError(f"output {output} is a file; PNG frames need a folder")

    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: this torch sees no CUDA device")
    device = torch.device(device_name)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype or ("bf16" if device_name == "cuda" else "f32")]

    try:
        model = wan_vae.build_decoder(wan_vae.load_state_dict_file(args.vae))
    except (FileNotFoundError, wan_vae.WeightsError, safetensors_io.SafetensorsError) as error:
        raise InputError(f"--vae: {error}") from None
    if model.config != wan_vae.DecoderConfig.wan21():
        log(f"note: {args.vae} is not the Wan2.1 VAE layout ({model.config})")
    if model.config.z_dim != latents.shape[0]:
        raise InputError(f"--vae {args.vae} has z_dim {model.config.z_dim}, the latents have {latents.shape[0]} "
                         f"channels")
    model = model.to(device=device, dtype=dtype)

    _, t, h, w = latents.shape
    frames = wan_vae.pixel_frames(t)
    tile = None if args.no_tiling else tuple(args.tile)
    tiles = 1 if tile is None else len(wan_vae.tile_plan(h, w, tile, tuple(args.stride)))
    log(f"decoding {args.latents}: latents {list(latents.shape)} → {frames} frames of {8 * w}x{8 * h}, "
        f"{'untiled' if tile is None else f'{tiles} tiles of {tile[0]}x{tile[1]} latents'}, {device_name} "
        f"{'bf16' if dtype == torch.bfloat16 else 'f32'}")
    started = time.time()

    def progress(done, total):
        if done and not args.quiet:
            log(f"  tile {done}/{total}  {time.time() - started:.1f} s")

    video = wan_vae.decode_video(model, latents, tile=tile, stride=tuple(args.stride), device=device, dtype=dtype,
                                 progress=progress)
    # One frame at a time to uint8: the float video (2 GiB at 1088×1920×81) is the only full-size buffer.
    frame_iter = (wan_vae.to_uint8_frames(video[:, i:i + 1])[0].numpy() for i in range(video.shape[1]))
    if fmt == "mp4":
        try:
            count = video_out.write_mp4(output, frame_iter, fps=fps, crf=args.crf)
        except RuntimeError as error:
            log(f"error: {error}")
            return 1
    else:
        count = video_out.write_png_frames(output, frame_iter)
    log(f"wrote {output}: {count} frames {8 * w}x{8 * h}" + (f" at {fps:g} fps" if fmt == "mp4" else " (PNG)")
        + f" in {time.time() - started:.1f} s")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    try:
        return run(args, log)
    except InputError as error:
        log(f"decode_latents.py: error: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
