"""``tst eval``: a loaded model's validation loss and bits per byte on a prepared data directory, and its
scores on the local downstream tasks (``tst_train.tasks``).

Validation is the trainer's own (``evaluate.Validator``): the same windows of ``val.bin``, the same
next-token CE, so a run's ``tst eval`` reproduces the ``val_loss`` it logged for the same step and
token budget. The task scorer truncates contexts to the positions the model was trained on.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .errors import UserError

DEFAULT_EVAL_TOKENS = 65536


def cloze_split_warning(meta: dict | None) -> str | None:
    """A warning when a model's training data was the bundled corpus split otherwise than the cloze task assumes.

    The cloze passages come from the documents ``tst prepare --input bundled`` holds out at its default
    seed and fraction; another seed, fraction, document cap or extra inputs reshuffle which documents
    are held out, so some passages may have been trained on.
    """
    from .tasks import manifest
    if not meta or "bundled" not in (meta.get("sources") or []):
        return None
    want = manifest()["cloze"]["split"]
    have = {k: meta.get(k) for k in want}
    if have == want:
        return None
    diff = ", ".join(f"{k} {have[k]!r} (the task assumes {want[k]!r})" for k in want if have[k] != want[k])
    return (f"warning: this model's data split the bundled corpus differently ({diff}): some cloze passages "
            "may be in its training data, so its cloze score may be inflated")


def check_same_tokenizer(tokenizer, data_dir: str) -> None:
    """Validation on a data directory only means something if its tokens are the model's."""
    from .data.prepare import load_tokenizer
    from .tokenizer_files import PROBE_TEXT
    theirs = load_tokenizer(data_dir)
    if tokenizer is not None and tokenizer.encode(PROBE_TEXT) != theirs.encode(PROBE_TEXT):
        raise UserError(f"{data_dir} was prepared with another tokenizer than the model's: its validation loss "
                        "would mean nothing; prepare it with the model's tokenizer (tst prepare --tokenizer ...)")


def validation(loaded, data_dir: str, tokens: int, batch_size: int = 16, device="cpu") -> dict:
    """{val_loss, val_bpb, val_tokens, data} on the first ``tokens`` of ``data_dir``'s validation split."""
    from .data.loader import check_data_dir, load_split
    from .evaluate import Validator
    from .objective import TrainObjective
    meta = check_data_dir(data_dir)
    if meta["vocab_size"] > loaded.model.config.vocab_size:
        raise UserError(f"{data_dir} has a vocabulary of {meta['vocab_size']:,} but the model only "
                        f"{loaded.model.config.vocab_size:,} rows")
    check_same_tokenizer(loaded.tokenizer, data_dir)
    validator = Validator(load_split(data_dir, "val"), loaded.context_len, tokens, batch_size,
                          meta.get("bytes_per_token") or 0.0, torch.device(device))
    return {**validator.evaluate(TrainObjective(loaded.model), None), "data": str(data_dir)}


def evaluate(loaded, data_dir: str | None = None, tasks: list[str] = (), limit: int | None = None,
             eval_tokens: int | None = None, batch_size: int = 32, device="cpu", warn=None) -> dict:
    """Validation (when a data directory is known) and task scores, with the seconds each took."""
    from .tasks.scoring import score_task
    out: dict = {"model": loaded.describe(), "step": loaded.step, "completed": loaded.completed,
                 "context_len": loaded.context_len}
    if data_dir is None and loaded.data_dir and not Path(loaded.data_dir).is_dir():
        if warn is not None:
            warn(f"note: the run's data directory {loaded.data_dir} is gone: no validation loss (pass --data DIR)")
    elif data_dir is None:
        data_dir = loaded.data_dir
    if data_dir:
        if eval_tokens is None:
            cfg = loaded.info.get("config")  # a run's own budget; an export remembers it
            eval_tokens = (cfg.eval.tokens if cfg is not None else
                           (loaded.info.get("export") or {}).get("eval_tokens", DEFAULT_EVAL_TOKENS))
        t0 = time.perf_counter()
        out["validation"] = validation(loaded, data_dir, eval_tokens, batch_size, device)
        out["validation"]["seconds"] = time.perf_counter() - t0
    if tasks:
        note = cloze_split_warning(training_meta(loaded)) if "cloze" in tasks else None
        if note and warn is not None:
            warn(note)
        out["tasks"] = {}
        for name in tasks:
            t0 = time.perf_counter()
            scores = score_task(name, loaded.model, loaded.text_tokenizer(), loaded.context_len, limit,
                                batch_size, device)
            out["tasks"][name] = {**scores, "seconds": time.perf_counter() - t0}
        if note:
            out["warnings"] = [note]
    return out


def training_meta(loaded) -> dict | None:
    """What is known about the data a model was trained on (its run's copy of meta.json, or the export's note)."""
    if loaded.info.get("meta"):
        return loaded.info["meta"]
    return (loaded.info.get("export") or {}).get("data_split")


def format_results(res: dict) -> str:
    lines = [f"model: {res['model']} (context {res['context_len']} positions)"]
    v = res.get("validation")
    if v:
        bpb = f", {v['val_bpb']:.4f} bits/byte" if v.get("val_bpb") else ""
        lines.append(f"validation  loss {v['val_loss']:.4f} nats{bpb} on {v['val_tokens']:,} tokens of {v['data']} "
                     f"({v['seconds']:.1f}s)")
    for name, t in (res.get("tasks") or {}).items():
        if "acc_norm" in t:
            text = (f"acc {t['acc']:.4f} ± {t['acc_stderr'] or 0:.4f}, acc_norm {t['acc_norm']:.4f} ± "
                    f"{t['acc_norm_stderr'] or 0:.4f} (chance {t['chance']:.2f})")
        else:
            text = (f"acc {t['acc']:.4f} ± {t['acc_stderr'] or 0:.4f}, target log-prob {t['target_logprob']:.3f} nats "
                    f"(perplexity {t['perplexity']:.1f})")
        lines.append(f"{name:<11} {text}, {t['items']} items ({t['seconds']:.1f}s)")
    return "\n".join(lines)
