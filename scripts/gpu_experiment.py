#!/usr/bin/env python3
"""The GPU experiment as one command: the paper's question on one GPU (an H100 or H200), in a time budget —
how much baseline compute does it take to reach TST's loss?

    python3 scripts/gpu_experiment.py --out REPORT_DIR                # one H200 (docs/gpu_experiment.md)
    python3 scripts/gpu_experiment.py --smoke --out REPORT_DIR        # the same path on the CPU in seconds
    bash scripts/gpu_experiment.sh                                    # on the device machine: report → $OUT

1. Data: the carried prose corpus (``.carry/prose/*.jsonl.xz``, else the bundled one) and a code corpus
   built from the ``.py`` files of the Python that runs this (deduplicated by content hash; one file = one
   document, so ``tst prepare`` holds validation out by file), as much code as the arms need for a single
   epoch; then ``tst prepare`` (a byte-level BPE trained on the training split).
2. Preflight: a few steps of the real shape, TST with its transition, evaluation and checkpoint. It
   compiles the model once (the runs reuse the compiled code); if ``torch.compile`` fails, it retries
   eagerly and the runs are eager (the report says so).
3. Runs, per seed, through the experiments' one runner (``arms.run_arm``: a rerun reuses finished runs and
   resumes interrupted ones): the baseline as a **compute curve** — one run of 2× TST's steps with cooldown
   branches at 1× and 1.5× (``tst curve``'s chain) — and each TST arm at 1×; the baseline and the first TST
   arm first, while the wall-clock budget lasts. A run starts only if its estimated time fits in what is
   left; at the hard stop the run in flight checkpoints and stops. Every completed run counts.
4. Report (``REPORT_DIR/report.md`` + ``report.json`` + ``loss_vs_flops.png``): per TST arm the equal-loss
   speed-up read on the baseline's curve (``experiments.compute``; a bound beyond it) and Δ at equal FLOPs,
   with their intervals over seeds; throughput and MFU of each phase against this GPU's measured bf16
   matmul peak; data epochs, machine, versions, time, and every run that was skipped, stopped or failed.

Bulky files (corpus, prepared data, checkpoints, full metrics) stay in ``--work``; ``REPORT_DIR`` is the
compact record to commit (``experiments/``). Exit status: 0; 1 if the preflight or a run failed; 2 for bad
arguments.
"""
from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "scripts")]  # the device runs a copy of the tree, not an install

from collect_experiment import collect_run  # noqa: E402
from tst_train import rundir  # noqa: E402
from tst_train.cli.args import parse_dotted  # noqa: E402
from tst_train.config import Config, apply_mapping, load_toml, set_value  # noqa: E402
from tst_train.errors import Interrupted, UserError  # noqa: E402
from tst_train.experiments import stats  # noqa: E402
from tst_train.experiments.arms import run_arm  # noqa: E402
from tst_train.experiments import compute, names  # noqa: E402
from tst_train.experiments.curve import baseline_of, curve_chain, final_point  # noqa: E402
from tst_train.experiments.report import machine_description, plot_loss_vs_flops  # noqa: E402
from tst_train.metrics import read_metrics  # noqa: E402
from tst_train.train import make_schedule  # noqa: E402

# The TST arms, in priority order: config overrides on top of the config file, named from the config they
# make (``names.arm_name``). Each is read on the baseline's compute curve, seed by seed. The first is s = 4
# with the batch fold and bag weights fitted to the corpus (the CPU records' best setting at its own shape;
# behind smaller models trained longer there, experiments/2026-12-07-compute-curves); the second is the
# paper's own setting, s = 6, r = 0.3.
_S6 = {"tst.mode": "tst", "tst.bag_size": 6, "tst.superposition_frac": 0.3}  # the paper's setting
_S4 = {"tst.mode": "tst", "tst.bag_size": 4, "tst.superposition_frac": 0.3}
TST_ARMS: tuple[dict, ...] = (_S4 | {"tst.fold": "batch", "tst.weights": "fitted"}, _S6)
# Not run by default (the budget fits the two above); pick them by name with --arms.
OPTIONAL_ARMS: tuple[dict, ...] = (
    _S4, _S4 | {"tst.fold": "batch"}, _S6 | {"tst.bagging": "document"}, _S6 | {"tst.transition_steps": 300},
    _S6 | {"tst.loss": "sum-to-one"}, _S6 | {"tst.weights": "fitted"}, _S6 | {"tst.mode": "output-only"})
# --moe: the same question on a mixture of experts (the paper's headline family) — a baseline's curve and the arms
# on an MoE with the dense model's active FLOPs per position (gpu-25m-moe: 4 of 32 experts, each a quarter of
# gpu-25m's SwiGLU), so a step costs what a dense step costs. Not run by default.
MOE_PRESET = {"gpu-25m": "gpu-25m-moe", "tiny": "moe-tiny"}
CURVE_SPAN = (1.0, 1.5, 2.0)  # the baseline's curve, in multiples of TST's steps: one 2x run and two branches

