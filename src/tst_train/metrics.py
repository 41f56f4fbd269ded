"""Run records: ``metrics.jsonl`` (one JSON object per step, plus evaluation records), TensorBoard and
optionally W&B. Rank 0 writes; other ranks get a writer that does nothing.

Units: ``data_tokens`` = raw tokens the loader consumed (``s×`` more per step in the superposition
phase); ``positions`` = positions the model computed on; ``flops`` counts positions only.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import distributed
from .errors import UserError

METRICS_FILE = "metrics.jsonl"


def mfu(flops_per_second: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation (FLOPs counted on positions), or ``None`` when the hardware peak is unknown."""
    if not peak_flops:
        return None
    return flops_per_second / peak_flops


COLLECTED_FILE = "evals.jsonl"  # what scripts/collect_experiment.py keeps of metrics.jsonl in experiments/


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The run's records; for a collected record (``experiments/``) its ``evals.jsonl`` (every evaluation
    and every 10th step), so reports can be rebuilt from what is committed."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file() and (Path(run_dir) / COLLECTED_FILE).is_file():
        path = Path(run_dir) / COLLECTED_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill; the records before it are whole
                break
    return out


def copy_records(src: Path, dst: Path, step: int) -> None:
    """A cooldown branch's record starts with its trunk's records up to the branch step."""
    from .rundir import write_atomic
    kept = [r for r in read_metrics(src) if r.get("step", 0) <= step]
    write_atomic(dst / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))


def truncate_after(run_dir: Path, step: int) -> None:
    """On resume from a checkpoint taken before step ``step`` (0-based), drop records of later steps.

    Records carry ``step`` = completed steps, so records with ``step <= step`` are kept. The file is
    rewritten atomically.
    """
    path = run_dir / METRICS_FILE
    if not distributed.is_main() or not path.exists():
        return
    from .rundir import write_atomic
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def tensorboard_scalars(record: dict) -> dict[str, float]:
    """TensorBoard tags of a record, grouped: ``val/loss``, ``val/bpb`` … for an evaluation (its counters are
    the training record's), ``train/loss``, ``train/lr`` … for a step."""
    numbers = {k: v for k, v in record.items()
               if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if "val_loss" in record:
        return {f"val/{k.removeprefix('val_')}": v for k, v in numbers.items() if k.startswith("val_")}
    return {f"train/{k}": v for k, v in numbers.items()}


def check_wandb(enabled: bool) -> None:
    """``--log.wandb=true`` on a machine where W&B cannot log is one line before anything is written — not a
    traceback from inside the first step, with a half-made run directory left behind."""
    if not enabled:
        return
    try:
        import wandb
    except ImportError:
        raise UserError("--log.wandb=true needs the `wandb` package: pip install wandb (or drop the flag)") from None
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    key = None
    try:
        key = wandb.api.api_key
    except Exception:  # an old or changed wandb: let wandb.init say what it needs
        return
    if not key:
        raise UserError("--log.wandb=true: W&B has no login on this machine; run `wandb login`, or set "
                        "WANDB_MODE=offline to log locally (sync later with `wandb sync`)")


class MetricsWriter:
    def __init__(self, run_dir: Path, config: dict, tensorboard: bool, wandb: bool, wandb_project: str) -> None:
        self.enabled = distributed.is_main()
        self._file = None
        self._tb = None
        self._wandb = None
        if not self.enabled:
            return
        from .rundir import open_no_follow
        self._file = open_no_follow(run_dir / METRICS_FILE)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                pass
        if wandb:
            try:
                import wandb as wb
                self._wandb = wb.init(project=wandb_project, config=config, dir=str(run_dir),
                                      name=run_dir.name, resume="allow")
            except Exception as e:  # checked at start (check_wandb); a late failure must not cost the run
                print(f"warning: W&B logging is off for this run ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                      "metrics.jsonl and TensorBoard still hold everything")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        step = record["step"]
        if self._tb is not None:
            for tag, value in tensorboard_scalars(record).items():
                self._tb.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()
