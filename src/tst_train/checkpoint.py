"""Checkpoints that survive preemption: model + optimizer through torch.distributed.checkpoint (sharded,
and loadable on a different number of ranks), plus the trainer state (step, data position, counters,
RNG) in a small file. Written into ``step_XXXXXXX.tmp`` and renamed, so a checkpoint directory either
exists whole or not at all — a SIGKILL mid-write leaves only a ``.tmp`` that is ignored and cleaned.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from . import distributed
from .errors import UserError

STATE_FILE = "trainer_state.pt"

INFO_FILE = "checkpoint.json"


@contextlib.contextmanager
def quiet_dcp():
    """DCP warns that it "assumes a single process" whenever no process group exists; that is our intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch.distributed is disabled, unavailable or uninitialized")
        yield


def _dir_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not ckpt_root.is_dir():
        return []
    done = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step_")
            and not p.name.endswith(".tmp") and (p / INFO_FILE).is_file()]
    return sorted(done, key=lambda p: p.name)


def save(ckpt_root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
         trainer_state: dict, fingerprint: dict, keep: int) -> Path:
    """Save a checkpoint for resuming *before* 0-based ``step``; collective (all ranks call it)."""
    final = ckpt_root / _dir_name(step)
    tmp = ckpt_root / (_dir_name(step) + ".tmp")
    if distributed.is_main():
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    distributed.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with quiet_dcp():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    if distributed.is_main():
        torch.save(trainer_state, tmp / STATE_FILE)
        (tmp / INFO_FILE).write_text(json.dumps({"step": step, "fingerprint": fingerprint}, indent=2))
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. a stop signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        for old in list_checkpoints(ckpt_root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()
    return final


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_latest(ckpt_root: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict) -> dict | None:
    """Load the newest complete checkpoint into ``model``/``optimizer``; return the trainer state (or None)."""
    found = list_checkpoints(ckpt_root)
    if not found:
        return None
    path = found[-1]
    info = json.loads((path / INFO_FILE).read_text())
    check_compatible(info.get("fingerprint", {}), fingerprint, path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    try:
        with quiet_dcp():
            dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # a truncated or foreign checkpoint
        raise UserError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {e}); "
                        f"delete it to fall back to an older one") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return torch.load(path / STATE_FILE, weights_only=False)


def check_compatible(saved: dict, current: dict, path: Path) -> None:
    """A checkpoint only resumes into the same model shape, data and schedule."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in current.items() if saved.get(k) != v]
    if diffs:
        raise UserError(f"checkpoint {path} comes from an incompatible config ({'; '.join(diffs)}); "
                        f"resume with the run's saved config or start a new run directory")


def clean_partial(ckpt_root: Path) -> None:
    """Remove ``.tmp`` leftovers of a save that was killed."""
    if distributed.is_main() and ckpt_root.is_dir():
        for p in ckpt_root.glob("step_*.tmp"):
            shutil.rmtree(p, ignore_errors=True)