# Bytes per token of an 8k byte-level BPE trained on 1/3 prose + 2/3 code (the mix this script makes),
# measured on this project's CPU machine: prose 3.17, site-packages code 3.47. Sizing uses higher values:
# it counts fewer tokens in the prose and more bytes per code token, so it errs towards more code.
PROSE_BYTES_PER_TOKEN = 3.6
CODE_BYTES_PER_TOKEN = 3.8
DATA_HEADROOM = 1.2  # code for 20% more tokens than the hungriest arm reads


@dataclass(frozen=True)
class Settings:
    """What differs between the H200 experiment (``FULL``) and its CPU smoke test (``SMOKE``)."""
    config: Path
    budget_s: float  # wall-clock for everything: data, preflight, runs, report
    report_reserve_s: float  # kept back from the runs for writing the report
    min_seeds: int  # seeds of the baseline and the first TST arm before any other arm trains
    max_seeds: int
    vocab_size: int
    val_fraction: float
    carried_prose: bool  # read the prose from .carry/prose when it is there (else the bundled corpus)
    prose_max_docs: int | None  # None: every prose document
    code_min_mb: float  # at least this much code, even if the arms need less
    code_packages: tuple[str, ...] | None  # stdlib packages to read code from (None: the stdlib and site-packages)
    preflight_steps: int


FULL = Settings(config=REPO / "configs" / "gpu_h200.toml", budget_s=480.0, report_reserve_s=30.0, min_seeds=3,
                max_seeds=10, vocab_size=8192, val_fraction=0.01, carried_prose=True, prose_max_docs=None,
                code_min_mb=0.0, code_packages=None, preflight_steps=12)
SMOKE = Settings(config=REPO / "configs" / "gpu_smoke.toml", budget_s=600.0, report_reserve_s=10.0, min_seeds=2,
                 max_seeds=2, vocab_size=512, val_fraction=0.05, carried_prose=False, prose_max_docs=40,
                 code_min_mb=0.3, code_packages=("json", "email", "importlib"), preflight_steps=6)


class BudgetStop(BaseException):
    """The budget's hard stop arrived outside a training loop (the trainer handles it inside one)."""


class Budget:
    """Wall-clock budget: runs start while they fit; at the hard stop this process gets SIGTERM, which the
    trainer turns into a checkpoint at the next step boundary and a clean return (``completed`` False)."""

    def __init__(self, seconds: float, reserve_s: float) -> None:
        self.start = time.monotonic()
        self.stop_at = self.start + seconds - reserve_s
        self._timer = None
        self._old_handler = None
        self._active = False

    def left(self) -> float:
        return self.stop_at - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def fits(self, estimate_s: float | None) -> bool:
        return self.left() > (estimate_s or 0.0)

    def __enter__(self):
        def handler(signum, frame):
            if self._active:  # a signal that lands while the budget is being put away is moot
                raise BudgetStop
        self._active = True
        self._old_handler = signal.signal(signal.SIGTERM, handler)
        self._timer = threading.Timer(max(0.0, self.left()), os.kill, (os.getpid(), signal.SIGTERM))
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._active = False
        self._timer.cancel()
        signal.signal(signal.SIGTERM, self._old_handler)


# ------------------------------------------------------------------ configs


def load_config(settings: Settings, overrides: list[tuple[str, str]]) -> Config:
    cfg = Config()
    apply_mapping(cfg, load_toml(settings.config), str(settings.config))
    for key, value in overrides:
        set_value(cfg, key, value)
    return cfg.validate()


def arm_config(base: Config, overrides: dict, seed: int, data_dir: Path) -> Config:
    cfg = copy.deepcopy(base)
    for key, value in overrides.items():
        set_value(cfg, key, value)
    cfg.train.seed = seed
    cfg.data.path = str(data_dir)
    return cfg.validate()


def arm_table(base: Config) -> dict[str, dict]:
    """Every TST arm by its name (derived from the config it makes): the default ones first."""
    return {names.arm_name(arm_config(base, o, 0, Path())): o for o in TST_ARMS + OPTIONAL_ARMS}


def curve_steps(base: Config) -> list[int]:
    return [round(k * base.train.steps) for k in CURVE_SPAN]


def data_tokens_needed(base: Config, arms: list[str]) -> int:
    """Raw training tokens the hungriest run reads: the curve's longest baseline run, or a TST arm (``r·s + 1 − r``
    times the baseline's tokens at its steps)."""
    table = arm_table(base)
    cfgs = [arm_config(base, table[arm], 0, Path()) for arm in arms]
    for c in cfgs:  # the bag weights do not change what a step reads, and fitted ones need the data this sizes
        c.tst.weights = "uniform" if c.tst.weights == "fitted" else c.tst.weights
    longest = baseline_of(base)
    longest.train.steps = max(curve_steps(base))
    return max(make_schedule(c).data_tokens(c.train.batch_size, c.train.seq_len) for c in cfgs + [longest])


ORDER_RULE = ("per seed, the baseline's curve (one run of 2× the steps, then branches at 1× and 1.5×) and the first "
              "TST arm, for seeds 0 to {last} (enough for an interval), then the other arms for those seeds, then one "
              "more seed of everything at a time, up to {most} seeds")


