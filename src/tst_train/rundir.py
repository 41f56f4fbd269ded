"""The run directory: a self-describing, self-contained record of one run.

    RUN_DIR/config.toml    the resolved config (plain values)
    RUN_DIR/run.json       provenance: command, git revision, versions, machine
    RUN_DIR/plan.json      what the run does (steps per phase, data tokens, FLOPs, epochs)
    RUN_DIR/metrics.jsonl  one record per step and per evaluation (see ``metrics``)
    RUN_DIR/summary.json   the outcome, written when the run ends or stops
    RUN_DIR/checkpoints/   see ``checkpoint``

This module writes and reads those files; it knows nothing about training.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from .config import Config, from_mapping, load_toml, numbers_differ, to_toml
from .errors import UserError

CONFIG_FILE = "config.toml"
RUN_FILE = "run.json"
PLAN_FILE = "plan.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` through a temporary file and a rename: readers see the old or the
    new file, and a killed writer leaves no half-written one.

    The temporary file is created exclusively under a name nobody else chose (``mkstemp``: no symbolic link
    planted in a received run directory is followed), and the rename replaces ``path`` itself — a link there is
    replaced, never written through."""
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_no_follow(path: Path, mode: str = "a"):
    """``open(path, mode)`` for appending or locking inside a run directory, refusing a symbolic link there: a
    received run directory must not make the trainer write outside it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError:
        if os.path.islink(path):
            raise UserError(f"{path} is a symbolic link: a run directory's own files must be plain files "
                            "(a received run directory may not point the trainer's writes elsewhere)") from None
        raise
    return os.fdopen(fd, mode, buffering=1)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2))


def git_revision() -> dict:
    """The commit of the source tree this package runs from (``None`` outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": None, "dirty": None}


def provenance() -> dict:
    import torch
    return {"argv": sys.argv, "git": git_revision(), "python": platform.python_version(), "torch": torch.__version__,
            "host": platform.node(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_kernels": cpu_kernels(), "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def cpu_kernels() -> str | None:
    """The CPU instruction set torch dispatches to (e.g. AVX512, AVX2): two CPUs that differ here round
    differently, so the same run's losses agree to ~6 digits after ~100 steps, not bit for bit."""
    import torch
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return get() if get else None


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def check_new(out: Path) -> None:
    """A fresh run needs a path that is free (or an empty directory)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"run directory {out} already exists; pass --resume to continue it, or choose a new --out")


def create(out: Path, cfg: Config) -> None:
    """Create a new run directory holding the resolved config and provenance, atomically.

    The files are written into a hidden sibling directory that is then renamed to ``out``: a kill at any
    moment leaves either no run directory or a complete one (and at most a hidden leftover, removed by
    the next ``create`` of the same path).
    """
    check_new(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.creating-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.creating-{os.getpid()}"
    tmp.mkdir()
    try:
        write_json(tmp / RUN_FILE, provenance())
        write_atomic(tmp / CONFIG_FILE, to_toml(cfg))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold an exclusive lock on ``run_dir`` while a process trains it; a second one is refused.

    An OS file lock (``flock``): it is released when the process ends, however it ends, so a crashed
    run never leaves a stale lock behind.
    """
    import fcntl
    fh = open_no_follow(run_dir / LOCK_FILE)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{run_dir} is being trained by another process; wait for it to finish "
                            "(or stop it) before resuming") from None
        yield
    finally:
        fh.close()


def read_config(run_dir: Path) -> Config:
    """The config a run directory was trained with."""
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    path = run_dir / CONFIG_FILE
    return from_mapping(load_toml(path), str(path))


def read_summary(run_dir: Path) -> dict | None:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


def check_resume_overrides(saved: Config, merged: Config, run_dir: Path) -> None:
    """On resume only settings that do not change the numbers may differ from the saved config."""
    changed = numbers_differ(saved, merged)
    if changed:
        raise UserError(f"cannot change {', '.join(c.split(':')[0] for c in changed)} when resuming {run_dir} "
                        f"(the checkpoint was trained with the saved values); drop those flags or start a new --out")
