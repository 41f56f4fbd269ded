"""Log-likelihood scoring of the local tasks, the way lm-evaluation-harness scores HellaSwag, ARC and LAMBADA.

For a (context, continuation) pair: the continuation's tokens are ``encode(context + continuation)``
after the tokens of ``encode(context)`` (trailing spaces of the context move to the continuation);
the model reads ``(context + continuation)[-(max_len + 1):][:-1]`` — the context truncated on the left
to the model's window — and the pair's score is the sum of the continuation tokens' log-probabilities;
it is *greedy* when every continuation token is the argmax at its position.

- cloze (LAMBADA): continuation ``" " + target``; ``acc`` = share of greedy targets, ``target_logprob``
  = mean summed log-probability (nats), ``perplexity`` = exp(−mean log-probability).
- multiple choice (HellaSwag/ARC): continuation ``" " + choice`` for each choice; ``acc`` = argmax of
  the sums, ``acc_norm`` = argmax of the sums divided by the choice's length in characters.

Only the continuation positions go through the LM head (hidden states are gathered first), so a
100k-token vocabulary costs no more memory than the positions scored.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import TASKS, load_items


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), as lm-evaluation-harness splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def loglikelihoods(model, requests: list[tuple[list[int], list[int]]], max_len: int, batch_size: int = 32,
                   device: torch.device | str = "cpu") -> list[tuple[float, bool]]:
    """(Σ log p(continuation | context), greedy?) per request; longest first in batches, results in order."""
    head = model.lm_head.weight  # (V, d)
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    out: list[tuple[float, bool] | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        rows = [(requests[i][0] + requests[i][1])[-(max_len + 1):][:-1] for i in idx]
        conts = [requests[i][1] for i in idx]
        width = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)  # right padding: causal, so never read
        for j, r in enumerate(rows):
            tokens[j, :len(r)] = torch.tensor(r)
        hidden = model(tokens.to(device), return_hidden=True)  # (b, width, d)
        # the positions that predict each continuation token: the last len(cont) positions of the row
        row_of = torch.tensor([j for j, c in enumerate(conts) for _ in c])
        pos_of = torch.tensor([len(rows[j]) - len(c) + k for j, c in enumerate(conts) for k in range(len(c))])
        target = torch.tensor([t for c in conts for t in c], device=head.device)
        logp = F.log_softmax((hidden[row_of, pos_of] @ head.T).float(), dim=-1)  # (n, V)
        token_lp = logp.gather(1, target[:, None])[:, 0]  # (n,)
        greedy = logp.argmax(-1) == target  # (n,)
        k = 0
        for j, i in enumerate(idx):
            n = len(conts[j])
            out[i] = (float(token_lp[k:k + n].double().sum()), bool(greedy[k:k + n].all()))
            k += n
    return out


def _stderr(values: list[float]) -> float | None:
    """Standard error of the mean (sample sd / √n), as lm-evaluation-harness reports it."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def score_cloze(model, tokenizer, items: list[dict], max_len: int, batch_size: int = 32, device="cpu") -> dict:
    requests = [encode_pair(tokenizer, it["context"], " " + it["target"]) for it in items]
    results = loglikelihoods(model, requests, max_len, batch_size, device)
    logps = [lp for lp, _ in results]
    hits = [float(g) for _, g in results]
    mean_lp = sum(logps) / len(logps)
    return {"items": len(items), "acc": sum(hits) / len(hits), "acc_stderr": _stderr(hits),
            "target_logprob": mean_lp, "perplexity": math.exp(-mean_lp)}


def score_choice(model, tokenizer, items: list[dict], max_len: int, batch_size: int = 32, device="cpu") -> dict:
    requests = [encode_pair(tokenizer, it["context"], " " + c) for it in items for c in it["choices"]]
    results = loglikelihoods(model, requests, max_len, batch_size, device)
    acc, acc_norm, k = [], [], 0
    for it in items:
        lls = [lp for lp, _ in results[k:k + len(it["choices"])]]
        k += len(it["choices"])
        norm = [ll / len(c) for ll, c in zip(lls, it["choices"])]
        acc.append(float(lls.index(max(lls)) == it["label"]))
        acc_norm.append(float(norm.index(max(norm)) == it["label"]))
    return {"items": len(items), "acc": sum(acc) / len(acc), "acc_stderr": _stderr(acc),
            "acc_norm": sum(acc_norm) / len(acc_norm), "acc_norm_stderr": _stderr(acc_norm)}


def score_task(name: str, model, tokenizer, max_len: int, limit: int | None = None, batch_size: int = 32,
               device="cpu") -> dict:
    """One task's scores (see the module docstring) on its first ``limit`` items (all by default)."""
    task = TASKS[name]
    items = load_items(name, limit)
    scorer = score_cloze if task.kind == "cloze" else score_choice
    return {**scorer(model, tokenizer, items, max_len, batch_size, device), "chance": task.chance}