def job_order(base: Config, arms: list[str], min_seeds: int, max_seeds: int, work: Path) -> list[tuple[str, int, list]]:
    """(label, seed, chain of (config, run directory)) in the order they train: see ``ORDER_RULE``."""
    table, runs, data = arm_table(base), work / "runs", work / "data"

    def curve(seed):
        cfg = baseline_of(arm_config(base, {}, seed, data))
        return ("baseline", seed, curve_chain(cfg, curve_steps(base), seed, runs))

    def tst(arm, seed):
        cfg = arm_config(base, table[arm], seed, data)
        return (arm, seed, [(cfg, runs / names.run_name(cfg))])

    first, others = arms[:1], arms[1:]
    jobs = [j for seed in range(min_seeds) for j in [curve(seed)] + [tst(a, seed) for a in first]]
    jobs += [tst(a, seed) for seed in range(min_seeds) for a in others]
    jobs += [j for seed in range(min_seeds, max_seeds) for j in [curve(seed)] + [tst(a, seed) for a in arms]]
    return jobs


# ------------------------------------------------------------------ data


def code_roots() -> list[Path]:
    """This Python's standard library and site-packages: the source of the code corpus."""
    paths = sysconfig.get_paths()
    roots = []
    for key in ("purelib", "platlib", "stdlib"):
        p = Path(paths[key]).resolve()
        if p.is_dir() and not any(p == r or r in p.parents for r in roots):
            roots = [r for r in roots if p not in r.parents] + [p]
    return roots


MIN_CODE_BYTES, MAX_CODE_BYTES = 256, 512 * 1024


def code_files(roots: list[Path]):
    """(path, bytes) of every ``.py`` file of 256 B – 512 KB under ``roots``, in sorted order."""
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                try:
                    if name.endswith(".py") and MIN_CODE_BYTES <= path.stat().st_size <= MAX_CODE_BYTES:
                        yield path, path.read_bytes()
                except OSError:
                    continue


def usable_code(raw: bytes) -> str | None:
    """The file's text if it is ordinary source: UTF-8, no NUL, no line over 1,000 characters (generated
    tables and embedded data are not code a model should learn from)."""
    if b"\0" in raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if max(map(len, text.splitlines()), default=0) <= 1000 else None


def build_code_corpus(roots: list[Path], out: Path, max_bytes: float) -> dict:
    """Write unique ``.py`` files as JSONL documents in content-hash order (a deterministic mix of
    packages) until ``max_bytes``; one file = one document, so validation is held out by file."""
    unique: dict[str, tuple[Path, bytes]] = {}
    seen = 0
    for path, raw in code_files(roots):
        seen += 1
        unique.setdefault(hashlib.sha256(raw).hexdigest(), (path, raw))  # the first copy of a content wins
    stats = {"roots": [str(r) for r in roots], "files_seen": seen, "duplicates": seen - len(unique),
             "unique_files": len(unique), "unique_bytes": sum(len(raw) for _, raw in unique.values()),
             "filtered": 0, "files": 0, "bytes": 0}
    with open(out, "w", encoding="utf-8") as f:
        for digest in sorted(unique):
            if stats["bytes"] >= max_bytes:
                break
            path, raw = unique[digest]
            text = usable_code(raw)
            if text is None:
                stats["filtered"] += 1
                continue
            f.write(json.dumps({"text": text, "source": "code", "title": str(path)}) + "\n")
            stats["bytes"] += len(raw)
            stats["files"] += 1
    return stats


def default_prose(settings: Settings) -> list[Path]:
    carried = sorted((REPO / ".carry" / "prose").glob("*.jsonl.xz"))
    if carried and settings.carried_prose:
        return carried
    from tst_train.data.sources import bundled_path
    return [Path(str(bundled_path()))]


def write_prose(inputs: list[Path], out: Path, max_docs: int | None) -> dict:
    """The prose documents of ``inputs`` (JSONL[.xz] with a ``text`` field) as one JSONL file."""
    from tst_train.data.sources import iter_documents
    n_docs = n_bytes = 0
    with open(out, "w", encoding="utf-8") as f:
        for path in inputs:
            for text in iter_documents(str(path)):
                if max_docs is not None and n_docs >= max_docs:
                    break
                f.write(json.dumps({"text": text}) + "\n")
                n_docs += 1
                n_bytes += len(text.encode())
    return {"inputs": [str(p) for p in inputs], "documents": n_docs, "bytes": n_bytes}


