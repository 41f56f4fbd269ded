"""End-to-end training on the CPU: phases, resume equivalence (graceful and SIGKILL), metrics, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import sigterm_after
from tst_train.cli import main
from tst_train.train import run_training
from tst_train.config import Config
from tst_train.metrics import read_metrics
from tst_train.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(data, **tst) -> Config:
    cfg = Config()
    cfg.data.path = str(data)
    cfg.model.preset = "tiny"
    cfg.train.steps, cfg.train.batch_size, cfg.train.seq_len = 24, 4, 32
    cfg.train.warmup_steps, cfg.train.lr, cfg.train.threads = 4, 3e-3, 1
    cfg.tst.mode, cfg.tst.bag_size, cfg.tst.superposition_frac = "tst", 4, 0.5
    for k, v in tst.items():
        setattr(cfg.tst, k, v)
    cfg.eval.every, cfg.eval.tokens, cfg.eval.batch_size = 8, 2048, 8
    cfg.log.progress = cfg.log.tensorboard = False
    return cfg.validate()


def losses(run_dir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]


def test_phases_switch_once_and_weights_carry_over(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data)
    trainer = Trainer(cfg, tmp_path, resume=False)
    emb, head = trainer.model.tok_embeddings.weight, trainer.model.lm_head.weight
    seen = []
    orig = trainer.train_step

    def spy(step, phase):
        seen.append((step, phase.bag_size, emb.data_ptr(), head.data_ptr(), emb is trainer.model.tok_embeddings.weight))
        if step == 12:  # first recovery step: the optimizer still holds the phase-1 moments of both tensors
            assert trainer.optimizer.state[emb]["exp_avg"].abs().sum() > 0
            assert trainer.optimizer.state[head]["exp_avg"].abs().sum() > 0
        return orig(step, phase)

    trainer.train_step = spy
    summary = trainer.run()
    assert summary["completed"] and summary["transition_step"] == 12
    assert [b for _, b, *_ in seen] == [4] * 12 + [1] * 12
    assert len({(e, h) for _, _, e, h, _ in seen}) == 1 and all(same for *_, same in seen)
    recs = read_metrics(tmp_path)
    steps = [r for r in recs if "loss" in r]
    assert [r["bag_size"] for r in steps] == [4] * 12 + [1] * 12
    # data tokens: 4·32 per row in phase 1, 32 in phase 2; positions are the same every step
    assert steps[11]["data_tokens"] == 12 * 4 * 4 * 32 and steps[-1]["data_tokens"] == 12 * 4 * 4 * 32 + 12 * 4 * 32
    assert steps[-1]["positions"] == 24 * 4 * 32
    assert steps[-1]["flops"] == pytest.approx(24 * 4 * 32 * trainer.flops_per_position)
    for key in ("step", "bag_size", "loss", "lr", "grad_norm", "data_tokens", "positions", "flops", "step_time"):
        assert key in steps[0]
    evals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in evals] == [8, 12, 16, 24]  # every 8, plus the phase boundary and the end
    assert all(r["val_bpb"] > 0 for r in evals)


def test_loss_falls_and_baseline_never_bags(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, mode="baseline")
    cfg.train.steps = 40
    summary = run_training(cfg, tmp_path)
    recs = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert summary["transition_step"] == 0 and {r["bag_size"] for r in recs} == {1}
    first = sum(r["loss"] for r in recs[:5]) / 5
    last = sum(r["loss"] for r in recs[-5:]) / 5
    assert last < first - 0.5
    # a baseline step reads seq_len tokens per row
    assert recs[-1]["data_tokens"] == 40 * 4 * 32


def test_superposition_frac_zero_is_the_baseline_exactly(tiny_data, tmp_path):
    a = run_training(tiny_config(tiny_data, mode="baseline"), tmp_path / "a")
    b = run_training(tiny_config(tiny_data, superposition_frac=0.0), tmp_path / "b")
    assert a["completed"] and b["completed"]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_a_stop_signal_noted_before_the_loop_stops_the_run_at_its_first_step(tiny_data, tmp_path, monkeypatch):
    """A parallel sweep's worker notes a SIGTERM that lands while a run is being set up (StopFlag.pending):
    the run must not then train to the end, but stop after one step with a checkpoint."""
    from tst_train.checkpoint import list_checkpoints
    from tst_train.train import StopFlag
    monkeypatch.setattr(StopFlag, "pending", signal.SIGTERM)
    summary = run_training(tiny_config(tiny_data), tmp_path / "run")
    assert not summary["completed"] and summary["interrupted_by"] == "SIGTERM" and summary["steps"] == 1
    assert [c.name for c in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_0000001"]


@pytest.mark.parametrize("stop_at", [5, 12, 17])  # phase 1, exactly at the boundary, phase 2
def test_graceful_stop_and_resume_is_bit_identical(tiny_data, tmp_path, stop_at):
    ref = tmp_path / "ref"
    run_training(tiny_config(tiny_data), ref)

    cfg = tiny_config(tiny_data)
    run = tmp_path / "run"
    from tst_train import rundir
    rundir.create(run, cfg)
    trainer = Trainer(cfg, run, resume=False)
    sigterm_after(trainer, stop_at)  # preemption: handled at the step boundary
    first = trainer.run()
    assert not first["completed"] and first["interrupted_by"] == "SIGTERM" and first["steps"] == stop_at
    resumed = Trainer(cfg, run, resume=True)
    assert resumed.state.step == stop_at
    assert resumed.run()["completed"]
    assert losses(run) == losses(ref)  # exact equality, every step
    ev = lambda d: [(r["step"], r["val_loss"]) for r in read_metrics(d) if "val_loss" in r]
    assert ev(run) == ev(ref)


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tst", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_and_resume_is_bit_identical(tiny_data, tmp_path):
    flags = ["--data", tiny_data, "--preset", "tiny", "--steps", 30, "--batch-size", 4, "--seq-len", 32,
             "--bag-size", 4, "--superposition-frac", 0.5, "--eval-every", 10, "--checkpoint-every", 4,
             "--train.warmup_steps=4", "--train.threads=1", "--eval.tokens=2048", "--log.progress=false",
             "--log.tensorboard=false"]
    ref = tmp_path / "ref"
    assert _cli("train", "--out", ref, *flags).wait(timeout=300) == 0
    run = tmp_path / "run"
    proc = _cli("train", "--out", run, *flags)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a few checkpoints exist and training is mid-way
        if len([r for r in read_metrics(run) if "loss" in r]) >= 18:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = proc = _cli("train", "--out", run, "--resume")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "resumed from step" in out
    assert losses(run) == losses(ref)
    assert json.loads((run / "summary.json").read_text())["completed"]


def test_run_directory_is_self_describing(tiny_data, tmp_path):
    run_training(tiny_config(tiny_data), tmp_path)
    for name in ("config.toml", "run.json", "plan.json", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).is_file(), name
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["git"].keys() >= {"commit", "dirty"}
    # the CPU kernels decide the rounding: runs on an AVX2 and an AVX512 machine differ after ~100 steps
    assert info["cpu_kernels"] == torch.backends.cpu.get_cpu_capability() and info["cpu_kernels"]
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step_0000012", "step_0000024"]  # the boundary and the end (keep=2)


# ------------------------------------------------------------------------- user errors
def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def test_bad_inputs_exit_2_with_one_line(tiny_data, tmp_path, capsys):
    cases = [
        (["train", "--data", tmp_path / "nope", "--out", tmp_path / "r1"], "does not exist: run `tst prepare"),
        (["train", "--data", tiny_data, "--out", tmp_path / "r2", "--train.step=3"], "did you mean train.steps"),
        (["train", "--data", tiny_data, "--out", tmp_path / "r3", "--stepz", "3"], "unrecognised argument"),
        (["train", "--data", tiny_data, "--out", tmp_path / "r4", "--steps", "many"], "cannot read 'many' as int"),
        (["train", "--data", tiny_data, "--out", tmp_path / "r5", "--mode", "magic"], "--tst.mode"),
        (["train", "--data", tiny_data, "--out", tmp_path / "r6", "--superposition-frac", "1.5"], "superposition_frac"),
        (["train", "--data", tiny_data, "--out", tmp_path / "r7", "--preset", "huge"], "preset"),
        (["train", "--out", tmp_path / "r8", "--resume"], "not a run directory"),
        (["train", "--out", tmp_path / "r9"], "--data"),
        (["train", "--data", tiny_data, "--out", tmp_path / "r10", "--config", tmp_path / "none.toml"], "does not exist"),
        (["frobnicate"], "unknown command"),
    ]
    for args, expected in cases:
        code, err = run_cli(capsys, *args)
        assert code == 2, (args, err)
        assert expected in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not (tmp_path / "r1" / "metrics.jsonl").exists()


def test_existing_run_dir_and_incompatible_resume(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--data", tiny_data, "--preset", "tiny", "--steps", 6, "--batch-size", 2, "--seq-len", 16,
             "--log.progress=false", "--log.tensorboard=false", "--eval.tokens=512"]
    assert run_cli(capsys, "train", "--out", run, *flags)[0] == 0
    code, err = run_cli(capsys, "train", "--out", run, *flags)
    assert code == 2 and "already exists; pass --resume" in err
    code, err = run_cli(capsys, "train", "--out", run, "--resume", "--bag-size", 8)
    assert code == 2 and "cannot change tst.bag_size when resuming" in err
    # a longer resume that also names another branch origin is told that, not offered a branch
    code, err = run_cli(capsys, "train", "--out", run, "--resume", "--steps", 12, f"--train.branch_from={run}:3")
    assert code == 2 and "cannot change train.branch_from when resuming" in err
    # a checkpoint whose model no longer matches the saved config (hand-edited) is refused
    text = (run / "config.toml").read_text().replace('preset = "tiny"', 'preset = "cpu-small"')
    (run / "config.toml").write_text(text)
    code, err = run_cli(capsys, "train", "--out", run, "--resume")
    assert code == 2 and "incompatible config" in err


def test_corrupt_data_and_token_ids_beyond_vocab(tiny_data, tmp_path, capsys):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad)
    with open(bad / "train.bin", "r+b") as f:
        f.truncate(os.path.getsize(bad / "train.bin") - 3)
    code, err = run_cli(capsys, "train", "--data", bad, "--out", tmp_path / "r", "--steps", 2)
    assert code == 2 and "train.bin" in err
    meta = json.loads((tiny_data / "meta.json").read_text())
    big = tmp_path / "big"
    shutil.copytree(tiny_data, big)
    meta["vocab_size"] = 100  # the stored ids go up to 511
    (big / "meta.json").write_text(json.dumps(meta))
    code, err = run_cli(capsys, "train", "--data", big, "--out", tmp_path / "r2", "--steps", 2)
    assert code == 2 and "vocab" in err


def test_dry_run_prints_plan(tiny_data, capsys, tmp_path):
    code = main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "x"), "--preset", "tiny",
                 "--steps", "100", "--bag-size", "4", "--superposition-frac", "0.3", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not (tmp_path / "x").exists()
    assert "superposition" in out and "steps 0..29" in out and "recovery" in out and "epochs" in out


def test_grad_accumulation_matches_one_big_batch(tiny_data, tmp_path):
    a = tiny_config(tiny_data)
    b = tiny_config(tiny_data)
    b.train.micro_batch_size = 1
    a.train.steps = b.train.steps = 6
    run_training(a, tmp_path / "a")
    run_training(b, tmp_path / "b")
    for (sa, la), (sb, lb) in zip(losses(tmp_path / "a"), losses(tmp_path / "b")):
        assert sa == sb and la == pytest.approx(lb, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("mode", ["input-only", "output-only"])
def test_ablation_modes_run(tiny_data, tmp_path, mode):
    cfg = tiny_config(tiny_data, mode=mode)
    cfg.train.steps = 8
    s = run_training(cfg, tmp_path)
    recs = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert s["completed"]
    want_bag = 4 if mode == "input-only" else 1
    assert recs[0]["bag_size"] == want_bag and recs[-1]["bag_size"] == 1
    per_row = 4 * 32 if mode == "input-only" else 32  # output-only reads no extra data
    assert recs[3]["data_tokens"] == 4 * 4 * per_row


def test_reinit_ablation_changes_embeddings_at_transition(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, reinit_embeddings=True)
    trainer = Trainer(cfg, tmp_path, resume=False)
    snap = {}
    orig = trainer.train_step

    def spy(step, phase):
        if step == 12:
            snap["after"] = trainer.model.tok_embeddings.weight.detach().clone()
        out = orig(step, phase)
        if step == 11:
            snap["before"] = trainer.model.tok_embeddings.weight.detach().clone()
        return out

    trainer.train_step = spy
    trainer.run()
    assert not torch.equal(snap["before"], snap["after"])
    assert snap["after"].std().item() == pytest.approx(trainer.mcfg.init_std, rel=0.2)
