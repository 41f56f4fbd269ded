#!/usr/bin/env python
"""Training throughput of the smollm2-135m preset (the paper's "270M") in both TST phases, for the GPU check.

Runs the reference trainer (``tst_train.train.run_training``) with ``configs/smollm2_135m_tst.toml``
(bf16 autocast, ``torch.compile`` on the blocks, s = 6, the fused LM-head loss on its automatic backend)
for a few steps on each side of the transition, on a synthetic data directory of uniformly random token ids
(throughput does not depend on what the ids are). From the run's ``metrics.jsonl``, per phase, over the
steps after the first ``--skip`` of that phase (compilation, autotuning, the new bag size's kernels):
the median step time, positions/s and data tokens/s, and MFU on positions (``flops_per_position`` of the
plan ÷ the GPU's dense bf16 peak, 989 TFLOP/s for an H100 or H200). Targets: MFU ≥ 45 % in both phases, phase-1
step time within 2 % of phase 2's. ``--dry-run``: the tiny preset on the CPU, no compile (what make test
runs). Writes ``OUT/train.md``, ``OUT/train.json`` and the run's ``OUT/train_metrics.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without install

from tst import fused  # noqa: E402
from tst_train.config import Config, apply_mapping, load_toml  # noqa: E402
from tst_train.metrics import read_metrics  # noqa: E402
from tst_train.train import _peak_flops, run_training  # noqa: E402

VOCAB = 49152  # SmolLM2's tokenizer

# 24 steps, transition at 12: 12 per phase. 64 rows x 2048 positions per step in micro-batches of 32.
GPU_OVERRIDES = {
    "train": {"steps": 24, "batch_size": 64, "micro_batch_size": 32, "warmup_steps": 2, "device": "cuda"},
    "tst": {"superposition_frac": 0.5},
    "eval": {"every": 0, "tokens": 16384, "batch_size": 8},
    "checkpoint": {"every": 0, "keep": 1},
    "log": {"progress": False, "tensorboard": False},
}
DRY_OVERRIDES = {
    "model": {"preset": "tiny"},
    "train": {"steps": 6, "batch_size": 4, "micro_batch_size": 2, "seq_len": 32, "warmup_steps": 2,
              "device": "cpu", "dtype": "fp32", "compile": False},
    "tst": {"bag_size": 2, "superposition_frac": 0.5},
    "eval": {"every": 0, "tokens": 256, "batch_size": 2},
    "checkpoint": {"every": 0, "keep": 1},
    "log": {"progress": False, "tensorboard": False},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory for train.md, train.json and the run")
    p.add_argument("--dry-run", action="store_true", help="tiny preset on the CPU (what make test runs)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "smollm2_135m_tst.toml")
    p.add_argument("--skip", type=int, default=3, help="first steps of each phase left out of the medians")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch directory for the data and the run directory (default: a temporary one, removed)")
    return p.parse_args(argv)


def synthetic_data(path: Path, vocab: int, train_tokens: int, val_tokens: int) -> Path:
    """A data directory the trainer accepts (meta.json, train.bin, val.bin) of uniformly random token ids."""
    path.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    rng = np.random.default_rng(0)
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        rng.integers(0, vocab, n, dtype=np.int64).astype(dtype).tofile(path / f"{split}.bin")
    meta = {"vocab_size": vocab, "dtype": np.dtype(dtype).name, "eos_id": vocab - 1, "bytes_per_token": 0.0,
            "splits": {"train": {"tokens": train_tokens}, "val": {"tokens": val_tokens}},
            "sources": ["synthetic: uniform random ids (benchmarks/gpu_train.py)"]}
    (path / "meta.json").write_text(json.dumps(meta, indent=1))
    return path


def build_config(args, data: Path) -> Config:
    cfg = Config()
    apply_mapping(cfg, load_toml(args.config), str(args.config))
    apply_mapping(cfg, DRY_OVERRIDES if args.dry_run else GPU_OVERRIDES, "gpu_train.py")
    cfg.data.path = str(data)
    return cfg.validate()


def tokens_needed(cfg) -> int:
    t, s = cfg.train, cfg.tst.bag_size
    return t.batch_size * (t.seq_len * s + 1) * t.steps + 1  # every step as if in phase 1: an upper bound


def phase_stats(records: list[dict], skip: int, flops_per_position: float, peak: float | None) -> dict:
    """Per phase: medians over the steps after the first ``skip`` of that phase."""
    out = {}
    for phase in dict.fromkeys(r["phase"] for r in records):
        steps = [r for r in records if r["phase"] == phase][skip:]
        if not steps:
            continue
        dt = statistics.median(r["step_time"] for r in steps)
        positions = statistics.median(r["positions_per_s"] * r["step_time"] for r in steps)  # per step
        data_tokens = statistics.median(r["data_tokens_per_s"] * r["step_time"] for r in steps)
        out[phase] = {"steps": len(steps), "bag_size": steps[0]["bag_size"], "step_time": dt,
                      "positions_per_s": positions / dt, "data_tokens_per_s": data_tokens / dt,
                      "mfu": positions / dt * flops_per_position / peak if peak else None,
                      "step_times": [r["step_time"] for r in steps]}
    return out


def report(stats: dict, plan: dict, cfg, wall: float, peak: float | None, backend: str) -> str:
    t = cfg.train
    rows = ["| phase | s | steps timed | median step | positions/s | data tokens/s | MFU on positions "
            "| target ≥ 45 % |",
            "|---|---|---|---|---|---|---|---|"]
    for phase, p in stats.items():
        mfu = p["mfu"]
        target = "n/a (no known peak)" if mfu is None else ("met" if mfu >= 0.45 else "**missed**") + \
            f" ({mfu * 100:.1f} %)"
        rows.append(f"| {phase} | {p['bag_size']} | {p['steps']} | {p['step_time'] * 1e3:.1f} ms | "
                    f"{p['positions_per_s']:,.0f} | {p['data_tokens_per_s']:,.0f} | "
                    f"{'–' if mfu is None else f'{mfu * 100:.1f} %'} | {target} |")
    phases = list(stats.values())
    ratio_line = "phase-1 / phase-2 step time: not measured (a phase has no timed steps)"
    if len(phases) == 2:
        ratio = phases[0]["step_time"] / phases[1]["step_time"]
        ok = abs(ratio - 1) <= 0.02
        ratio_line = (f"phase-1 / phase-2 step time: **{ratio:.3f}** — target within 2 %: "
                      f"{'met' if ok else '**missed**'} ({(ratio - 1) * 100:+.1f} %)")
    head = (f"### Training throughput: {cfg.model.preset} ({plan['params'] / 1e6:.3g}M parameters, "
            f"V = {plan['model']['vocab_size']})\n\n"
            f"{t.batch_size} rows × {t.seq_len} positions per step "
            f"(micro-batches of {t.micro_batch_size or t.batch_size}), "
            f"autocast {t.dtype}, torch.compile {'on' if t.compile else 'off'}, s = {cfg.tst.bag_size}, fused loss "
            f"backend `{backend}`; {plan['flops_per_position'] / 1e9:.3f} GFLOP per position; peak "
            f"{'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown'}; {t.steps} steps in {wall:.0f} s wall "
            f"(compile, evaluation and checkpoints included). Medians leave out the first steps of each phase.\n\n")
    return head + "\n".join(rows) + "\n\n" + ratio_line + "\n"


def fused_backend_used() -> str:
    """Which backend the run's fused loss used: the override, or what ``auto``'s self-check decided."""
    choice = os.environ.get(fused.ENV_BACKEND) or "auto"
    if choice != "auto":
        return choice
    checked = fused._TRITON_CHECKED  # filled by the run itself, once per CUDA device
    if not checked:
        return "auto → torch (no CUDA)"
    problems = [p for p in checked.values() if p]
    return f"auto → torch (Triton self-check failed: {problems[0]})" if problems else "auto → triton"


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="tst-gpu-train-"))
    try:
        measure_and_report(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)  # GBs of checkpoints on the GPU machine


def measure_and_report(args, work: Path) -> None:
    cfg = build_config(args, work / "data")
    n = tokens_needed(cfg)
    synthetic_data(work / "data", VOCAB if not args.dry_run else 512, n, max(cfg.eval.tokens + 1, 4096))
    start = time.perf_counter()
    summary = run_training(cfg, work / "run")
    wall = time.perf_counter() - start
    plan = json.loads((work / "run" / "plan.json").read_text())
    records = [r for r in read_metrics(work / "run") if "step_time" in r]
    peak = _peak_flops(cfg, torch.device(cfg.train.device), 1)  # the trainer's table: H200 989 TFLOP/s bf16
    stats = phase_stats(records, min(args.skip, 1) if args.dry_run else args.skip, plan["flops_per_position"], peak)
    text = report(stats, plan, cfg, wall, peak, fused_backend_used())
    (args.out / "train.md").write_text(text)
    (args.out / "train.json").write_text(json.dumps({"stats": stats, "plan": plan, "summary": summary,
                                                     "wall_s": wall}, indent=1, default=str))
    shutil.copy(work / "run" / "metrics.jsonl", args.out / "train_metrics.jsonl")
    print(text, flush=True)


if __name__ == "__main__":
    main()