def prepare_data(settings: Settings, base: Config, arms: list[str], work: Path, prose: list[Path], log) -> dict:
    """Corpus → ``tst prepare`` → ``work/data``; returns what went in (reused when already prepared)."""
    from tst_train.data.prepare import prepare
    data_dir, stats_file = work / "data", work / "data_stats.json"
    if (data_dir / "meta.json").is_file() and stats_file.is_file():
        log(f"reusing the prepared data in {data_dir}")
        return json.loads(stats_file.read_text())
    t0 = time.monotonic()
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    prose_stats = write_prose(prose, corpus / "prose.jsonl", settings.prose_max_docs)
    need_tokens = data_tokens_needed(base, arms) * DATA_HEADROOM / (1 - settings.val_fraction)
    code_bytes = max(settings.code_min_mb * 1e6,
                     (need_tokens - prose_stats["bytes"] / PROSE_BYTES_PER_TOKEN) * CODE_BYTES_PER_TOKEN)
    roots = ([Path(sysconfig.get_paths()["stdlib"]) / p for p in settings.code_packages] if settings.code_packages
             else code_roots())
    code_stats = build_code_corpus(roots, corpus / "code.jsonl", code_bytes)
    log(f"corpus: prose {prose_stats['bytes'] / 1e6:.1f} MB ({prose_stats['documents']:,} docs), code "
        f"{code_stats['bytes'] / 1e6:.1f} MB ({code_stats['files']:,} of {code_stats['unique_files']:,} unique "
        f"files, {code_stats['unique_bytes'] / 1e6:.0f} MB) in {time.monotonic() - t0:.0f}s")
    t1 = time.monotonic()
    # The prose alone may be enough (then no code file is taken).
    inputs = [corpus / "prose.jsonl"] + ([corpus / "code.jsonl"] if code_stats["files"] else [])
    meta = prepare([str(i) for i in inputs], data_dir, vocab_size=settings.vocab_size,
                   val_fraction=settings.val_fraction, seed=0, overwrite=True)
    stats = {"prose": prose_stats, "code": code_stats, "tokens_needed_by_hungriest_arm": data_tokens_needed(base, arms),
             "corpus_seconds": t1 - t0, "prepare_seconds": time.monotonic() - t1, "meta": meta}
    rundir.write_json(stats_file, stats)
    return stats


# ------------------------------------------------------------------ runs


def train_pair(cfg: Config, run_dir: Path, log) -> dict:
    """One (arm, seed) run through the compare runner; its outcome, never an exception (but a stop)."""
    reused = bool((rundir.read_summary(run_dir) or {}).get("completed"))
    t0 = time.monotonic()
    try:
        summary = run_arm(cfg, run_dir, log)
        return {"status": "completed", "seconds": time.monotonic() - t0, "train_seconds": summary["train_time"],
                "reused": reused}
    except (Interrupted, KeyboardInterrupt, BudgetStop):  # run_arm raises Interrupted after a signal's checkpoint
        steps = (rundir.read_summary(run_dir) or {}).get("steps", 0) if rundir.is_run_dir(run_dir) else 0
        return {"status": "stopped", "seconds": time.monotonic() - t0, "steps": steps}
    except Exception as e:  # a broken run must not cost the report of the others
        rundir.write_atomic(run_dir.parent / f"{run_dir.name}.error.txt", traceback.format_exc())
        return {"status": "failed", "seconds": time.monotonic() - t0, "error": f"{type(e).__name__}: {e}"[:500]}
    finally:
        gc.collect()
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def preflight(base: Config, tst_arm: str, settings: Settings, work: Path, log) -> dict:
    """A few steps of the real shape (a TST arm, transition half-way, evaluation, checkpoint): fail here,
    not in the first run; compile once for every run. A failing ``torch.compile`` falls back to eager."""
    cfg = arm_config(base, arm_table(base)[tst_arm], 0, work / "data")
    cfg.train.steps = cfg.eval.every = settings.preflight_steps
    cfg.train.warmup_steps, cfg.tst.superposition_frac = 1, 0.5
    attempts = [cfg.train.compile] + ([False] if cfg.train.compile else [])
    result = {}
    for compile_ in attempts:
        cfg.train.compile = compile_
        run_dir = work / "preflight"
        shutil.rmtree(run_dir, ignore_errors=True)
        out = train_pair(cfg.validate(), run_dir, log)
        result[f"compile={compile_}"] = out
        if out["status"] != "failed":
            return {"compile": compile_, "attempts": result, "ok": out["status"] == "completed"}
        log(f"preflight failed (compile={compile_}): {out['error']}")
    return {"compile": False, "attempts": result, "ok": False}


def steps_to_train(cfg: Config) -> int:
    """Steps a run trains itself: a cooldown branch starts at its trunk's checkpoint."""
    return cfg.train.steps - (int(cfg.train.branch_from.rpartition(":")[2]) if cfg.train.branch_from else 0)


def run_jobs(jobs: list[tuple[str, int, list]], budget: Budget, outcomes: dict, log) -> None:
    """Train the chains in order while their runs fit the budget (estimated from the seconds per step of the
    runs so far), recording ``outcomes[run name]`` as each ends; a branch whose trunk did not finish is skipped."""
    per_step = None
    for label, seed, chain in jobs:
        for i, (cfg, run_dir) in enumerate(chain):
            key = {"arm": label, "seed": seed, "run": run_dir.name, "steps": cfg.train.steps}
            if i and outcomes[chain[0][1].name]["status"] != "completed":
                outcomes[run_dir.name] = key | {"status": "skipped", "reason": "trunk"}
                continue
            if not budget.fits(per_step and per_step * steps_to_train(cfg)):
                outcomes[run_dir.name] = key | {"status": "skipped", "reason": "budget"}
                continue
            log(f"[{budget.elapsed():5.0f}s] {run_dir.name}")
            out = train_pair(cfg, run_dir, log)
            outcomes[run_dir.name] = key | out
            if out["status"] == "completed" and not out["reused"]:
                per_step = out["seconds"] / steps_to_train(cfg)
            if out["status"] == "failed":
                log(f"  failed: {out['error']}")


