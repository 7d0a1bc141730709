"""Reads and writes the safetensors format with torch alone.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON header mapping
each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the header) plus
an optional "__metadata__" map of strings, then the raw little-endian tensor bytes. The `safetensors` package is not
needed (Debian does not ship it); the files written here load in it and in this project's C# reader alike.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch

DTYPE_BY_NAME: Dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAME_BY_DTYPE: Dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPE_BY_NAME.items()}

# A header larger than this is not a safetensors file we want to parse (the reference implementation uses 100 MB).
MAX_HEADER_BYTES = 100_000_000

if sys.byteorder != "little":  # the raw bytes are little-endian; torch's views are native-endian
    raise ImportError("safetensors_io assumes a little-endian machine")


class SafetensorsError(ValueError):
    """A file that is not valid safetensors, with the reason and the file's path."""


def _tensor_bytes(tensor: torch.Tensor):
    """The tensor's raw little-endian bytes as a numpy view (no copy when it is already a contiguous CPU tensor)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8).numpy()


def _byte_size(dtype: torch.dtype, shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * torch.empty((), dtype=dtype).element_size()


Producer = Callable[[], torch.Tensor]


def save_streaming(path: str, entries: Sequence[Tuple[str, torch.dtype, Sequence[int], Producer]],
                   metadata: Optional[Mapping[str, str]] = None,
                   progress: Optional[Callable[[int, str], None]] = None) -> int:
    """Writes `entries` (name, dtype, shape, producer) in order; each producer is called once, when its tensor is
    written, and must return a tensor of exactly that dtype and shape, so a converter never holds more than one output
    tensor. Atomic: a temporary file beside `path`, renamed at the end, removed on failure. Returns the file size."""
    header: Dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"safetensors metadata must map str to str; offending keys: {bad}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    sizes = []
    for name, dtype, shape, _ in entries:
        if dtype not in NAME_BY_DTYPE:
            raise TypeError(f"tensor {name!r}: dtype {dtype} has no safetensors name")
        size = _byte_size(dtype, shape)
        header[name] = {"dtype": NAME_BY_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
        sizes.append(size)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # keeps the data 8-byte aligned, as the reference writer does

    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(struct.pack("<Q", len(header_bytes)))
            stream.write(header_bytes)
            for index, ((name, dtype, shape, produce), size) in enumerate(zip(entries, sizes)):
                tensor = produce()
                if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                    raise AssertionError(f"{name}: produced {tensor.dtype} {list(tensor.shape)}, "
                                         f"header says {dtype} {list(shape)}")
                if size:
                    raw = _tensor_bytes(tensor)
                    assert raw.nbytes == size, name
                    stream.write(memoryview(raw))
                if progress is not None:
                    progress(index, name)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return 8 + len(header_bytes) + offset


def save(tensors: Mapping[str, torch.Tensor], path: str, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes `tensors` (in the given order) to `path` atomically: a temporary file beside it, then a rename."""
    save_streaming(path, [(name, tensor.dtype, tuple(tensor.shape), (lambda t=tensor: t)) for name, tensor in tensors.items()],
                   metadata)


class SafetensorsFile:
    """A safetensors file opened for reading; tensors are read one at a time (a 5.7 GB checkpoint never sits in
    memory twice)."""

    def __init__(self, path: str):
        self.path = path
        self._stream = open(path, "rb")
        try:
            self._entries, self.metadata, self._data_start = self._read_header()
        except BaseException:
            self._stream.close()
            raise

    def _fail(self, reason: str) -> SafetensorsError:
        return SafetensorsError(f"{self.path}: not a valid safetensors file: {reason}")

    def _read_header(self):
        size = os.fstat(self._stream.fileno()).st_size
        prefix = self._stream.read(8)
        if len(prefix) < 8:
            raise self._fail(f"{size} bytes, shorter than the 8-byte header length")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > min(MAX_HEADER_BYTES, size - 8):
            raise self._fail(f"header length {header_length} exceeds the file ({size} bytes) or the 100 MB limit")
        try:
            header = json.loads(self._stream.read(header_length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self._fail(f"header is not UTF-8 JSON ({error})") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or any(not isinstance(v, str) for v in metadata.values()):
            raise self._fail("__metadata__ must map strings to strings")
        data_start = 8 + header_length
        data_size = size - data_start
        entries: Dict[str, Tuple[torch.dtype, Tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            try:
                dtype_name, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise self._fail(f"tensor {name!r}: entry must have dtype, shape and data_offsets [begin, end]") from None
            if dtype_name not in DTYPE_BY_NAME:
                raise self._fail(f"tensor {name!r}: unsupported dtype {dtype_name!r}")
            if not isinstance(shape, list) or any(not isinstance(d, int) or d < 0 for d in shape):
                raise self._fail(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
            dtype = DTYPE_BY_NAME[dtype_name]
            count = 1
            for dim in shape:
                count *= dim
            expected = count * torch.empty((), dtype=dtype).element_size()
            if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_size):
                raise self._fail(f"tensor {name!r}: data_offsets [{begin}, {end}] outside the {data_size}-byte data")
            if end - begin != expected:
                raise self._fail(f"tensor {name!r}: {end - begin} bytes for shape {shape} {dtype_name} "
                                 f"(needs {expected})")
            entries[name] = (dtype, tuple(shape), begin, end)
        return entries, metadata, data_start

    def keys(self):
        return list(self._entries.keys())

    def shape(self, name: str) -> Tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return self._entries[name][0]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> torch.Tensor:
        if name not in self._entries:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        dtype, shape, begin, end = self._entries[name]
        if begin == end:
            return torch.empty(shape, dtype=dtype)
        self._stream.seek(self._data_start + begin)
        raw = bytearray(self._stream.read(end - begin))
        if len(raw) != end - begin:
            raise self._fail(f"tensor {name!r}: file ends inside its data")
        flat = torch.frombuffer(raw, dtype=torch.uint8)
        if dtype == torch.bool:
            return flat.to(torch.bool).reshape(shape)
        return flat.view(dtype).reshape(shape).clone()

    def items(self) -> Iterator[Tuple[str, torch.Tensor]]:
        for name in self._entries:
            yield name, self.get(name)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Reads every tensor and the metadata of a safetensors file."""
    with SafetensorsFile(path) as file:
        return dict(file.items()), dict(file.metadata)
