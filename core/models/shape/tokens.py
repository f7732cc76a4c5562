"""Prompt -> CLIP text tokens ``int64 [1, 77]`` ([SOT, tokens..., EOT, 0...]), with checks.

Pretrained weights use CLIP's BPE tokenizer (transformers ``CLIPTokenizer`` over the
``vocab.json`` / ``merges.txt`` of ``openai/clip-vit-large-patch14``: the same tokens as the
``clip`` package). Random weights (whose text embedding means nothing) use a character-level
tokenization inside CLIP's vocabulary, so no tokenizer files are needed: the prompt is
lower-cased and whitespace-collapsed, and every UTF-8 byte becomes CLIP's byte token (ids
0..255, or 256..511 for the last byte of a word, CLIP's end-of-word form).

Length: CLIP reads 77 positions, i.e. at most 75 tokens between the start and end tokens.
The reference truncates longer prompts silently (``clip.tokenize(..., truncate=True)``); we
refuse them instead, saying how many tokens the prompt has, so that what conditions the
model is exactly what the user typed.
"""
from __future__ import annotations

import re
from functools import lru_cache

import torch

from core.errors import UserError
from core.models.pointe.clip_conditioning import CONTEXT_LENGTH, EOT_TOKEN, SOT_TOKEN

MAX_PROMPT_TOKENS = CONTEXT_LENGTH - 2


class PromptError(UserError):
    """An empty or over-long prompt."""


@lru_cache(maxsize=1)
def byte_token_ids() -> dict[int, int]:
    """Byte value -> CLIP vocabulary id of its single-byte token (the byte-to-unicode order of
    byte-level BPE: printable bytes '!'..'~', '¡'..'¬', '®'..'ÿ' first, then the others)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    order = printable + [b for b in range(256) if b not in printable]
    return {b: i for i, b in enumerate(order)}


def character_tokens(prompt: str) -> list[int]:
    """Character-level CLIP token ids of ``prompt`` (without SOT/EOT); see the module docstring."""
    ids = byte_token_ids()
    out: list[int] = []
    for word in re.sub(r"\s+", " ", prompt.strip().lower()).split(" "):
        data = word.encode("utf-8")
        for i, byte in enumerate(data):
            out.append(ids[byte] + (256 if i == len(data) - 1 else 0))
    return out


def tokenize(prompt: str, tokenizer=None) -> torch.Tensor:
    """``int64 [1, 77]`` tokens of ``prompt`` (BPE with ``tokenizer``, characters without).

    Raises :class:`PromptError` for an empty prompt or one over 75 tokens (with the count).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("the prompt is empty: type what to generate, e.g. 'a plush toy rabbit'")
    if tokenizer is not None:
        ids = tokenizer(prompt.strip(), add_special_tokens=False)["input_ids"]
    else:
        ids = character_tokens(prompt)
    if len(ids) > MAX_PROMPT_TOKENS:
        kind = "BPE" if tokenizer is not None else "character"
        raise PromptError(f"the prompt is {len(ids)} {kind} tokens; CLIP reads at most "
                          f"{MAX_PROMPT_TOKENS} (77 with its start and end tokens). The reference "
                          "would cut it silently after the 75th; shorten it instead")
    tokens = torch.zeros(1, CONTEXT_LENGTH, dtype=torch.long)
    row = [SOT_TOKEN] + list(ids) + [EOT_TOKEN]
    tokens[0, :len(row)] = torch.tensor(row)
    return tokens
