"""The one place that knows about processes: init, rank-0 printing, FSDP2 wrapping, reductions.

Launch with ``torchrun --nproc_per_node=N -m tst train ...``; a plain ``tst train`` is world size 1
and every function here is then a no-op, so the training loop has no ``if distributed`` branches.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_pref: str = "auto", timeout_s: float = 600) -> DistInfo:
    """Initialise the process group when launched by torchrun (RANK/WORLD_SIZE set) and pick the device.

    ``timeout_s`` bounds every collective: a rank that froze or died makes the others fail after it
    instead of waiting forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank, "--train.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank, device)


def pick_device(pref: str = "auto", local_rank: int = 0, flag: str = "--device") -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cuda`` without a GPU is a user error."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(pref)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            from .errors import UserError
            raise UserError(f"{flag}=cuda but no CUDA device is available; use {flag}=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def autocast_dtype(want: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: ``auto`` is bf16 on CUDA and none (fp32) elsewhere."""
    if want == "auto":
        want = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if want == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The one autocast context of training and evaluation (a no-op without a dtype)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process (0, 1 without a process group)."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def cleanup() -> None:
    """Tear the process group down before the interpreter exits: left to its destructor at exit, gloo sometimes
    aborts the process ("terminate called without an active exception", status -6) after a run that finished.
    No barrier: a rank that stopped on an error must not wait here for the others."""
    if dist.is_initialized() and not _BROKEN:
        try:
            dist.destroy_process_group()
        except Exception:  # already torn down, or a backend that refuses: exiting is all that is left
            pass


def print0(*args, **kwargs) -> None:
    """Print on rank 0 only."""
    if is_main():
        print(*args, **kwargs)


_BROKEN = False  # a collective failed: the process group cannot be torn down cleanly any more


def exit_process(code: int) -> None:
    """Exit with ``code``. After a failed collective the process group's destructor aborts the interpreter at exit
    ("terminate called without an active exception", status -6), which would hide the one-line error's status:
    then leave at once, output flushed."""
    if _BROKEN:
        import os
        import sys
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


@contextlib.contextmanager
def _collective(what: str):
    """A failed or timed-out collective means another rank stopped or froze: say so on one line."""
    global _BROKEN
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        from .errors import UserError
        _BROKEN = True
        rank, world = rank_world()
        reason = " ".join(str(e).split())[:200]
        raise UserError(f"rank {rank}/{world}: {what} did not complete ({reason}); another rank stopped or froze — "
                        "when all ranks can run again, continue with --resume") from None


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (identity at world size 1)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        with _collective("an all-reduce"):
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is set on any rank — so that all ranks stop at the same step after a signal."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    with _collective("the stop-signal all-reduce"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_dicts(d: dict) -> dict:
    """The union of every rank's ``d`` (on every rank; ``d`` itself at world size 1)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return d
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, d)
    out = {}
    for p in parts:
        out.update(p)
    return out


def barrier() -> None:
    if dist.is_initialized():
        with _collective("a barrier"):
            dist.barrier()


def parallelize(objective: nn.Module, blocks: nn.ModuleList, info: DistInfo, param_dtype: torch.dtype | None) -> nn.Module:
    """Apply FSDP2 from outside the model: ``fully_shard`` each block, then the root (no-op at world 1).

    The root is the trainer's objective wrapper, so the embedding and LM head are used inside the
    root's forward (where FSDP2 has them unsharded) — the fused loss reads ``lm_head.weight`` there.
    """
    if info.world_size == 1:
        return objective
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else None
    kwargs = {"mp_policy": mp} if mp else {}
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(objective, **kwargs)
    return objective


def is_main() -> bool:
    """Rank 0 (also before the process group exists, from torchrun's RANK)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
