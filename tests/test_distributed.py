"""torchrun + FSDP2 on the CPU (gloo, 2 processes): same per-step losses as one process with the same
global batch, and a 2-rank sharded checkpoint resumes on 1 rank."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from tst_train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def flags(data) -> list[str]:
    return ["--data", str(data), "--preset", "tiny", "--steps", "10", "--batch-size", "4", "--seq-len", "32",
            "--bag-size", "4", "--superposition-frac", "0.5", "--eval-every", "5", "--checkpoint-every", "4",
            "--device", "cpu", "--train.threads=1", "--train.warmup_steps=2", "--log.progress=false",
            "--log.tensorboard=false", "--eval.tokens=2048", "--checkpoint.keep=5"]


# A known flake of this CPU setup, not of the training: now and then, in a full-suite run only, a gloo rank aborts
# at process exit ("terminate called without an active exception", SIGABRT) after its run has finished and
# written everything. Such a run is trained again from scratch, once; any other failure fails the test.
TEARDOWN_ABORT = "terminate called without an active exception"


def run(cmd: list[str], retry_dir=None) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for attempt in range(2):
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if p.returncode == 0 or retry_dir is None or attempt or TEARDOWN_ABORT not in p.stderr:
            break
        shutil.rmtree(retry_dir, ignore_errors=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def torchrun(nproc: int, *args, retry_dir=None) -> None:
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         "-m", "tst", *args], retry_dir)


def records(run_dir, key):
    return [(r["step"], r[key]) for r in read_metrics(run_dir) if key in r]


def assert_close(a, b, rel=2e-5):
    assert [s for s, _ in a] == [s for s, _ in b]
    for (s, x), (_, y) in zip(a, b):
        assert abs(x - y) <= rel * max(1.0, abs(x)), (s, x, y)


@pytest.fixture(scope="module")
def two_rank_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp") / "two"
    torchrun(2, "train", "--out", str(out), *flags(tiny_data), retry_dir=out)
    return out


def test_two_ranks_match_one_process(tiny_data, tmp_path, two_rank_run):
    one = tmp_path / "one"
    run([sys.executable, "-m", "tst", "train", "--out", str(one), *flags(tiny_data)])
    assert_close(records(two_rank_run, "loss"), records(one, "loss"))
    assert_close(records(two_rank_run, "val_loss"), records(one, "val_loss"))
    run_info = json.loads((two_rank_run / "run.json").read_text())
    assert run_info["world_size"] == 2
    # the sharded checkpoint has one shard file per rank
    assert sorted(p.name for p in (two_rank_run / "checkpoints" / "step_0000004").glob("*.distcp")) == \
        ["__0_0.distcp", "__1_0.distcp"]


def test_two_rank_checkpoint_resumes_on_one_rank(two_rank_run, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(two_rank_run, resumed)
    for ckpt in (resumed / "checkpoints").iterdir():
        if ckpt.name != "step_0000004":
            shutil.rmtree(ckpt)  # as if the 2-rank job had died after step 4's checkpoint
    run([sys.executable, "-m", "tst", "train", "--out", str(resumed), "--resume"])
    # steps 5..10 (across the phase boundary at 5) continue exactly as the 2-rank run did
    assert_close(records(resumed, "loss"), records(two_rank_run, "loss"))
    assert_close(records(resumed, "val_loss"), records(two_rank_run, "val_loss"))


def test_mixture_of_experts_two_ranks_match_one_process(tiny_data, tmp_path):
    """Expert weights (E, ·, ·) sharded over ranks, routing statistics summed over them: the same run. (The
    balancing loss is off: like Switch Transformer's it is computed on each rank's micro-batch, so its value —
    a product of two means — depends on how the batch is split, as it does under gradient accumulation.)"""
    moe = [*flags(tiny_data), "--preset", "moe-tiny", "--model.router_bias_rate=0.01", "--model.router_aux_coef=0"]
    torchrun(2, "train", "--out", str(tmp_path / "two"), *moe, retry_dir=tmp_path / "two")
    run([sys.executable, "-m", "tst", "train", "--out", str(tmp_path / "one"), *moe])
    for key in ("loss", "val_loss", "load_cv", "router_entropy"):
        assert_close(records(tmp_path / "two", key), records(tmp_path / "one", key))
