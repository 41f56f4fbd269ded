#!/usr/bin/env python3
"""Random SIGKILL / SIGTERM trials: every resume must reproduce an uninterrupted run bit for bit.

    python scripts/kill_resume_trials.py --data DATA_DIR --trials 20 [--seed 0] [--work DIR]

Each trial starts `tst train` with a checkpoint every step (so kills often land inside a checkpoint
write), kills it after a random delay (SIGKILL, or SIGTERM for a graceful stop), possibly several
times, then resumes until it completes and compares every step's loss with the reference run. The
test suite runs the short version (tests/test_train.py::test_sigkill_and_resume_is_bit_identical).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--preset", "tiny", "--steps", "30", "--batch-size", "4", "--seq-len", "32", "--bag-size", "4",
         "--superposition-frac", "0.5", "--eval-every", "10", "--checkpoint-every", "1", "--train.warmup_steps=4",
         "--train.threads=1", "--eval.tokens=2048", "--log.progress=false", "--log.tensorboard=false"]


def tst(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tst", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def losses(run: Path) -> list:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, deleted)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="kill-trials-"))
    ref = work / "ref"
    shutil.rmtree(ref, ignore_errors=True)
    t0 = time.perf_counter()
    assert tst("train", "--data", args.data, "--out", ref, *FLAGS).wait() == 0
    full = time.perf_counter() - t0
    failures = 0
    for trial in range(args.trials):
        run = work / f"trial{trial}"
        shutil.rmtree(run, ignore_errors=True)
        kills, proc = [], tst("train", "--data", args.data, "--out", run, *FLAGS)
        while True:
            time.sleep(rng.uniform(0.2, 0.9) * full)
            if proc.poll() is not None:
                break
            sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
            proc.send_signal(sig)
            proc.wait()
            kills.append(sig.name)
            proc = tst("train", "--out", run, "--resume")
        ok = proc.wait() == 0 and losses(run) == losses(ref)
        failures += not ok
        print(f"trial {trial}: kills {kills or 'none (finished first)'} -> {'identical' if ok else 'DIFFERENT'}")
    print(f"{args.trials - failures}/{args.trials} trials resumed bit-identically")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
