"""`tst export --run RUN --out DIR`: the exported directory is a transformers LlamaForCausalLM whose logits
equal our model's — the final TST model is an ordinary causal LM."""
from __future__ import annotations

import pytest
import torch

from tst_train.cli import main

transformers = pytest.importorskip("transformers")


def test_export_run_matches_our_logits(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data), "--out", str(run), "--preset", "tiny", "--steps", "8",
                 "--batch-size", "2", "--seq-len", "16", "--bag-size", "2", "--superposition-frac", "0.5",
                 "--log.progress=false", "--log.tensorboard=false", "--eval.tokens=256", "--train.threads=1"])
    assert code == 0
    out = tmp_path / "hf"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    from tst_train.export import load_run_model
    ours, *_ = load_run_model(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    tokens = torch.randint(0, ours.tok_embeddings.num_embeddings, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, ours(tokens), atol=1e-5, rtol=1e-5)
    # HF tools read the context the model was trained on, not the preset's ceiling
    assert hf.config.max_position_embeddings == 16
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.decode(tok.encode("It is a truth universally acknowledged")).endswith("acknowledged")
    capsys.readouterr()
    # refusing to overwrite, and a run directory without checkpoints, are user errors
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    assert "exist" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "not a run directory" in capsys.readouterr().err
