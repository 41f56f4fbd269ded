"""Shared fixtures: a small prepared data directory built with the real `tst prepare` path."""
from __future__ import annotations

import pytest
import torch


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
