#!/usr/bin/env python3
"""The GPU experiment as one command: TST against the equal-FLOPs baseline on one GPU, in a time budget.

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
3. Runs: every (arm, seed) pair of ``ARMS`` through the trainer's compare machinery (a rerun reuses
   finished runs and resumes interrupted ones), the baseline and the first TST arm first, while the
   wall-clock budget lasts. A run starts only if the last one's duration fits in what is left; at the
   hard stop the run in flight checkpoints and stops. Every completed (arm, seed) pair counts.
4. Report: for each TST arm the ``tst compare`` report over the seeds it shares with the baseline, and
   ``REPORT_DIR/report.md`` (+ ``report.json``): all arms, throughput and MFU, data epochs, machine,
   versions, time, and every pair that was skipped, stopped or failed.

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

from collect_experiment import collect  # noqa: E402
from tst_train import rundir  # noqa: E402
from tst_train.cli.args import parse_dotted  # noqa: E402
from tst_train.config import Config, apply_mapping, load_toml, set_value  # noqa: E402
from tst_train.errors import Interrupted, UserError  # noqa: E402
from tst_train.experiments import analysis, stats  # noqa: E402
from tst_train.experiments.arms import run_arm  # noqa: E402
from tst_train.experiments.compare import run_dirs, summarize  # noqa: E402
from tst_train.experiments.report import machine_description, verdict, write_report  # noqa: E402
from tst_train.metrics import read_metrics  # noqa: E402
from tst_train.train import make_schedule  # noqa: E402

# The arms, in priority order: name → config overrides on top of the config file. The first is the
# baseline; every other arm is compared with it seed by seed at equal FLOPs (same steps, same positions
# per step). The first TST arm is s = 4 with the batch fold (s× the rows of L tokens, the paper's unexplored
# "multiply the micro-batch size by s") and bag weights fitted to the corpus's token mutual information (the
# paper's §5.2): on the CPU study this pair led the best baseline at no more FLOPs by 0.121 nats over 3 seeds
# and under every document order (the fold alone: 0.032; experiments/2026-12-01-where-tst-pays), and it wins
# `make demo`. The second is the paper's own setting, s = 6.
_S6 = {"tst.mode": "tst", "tst.bag_size": 6, "tst.superposition_frac": 0.3}  # the paper's setting
_S4 = {"tst.mode": "tst", "tst.bag_size": 4, "tst.superposition_frac": 0.3}
ARMS: dict[str, dict] = {
    "baseline": {"tst.mode": "baseline"},
    "tst-s4-batchfold-fitted": _S4 | {"tst.fold": "batch", "tst.weights": "fitted"},
    "tst-s6": _S6,
}
# Not run by default (the budget fits the three arms above); pick them with --arms, e.g.
# --arms baseline,tst-s6,tst-s6-document.
OPTIONAL_ARMS: dict[str, dict] = {
    "tst-s4": _S4,
    "tst-s4-batchfold": _S4 | {"tst.fold": "batch"},
    "tst-s6-document": _S6 | {"tst.bagging": "document"},
    "tst-s6-smooth": _S6 | {"tst.transition_steps": 300},
    "tst-s6-sum-to-one": _S6 | {"tst.loss": "sum-to-one"},
    "tst-s6-fitted": _S6 | {"tst.weights": "fitted"},
    "output-only-s6": _S6 | {"tst.mode": "output-only"},
}

# Bytes per token of an 8k byte-level BPE trained on 1/3 prose + 2/3 code (the mix this script makes),
# measured on this project's CPU machine: prose 3.17, site-packages code 3.47. Sizing uses higher values:
# it counts fewer tokens in the prose and more bytes per code token, so it errs towards more code.
PROSE_BYTES_PER_TOKEN = 3.6
CODE_BYTES_PER_TOKEN = 3.8
DATA_HEADROOM = 1.2  # code for 20% more tokens than the hungriest arm reads
MEASURED_PEAK_TFLOPS = 790.0  # bf16 8192³ matmul measured on the H200s lent here (KINDS.md); the datasheet says 989


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


def arm_config(base: Config, arm: str, seed: int, data_dir: Path) -> Config:
    cfg = copy.deepcopy(base)
    for key, value in (ARMS | OPTIONAL_ARMS)[arm].items():
        set_value(cfg, key, value)
    cfg.train.seed = seed
    cfg.data.path = str(data_dir)
    return cfg.validate()


def data_tokens_needed(base: Config, arms: list[str]) -> int:
    """Raw training tokens the hungriest arm reads (``r·s + 1 − r`` times the baseline's for TST)."""
    cfgs = [arm_config(base, arm, 0, Path()) for arm in arms]
    for c in cfgs:  # the bag weights do not change what a step reads, and fitted ones need the data this sizes
        c.tst.weights = "uniform" if c.tst.weights == "fitted" else c.tst.weights
    return max(make_schedule(c).data_tokens(c.train.batch_size, c.train.seq_len) for c in cfgs)


ORDER_RULE = ("the baseline and the first TST arm for seeds 0 to {last} (enough for a confidence interval), then "
              "the other arms for those seeds, then one more seed of every arm at a time, up to {most} seeds")


def job_order(arms: list[str], min_seeds: int, max_seeds: int) -> list[tuple[str, int]]:
    """The (arm, seed) pairs in the order they train: see ``ORDER_RULE``."""
    base, first, others = arms[0], arms[1:2], arms[2:]
    jobs = [(arm, seed) for seed in range(min_seeds) for arm in [base, *first]]
    jobs += [(arm, seed) for seed in range(min_seeds) for arm in others]
    jobs += [(arm, seed) for seed in range(min_seeds, max_seeds) for arm in arms]
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
        (run_dir.parent / f"{run_dir.name}.error.txt").write_text(traceback.format_exc())
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
    cfg = arm_config(base, tst_arm, 0, work / "data")
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


def run_jobs(jobs: list[tuple[str, int]], base: Config, work: Path, budget: Budget, outcomes: dict, log) -> None:
    """Train the pairs in order while they fit the budget, recording ``outcomes[(arm, seed)]`` as they end."""
    last_s = None
    for arm, seed in jobs:
        if not budget.fits(last_s):
            outcomes[(arm, seed)] = {"status": "skipped", "reason": "budget"}
            continue
        run_dir = work / "runs" / f"{arm}-seed{seed}"
        log(f"[{budget.elapsed():5.0f}s] {arm} seed {seed}")
        out = train_pair(arm_config(base, arm, seed, work / "data"), run_dir, log)
        outcomes[(arm, seed)] = out
        if out["status"] == "completed" and not out["reused"]:
            last_s = out["seconds"]
        if out["status"] == "failed":
            log(f"  failed: {out['error']}")


# ------------------------------------------------------------------ report


def compare_reports(outcomes: dict, arms: list[str], base: Config, work: Path, out: Path) -> dict:
    """For each TST arm, the ``tst compare`` summary and report over the seeds it shares with the baseline.

    ``work/compare/ARM/runs`` links the pairs' run directories under the names ``tst compare`` uses, so
    its summary and report code run unchanged; the record (no checkpoints) is collected into ``out/ARM``.
    """
    done = {key for key, o in outcomes.items() if o["status"] == "completed"}
    summaries = {}
    for arm in arms[1:]:
        seeds = sorted(seed for a, seed in done if a == arm and (arms[0], seed) in done)
        if not seeds:
            continue
        cdir = work / "compare" / arm
        shutil.rmtree(cdir, ignore_errors=True)
        (cdir / "runs").mkdir(parents=True)
        compared = arm_config(base, arm, seeds[0], work / "data")
        for (name, seed), link in run_dirs(compared, cdir, ["baseline", "tst"], seeds).items():
            link.symlink_to(work / "runs" / f"{arms[0] if name == 'baseline' else arm}-seed{seed}")
        summary = summarize(cdir, compared, ["baseline", "tst"], seeds)
        rundir.write_json(cdir / "summary.json", summary)
        summaries[arm] = summary
        try:  # the plots need matplotlib; the numbers above do not, and the main report must be written
            write_report(cdir, summary)
        except Exception as e:
            summary["report_error"] = f"{type(e).__name__}: {e}"
        shutil.rmtree(out / arm, ignore_errors=True)
        collect(cdir, out / arm)
    return summaries


def throughput(run_dir: Path) -> dict:
    """Medians over a run's steps: positions/s, model TFLOP/s, MFU; data tokens/s over the whole run."""
    recs = [r for r in read_metrics(run_dir) if "positions_per_s" in r]
    plan = json.loads((run_dir / rundir.PLAN_FILE).read_text())
    summary = rundir.read_summary(run_dir) or {}
    pos = statistics.median(r["positions_per_s"] for r in recs)
    mfus = [r["mfu"] for r in recs if r.get("mfu") is not None]
    tflops = pos * plan["flops_per_position"] / 1e12
    return {"positions_per_s": pos, "data_tokens_per_s": summary["data_tokens"] / summary["train_time"],
            "model_tflops": tflops, "mfu_datasheet": statistics.median(mfus) if mfus else None,
            "of_measured_peak": tflops / MEASURED_PEAK_TFLOPS if _on_hopper() else None,
            "step_time_median": summary.get("step_time_median"), "epochs": summary["epochs"],
            "data_tokens": summary["data_tokens"], "wall_time": summary["wall_time"]}


def _on_hopper() -> bool:
    """An H100 or H200: the chips whose measured matmul rate ``MEASURED_PEAK_TFLOPS`` is."""
    import torch
    return torch.cuda.is_available() and any(k in torch.cuda.get_device_name(0) for k in ("H100", "H200"))


def arm_rows(outcomes: dict, arms: list[str], summaries: dict, work: Path) -> dict:
    """Per arm: its completed seeds, final validation loss, throughput and, for TST arms, the comparison."""
    rows = {}
    for arm in arms:
        seeds = sorted(s for (a, s), o in outcomes.items() if a == arm and o["status"] == "completed")
        runs = [work / "runs" / f"{arm}-seed{s}" for s in seeds]
        tp = [throughput(r) for r in runs]
        finals = [analysis.eval_curve(read_metrics(r))[-1][1] for r in runs]
        row = {"seeds": seeds, "final_val_loss": stats.mean_ci(finals),
               **{k: (statistics.median(t[k] for t in tp) if tp and tp[0][k] is not None else None)
                  for k in ("positions_per_s", "data_tokens_per_s", "model_tflops", "mfu_datasheet",
                            "of_measured_peak", "step_time_median", "epochs", "data_tokens")}}
        s = summaries.get(arm)
        if s:
            c = s["comparisons"]["tst"]
            row.update(delta_val_loss=c["delta_val_loss"], steps_ratio=c["steps_ratio"],
                       ratio_reached=c["ratio_reached"], compared_seeds=s["seeds"], verdict=verdict(s),
                       report_error=s.get("report_error"))
        rows[arm] = row
    return rows


def target_check(rows: dict, arms: list[str]) -> str:
    """The issue's target: TST ahead with a 95% CI excluding zero and an equal-loss speed-up ≥ 1.5×."""
    lines = []
    for arm in arms[1:]:
        d, sp = rows[arm].get("delta_val_loss"), rows[arm].get("steps_ratio")
        if not d or d["mean"] is None:
            lines.append(f"{arm}: no comparison (no seed with both runs completed).")
            continue
        ci_ok = bool(d.get("ci95")) and d["ci95"][1] < 0
        speed = sp["mean"] if sp and sp["mean"] is not None else None
        ci_text = (f"95% CI upper end {d['ci95'][1]:+.4f}" if d.get("ci95") else "one seed only, no CI")
        speed_text = f"{speed:.2f}×" if speed else "never reached the baseline's loss"
        met = "met" if ci_ok and speed and speed >= 1.5 else "not met"
        lines.append(f"{arm}: {met} — Δ {d['mean']:+.4f} nats ({ci_text}; needs < 0), equal-loss speed-up "
                     f"{speed_text} (needs ≥ 1.50×; {rows[arm]['ratio_reached']}/{d['n']} seeds reached it).")
    return "\n".join(f"- {line}" for line in lines)


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


def _ci(stat: dict | None, signed: bool = False, unit: str = "") -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    f = "{:+.4f}" if signed else "{:.4f}"
    text = f.format(stat["mean"]) + unit
    if stat.get("ci95"):
        text += " [" + ", ".join(f.format(x) for x in stat["ci95"]) + "]"
    return text


def _num(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def results_table(rows: dict) -> list[str]:
    lines = ["| arm | seeds | final val loss | Δ vs baseline (95% CI) | equal-loss speed-up | data tokens | epochs | "
             "positions/s | data tokens/s | model TFLOP/s | MFU (datasheet peak) | of measured 790 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in rows.items():
        sp = r.get("steps_ratio")
        speed = "—" if sp is None else ("never reached" if sp["mean"] is None else
                                        f"{sp['mean']:.2f}× ({r['ratio_reached']}/{len(r['compared_seeds'])})")
        lines.append(f"| {arm} | {len(r['seeds'])} | {_ci(r.get('final_val_loss'))} | "
                     f"{_ci(r.get('delta_val_loss'), signed=True)} | {speed} | {_num(r['data_tokens'], ',.0f')} | "
                     f"{_num(r['epochs'], '.3f')} | {_num(r['positions_per_s'], ',.0f')} | "
                     f"{_num(r['data_tokens_per_s'], ',.0f')} | {_num(r['model_tflops'], '.1f')} | "
                     f"{_num(r['mfu_datasheet'], '.1%')} | {_num(r['of_measured_peak'], '.1%')} |")
    return lines


def _note(o: dict) -> str:
    if o["status"] == "completed":
        return "reused from an earlier invocation" if o.get("reused") else ""
    if o["status"] == "stopped":
        return f"stopped by the budget after step {o.get('steps', 0)} (not counted)"
    if o["status"] == "failed":
        return " ".join(o.get("error", "").replace("|", "/").split())  # one table cell
    return ("not started: it would not have fitted the budget" if o.get("reason") == "budget"
            else "not started: the preflight failed")


def pairs_table(outcomes: dict) -> list[str]:
    lines = ["| run | status | seconds | of which training steps | note |", "|---|---|---|---|---|"]
    for (arm, seed), o in outcomes.items():
        lines.append(f"| {arm}-seed{seed} | {o['status']} | {_num(o.get('seconds'), '.1f')} | "
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


RESULTS_NOTE = ("Δ < 0: lower validation loss than the baseline of the same seed, at equal FLOPs (same steps, same "
                "positions per step). Throughput columns are medians over steps and seeds; MFU counts positions "
                "(6·N + attention), against the datasheet dense bf16 peak (989 TFLOP/s for an H100/H200) and, on those "
                "chips, against the ~790 TFLOP/s a bf16 matmul reached on the H200s lent here.")


def write_experiment_report(out: Path, rec: dict, outcomes: dict) -> None:
    rows = rec["arms"]
    compared = [a for a in rows if rows[a].get("verdict")]
    md = ["# GPU experiment: TST vs the equal-FLOPs baseline", ""]
    md += [f"**{arm}**: {rows[arm]['verdict']}" for arm in compared] or ["No comparison completed."]
    md += [f"(The `tst compare` report of {a} failed: {r['report_error']}.)"
           for a, r in rows.items() if r.get("report_error")]
    md += ["", "Target of issue 14 (TST ahead with a 95% CI excluding zero, equal-loss speed-up ≥ 1.5×):", "",
           target_check(rows, list(rows)), "", "## Results", "", *results_table(rows), "", RESULTS_NOTE]
    if compared:
        md += ["", "Each TST arm's `tst compare` report (curves, per-seed numbers): "
               + ", ".join(f"[`{a}/report.md`]({a}/report.md)" for a in compared) + "."]
    md += ["", "## Runs", "", _preflight_text(rec["preflight"]), "", f"Order: {rec['order_rule']}.", "",
           *pairs_table(outcomes), "",
           "## Setup", "", _setup_text(rec), "", "## Data", "", _data_text(rec), "",
           "## Machine and time", "", _machine_text(rec), "", "## Command", "", f"`{rec['command']}`", ""]
    (out / "report.md").write_text("\n".join(md))


# ------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    p = argparse.ArgumentParser(description="TST vs the equal-FLOPs baseline on one GPU, in a wall-clock budget.",
                                epilog="Other config fields: --section.field=value (as `tst train`).")
    p.add_argument("--out", required=True, type=Path, help="report directory (the compact record)")
    p.add_argument("--work", type=Path, help="corpus, data, checkpoints and full metrics (default: OUT-work); "
                                             "rerun with the same --work to reuse and resume")
    p.add_argument("--smoke", action="store_true", help="the same path on the CPU in seconds (configs/gpu_smoke.toml)")
    p.add_argument("--budget-min", type=float, help="wall-clock budget in minutes, everything included (default 8)")
    p.add_argument("--arms", help=f"comma-separated, baseline first (default: {','.join(ARMS)}; "
                                  f"optional: {','.join(OPTIONAL_ARMS)})")
    p.add_argument("--seeds", type=int, help="at most this many seeds per arm")
    p.add_argument("--prose", type=Path, nargs="+", help="prose inputs, JSONL[.xz] (default: .carry/prose/*.jsonl.xz, "
                                                         "else the bundled corpus)")
    args, extra = p.parse_known_args(argv)
    return args, parse_dotted(extra)


def check_args(args: argparse.Namespace, settings: Settings) -> list[str]:
    arms = args.arms.split(",") if args.arms else list(ARMS)
    unknown = [a for a in arms if a not in ARMS | OPTIONAL_ARMS]
    if unknown or len(arms) < 2 or arms[0] != "baseline" or len(set(arms)) != len(arms):
        raise UserError(f"--arms: the baseline first, then TST arms, from {', '.join(ARMS | OPTIONAL_ARMS)}; "
                        f"got {args.arms!r}")
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
        arms = check_args(args, settings)
        seeds = args.seeds or settings.max_seeds
        settings = replace(settings, budget_s=args.budget_min * 60 if args.budget_min else settings.budget_s,
                           max_seeds=seeds, min_seeds=min(settings.min_seeds, seeds))
        base = load_config(settings, overrides)
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
    jobs = job_order(arms, settings.min_seeds, settings.max_seeds)
    phase = "data"
    with budget:
        try:
            t = time.monotonic()
            data = prepare_data(settings, base, arms, work, prose, log)
            seconds["data"], t, phase = time.monotonic() - t, time.monotonic(), "preflight"
            pre = preflight(base, arms[1], settings, work, log)
            seconds["preflight"], t, phase = time.monotonic() - t, time.monotonic(), "runs"
            if pre["ok"]:
                base = copy.deepcopy(base)
                base.train.compile = pre["compile"]
                run_jobs(jobs, base, work, budget, outcomes, log)
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
    for key in jobs:
        outcomes.setdefault(key, {"status": "skipped", "reason": not_run})
    summaries = compare_reports(outcomes, arms, base, work, out)
    rows = arm_rows(outcomes, arms, summaries, work)
    done = [work / "runs" / f"{a}-seed{s}" for (a, s), o in outcomes.items() if o["status"] == "completed"]
    rec = {"command": command, "budget_s": settings.budget_s, "seconds": seconds, "env": environment(),
           "config": base.to_dict(), "arm_overrides": {a: (ARMS | OPTIONAL_ARMS)[a] for a in arms}, "data": data, "preflight": pre,
           "compile": {"asked": compile_asked, "used": pre["compile"]},
           "plan": json.loads((done[0] / rundir.PLAN_FILE).read_text()) if done else None,
           "order_rule": ORDER_RULE.format(last=settings.min_seeds - 1, most=settings.max_seeds),
           "arms": rows, "data_repeats": any((r["epochs"] or 0) > 1 for r in rows.values())}
    write_experiment_report(out, rec, outcomes)
    rec["outcomes"] = [{"arm": a, "seed": s, **o} for (a, s), o in outcomes.items()]
    rundir.write_json(out / "report.json", rec)
    log((out / "report.md").read_text().split("## Runs")[0])
    failed = [k for k, o in outcomes.items() if o["status"] == "failed"]
    return 1 if failed or not pre["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
