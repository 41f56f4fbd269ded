"""Shared fixtures: a small prepared data directory built with the real `tst prepare` path."""
from __future__ import annotations

import os

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
