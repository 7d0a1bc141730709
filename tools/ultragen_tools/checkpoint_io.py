"""Reading DiT checkpoints in the forms they are published in, and writing a converted one tensor by tensor.

Sources (`open_source`), told apart by their first bytes, not their extension:
  - a safetensors file (Wan2.1's `diffusion_pytorch_model.safetensors`, F32 or BF16, or this project's own output),
  - a sharded safetensors set, through its `*.safetensors.index.json` (`{"weight_map": {name: shard file}}`),
  - a torch pickle (`.ckpt`/`.pt`/`.pth`, zip or legacy format; the official UltraGen checkpoint is one), holding a
    state dict, possibly wrapped as {"state_dict": ...}, {"module": ...}, {"model": ...}, {"dit": ...}.
Names are normalised to Wan's: a prefix before `patch_embedding.weight` (e.g. "module.", "dit.", "model.",
"model.diffusion_model.") is stripped from every name that carries it, and diffusers names
(`condition_embedder.*`, `blocks.{i}.attn1.to_q`, `scale_shift_table`, `proj_out`, ...) are renamed to Wan's. Every such
step is recorded in `Source.notes`, so the converter can say what it did.

`write_safetensors` writes a file whose header is known before any data is produced, so a 1.7B-parameter checkpoint
is converted with one tensor in memory at a time (plus the source, for a pickle).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import sys
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from . import safetensors_io

WRAPPER_KEYS = ("state_dict", "module", "model", "dit", "net")
ANCHOR = "patch_embedding.weight"          # same name in Wan's and diffusers' naming
_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.safetensors$")


class SourceError(ValueError):
    """A checkpoint that cannot be read, with the path and the reason."""


# ---------------------------------------------------------------------------------------------------- diffusers names

_DIFFUSERS_TOP = [
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("proj_out.", "head.head."),
]
_DIFFUSERS_BLOCK = [
    ("attn1.to_out.0.", "self_attn.o."),
    ("attn2.to_out.0.", "cross_attn.o."),
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
    ("norm2.", "norm3."),          # diffusers' norm2 is the affine LayerNorm before cross-attention, Wan's norm3
]
for _attn, _module in (("attn1", "self_attn"), ("attn2", "cross_attn")):
    for _projection in ("q", "k", "v"):
        _DIFFUSERS_BLOCK.append((f"{_attn}.to_{_projection}.", f"{_module}.{_projection}."))
    for _norm in ("norm_q", "norm_k"):
        _DIFFUSERS_BLOCK.append((f"{_attn}.{_norm}.", f"{_module}.{_norm}."))


def looks_like_diffusers(names: Iterable[str]) -> bool:
    for name in names:
        if name.startswith("condition_embedder.") or name == "scale_shift_table" or name.startswith("proj_out."):
            return True
        if re.match(r"^blocks\.\d+\.(attn1|attn2|ffn\.net)\.", name):
            return True
    return False


def diffusers_to_wan(name: str) -> str:
    """Wan's name for a diffusers WanTransformer3DModel name; names without a rule are returned unchanged."""
    if name == "scale_shift_table":
        return "head.modulation"
    for old, new in _DIFFUSERS_TOP:
        if name.startswith(old):
            return new + name[len(old):]
    match = re.match(r"^(blocks\.\d+\.)(.*)$", name)
    if match:
        prefix, rest = match.groups()
        if rest == "scale_shift_table":
            return prefix + "modulation"
        for old, new in _DIFFUSERS_BLOCK:
            if rest.startswith(old):
                return prefix + new + rest[len(old):]
    return name


# ---------------------------------------------------------------------------------------------------- sources

