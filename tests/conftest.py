"""Shared fixtures: a small prepared data directory built with the real `tst prepare` path."""
from __future__ import annotations

import os
import signal

import pytest
import torch

# Without a GPU, Triton kernels can only run in Triton's interpreter, and the flag must be set before
# triton is first imported (its own library functions are built at import): tests/tst/test_fused_triton.py.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """~100 bundled-corpus documents, byte-level BPE with 512 tokens, prepared once per test session."""
    from tst_train.data.prepare import prepare
    out = tmp_path_factory.mktemp("data") / "tiny"
    prepare(["bundled"], out, vocab_size=512, max_docs=120, val_fraction=0.1, seed=0)
    return out


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Tests compare losses bit for bit: pin the intra-op thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def sigterm_after(trainer, steps: int) -> None:
    """A preemption: ``trainer`` gets SIGTERM right after its ``steps``-th step (it checkpoints at that boundary)."""
    orig = trainer.train_step

    def step_then_stop(step, phase):
        out = orig(step, phase)
        if step == steps - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.train_step = step_then_stop


TINY_RUN_FLAGS = ["--preset", "tiny", "--steps", "12", "--batch-size", "4", "--seq-len", "32", "--bag-size", "2",
                  "--superposition-frac", "0.5", "--eval-every", "6", "--checkpoint-every", "4",
                  "--checkpoint.keep=5", "--eval.tokens=1024", "--train.threads=1", "--log.progress=false",
                  "--log.tensorboard=false", "--train.lr=3e-3", "--train.warmup_steps=2"]


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A finished 12-step TST run on `tiny_data`, checkpoints at steps 4, 6 (boundary), 8 and 12."""
    from tst_train.cli import main
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *TINY_RUN_FLAGS]) == 0
    return out
