"""Writes decoded frames: PNG files (zlib and numpy only) or an H.264 MP4 through the `ffmpeg` executable.

Both writers are atomic: the output appears under its final name only once it is complete (a temporary file or
folder beside it, then a rename).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from typing import Iterable, Optional

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(frame: np.ndarray, level: int = 6) -> bytes:
    """An (H, W, 3) uint8 RGB frame as PNG bytes: 8-bit truecolour, no interlace, every row with the 'Up' filter
    (each byte minus the byte above it, mod 256; the row above the first is zeros)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    height, width, _ = frame.shape
    rows = np.ascontiguousarray(frame).reshape(height, width * 3)
    above = np.zeros_like(rows)
    above[1:] = rows[:-1]
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type Up
    filtered[:, 1:] = rows - above  # uint8 arithmetic wraps mod 256
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level))
            + _chunk(b"IEND", b""))


def _temporary_beside(path: str, suffix: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{suffix}")


def write_png_frames(folder: str, frames: Iterable[np.ndarray], pattern: str = "frame_{:05d}.png") -> int:
    """Writes frames as folder/frame_00000.png, … and returns their count. The folder is built beside its final
    place and renamed into it; an existing folder of that name is replaced, an existing file is an error."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FileExistsError(f"{folder} exists and is not a folder")
    staging = _temporary_beside(folder, "tmp")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        count = 0
        for frame in frames:
            with open(os.path.join(staging, pattern.format(count)), "wb") as stream:
                stream.write(encode_png(frame))
            count += 1
        old = None
        if os.path.isdir(folder):
            old = _temporary_beside(folder, "old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(folder, old)
        os.rename(staging, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return count
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def find_ffmpeg() -> Optional[str]:
    return shutil.which("ffmpeg")


def write_mp4(path: str, frames: Iterable[np.ndarray], fps: float, crf: int = 18, ffmpeg: Optional[str] = None) -> int:
    """Pipes (H, W, 3) uint8 frames as raw RGB into ffmpeg: libx264, yuv420p, constant rate factor `crf`. Returns the
    frame count. Raises RuntimeError with ffmpeg's message when it fails."""
    ffmpeg = ffmpeg or find_ffmpeg()
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not on PATH")
    if os.path.isdir(path):
        raise FileExistsError(f"{path} is a folder")
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no frames to write")
    height, width, _ = first.shape
    staging = _temporary_beside(path, "tmp")
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "pipe:0",
               "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(int(crf)), "-movflags", "+faststart",
               "-f", "mp4", staging]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        count = 0
        try:
            try:
                process.stdin.write(np.ascontiguousarray(first).tobytes())
                count = 1
                for frame in iterator:
                    if frame.shape != first.shape:
                        raise ValueError(f"frame {count} has shape {frame.shape}, the first had {first.shape}")
                    process.stdin.write(np.ascontiguousarray(frame).tobytes())
                    count += 1
            except BrokenPipeError:
                pass  # ffmpeg quit; its exit status and message follow
            finally:
                process.stdin.close()
            code = process.wait()
            if code != 0:
                log.seek(0)
                message = log.read().decode("utf-8", "replace").strip().splitlines()
                raise RuntimeError(f"ffmpeg failed (exit {code}): {' | '.join(message[-5:]) or 'no message'}")
            os.replace(staging, path)
            return count
        except BaseException:
            if process.poll() is None:
                process.kill()
                process.wait()
            if os.path.exists(staging):
                os.remove(staging)
            raise
