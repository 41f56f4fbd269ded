"""The arms of an equal-FLOPs comparison and the runner that trains them (reusing finished runs).

Every arm trains on the same data stream with the same seed, steps and positions (FLOPs) per step. A
run directory is reused only when it was trained with exactly the requested numbers (every config field
that changes them, as the fields declare); otherwise the runner says what differs and stops.
"""
from __future__ import annotations

import copy
import math
import os
import signal
from pathlib import Path

from .. import rundir
from ..checkpoint import list_checkpoints
from ..config import Config, numbers_differ
from ..data.loader import check_data_dir
from ..errors import Interrupted, UserError
from ..train import StopFlag, make_schedule, plan, run_training

ARMS = ("baseline", "tst", "input-only", "output-only", "tst-reinit", "baseline-equal-data")
BASELINES = ("baseline", "baseline-equal-data")


def parse_arm(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """``ARM[+key=value…]`` → (arm, [(config key, value)]): e.g. ``tst+bagging=document+loss=sum-to-one``.

    A key without a section is a ``tst.`` field (``bag_size``, ``weights``, ``loss``, ``bagging``, ``fold``,
    ``transition_steps``, …); ``train.lr=3e-4`` names any other field.
    """
    arm, *parts = spec.split("+")
    if arm not in ARMS:
        raise UserError(f"unknown arm {arm!r} in {spec!r}; choose from: {', '.join(ARMS)} (options as ARM+key=value)")
    overrides = []
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            raise UserError(f"arm {spec!r}: options are written key=value, got {part!r}")
        overrides.append((key if "." in key else f"tst.{key}", value))
    return arm, overrides


def arm_config(base: Config, spec: str, seed: int, tst_data_tokens: int | None = None) -> Config:
    """The config of one arm: the shared settings with the arm's mode, its options (and length, for equal data)."""
    from ..config import set_value
    arm, overrides = parse_arm(spec)
    cfg = copy.deepcopy(base)
    for key, value in overrides:
        set_value(cfg, key, value)
    cfg.train.seed = seed
    cfg.tst.reinit_embeddings = arm == "tst-reinit"
    cfg.tst.mode = {"tst-reinit": "tst", "baseline-equal-data": "baseline"}.get(arm, arm)
    if arm == "baseline-equal-data":
        per_step = cfg.train.batch_size * cfg.train.seq_len
        cfg.train.steps = math.ceil(tst_data_tokens / per_step)
    return cfg.validate()


def tst_data_tokens(base: Config) -> int:
    """Raw tokens the TST arm of ``base`` reads (what the equal-data baseline must see)."""
    cfg = copy.deepcopy(base)
    cfg.tst.mode = "tst"
    return make_schedule(cfg).data_tokens(cfg.train.batch_size, cfg.train.seq_len)


def check_reusable(cfg: Config, run_dir: Path) -> None:
    """Refuse to reuse (or resume) ``run_dir`` for ``cfg`` unless it was trained with the same numbers on the same
    data (its recorded size, training shards' content hashes and tokenizer)."""
    saved = rundir.read_config(run_dir)
    diffs = numbers_differ(saved, cfg)
    if diffs:
        raise UserError(f"{run_dir} was trained with other settings ({'; '.join(diffs)}): it cannot stand for "
                        "this run; use a new --out, or delete that run directory to train it again")
    from ..data.layout import data_identity
    from ..tokenizer_files import has_snapshot, run_data
    # the run's own record of its data (a collected record keeps none: then only the numbers can be checked)
    theirs = run_data(run_dir, saved.data.path).get("meta") if has_snapshot(run_dir) else None
    ours = check_data_dir(cfg.data.path)
    if theirs and (data_identity(theirs) != data_identity(ours) or theirs.get("splits", {}).get("train", {}).get(
            "tokens") != ours["splits"]["train"]["tokens"]):
        raise UserError(f"{run_dir} was trained on other data than {cfg.data.path} (size, content hashes or tokenizer "
                        "differ): it cannot stand for this run; use a new --out")


def run_arm(cfg: Config, run_dir: Path, log) -> dict:
    """Train one arm, resume it, or reuse it when it already holds this exact run completed."""
    if rundir.is_run_dir(run_dir):
        check_reusable(cfg, run_dir)
        summary = rundir.read_summary(run_dir)
        if summary and summary.get("completed"):
            log(f"  {run_dir.name}: already complete, reusing")
            return summary
    resume = rundir.is_run_dir(run_dir)
    log(f"  {run_dir.name}: {'resuming' if resume else 'training'} ({cfg.tst.mode}, {cfg.train.steps:,} steps)")
    summary = run_training(cfg, run_dir, resume=resume, show_plan=False)
    if not summary["completed"]:
        raise Interrupted(f"{run_dir.name} stopped by {summary['interrupted_by']} after step {summary['steps']} "
                          "(checkpoint saved); rerun the same command to continue", run=run_dir.name)
    loss = summary.get("final_val_loss")
    log(f"  {run_dir.name}: done, final validation loss {'n/a' if loss is None else f'{loss:.4f}'} "
        f"({summary['train_time'] / 60:.1f} min training)")
    return summary


def job_state(cfg: Config, run_dir: Path) -> str:
    """What training ``run_dir`` for ``cfg`` would do now (a mismatching run directory is refused)."""
    if not rundir.is_run_dir(run_dir):
        return "to train"
    check_reusable(cfg, run_dir)
    if (rundir.read_summary(run_dir) or {}).get("completed"):
        return "finished (reused)"
    done = list_checkpoints(run_dir / "checkpoints")
    return f"resumes from {done[-1].name}" if done else "restarts (no checkpoint)"


def format_jobs(jobs: list, n_parallel: int) -> str:
    """The runs a command would train, one line each — what ``--dry-run`` prints; nothing is written."""
    jobs = flat(jobs)
    lines = ["| run | mode | steps | FLOPs | data tokens (epochs) | state |", "|---|---|---|---|---|---|"]
    todo, todo_flops, metas = 0, 0.0, {}
    for cfg, run_dir in jobs:
        meta = metas.setdefault(cfg.data.path, check_data_dir(cfg.data.path))
        p, state = plan(cfg, meta), job_state(cfg, run_dir)
        if not state.startswith("finished"):
            todo, todo_flops = todo + 1, todo_flops + p["flops"]
        lines.append(f"| {run_dir.name} | {cfg.tst.mode} | {cfg.train.steps:,} | {p['flops']:.3g} | "
                     f"{p['data_tokens']:,} ({p['epochs']:.2f}) | {state} |")
    lines += ["", f"{len(jobs)} runs, {todo} to train or resume ({todo_flops:.3g} FLOPs), {n_parallel} at a time"]
    return "\n".join(lines)


def check_jobs(jobs: list) -> None:
    """Everything that can refuse a command's runs — each data folder, each existing run directory's reuse —
    checked before the command writes anything (its recorded config included), so a refusal leaves no trace."""
    jobs = flat(jobs)
    for path in dict.fromkeys(cfg.data.path for cfg, _ in jobs):
        check_data_dir(path)
    for cfg, run_dir in jobs:
        if rundir.is_run_dir(run_dir):
            check_reusable(cfg, run_dir)


Job = tuple[Config, Path]


def chains(jobs: list) -> list[list[Job]]:
    """Jobs as chains run in order in one process: a plain (config, run directory) job is a chain of one; a
    list of jobs is a chain (a compute curve's trunk, then the cooldown branches that start from it)."""
    return [list(j) if isinstance(j, list) else [j] for j in jobs]


def flat(jobs: list) -> list[Job]:
    return [job for chain in chains(jobs) for job in chain]


def run_arms(jobs: list, n_parallel: int, log=print) -> None:
    """Train the runs (checked first with ``check_jobs``), ``n_parallel`` chains at a time in separate processes
    (one CPU thread each when > 1); the runs of a chain train one after another, in order.

    Side by side, arms share the machine's load equally, so their step times are comparable — on a shared
    machine timings of runs done one after another are not.
    """
    todo = chains(jobs)
    if n_parallel <= 1:
        for chain in todo:
            for cfg, run_dir in chain:
                run_arm(cfg, run_dir, log)
        return
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(n_parallel, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        futures = []
        for chain in todo:
            chain = [(copy.deepcopy(cfg), run_dir) for cfg, run_dir in chain]
            for cfg, _ in chain:
                cfg.train.threads = cfg.train.threads or 1
            futures.append(pool.submit(_run_in_worker, chain, print))
        stopped, skipped = [], 0
        with StopFlag(on_stop=lambda signum: _stop_pool(pool, futures)) as stop:
            size, done = {f: len(chain) for f, chain in zip(futures, todo)}, 0
            for f in cf.as_completed(futures):
                try:
                    skipped += f.result() is None
                    done += size[f]
                    log(f"progress: {done}/{sum(size.values())} runs finished")
                except cf.CancelledError:
                    skipped += 1
                except Interrupted as e:
                    stopped.append(e.run)
    if stop.signum is not None or stopped:
        by = signal.Signals(stop.signum).name if stop.signum is not None else "a signal"
        raise Interrupted(f"by {by}: {len(stopped)} runs checkpointed ({', '.join(stopped) or 'none'}), "
                          f"{skipped} not started; rerun the same command to continue")


# A stop signal (Ctrl-C, SIGTERM from a scheduler) must end a parallel sweep the way it ends `tst train`: the
# runs in flight checkpoint and stop, and none of the queued ones starts — the pool had already handed each
# worker its next run, which would otherwise train unattended after the parent is gone.
# In a worker, StopFlag.pending says that worker was stopped: set by a signal that lands between runs (or while
# one is being set up: it then stops at its first step boundary, with a checkpoint) or after a run stopped.


def _worker_init() -> None:
    """In each pool worker: a stop signal outside a run's loop is noted (inside it the trainer's StopFlag takes it)."""
    def note(signum, frame):
        StopFlag.pending = signum
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, note)


def _run_in_worker(chain: list[Job], log) -> dict | None:
    """``run_arm`` over a chain in a pool worker; once this worker was stopped, the runs still queued to it are
    skipped (None)."""
    summary = None
    for cfg, run_dir in chain:
        if StopFlag.pending is not None:
            return None
        try:
            summary = run_arm(cfg, run_dir, log)
        except Interrupted:
            StopFlag.pending = signal.SIGTERM
            raise
    return summary


def _stop_pool(pool, futures) -> None:
    """The parent's stop: cancel the runs not yet handed out and pass SIGTERM to the workers (a signal sent to the
    parent alone must reach the runs too; one sent to the whole process group reaches them twice, which the
    trainer's StopFlag treats as one stop)."""
    for f in futures:
        f.cancel()
    for proc in list(getattr(pool, "_processes", {}).values()):
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except OSError:  # already gone
            pass