class Source:
    """A checkpoint's tensors under Wan names: `names`, `shape(name)`, `dtype_name(name)` (safetensors names: F32,
    BF16, ...; others as torch writes them), `get(name)`; `notes` says what was done to read it; `metadata` is a
    safetensors file's `__metadata__` (empty for a pickle)."""

    def __init__(self, path: str, kind: str, raw_shapes: Dict[str, Tuple[int, ...]], raw_dtypes: Dict[str, str],
                 read: Callable[[str], torch.Tensor], metadata: Mapping[str, str], notes: List[str],
                 closers: Sequence[Callable[[], None]] = (), prefix: Optional[str] = None):
        self.path = path
        self.kind = kind
        self.metadata = dict(metadata)
        self.notes = list(notes)
        self.naming = "Wan"
        self._read = read
        self._closers = list(closers)
        self._raw_by_name: Dict[str, str] = {}
        names = list(raw_shapes)
        renamed = _strip_prefix(names, prefix, self.notes, path)
        if looks_like_diffusers(renamed.values()):
            self.naming = "diffusers"
            renamed = {raw: diffusers_to_wan(name) for raw, name in renamed.items()}
            self.notes.append("diffusers naming detected: names renamed to Wan's (attn1 -> self_attn, attn2 -> "
                              "cross_attn, norm2 -> norm3, ffn.net.0.proj -> ffn.0, scale_shift_table -> modulation, "
                              "condition_embedder.* -> *_embedding/time_projection, proj_out -> head.head)")
        clashes: Dict[str, List[str]] = {}
        for raw, name in renamed.items():
            clashes.setdefault(name, []).append(raw)
        clashing = {name: raws for name, raws in clashes.items() if len(raws) > 1}
        if clashing:
            listed = "; ".join(f"{name} <- {', '.join(raws)}" for name, raws in sorted(clashing.items()))
            raise SourceError(f"{path}: several tensors map to the same name: {listed}")
        for raw, name in renamed.items():
            self._raw_by_name[name] = raw
        self.shapes = {name: raw_shapes[raw] for name, raw in self._raw_by_name.items()}
        self.dtypes = {name: raw_dtypes[raw] for name, raw in self._raw_by_name.items()}

    @property
    def names(self) -> List[str]:
        return list(self._raw_by_name)

    def raw_name(self, name: str) -> str:
        return self._raw_by_name[name]

    def get(self, name: str) -> torch.Tensor:
        return self._read(self._raw_by_name[name])

    def drop(self, name: str) -> None:
        """Forgets `name` (a non-parameter, or a tensor already written, so a pickle's memory can be released)."""
        self._raw_by_name.pop(name, None)
        self.shapes.pop(name, None)
        self.dtypes.pop(name, None)

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers = []

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _strip_prefix(names: List[str], prefix: Optional[str], notes: List[str], path: str) -> Dict[str, str]:
    """raw name -> name without the checkpoint's prefix. With `prefix` given, only names under it are kept."""
    if prefix is not None:
        kept = [n for n in names if n.startswith(prefix)]
        if not kept:
            raise SourceError(f"{path}: no tensor name starts with the prefix '{prefix}' "
                              f"(first names: {', '.join(names[:5])})")
        notes.append(f"prefix '{prefix}' (given): stripped from {len(kept)} names; {len(names) - len(kept)} other "
                     f"tensors ignored")
        return {n: n[len(prefix):] for n in kept}
    if ANCHOR in names or not names:
        return {n: n for n in names}
    prefixes = sorted({n[:-len(ANCHOR)] for n in names if n.endswith("." + ANCHOR)})
    if len(prefixes) > 1:
        raise SourceError(f"{path}: several DiT copies in one file (prefixes {', '.join(repr(p) for p in prefixes)}); "
                          f"choose one with --prefix")
    if not prefixes:
        return {n: n for n in names}
    found = prefixes[0]
    under = sum(1 for n in names if n.startswith(found))
    notes.append(f"prefix '{found}' stripped from {under} names" +
                 (f" ({len(names) - under} names without it kept as they are)" if under < len(names) else ""))
    return {n: (n[len(found):] if n.startswith(found) else n) for n in names}


def sniff(path: str) -> str:
    """'safetensors', 'index', 'zip-pickle' or 'pickle', from the file's first bytes."""
    with open(path, "rb") as stream:
        head = stream.read(16)
    if head[:4] == b"PK\x03\x04":
        return "zip-pickle"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head.lstrip()[:1] == b"{":
        return "index"
    raise SourceError(f"{path}: not a safetensors file, a safetensors index (.json) or a torch pickle "
                      f"(first bytes {head[:8]!r})")