# ------------------------------------------------------------------ report


def matmul_peak_tflops() -> float | None:
    """This GPU's bf16 matmul rate (an 8192³ product, median of 10 after warm-up): the peak MFU is read
    against, measured rather than taken from a datasheet. None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192 ** 3 / statistics.median(times) / 1e12


def throughput(run_dir: Path, peak_tflops: float | None) -> dict:
    """Medians over a run's steps, per phase: positions/s, model TFLOP/s and the share of the measured peak."""
    recs = [r for r in read_metrics(run_dir) if "positions_per_s" in r]
    plan = json.loads((run_dir / rundir.PLAN_FILE).read_text())
    summary = rundir.read_summary(run_dir) or {}
    phases = {}
    for name in dict.fromkeys(r["phase"] for r in recs):
        pos = statistics.median(r["positions_per_s"] for r in recs if r["phase"] == name)
        tflops = pos * plan["flops_per_position"] / 1e12
        phases[name] = {"positions_per_s": pos, "model_tflops": tflops,
                        "of_measured_peak": tflops / peak_tflops if peak_tflops else None}
    return {"phases": phases, "data_tokens_per_s": summary["data_tokens"] / summary["train_time"],
            "epochs": summary["epochs"], "data_tokens": summary["data_tokens"], "flops": summary["flops"]}


def _completed(outcomes: dict, label: str) -> list[dict]:
    return [o for o in outcomes.values() if o["arm"] == label and o["status"] == "completed"]


def arm_rows(outcomes: dict, arms: list[str], base: Config, work: Path, peak: float | None) -> dict:
    """The baseline's curve per budget, and per TST arm: its runs, the speed-up on the curve and Δ at 1×."""
    runs = work / "runs"
    curves: dict[int, list] = {}
    by_steps: dict[int, dict] = {}
    for o in _completed(outcomes, "baseline"):
        point = final_point(runs / o["run"])
        curves.setdefault(o["seed"], []).append(point)
        by_steps.setdefault(o["steps"], {})[o["seed"]] = point
    rows = {"baseline": {"curve": [{"steps": k, "seeds": sorted(v), "flops": max(p[0] for p in v.values()),
                                    "final_val_loss": stats.mean_ci([p[1] for p in v.values()])}
                                   for k, v in sorted(by_steps.items())],
                         "throughput": _throughput([o for o in _completed(outcomes, "baseline")
                                                    if o["steps"] == base.train.steps], runs, peak)}}
    equal = by_steps.get(base.train.steps, {})
    for arm in arms:
        done = _completed(outcomes, arm)
        tst = {o["seed"]: final_point(runs / o["run"]) for o in done}
        paired = sorted(set(tst) & set(equal))
        rows[arm] = {"seeds": sorted(tst), "final_val_loss": stats.mean_ci([p[1] for p in tst.values()]),
                     "flops": max((p[0] for p in tst.values()), default=None),
                     "speedup": compute.speedup_over_seeds({s: c for s, c in curves.items() if len(c) > 1}, tst),
                     "delta_val_loss": stats.paired([tst[s][1] for s in paired], [equal[s][1] for s in paired]),
                     "throughput": _throughput(done, runs, peak)}
    return rows


def _throughput(done: list[dict], runs: Path, peak: float | None) -> dict:
    """Per phase, the median over runs of each run's medians; data epochs of the first run."""
    tps = [throughput(runs / o["run"], peak) for o in done]
    if not tps:
        return {}
    phases = {name: {k: statistics.median(t["phases"][name][k] for t in tps if name in t["phases"])
                     if tps[0]["phases"][name][k] is not None else None for k in tps[0]["phases"][name]}
              for name in tps[0]["phases"]}
    return {"phases": phases, "epochs": tps[0]["epochs"], "data_tokens": tps[0]["data_tokens"],
            "data_tokens_per_s": statistics.median(t["data_tokens_per_s"] for t in tps)}


def headline(arm: str, row: dict) -> str:
    """What one TST arm measured, whichever way it came out."""
    sp, d = row["speedup"], row["delta_val_loss"]
    if not row["seeds"]:
        return f"{arm}: no run completed."
    n = len(sp.get("seeds", []))
    return (f"{arm}: the baseline needs {compute.format_speedup(sp)} TST's compute to reach its loss "
            f"({n} seed{'s' if n != 1 else ''} with a curve; 95 % interval over init seeds); at equal FLOPs Δ "
            f"{stats.fmt(d, 4)} ({d['n']} paired seed{'s' if d['n'] != 1 else ''}; < 0: TST lower).")


def environment() -> dict:
    import torch
    env = {"machine": machine_description(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg())}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   compute_capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
    if shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["nvidia_smi"] = f"failed: {e}"
    return env


