"""Text-embedding files (shared file contract 2): what `tools/encode_prompts.py` writes and `ultragen sample
--text-embeddings / --negative-embeddings` reads.

One safetensors file per prompt: tensor `context` [text_len, text_dim] (F32; BF16 accepted by readers), rows at
positions >= the real token count (EOS included) exactly zero, metadata
`ultragen.embeddings.encoder` (e.g. "umt5-xxl"), `ultragen.embeddings.prompt` (the prompt text as given) and
`ultragen.embeddings.tokens` (the real token count, decimal). Other `ultragen.embeddings.*` keys are informational.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch

from . import safetensors_io

TENSOR = "context"
KEY_ENCODER = "ultragen.embeddings.encoder"
KEY_PROMPT = "ultragen.embeddings.prompt"
KEY_TOKENS = "ultragen.embeddings.tokens"


def save(path: str, context: torch.Tensor, prompt: str, tokens: int, encoder: str,
         extra: Optional[Mapping[str, str]] = None, dtype: torch.dtype = torch.float32) -> None:
    """Writes one prompt's embeddings atomically. `context` must already be zero at rows >= tokens."""
    if context.dim() != 2:
        raise ValueError(f"context must be [text_len, text_dim], got {list(context.shape)}")
    if not 1 <= tokens <= context.shape[0]:
        raise ValueError(f"token count {tokens} outside 1..text_len={context.shape[0]}")
    if torch.count_nonzero(context[tokens:]).item() != 0:
        raise ValueError(f"context has nonzero rows at positions >= the token count {tokens}")
    metadata: Dict[str, str] = {KEY_ENCODER: encoder, KEY_PROMPT: prompt, KEY_TOKENS: str(int(tokens))}
    metadata.update(extra or {})
    safetensors_io.save({TENSOR: context.detach().to("cpu", dtype).contiguous()}, path, metadata)


def load(path: str) -> Tuple[torch.Tensor, Dict[str, str]]:
    """Reads a contract-2 file and checks it (2-D F32/BF16 `context`, token count in range, zero rows past it)."""
    tensors, metadata = safetensors_io.load(path)
    if TENSOR not in tensors:
        raise ValueError(f"{path}: no tensor named {TENSOR!r}")
    context = tensors[TENSOR]
    if context.dim() != 2 or context.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"{path}: {TENSOR!r} is {context.dtype} {list(context.shape)}, expected F32/BF16 [text_len, dim]")
    try:
        tokens = int(metadata[KEY_TOKENS])
    except (KeyError, ValueError):
        raise ValueError(f"{path}: metadata {KEY_TOKENS!r} missing or not a decimal integer") from None
    if not 1 <= tokens <= context.shape[0] or torch.count_nonzero(context[tokens:]).item() != 0:
        raise ValueError(f"{path}: {KEY_TOKENS}={tokens} must be in 1..{context.shape[0]} with every row from it on zero")
    return context, metadata
