"""Golden losses: a fixed tiny TST run (phase switch included) must keep producing the same per-step
losses. Regenerate deliberately with `python tests/test_golden.py` after an intended numerical change."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "assets" / "golden_tiny_tst.json"


def golden_run(data_dir, out_dir) -> list[float]:
    from tst_train.train import run_training
    from tst_train.config import Config
    from tst_train.metrics import read_metrics
    cfg = Config()
    cfg.data.path = str(data_dir)
    cfg.train.steps, cfg.train.batch_size, cfg.train.seq_len, cfg.train.threads = 12, 4, 32, 1
    cfg.train.warmup_steps, cfg.train.seed = 3, 0
    cfg.tst.bag_size, cfg.tst.superposition_frac = 4, 0.5
    cfg.eval.every, cfg.eval.tokens = 0, 1024
    cfg.log.progress = cfg.log.tensorboard = False
    run_training(cfg.validate(), Path(out_dir))
    return [r["loss"] for r in read_metrics(out_dir) if "loss" in r] + \
           [r["val_loss"] for r in read_metrics(out_dir) if "val_loss" in r]


def test_golden_losses(tiny_data, tmp_path):
    want = json.loads(GOLDEN.read_text())["losses"]
    got = golden_run(tiny_data, tmp_path / "run")
    # Different CPUs may order float reductions differently; 1e-4 relative still catches any real change.
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


if __name__ == "__main__":  # regenerate
    import tempfile
    from tst_train.data.prepare import prepare
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "tiny"
        prepare(["bundled"], data, vocab_size=512, max_docs=120, val_fraction=0.1, seed=0)
        import torch
        torch.set_num_threads(1)
        losses = golden_run(data, Path(tmp) / "run")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"what": "tiny preset, 12 steps, s=4, r=0.5, seed 0; 12 step losses then "
                                          "the validation losses at the phase boundary and the end", "losses": losses}, indent=1))
    print(losses, file=sys.stderr)