def _num(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def results_table(rows: dict) -> list[str]:
    lines = ["| run | seeds | FLOPs | final val loss | speed-up on the baseline's curve | Δ at equal FLOPs |",
             "|---|---|---|---|---|---|"]
    for p in rows["baseline"]["curve"]:
        lines.append(f"| baseline, {p['steps']:,} steps | {len(p['seeds'])} | {p['flops']:.3e} | "
                     f"{stats.fmt(p['final_val_loss'], 4, False)} | — | — |")
    for arm, r in rows.items():
        if arm != "baseline":
            lines.append(f"| {arm} | {len(r['seeds'])} | {_num(r['flops'], '.3e')} | {stats.fmt(r['final_val_loss'], 4, False)} | "
                         f"{compute.format_speedup(r['speedup'])} | {stats.fmt(r['delta_val_loss'], 4)} |")
    return lines


def throughput_table(rows: dict) -> list[str]:
    lines = ["| arm | phase | positions/s | model TFLOP/s | of the measured bf16 peak | data tokens | epochs |",
             "|---|---|---|---|---|---|---|"]
    for arm, r in rows.items():
        tp = r.get("throughput") or {}
        for phase, v in (tp.get("phases") or {}).items():
            lines.append(f"| {arm} | {phase} | {_num(v['positions_per_s'], ',.0f')} | {_num(v['model_tflops'], '.1f')} | "
                         f"{_num(v['of_measured_peak'], '.1%')} | {_num(tp['data_tokens'], ',.0f')} | {_num(tp['epochs'], '.3f')} |")
    return lines


def _note(o: dict) -> str:
    if o["status"] == "completed":
        return "reused from an earlier invocation" if o.get("reused") else ""
    if o["status"] == "stopped":
        return f"stopped by the budget after step {o.get('steps', 0)} (not counted)"
    if o["status"] == "failed":
        return " ".join(o.get("error", "").replace("|", "/").split())  # one table cell
    return {"budget": "not started: it would not have fitted the budget",
            "trunk": "not started: the run it branches from did not finish"}.get(o.get("reason"),
                                                                                 "not started: the preflight failed")


def runs_table(outcomes: dict) -> list[str]:
    lines = ["| run | status | seconds | of which training steps | note |", "|---|---|---|---|---|"]
    for name, o in outcomes.items():
        lines.append(f"| {name} | {o['status']} | {_num(o.get('seconds'), '.1f')} | "
                     f"{_num(o.get('train_seconds'), '.1f')} | {_note(o)} |")
    return lines


def _preflight_text(pre: dict) -> str:
    tries = "; ".join(f"{k}: {o['status']}" + (f" ({' '.join(o['error'].split())})" if o.get("error") else "")
                      for k, o in pre["attempts"].items())
    verdict_ = "passed" if pre["ok"] else "FAILED"
    return f"Preflight (a few steps of the real shape, TST with its transition): {verdict_} — {tries or 'not run'}."


def _setup_text(rec: dict) -> str:
    cfg, plan = rec["config"], rec.get("plan") or {}
    t = cfg["train"]
    arms = "; ".join(f"`{a}` = {o}" for a, o in rec["arm_overrides"].items())
    arms += f"; the baseline at {', '.join(f'{k:g}×' for k in CURVE_SPAN)} the steps"
    return (f"Model `{cfg['model']['preset']}` ({_num(plan.get('params'), ',')} parameters, "
            f"{_num(plan.get('flops_per_position'), '.3e')} FLOPs/position), {t['steps']} steps × "
            f"{t['batch_size']} rows × {t['seq_len']} positions, lr {t['lr']}, warmup {t['warmup_steps']}, linear "
            f"decay over the last {t['decay_frac']:.0%}, AdamW (β {t['beta1']}, {t['beta2']}; wd {t['weight_decay']}), "
            f"clip {t['grad_clip']}, {t['dtype']}, torch.compile {rec['compile']['used']} (asked: "
            f"{rec['compile']['asked']}); evaluation every {cfg['eval']['every']} steps on {cfg['eval']['tokens']:,} "
            f"held-out tokens. Arms: {arms}.")


def _data_text(rec: dict) -> str:
    data = rec["data"]
    prose, code, meta = data["prose"], data["code"], data["meta"]
    split = meta["splits"]
    epochs = (" — **data repeats in at least one arm**." if rec["data_repeats"]
              else " (single epoch: no token is seen twice).")
    return (f"Prose: {prose['documents']:,} documents, {prose['bytes'] / 1e6:.1f} MB from "
            f"{', '.join(Path(p).name for p in prose['inputs'])}. Code: {code['files']:,} `.py` files, "
            f"{code['bytes'] / 1e6:.1f} MB, taken in content-hash order from {code['unique_files']:,} unique files "
            f"({code['unique_bytes'] / 1e6:.0f} MB) of the {code['files_seen']:,} of 256 B – 512 KB under "
            f"{', '.join(code['roots'])} ({code['duplicates']:,} duplicates by content hash; {code['filtered']:,} of "
            f"those taken were skipped: not UTF-8, or lines over 1,000 characters). `tst prepare`: a BPE of "
            f"{meta['vocab_size']:,} tokens trained on the training split; train {split['train']['tokens']:,} tokens / "
            f"{split['train']['documents']:,} documents, validation {split['val']['tokens']:,} tokens / "
            f"{split['val']['documents']:,} documents (held out by document, i.e. by file), "
            f"{meta['bytes_per_token']:.2f} bytes/token. The hungriest arm reads "
            f"{data['tokens_needed_by_hungriest_arm']:,} tokens; each arm's epochs are in the results table{epochs}")


def _machine_text(rec: dict) -> str:
    env, sec = rec["env"], rec["seconds"]
    smi = f" nvidia-smi: {env['nvidia_smi']}." if env.get("nvidia_smi") else ""
    return (f"{env['machine']}; Python {env['python']}, torch {env['torch']}, CUDA {env['cuda']}, triton "
            f"{env['triton']}; {env['cpu_count']} CPU cores, load average {env['load_average']}.{smi}\n\n"
            f"Budget {rec['budget_s']:.0f} s; data {sec['data']:.0f} s, preflight {sec['preflight']:.0f} s, runs "
            f"{sec['runs']:.0f} s, total before the report {sec['before_report']:.0f} s.")


RESULTS_NOTE = ("The baseline's curve: one run of 2× TST's steps and cooldown branches at 1× and 1.5× (each decays over "
                "its own last steps; a branch trains the same numbers as a run of that length). The speed-up is the "
                "baseline compute needed to reach TST's final loss, interpolated in log FLOPs on the monotone curve, "
                "÷ TST's compute; beyond the curve it is a bound. Δ: TST − the 1× baseline of the same seed. "
                "Intervals: 95 % Student-t over init seeds (one data order). Throughput: medians over steps and runs; "
                "model FLOPs count positions (6·N + attention), against the bf16 matmul rate measured on this GPU.")


def write_experiment_report(out: Path, rec: dict, outcomes: dict) -> None:
    rows = rec["arms"]
    md = ["# GPU experiment: how much baseline compute reaches TST's loss", ""]
    md += [f"- {headline(arm, r)}" for arm, r in rows.items() if arm != "baseline"]
    peak = rec["env"].get("matmul_peak_tflops")
    md += ["", "## Results", "", *results_table(rows), "", RESULTS_NOTE, "", "![loss against compute](loss_vs_flops.png)"
           if rec.get("figure") else "", "", "## Throughput and MFU", "",
           f"Measured bf16 matmul peak of this GPU: {_num(peak, '.0f')} TFLOP/s.", "", *throughput_table(rows), "",
           "## Runs", "", _preflight_text(rec["preflight"]), "", f"Order: {rec['order_rule']}.", "",
           *runs_table(outcomes), "", "## Setup", "", _setup_text(rec), "", "## Data", "", _data_text(rec), "",
           "## Machine and time", "", _machine_text(rec), "", "## Command", "", f"`{rec['command']}`", ""]
    rundir.write_atomic(out / "report.md", "\n".join(md))


def plot(out: Path, rows: dict) -> str | None:
    """Loss against FLOPs: the baseline's curve and each TST arm (means with their intervals)."""
    curve = [(p["flops"], p["final_val_loss"]["mean"], p["final_val_loss"].get("ci95"), f"{p['steps']:,} steps")
             for p in rows["baseline"]["curve"] if p["final_val_loss"]["mean"] is not None]
    series = [{"label": "baseline (compute curve)", "color": "#444444", "line": True, "points": curve}]
    colors = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd"]
    for i, (arm, r) in enumerate(a for a in rows.items() if a[0] != "baseline"):
        if r["final_val_loss"]["mean"] is not None:
            series.append({"label": arm, "color": colors[i % len(colors)], "marker": "s", "size": 7,
                           "points": [(r["flops"], r["final_val_loss"]["mean"], r["final_val_loss"].get("ci95"), None)]})
    if not curve:
        return None
    return plot_loss_vs_flops(out, series, "loss_vs_flops.png", "Validation loss against compute: the baseline's "
                              "curve and TST")


# ------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    p = argparse.ArgumentParser(description="TST vs the equal-FLOPs baseline on one GPU, in a wall-clock budget.",
                                epilog="Other config fields: --section.field=value (as `tst train`).")
    p.add_argument("--out", required=True, type=Path, help="report directory (the compact record)")
    p.add_argument("--work", type=Path, help="corpus, data, checkpoints and full metrics (default: OUT-work); "
                                             "rerun with the same --work to reuse and resume")
    p.add_argument("--smoke", action="store_true", help="the same path on the CPU in seconds (configs/gpu_smoke.toml)")
    p.add_argument("--budget-min", type=float, help="wall-clock budget in minutes, everything included (default 8)")
    p.add_argument("--arms", help="TST arms by name, comma-separated (default: the first two of those the script "
                                  "lists; the baseline's curve always trains); an unknown name lists them all")
    p.add_argument("--seeds", type=int, help="at most this many seeds per arm")
    p.add_argument("--moe", action="store_true", help="a mixture of experts with the dense model's active FLOPs "
                                                      "(gpu-25m-moe; moe-tiny with --smoke) instead of the dense model")
    p.add_argument("--prose", type=Path, nargs="+", help="prose inputs, JSONL[.xz] (default: .carry/prose/*.jsonl.xz, "
                                                         "else the bundled corpus)")
    args, extra = p.parse_known_args(argv)
    return args, parse_dotted(extra)


