"""Text generation from a trained model: greedy or sampled, token by token (so it can stream).

Sampling follows ``transformers.generate`` step for step: temperature, then top-k, then top-p (nucleus,
keeping at least one token) on the last position's logits, then one ``torch.multinomial`` draw from
the softmax; ``temperature=0`` is greedy (argmax). With the same seed the draws are the same as
``transformers``' (its default generator seeded with ``torch.manual_seed(seed)``). Generation stops
after ``max_new_tokens`` or at the end-of-text token (which is kept, as ``transformers`` does).

There is no KV cache: each new token runs the model over the last ``max_seq_len`` tokens. That is
simple and exact; it is fast enough for the model sizes a CPU trains, and quadratic in the output
length for long generations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .errors import UserError


@dataclass
class Sampling:
    """How to pick each next token (defaults: nanoGPT's temperature, transformers' top-k)."""
    max_new_tokens: int = 100
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 50  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0

    def validate(self) -> "Sampling":
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise UserError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1] (1 = off), got {self.top_p}")
        return self


def warp(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """Temperature, top-k and top-p on logits ``(V,)``, as transformers' logits warpers (−inf = removed)."""
    scores = logits.float()
    if s.temperature != 1.0:
        scores = scores / s.temperature
    if s.top_k:
        kth = torch.topk(scores, min(s.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if s.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= (1 - s.top_p)
        drop_sorted[-1] = False  # keep at least the most likely token
        drop = drop_sorted.scatter(0, order, drop_sorted)
        scores = scores.masked_fill(drop, -float("inf"))
    return scores


@torch.no_grad()
def generate_ids(model, prompt_ids: list[int], sampling: Sampling, eos_id: int | None = None) -> Iterator[int]:
    """Yield new token ids one at a time (stops at ``eos_id``, yielded, or after ``max_new_tokens``)."""
    sampling.validate()
    device = model.lm_head.weight.device
    window = model.config.max_seq_len
    gen = torch.Generator(device=device).manual_seed(sampling.seed)
    ids = torch.tensor(prompt_ids, dtype=torch.long, device=device)  # (T,)
    if ids.numel() == 0:
        raise UserError("the prompt is empty after tokenisation")
    for _ in range(sampling.max_new_tokens):
        hidden = model(ids[-window:][None], return_hidden=True)[0, -1]  # (d,): the last position only
        logits = model.lm_head(hidden)  # (V,)
        if sampling.temperature == 0:
            nxt = int(logits.argmax())
        else:
            probs = warp(logits, sampling).softmax(dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        yield nxt
        if nxt == eos_id:
            return
        ids = torch.cat([ids, torch.tensor([nxt], device=device)])


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids; an empty prompt starts a new document (the end-of-text token, as in training)."""
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        if tokenizer.eos_id < 0:
            raise UserError("an empty prompt needs an end-of-text token, and this tokenizer has none")
        ids = [tokenizer.eos_id]
    return ids


def stream_text(model, tokenizer, prompt: str, sampling: Sampling) -> Iterator[str]:
    """Yield the completion as pieces of text, each as soon as it decodes to whole characters (for a terminal)."""
    eos = tokenizer.eos_id if tokenizer.eos_id >= 0 else None
    new: list[int] = []
    shown = ""
    for tok in generate_ids(model, prompt_ids(tokenizer, prompt), sampling, eos):
        if tok == eos:
            break
        new.append(tok)
        text = tokenizer.decode(new)
        if not text.endswith("\ufffd") and text.startswith(shown):  # no multi-byte character left half-done
            yield text[len(shown):]
            shown = text
    text = tokenizer.decode(new)
    if text.startswith(shown) and text != shown:
        yield text[len(shown):]


def complete(model, tokenizer, prompt: str, sampling: Sampling) -> tuple[str, list[int]]:
    """(completion text, its token ids) of ``prompt``; the text leaves out the end-of-text token."""
    eos = tokenizer.eos_id if tokenizer.eos_id >= 0 else None
    ids = list(generate_ids(model, prompt_ids(tokenizer, prompt), sampling, eos))
    return tokenizer.decode([t for t in ids if t != eos]), ids