def open_source(path: str, prefix: Optional[str] = None) -> Source:
    """Opens a checkpoint; SourceError (message with the path and the reason) when it cannot be read."""
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SourceError(f"{path}: is a directory; give the .safetensors file, its .index.json, or the .ckpt/.pt")
    kind = sniff(path)
    if kind == "safetensors":
        return _open_safetensors(path, prefix)
    if kind == "index":
        return _open_index(path, prefix)
    return _open_pickle(path, prefix)


def _open_safetensors(path: str, prefix: Optional[str]) -> Source:
    try:
        file = safetensors_io.SafetensorsFile(path)
    except safetensors_io.SafetensorsError as error:
        hint = ""
        match = _SHARD_NAME.search(path)
        if match:
            hint = f" (this looks like shard {int(match.group(1))} of {int(match.group(2))}: pass the .index.json)"
        raise SourceError(f"{error}{hint}") from None
    shapes = {name: file.shape(name) for name in file.keys()}
    dtypes = {name: safetensors_io.NAME_BY_DTYPE[file.dtype(name)] for name in file.keys()}
    notes = []
    match = _SHARD_NAME.search(path)
    if match and int(match.group(2)) > 1:
        notes.append(f"this file looks like shard {int(match.group(1))} of {int(match.group(2))}; "
                     f"convert the whole set through its .index.json")
    return Source(path, "safetensors", shapes, dtypes, file.get, file.metadata, notes, [file.close], prefix)


def _open_index(path: str, prefix: Optional[str]) -> Source:
    try:
        with open(path, "r", encoding="utf-8") as stream:
            index = json.load(stream)
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to shard file names")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise SourceError(f"{path}: not a safetensors index ({type(error).__name__}: {error})") from None
    directory = os.path.dirname(os.path.abspath(path))
    files: Dict[str, safetensors_io.SafetensorsFile] = {}
    try:
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(directory, shard)
            if not os.path.exists(shard_path):
                wanted = sorted(n for n, s in weight_map.items() if s == shard)
                raise SourceError(f"{path}: shard {shard} (holding {len(wanted)} tensors, e.g. '{wanted[0]}') "
                                  f"is not in {directory}")
            try:
                files[shard] = safetensors_io.SafetensorsFile(shard_path)
            except safetensors_io.SafetensorsError as error:
                raise SourceError(str(error)) from None
        shapes: Dict[str, Tuple[int, ...]] = {}
        dtypes: Dict[str, str] = {}
        owner: Dict[str, safetensors_io.SafetensorsFile] = {}
        problems = []
        for name, shard in weight_map.items():
            file = files[shard]
            if name not in file:
                problems.append(f"'{name}': the index puts it in {shard}, which does not hold it")
                continue
            shapes[name] = file.shape(name)
            dtypes[name] = safetensors_io.NAME_BY_DTYPE[file.dtype(name)]
            owner[name] = file
        for shard, file in files.items():
            stray = [n for n in file.keys() if weight_map.get(n) != shard]
            problems.extend(f"'{n}': in {shard} but the index does not list it there" for n in stray)
        if problems:
            raise SourceError(f"{path}: the index and its shards disagree: " + "; ".join(problems))
    except BaseException:
        for file in files.values():
            file.close()
        raise
    metadata = dict(next(iter(files.values())).metadata) if files else {}
    notes = [f"sharded set: {len(files)} shards listed by {os.path.basename(path)}"]
    return Source(path, "sharded safetensors", shapes, dtypes, lambda name: owner[name].get(name), metadata, notes,
                  [file.close for file in files.values()], prefix)