def check_args(args: argparse.Namespace, base: Config) -> list[str]:
    table = arm_table(base)
    arms = args.arms.split(",") if args.arms else list(table)[:len(TST_ARMS)]
    if [a for a in arms if a not in table] or not arms or len(set(arms)) != len(arms):
        raise UserError(f"--arms: TST arms by name, from {', '.join(table)}; got {args.arms!r}")
    if args.budget_min is not None and not 0 < args.budget_min < 1e4:
        raise UserError(f"--budget-min must be a positive number of minutes, got {args.budget_min}")
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    for path in args.prose or []:
        if not path.is_file():
            raise UserError(f"--prose {path} does not exist")
    return arms


def main(argv: list[str] | None = None, log=print) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = parse_args(argv)
        settings = SMOKE if args.smoke else FULL
        seeds = args.seeds or settings.max_seeds
        settings = replace(settings, budget_s=args.budget_min * 60 if args.budget_min else settings.budget_s,
                           max_seeds=seeds, min_seeds=min(settings.min_seeds, seeds))
        if args.moe:  # before the user's overrides, which may still change the shape
            overrides = [("model.preset", MOE_PRESET[load_config(settings, []).model.preset])] + overrides
        base = load_config(settings, overrides)
        arms = check_args(args, base)
        out, work = args.out, args.work or args.out.with_name(args.out.name + "-work")
        return run_experiment(settings, base, arms, out, work, args.prose or default_prose(settings), log,
                              command=" ".join(["python3", "scripts/gpu_experiment.py", *argv]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run_experiment(settings: Settings, base: Config, arms: list[str], out: Path, work: Path, prose: list[Path],
                   log, command: str) -> int:
    """Data, preflight and runs inside the budget, then the report (always, with whatever completed)."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    budget = Budget(settings.budget_s, settings.report_reserve_s)
    seconds, outcomes, data, compile_asked = {}, {}, None, base.train.compile
    pre = {"compile": base.train.compile, "ok": False, "attempts": {}}
    jobs = job_order(base, arms, settings.min_seeds, settings.max_seeds, work)
    phase = "data"
    with budget:
        try:
            t = time.monotonic()
            data = prepare_data(settings, base, arms, work, prose, log)
            seconds["data"], t, phase = time.monotonic() - t, time.monotonic(), "preflight"
            pre = preflight(base, arms[0], settings, work, log)
            seconds["preflight"], t, phase = time.monotonic() - t, time.monotonic(), "runs"
            if pre["ok"]:
                for _, _, chain in jobs:
                    for cfg, _ in chain:
                        cfg.train.compile = pre["compile"]
                run_jobs(jobs, budget, outcomes, log)
            seconds["runs"] = time.monotonic() - t
        except BudgetStop:
            log(f"the budget ended during the {phase}")
    for key in ("data", "preflight", "runs"):
        seconds.setdefault(key, 0.0)
    seconds["before_report"] = budget.elapsed()
    if data is None:
        print("error: the data was not ready within the budget; nothing to report", file=sys.stderr)
        return 1
    not_run = "budget" if budget.left() <= 0 or pre["ok"] else "preflight failed"
    for label, seed, chain in jobs:
        for cfg, run_dir in chain:
            outcomes.setdefault(run_dir.name, {"arm": label, "seed": seed, "run": run_dir.name, "steps": cfg.train.steps,
                                               "status": "skipped", "reason": not_run})
    env = environment()
    env["matmul_peak_tflops"] = matmul_peak_tflops()
    rows = arm_rows(outcomes, arms, base, work, env["matmul_peak_tflops"])
    done = [work / "runs" / name for name, o in outcomes.items() if o["status"] == "completed"]
    for run in done:  # the compact record: configs, summaries and evaluation curves
        collect_run(run, out / "runs" / run.name)
    rec = {"command": command, "budget_s": settings.budget_s, "seconds": seconds, "env": env,
           "config": base.to_dict(), "arm_overrides": {a: arm_table(base)[a] for a in arms}, "data": data, "preflight": pre,
           "compile": {"asked": compile_asked, "used": pre["compile"]},
           "plan": json.loads((done[0] / rundir.PLAN_FILE).read_text()) if done else None,
           "order_rule": ORDER_RULE.format(last=settings.min_seeds - 1, most=settings.max_seeds),
           "arms": rows, "data_repeats": any((r.get("throughput") or {}).get("epochs", 0) > 1 for r in rows.values())}
    try:  # the figure needs matplotlib; the numbers do not, and the report must be written
        rec["figure"] = plot(out, rows)
    except Exception as e:
        rec["figure_error"] = f"{type(e).__name__}: {e}"
    write_experiment_report(out, rec, outcomes)
    rec["outcomes"] = list(outcomes.values())
    rundir.write_json(out / "report.json", rec)
    log((out / "report.md").read_text().split("## Throughput")[0])
    failed = [k for k, o in outcomes.items() if o["status"] == "failed"]
    return 1 if failed or not pre["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
