"""A model's whole life on tiny settings: train → (stop, resume) → eval → generate → export → init-from,
from other working directories and without the data directory where it is not needed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat

import pytest
import torch

from conftest import TINY_RUN_FLAGS
from tst_train import api, rundir
from tst_train.cli import main
from tst_train.metrics import read_metrics
from tst_train.train import Trainer

transformers = pytest.importorskip("transformers")


def logged_val(run, step: int) -> float:
    return next(r["val_loss"] for r in read_metrics(run) if r.get("val_loss") is not None and r["step"] == step)


def test_a_run_directory_stands_alone(tiny_data, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(tiny_data, work / "data")
    monkeypatch.chdir(work)
    orig = Trainer.train_step

    def stop_after_step_4(self, step, phase):
        out = orig(self, step, phase)
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # preemption: checkpoint at step 4, then exit 75
        return out

    monkeypatch.setattr(Trainer, "train_step", stop_after_step_4)
    assert main(["train", "--data", "data", "--out", "run", *TINY_RUN_FLAGS]) == 75
    monkeypatch.setattr(Trainer, "train_step", orig)
    run = work / "run"
    assert rundir.read_config(run).data.path == str((work / "data").resolve())  # recorded by absolute path
    assert (run / "tokenizer.json").read_bytes() == (work / "data" / "tokenizer.json").read_bytes()

    monkeypatch.chdir(tmp_path)  # somewhere else
    capsys.readouterr()
    assert main(["export", "--run", "work/run", "--out", "exp4"]) == 0
    assert "unfinished: exporting step 4 of 12" in capsys.readouterr().err
    info = json.loads((tmp_path / "exp4" / "tst_export.json").read_text())
    assert info["step"] == 4 and info["completed"] is False
    assert main(["train", "--out", "work/run", "--resume"]) == 0  # the data is found by its absolute path

    (work / "data").rename(tmp_path / "moved")  # from now on there is no data directory
    capsys.readouterr()
    assert main(["export", "--run", "work/run", "--out", "exp"]) == 0
    assert "unfinished" not in capsys.readouterr().err
    exp = tmp_path / "exp"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(exp.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(f.stat().st_mode) for f in exp.iterdir()} == {0o666 & ~umask}  # safetensors' too
    tok = transformers.AutoTokenizer.from_pretrained(exp)
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert tok.decode(tok("It is a truth universally acknowledged")["input_ids"]) == "It is a truth universally acknowledged"

    assert main(["generate", "work/run", "--prompt", "It is", "--temperature", "0", "--max-new-tokens", "6",
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tokens"]) >= 1
    assert main(["eval", "work/run", "--tasks", "wordnet", "--limit", "4"]) == 0
    out = capsys.readouterr()
    assert "wordnet" in out.out and "no validation loss" in out.err
    # with the data given again, the validation loss is the one the run logged at its end
    assert main(["eval", "work/run", "--data", "moved", "--tasks", "none", "--out", "e.json"]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["validation"]["val_loss"] == pytest.approx(logged_val(work / "run", 12), abs=1e-6)


def test_eval_matches_the_log_and_the_export_scores_the_same(tiny_run, tiny_data, tmp_path, capsys):
    for step in (6, 12):
        assert main(["eval", f"{tiny_run}:{step}", "--tasks", "all", "--limit", "6", "--out", str(tmp_path / f"{step}.json")]) == 0
        res = json.loads((tmp_path / f"{step}.json").read_text())
        assert res["validation"]["val_loss"] == pytest.approx(logged_val(tiny_run, step), abs=1e-6)
        assert res["step"] == step and res["tasks"]["wordnet"]["items"] == 6 and res["tasks"]["cloze"]["items"] == 6
    # tiny_data splits the bundled corpus its own way: the cloze passages may be in its training split
    assert "cloze passages may be in its training data" in capsys.readouterr().err
    api.export(tiny_run, tmp_path / "hf")
    assert main(["eval", str(tmp_path / "hf"), "--data", str(tiny_data), "--limit", "6", "--out", str(tmp_path / "hf.json")]) == 0
    hf = json.loads((tmp_path / "hf.json").read_text())
    assert "cloze passages may be" in capsys.readouterr().err  # the export remembers the data's split
    assert hf["validation"]["val_loss"] == pytest.approx(res["validation"]["val_loss"], abs=1e-5)
    for task, scores in res["tasks"].items():
        for key in ("acc", "acc_norm", "target_logprob"):
            if key in scores:
                assert hf["tasks"][task][key] == pytest.approx(scores[key], abs=1e-5), (task, key)


def test_eval_user_errors(tiny_run, tmp_path, capsys):
    record = tmp_path / "record"  # a finished run collected without its weights, as in experiments/
    shutil.copytree(tiny_run, record, ignore=shutil.ignore_patterns("checkpoints"))
    cases = [(["eval", str(tmp_path / "none")], "neither a run directory"),
             (["eval", str(record)], "finished, but holds no checkpoint"),
             (["eval", f"{tiny_run}:3"], "no checkpoint at step 3; saved steps: 4, 6, 8, 12"),
             (["eval", str(tiny_run), "--tasks", "hellaswag"], "unknown task"),
             (["eval", str(tiny_run), "--limit", "0"], "--limit must be a whole number >= 1"),
             (["eval"], "no model")]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_init_from_a_run_step_or_an_hf_directory(tiny_run, tiny_data, tmp_path, capsys):
    api.export(tiny_run, tmp_path / "hf")
    for source, step in ((str(tiny_run), 12), (f"{tiny_run}:6", 6), (str(tmp_path / "hf"), 12)):
        cfg = api.config({"data.path": str(tiny_data), "model.preset": "tiny", "train.seq_len": 32,
                          "train.init_from": source, "log.progress": False})
        trainer = Trainer(cfg, tmp_path / "unused", resume=False)
        want = api.load(tiny_run, step, device="cpu").model.state_dict()
        got = trainer.model.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), source
        assert len(trainer.optimizer.state) == 0  # a fresh optimizer
    # continued training through the command line starts where the source ended, not at a random init's loss
    run = tmp_path / "cont"
    flags = [f for f in TINY_RUN_FLAGS if f not in ("--steps", "12")]
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *flags, "--steps", "2", "--mode", "baseline",
                 "--init-from", str(tmp_path / "hf")]) == 0
    assert rundir.read_config(run).train.init_from == str((tmp_path / "hf").resolve())
    first = next(r["loss"] for r in read_metrics(run) if "loss" in r)
    assert first < logged_val(tiny_run, 12) + 0.3 < 6.0  # a random tiny model starts at ln(512) ≈ 6.2


def test_continued_training_reads_only_tokens_its_source_never_saw(tiny_run, tiny_data, tmp_path, capsys):
    """`--init-from RUN[:STEP]` or its export, on the same data folder, starts the stream where the source stood
    (the plan says so); `--train.data_start=0` starts at the beginning, and another folder starts at 0."""
    from tst_train.checkpoint import read_trainer_state
    end = read_trainer_state(tiny_run / "checkpoints" / "step_0000012")["loader"]["position"]
    mid = read_trainer_state(tiny_run / "checkpoints" / "step_0000006")["loader"]["position"]
    assert 0 < mid < end
    api.export(tiny_run, tmp_path / "hf")
    flags = [f for f in TINY_RUN_FLAGS if f not in ("--steps", "12")] + ["--steps", "2", "--mode", "baseline"]
    for name, source, start in (("run", str(tiny_run), end), ("step", f"{tiny_run}:6", mid),
                                ("export", str(tmp_path / "hf"), end)):
        run = tmp_path / name
        assert main(["train", "--data", str(tiny_data), "--out", str(run), *flags, "--init-from", source]) == 0
        printed = capsys.readouterr().out
        assert f"the stream starts at token {start:,} (after the {start:,} tokens" in printed, printed
        assert "nor any the source run saw" in printed
        state = read_trainer_state(max((run / "checkpoints").iterdir()))
        assert state["loader"]["position"] == start + 2 * 4 * 32  # two baseline steps of 4 rows x 32 tokens
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "zero"), *flags, "--init-from",
                 str(tiny_run), "--train.data_start=0"]) == 0
    assert "the stream starts" not in capsys.readouterr().out
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "far"), *flags,
                 "--train.data_start=999999999"]) == 2
    assert "past the" in capsys.readouterr().err and not (tmp_path / "far").exists()


def test_init_from_refuses_another_architecture_or_tokenizer(tiny_run, tiny_data, tmp_path, capsys):
    flags = ["--steps", "2", "--log.progress=false", "--log.tensorboard=false", "--eval.tokens=256"]
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "a"), "--init-from", str(tiny_run),
                 "--preset", "tiny", "--model.n_layers=3", *flags]) == 2
    err = capsys.readouterr().err
    assert "does not match this run's model (n_layers 2 vs 3" in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists()
    from tst_train.data.prepare import prepare
    other = tmp_path / "other"  # same vocabulary size, another BPE
    prepare(["bundled"], other, vocab_size=512, max_docs=60, val_fraction=0.2, seed=3)
    assert main(["train", "--data", str(other), "--out", str(tmp_path / "b"), "--init-from", str(tiny_run),
                 "--preset", "tiny", *flags]) == 2
    assert "another tokenizer" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "c"), "--init-from",
                 str(tmp_path / "nothing"), *flags]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_python_api_round_trip(tiny_data, tmp_path):
    """The README's Python example, on tiny settings."""
    cfg = api.config({"data.path": str(tiny_data), "model.preset": "tiny", "train.steps": 4, "train.batch_size": 2,
                      "train.seq_len": 16, "eval.tokens": 256, "log": {"progress": False, "tensorboard": False}})
    summary = api.train(cfg, tmp_path / "run")
    assert summary["completed"] and summary["steps"] == 4
    model = api.load(tmp_path / "run")
    assert model.step == 4 and model.completed and model.context_len == 16
    text = api.generate(model, "It is", max_new_tokens=5, temperature=0)
    assert text == api.generate(tmp_path / "run", "It is", max_new_tokens=5, temperature=0)
    scores = api.evaluate(model, tasks=["wordnet"], limit=3)
    assert scores["validation"]["val_loss"] == pytest.approx(summary["final_val_loss"], abs=1e-6)
    assert scores["tasks"]["wordnet"]["items"] == 3
    out = api.export(tmp_path / "run", tmp_path / "hf")
    assert (out / "model.safetensors").is_file()


