"""Opt-in: EleutherAI's lm-evaluation-harness scores our exported model on our tasks (its local-JSON task mode)
exactly as our scorer does — per choice and per passage, not just on average.

    pip install -e ".[lmeval]"        # lm-eval and its ~30 dependencies (80 s here)
    TST_LM_EVAL=1 pytest tests/test_lm_eval.py
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

if os.environ.get("TST_LM_EVAL") != "1":
    pytest.skip("opt-in: TST_LM_EVAL=1 (needs pip install -e '.[lmeval]')", allow_module_level=True)
pytest.importorskip("lm_eval")

from tst_train import api  # noqa: E402
from tst_train.tasks import load_items, write_lm_eval_tasks  # noqa: E402
from tst_train.tasks.scoring import encode_pair, loglikelihoods, score_task  # noqa: E402

LIMIT = 40


def test_lm_eval_harness_agrees_with_our_scorer(tiny_run, tmp_path):
    export = api.export(tiny_run, tmp_path / "hf")
    names = write_lm_eval_tasks(tmp_path / "tasks", LIMIT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    loaded = api.load(tiny_run, device="cpu")
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={export},dtype=float32,max_length={loaded.context_len}", "--include_path",
           str(tmp_path / "tasks"), "--tasks", ",".join(names), "--device", "cpu", "--batch_size", "8",
           "--log_samples", "--output_path", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(open(glob.glob(str(tmp_path / "out" / "*" / "results_*.json"))[0]).read())["results"]

    ours = {name: score_task(name, loaded.model, loaded.tokenizer, loaded.context_len, LIMIT) for name in ("cloze", "wordnet")}
    assert results["tst_wordnet"]["acc,none"] == ours["wordnet"]["acc"]
    assert results["tst_wordnet"]["acc_norm,none"] == ours["wordnet"]["acc_norm"]
    assert results["tst_cloze"]["acc,none"] == ours["cloze"]["acc"]
    assert results["tst_cloze"]["perplexity,none"] == pytest.approx(ours["cloze"]["perplexity"], rel=1e-4)

    # every single log-likelihood
    samples = [json.loads(line) for line in open(glob.glob(str(tmp_path / "out" / "*" / "samples_tst_wordnet_*.jsonl"))[0])]
    items = load_items("wordnet", LIMIT)
    for s in samples:
        it = items[s["doc_id"]]
        requests = [encode_pair(loaded.tokenizer, it["context"], " " + c) for c in it["choices"]]
        mine = loglikelihoods(loaded.model, requests, loaded.context_len)
        theirs = [(float(ll), greedy == "True") for ll, greedy in s["filtered_resps"]]
        for (a, ga), (b, gb) in zip(mine, theirs):
            assert a == pytest.approx(b, abs=1e-4) and ga == gb
