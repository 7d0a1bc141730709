"""Prompt cleaning and tokenisation for the umT5 encoder, as Wan2.1 does it (spec §2.4).

Cleaning (Wan's `HuggingfaceTokenizer(clean='whitespace')`): ftfy.fix_text (when ftfy is installed; a warning
otherwise), html.unescape twice, strip, every whitespace run -> one space, strip.
Tokenising: the Hugging Face `google/umt5-xxl` tokenizer with add_special_tokens=True (appends EOS `</s>`) and
truncation to text_len (512) counting that EOS, so a long prompt keeps its EOS as token 512. Padding is not done here:
the encoder pads and zeroes the rows itself.

Backends: the `tokenizers` package reading `tokenizer.json` (a directory holding it, or the file itself), else
`transformers.AutoTokenizer` (a directory or a hub name). Wan goes through transformers' T5TokenizerFast, which is
built from the same tokenizer.json, so both give the same ids.
"""

from __future__ import annotations

import html
import importlib
import os
import re
import sys
from typing import Callable, List, Optional

_warned_ftfy = False

try:  # Wan uses the `regex` module; stdlib re's \s additionally matches U+001C..U+001F (ftfy removes those anyway)
    import regex as _whitespace_re  # type: ignore
except ImportError:  # pragma: no cover - depends on the machine
    _whitespace_re = re
_WHITESPACE = _whitespace_re.compile(r"\s+")


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded; the message says what is missing."""


def clean_prompt(text: str, warn=sys.stderr) -> str:
    global _warned_ftfy
    try:
        import ftfy  # type: ignore
        text = ftfy.fix_text(text)
    except ImportError:
        if not _warned_ftfy and warn is not None:
            print("warning: ftfy is not installed; prompts are cleaned without ftfy.fix_text (Wan applies it; it only "
                  "matters for mojibake, odd quotes and control characters): pip install ftfy", file=warn)
        _warned_ftfy = True
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


class PromptTokenizer:
    """text -> token ids (EOS included), truncated to text_len."""

    def __init__(self, encode: Callable[[str, int], List[int]], description: str):
        self._encode = encode
        self.description = description

    def __call__(self, text: str, text_len: int = 512) -> List[int]:
        ids = [int(t) for t in self._encode(text, text_len)]
        if not ids:
            raise TokenizerError(f"{self.description}: produced no tokens (no EOS added?) for {text!r}")
        if len(ids) > text_len:
            raise TokenizerError(f"{self.description}: produced {len(ids)} tokens, more than text_len={text_len}")
        return ids


def _from_tokenizer_json(path: str) -> PromptTokenizer:
    import tokenizers  # type: ignore

    try:
        tokenizer = tokenizers.Tokenizer.from_file(path)
    except Exception as error:  # the Rust side raises its own exception type
        raise TokenizerError(f"{path}: cannot read as a tokenizers JSON file: {error}") from None
    tokenizer.no_padding()
    state = {"text_len": None}

    def encode(text: str, text_len: int) -> List[int]:
        if state["text_len"] != text_len:
            # The tokenizers library reserves room for the post-processor's special tokens (the EOS) when truncating.
            tokenizer.enable_truncation(max_length=text_len)
            state["text_len"] = text_len
        return tokenizer.encode(text, add_special_tokens=True).ids

    return PromptTokenizer(encode, f"tokenizers:{path}")


def _from_transformers(source: str) -> PromptTokenizer:
    from transformers import AutoTokenizer  # type: ignore

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:
        raise TokenizerError(f"transformers.AutoTokenizer cannot load {source!r}: {error}") from None

    def encode(text: str, text_len: int) -> List[int]:
        return tokenizer(text, add_special_tokens=True, truncation=True, max_length=text_len)["input_ids"]

    return PromptTokenizer(encode, f"transformers:{source}")


def check_tokenizer_source(source: str) -> Optional[str]:
    """Cheap checks before anything heavy is loaded: None when `source` can be loaded, else the reason."""
    has_tokenizers, has_transformers = _importable("tokenizers"), _importable("transformers")
    if not has_tokenizers and not has_transformers:
        return (f"cannot load the tokenizer {source!r}: neither the 'tokenizers' package (reads tokenizer.json) nor "
                f"'transformers' (AutoTokenizer) is installed (pip install tokenizers)")
    if os.path.isfile(source):
        if not has_tokenizers:
            return f"{source}: reading a tokenizer.json file needs the 'tokenizers' package (pip install tokenizers)"
        return None
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, "tokenizer.json")) and has_tokenizers:
            return None
        if not has_transformers:
            return (f"{source}: has no tokenizer.json for the 'tokenizers' package; loading it otherwise needs "
                    f"'transformers' (pip install transformers)")
        return None
    if source.startswith((".", "/", "~")) or source.endswith(".json") or source.count("/") > 1:
        return f"tokenizer not found: {source}"
    if not has_transformers:  # 'google/umt5-xxl' style: a hub name
        return (f"tokenizer {source!r} is not a local directory or tokenizer.json (not found); loading it by name "
                f"needs 'transformers' (pip install transformers), or pass the directory that holds tokenizer.json")
    return None


def load_tokenizer(source: str) -> PromptTokenizer:
    """A directory with tokenizer.json, a tokenizer.json file, or (with transformers) a hub name / other directory."""
    problem = check_tokenizer_source(source)
    if problem:
        raise TokenizerError(problem)
    if os.path.isfile(source):
        return _from_tokenizer_json(source)
    json_path = os.path.join(source, "tokenizer.json")
    if os.path.isdir(source) and os.path.isfile(json_path) and _importable("tokenizers"):
        return _from_tokenizer_json(json_path)
    return _from_transformers(source)