def test_a_finished_run_is_extended_by_a_branch_that_equals_a_run_planned_that_long(tiny_data, tmp_path, capsys):
    """`--resume --steps N` on a finished run names the command that trains it to N steps without touching it: a
    branch from its newest checkpoint before the old decay, which equals a run planned for N steps bit for bit."""
    flags = ["--data", str(tiny_data), "--preset", "tiny", "--batch-size", "2", "--seq-len", "16", "--mode", "baseline",
             "--eval-every", "0", "--eval.tokens=512", "--train.warmup_steps=2", "--train.threads=1",
             "--log.progress=false", "--log.tensorboard=false", "--checkpoint-every", "4", "--checkpoint.keep=5"]
    run = tmp_path / "run"
    assert main(["train", *flags, "--out", str(run), "--steps", "20"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--train.branch_from={run}:16" in err  # 16: the 20-step run's decay start
    command = err.split("tst train ", 1)[1].split()
    assert main(["train", *command]) == 0
    assert main(["train", *flags, "--out", str(tmp_path / "planned"), "--steps", "30"]) == 0
    final = {name: json.loads((tmp_path / name / "summary.json").read_text())["final_val_loss"]
             for name in ("run-30", "planned")}
    assert final["run-30"] == final["planned"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 20  # the finished run is untouched