def _torch_load(path: str, notes: List[str]):
    parameters = inspect.signature(torch.load).parameters
    kwargs = {"map_location": "cpu"}
    if "mmap" in parameters:
        kwargs["mmap"] = True  # recent torch: tensors stay in the file until read (zip format only)
    if "weights_only" in parameters:
        kwargs["weights_only"] = True
    while True:
        try:
            return torch.load(path, **kwargs)
        except (RuntimeError, ValueError) as error:
            if kwargs.get("mmap") and "mmap" in str(error):
                kwargs.pop("mmap")  # a legacy (non-zip) pickle cannot be memory-mapped
                continue
            raise SourceError(f"{path}: cannot read the torch checkpoint ({type(error).__name__}: "
                              f"{_first_line(error)}); is the file complete?") from None
        except pickle.UnpicklingError as error:
            text = str(error).lower()
            reason = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            # Only a refused class/global ("Unsupported class argparse.Namespace", "Unsupported global: ...") is worth
            # a full unpickle; a damaged file fails the weights-only loader in other words ("unexpected EOF", ...).
            if kwargs.get("weights_only") and "weights only" in text and "unsupported" in reason.lower():
                print(f"warning: {path}: the weights-only loader refused the file ({reason}); loading it as a full "
                      f"pickle, which can run code stored in the file: convert only checkpoints from a source you "
                      f"trust", file=sys.stderr)
                notes.append(f"loaded with weights_only=False (the weights-only loader refused the file: {reason})")
                kwargs["weights_only"] = False
                continue
            raise SourceError(f"{path}: cannot unpickle ({reason}); is the file complete?") from None
        except (EOFError, OSError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise SourceError(f"{path}: cannot read the torch checkpoint ({type(error).__name__}: "
                              f"{_first_line(error)}); is the file complete?") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unwrap(obj, path: str, notes: List[str]) -> Mapping:
    trail = "checkpoint"
    ignored_entries: List[str] = []
    while True:
        if not isinstance(obj, Mapping):
            raise SourceError(f"{path}: {trail} is a {type(obj).__name__}, not a state dict")
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            if trail != "checkpoint":
                notes.append(f"state dict taken from {trail}" +
                             (f"; other entries ignored: {', '.join(ignored_entries[:10])}"
                              f"{' ...' if len(ignored_entries) > 10 else ''}" if ignored_entries else ""))
            return obj
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            keys = ", ".join(repr(k) for k in list(obj)[:10]) or "none"
            raise SourceError(f"{path}: no state dict found in {trail} (keys: {keys}; expected tensors or one of "
                              f"{', '.join(WRAPPER_KEYS)})")
        ignored_entries += [str(k) for k in obj if k != wrapper]
        trail += f"['{wrapper}']"
        obj = obj[wrapper]


def _open_pickle(path: str, prefix: Optional[str]) -> Source:
    notes: List[str] = []
    state = _unwrap(_torch_load(path, notes), path, notes)
    shapes: Dict[str, Tuple[int, ...]] = {}
    dtypes: Dict[str, str] = {}
    tensors: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = str(key)
        if isinstance(value, torch.Tensor):
            tensors[name] = value
            shapes[name] = tuple(value.shape)
            dtypes[name] = safetensors_io.NAME_BY_DTYPE.get(value.dtype, str(value.dtype).replace("torch.", ""))
        else:
            # Reported by the converter as unexpected (a state dict holds only tensors).
            shapes[name] = ()
            dtypes[name] = f"<{type(value).__name__}, not a tensor>"

    def read(name: str) -> torch.Tensor:
        if name not in tensors:
            raise SourceError(f"{path}: '{name}' is not a tensor")
        return tensors.pop(name)  # each tensor is read once; popping lets a converted one be freed

    return Source(path, "torch pickle", shapes, dtypes, read, {}, notes, [tensors.clear], prefix)


# ---------------------------------------------------------------------------------------------------- writing

def write_safetensors(path: str, entries: Sequence[Tuple[str, torch.dtype, Tuple[int, ...], Callable[[], torch.Tensor]]],
                      metadata: Mapping[str, str], progress: Optional[Callable[[int, str], None]] = None) -> int:
    """Writes `entries` (name, dtype, shape, producer) one tensor at a time (safetensors_io.save_streaming). Returns
    the file size."""
    return safetensors_io.save_streaming(path, entries, metadata, progress)
