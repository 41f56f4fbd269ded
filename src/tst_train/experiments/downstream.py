"""Downstream task scores of the runs of a comparison, next to their loss: each run's final checkpoint on the
local tasks (``tst_train.tasks``), cached in ``OUT/tasks/RUN.json`` so a rerun scores only what changed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..rundir import write_json
from ..tasks import TASKS

# The headline metric of each kind of task (the others stay in the per-run files).
HEADLINE = {"cloze": ("acc", "target_logprob"), "choice": ("acc_norm",)}


def headline(scores: dict) -> dict[str, float]:
    """``{"cloze_acc": …, "cloze_target_logprob": …, "wordnet_acc_norm": …}`` of one run's task scores."""
    return {f"{name}_{metric}": s[metric] for name, s in scores.items() for metric in HEADLINE[TASKS[name].kind]}


def score_runs(out: Path, run_dirs: list[Path], tasks: list[str], limit: int | None, log=print,
               threads: int = 0) -> dict[str, dict]:
    """``{run name: {task: scores}}`` of each run's latest checkpoint (scored once, then read back), on
    ``threads`` CPU threads (0: torch's default)."""
    if not tasks:
        return {}
    import torch
    if threads:
        torch.set_num_threads(threads)
    from ..api import load
    from ..loading import checkpoint_steps
    from ..tasks.scoring import score_task
    cache_dir = out / "tasks"
    cache_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for run_dir in run_dirs:
        path = cache_dir / f"{run_dir.name}.json"
        step = max(checkpoint_steps(run_dir))
        cached = json.loads(path.read_text()) if path.is_file() else {}
        if cached.get("step") != step or cached.get("limit") != limit:
            cached = {"step": step, "limit": limit, "tasks": {}}
        todo = [t for t in tasks if t not in cached["tasks"]]
        if todo:
            t0 = time.perf_counter()
            loaded = load(run_dir, step, device="cpu")
            for name in todo:
                cached["tasks"][name] = score_task(name, loaded.model, loaded.text_tokenizer(), loaded.context_len, limit)
            cached["seconds"] = cached.get("seconds", 0.0) + time.perf_counter() - t0
            write_json(path, cached)
            log(f"  {run_dir.name}: tasks {', '.join(todo)} scored in {time.perf_counter() - t0:.0f}s")
        results[run_dir.name] = {t: cached["tasks"][t] for t in tasks}
    return results
