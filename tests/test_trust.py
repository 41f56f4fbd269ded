"""Trust: no code runs from a received run directory, no silent wrong result, no stuck state, every bad
input a one-line error (exit 2). Each case here failed before the fix it tests."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tst_train import checkpoint, rundir
from tst_train.cli import main
from tst_train.config import Config, OneOf, Pattern, Range, iter_fields
from tst_train.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--steps", "8", "--batch-size", "2", "--seq-len", "16", "--bag-size", "2",
        "--superposition-frac", "0.5", "--eval-every", "4", "--checkpoint-every", "2", "--train.warmup_steps=2",
        "--eval.tokens=512", "--log.tensorboard=false", "--log.progress=false", "--train.threads=1"]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def trained(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", "--data", tiny_data, "--out", run, *TINY)[0] == 0
    return run


# ----------------------------------------------------------------------------------- every field, a bad value
# Fields whose every value of the right type is valid (said here, so that a new field without a declared
# range fails the test below instead of silently accepting anything).
ANY_VALUE = {"log.wandb_project"}


def bad_values(key: str, f: dataclasses.Field) -> list[str]:
    """Values of the right syntax that the field must refuse (and, for numbers, non-finite ones)."""
    check = f.metadata.get("check")
    typ = {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, f.type)
    out = []
    if typ is bool:
        return ["maybe"]
    if isinstance(check, Range):
        if check.lo is not None:
            out.append(str(check.lo if check.lo_open else (check.lo - 1 if typ is int else check.lo - 0.5)))
        if check.hi is not None:
            out.append(str(check.hi if check.hi_open else (int(check.hi) + 1 if typ is int else check.hi + 0.5)))
    elif isinstance(check, (OneOf, Pattern)):
        out.append("not-a-valid-choice")
    if typ is float:
        out += ["nan", "inf", "-inf"]
    if typ is int:
        out += ["2.5", "1e400", "abc"]
    return out


TST_CORE = {"tst.bag_size": ["0", "-3"], "tst.superposition_frac": ["1.5", "-0.1", "nan"],
            "tst.mode": ["magic"], "tst.weights": ["heavy"], "tst.loss": ["hinge"], "tst.bagging": ["blind"],
            "tst.fold": ["diagonal"], "tst.transition_steps": ["-1", "2.5"],
            "train.init_from": ["/nonexistent/run-dir"]}


def field_cases():
    cases = []
    for key, f, _ in iter_fields(Config()):
        values = TST_CORE.get(key) or bad_values(key, f)
        if key == "data.path":
            continue  # a path: missing / not prepared is tested below
        if not values:
            assert key in ANY_VALUE, f"{key} declares no valid range: add a check to its opt(...) or list it in ANY_VALUE"
        cases += [(key, v) for v in values]
    return cases


@pytest.mark.parametrize("key,value", field_cases(), ids=lambda x: str(x))
def test_every_field_refuses_bad_values_before_anything_is_written(tiny_data, tmp_path, capsys, key, value):
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--data", tiny_data, "--out", out, f"--{key}={value}", *TINY[:2])
    assert code == 2 and one_line(err), err
    assert key.split(".")[-1] in err or key in err or "cannot read" in err, err
    assert not out.exists() and not list(tmp_path.glob(".r.*"))


def test_odd_numbers_on_the_command_line(tiny_data, tmp_path, capsys):
    for flags, expected in [(["--steps", "1e400"], "too large"), (["--steps", "2.5"], "whole number"),
                            (["--steps", "2e0", "--dry-run"], None)]:
        code, out, err = cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "x", *flags)
        if expected is None:
            assert code == 0 and "steps = 2" in out  # 2e0 is the whole number 2
        else:
            assert code == 2 and expected in err and one_line(err), err


def test_config_file_not_utf8_and_meta_json_wrong_types(tiny_data, tmp_path, capsys):
    bad = tmp_path / "latin.toml"
    bad.write_bytes('[train]\nlr = 1e-3 # caf\xe9\n'.encode("latin-1"))
    code, _, err = cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "r", "--config", bad)
    assert code == 2 and "not UTF-8" in err and one_line(err)
    nonfinite = tmp_path / "nan.toml"
    nonfinite.write_text("[train]\nlr = nan\n")
    code, _, err = cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "r", "--config", nonfinite)
    assert code == 2 and "train.lr must be a finite number" in err and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------- failed starts leave nothing
def test_a_failed_start_leaves_no_run_directory(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    for flags in (["--data", tmp_path / "missing"], ["--data", tiny_data, "--model.dim=60"],  # 60 % 4 heads ok, hd 15 odd
                  ["--data", tiny_data, "--model.n_heads=3"]):
        code, _, err = cli(capsys, "train", "--out", run, *flags, *TINY)
        assert code == 2 and one_line(err), err
        assert not run.exists(), flags
    assert cli(capsys, "train", "--out", run, "--data", tiny_data, *TINY)[0] == 0  # the corrected command just works


def test_run_directory_creation_is_atomic(tmp_path):
    cfg = Config()
    stale = tmp_path / ".run.creating-99999"
    stale.mkdir()  # left by a creator killed mid-way
    rundir.create(tmp_path / "run", cfg)
    assert rundir.is_run_dir(tmp_path / "run") and not stale.exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.toml", "run.json"]


# ----------------------------------------------------------------------------------- resume and reuse
def test_resume_of_a_finished_run_keeps_its_summary(trained, capsys):
    before = json.loads((trained / "summary.json").read_text())
    code, out, err = cli(capsys, "train", "--out", trained, "--resume")
    after = json.loads((trained / "summary.json").read_text())
    assert code == 0, err
    assert after["final_val_loss"] == before["final_val_loss"] is not None
    assert after["best_val_loss"] == before["best_val_loss"] and after["completed"]


def test_concurrent_resume_is_refused(trained, capsys):
    with rundir.locked(trained):  # another process training this directory
        code, _, err = cli(capsys, "train", "--out", trained, "--resume")
    assert code == 2 and "being trained by another process" in err and one_line(err)
    assert cli(capsys, "train", "--out", trained, "--resume")[0] == 0  # the lock dies with its holder


# ----------------------------------------------------------------------------------- hostile and damaged files
class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rewrite_manifest(ckpt: Path) -> None:
    """What an attacker (or a careless copy) can always do: make the manifest match the files."""
    files = json.loads((ckpt / checkpoint.MANIFEST_FILE).read_text())["files"]
    fresh = checkpoint._hash_files(ckpt, [n for n in files if (ckpt / n).is_file()])
    (ckpt / checkpoint.MANIFEST_FILE).write_text(json.dumps({"files": fresh}))


@pytest.mark.parametrize("target", [".metadata", "legacy_state"])
def test_a_malicious_pickle_does_not_run(trained, tmp_path, capsys, target):
    marker = tmp_path / "pwned"
    for ckpt in checkpoint.list_checkpoints(trained / "checkpoints"):
        if target == ".metadata":
            (ckpt / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
        else:  # an old-style pickled trainer state
            (ckpt / checkpoint.STATE_FILE).unlink()
            (ckpt / checkpoint.LEGACY_STATE_FILE).write_bytes(pickle.dumps(_Payload(marker)))
            manifest = json.loads((ckpt / checkpoint.MANIFEST_FILE).read_text())
            manifest["files"].pop(checkpoint.STATE_FILE)
            (ckpt / checkpoint.MANIFEST_FILE).write_text(json.dumps(manifest))
        _rewrite_manifest(ckpt)
    (trained / "summary.json").unlink()
    for args in (["train", "--out", trained, "--resume"], ["export", "--run", trained, "--out", tmp_path / "hf"]):
        if target == "legacy_state" and args[0] == "export":
            continue  # export reads no trainer state
        code, _, err = cli(capsys, *args)
        assert code == 2 and one_line(err), err
        assert not marker.exists(), "the payload ran"


def test_the_planner_loads_non_tensor_items_safely(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.SafeLoadPlanner().load_bytes(None, buf)
    assert not marker.exists()


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))


DAMAGE = {
    "flipped shard": lambda c: _flip(next(c.glob("*.distcp"))),
    "truncated shard": lambda c: _truncate(next(c.glob("*.distcp"))),
    "missing shard": lambda c: next(c.glob("*.distcp")).unlink(),
    "missing metadata": lambda c: (c / ".metadata").unlink(),
    "truncated metadata": lambda c: _truncate(c / ".metadata"),
    "truncated state": lambda c: _truncate(c / checkpoint.STATE_FILE),
    "truncated info": lambda c: _truncate(c / checkpoint.INFO_FILE),
    "missing manifest": lambda c: (c / checkpoint.MANIFEST_FILE).unlink(),
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_checkpoints_fall_back_or_stop_with_one_line(tiny_data, tmp_path, capsys, how):
    flags = ["--data", tiny_data, *TINY[:2], "--steps", "8", *TINY[4:]]
    ref = tmp_path / "ref"
    assert cli(capsys, "train", "--out", ref, *flags)[0] == 0
    run = tmp_path / "run"
    assert cli(capsys, "train", "--out", run, *flags)[0] == 0
    ckpts = checkpoint.list_checkpoints(run / "checkpoints")
    assert len(ckpts) == 2
    (run / "summary.json").unlink()
    DAMAGE[how](ckpts[-1])  # the newest is damaged: resume warns and falls back to the older one
    code, out, err = cli(capsys, "train", "--out", run, "--resume")
    assert code == 0 and "is damaged" in out, (out, err)
    loss = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert loss(run) == loss(ref)  # resumed from the older checkpoint, exactly
    for c in checkpoint.list_checkpoints(run / "checkpoints"):
        DAMAGE[how](c)
    code, _, err = cli(capsys, "train", "--out", run, "--resume")
    assert code == 2 and one_line(err) and ("damaged" in err or "could not be loaded" in err), err
    code, _, err = cli(capsys, "export", "--run", run, "--out", tmp_path / "hf")
    assert code == 2 and one_line(err), err
    assert not (tmp_path / "hf").exists()


def test_export_refuses_a_checkpoint_that_does_not_match_the_config(trained, tmp_path, capsys):
    text = (trained / "config.toml").read_text().replace("n_layers = 0", "n_layers = 3")
    (trained / "config.toml").write_text(text)
    code, _, err = cli(capsys, "export", "--run", trained, "--out", tmp_path / "hf")
    assert code == 2 and "incompatible" in err and one_line(err)


def test_stale_export_temporaries_are_cleaned(trained, tmp_path, capsys):
    stale = tmp_path / ".hf.tmp-killed"
    stale.mkdir()
    assert cli(capsys, "export", "--run", trained, "--out", tmp_path / "hf")[0] == 0
    assert not stale.exists() and (tmp_path / "hf" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------- disk full, read-only
@pytest.mark.parametrize("err,expected", [(OSError(28, "No space left on device"), "no space left on device"),
                                          (OSError(30, "Read-only file system"), "read-only file system"),
                                          (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                                                        "failed writing file data/0: file write failed"), "disk full"),
                                          (OSError(27, "File too large"), "file too large"),  # ulimit -f
                                          # what a file-size limit gave in a hostile rerun: DCP wrapping torch's writer
                                          ("wrapped", "disk full")])
def test_write_failures_are_one_line(tiny_data, tmp_path, capsys, monkeypatch, err, expected):
    from torch.distributed.checkpoint.api import CheckpointException, _wrap_exception

    def boom(*a, **k):
        if err == "wrapped":
            try:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
            except RuntimeError as e:
                raise CheckpointException("write failed", {0: _wrap_exception(e)}) from None
        raise err
    monkeypatch.setattr(checkpoint.dcp, "save", boom)
    code, _, msg = cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "r", *TINY)
    assert code == 2 and expected in msg and "writing checkpoint" in msg and one_line(msg), msg


# ----------------------------------------------------------------------------------- collectives
def test_a_frozen_rank_times_out_instead_of_hanging(tmp_path):
    """Two gloo ranks, one of which never reaches the all-reduce: the other stops after the timeout."""
    script = tmp_path / "frozen.py"
    script.write_text(
        "import os, sys, time, torch\n"
        "from tst_train import distributed\n"
        "from tst_train.errors import UserError\n"
        "distributed.init('cpu', timeout_s=3)\n"
        "if os.environ['RANK'] == '1':\n"
        "    time.sleep(30); sys.exit(0)\n"
        "try:\n"
        "    distributed.all_reduce_sum(torch.ones(1))\n"
        "except UserError as e:\n"
        "    print('error:', e); distributed.exit_process(2)\n")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, str(script)], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        out, err = procs[0].communicate(timeout=25)
    finally:
        procs[1].kill()
    assert procs[0].returncode == 2, err
    assert "another rank stopped or froze" in out and out.count("\n") == 1


def test_checkpoints_of_earlier_versions_still_resume(tiny_data, tmp_path, capsys):
    """Before manifests: a pickled trainer_state.pt, no manifest, an older fingerprint. Loaded safely, unverified."""
    flags = ["--data", tiny_data, *TINY]
    ref = tmp_path / "ref"
    assert cli(capsys, "train", "--out", ref, *flags)[0] == 0
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "summary.json").unlink()
    newest, older = checkpoint.list_checkpoints(run / "checkpoints")[::-1][:2]
    shutil.rmtree(newest)
    state = checkpoint._read_state(older)
    torch.save(state, older / checkpoint.LEGACY_STATE_FILE)
    (older / checkpoint.STATE_FILE).unlink()
    (older / checkpoint.MANIFEST_FILE).unlink()
    info = json.loads((older / checkpoint.INFO_FILE).read_text())
    fp = info["fingerprint"]
    info["fingerprint"] = {"model": fp["model"], "data": fp["data"], "schedule": ["as written by 0.1"]}
    (older / checkpoint.INFO_FILE).write_text(json.dumps(info))
    code, out, err = cli(capsys, "train", "--out", run, "--resume")
    assert code == 0 and "earlier version without checksums" in out, err
    loss = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert loss(run) == loss(ref)


def test_prepare_and_data_refusals(tiny_data, tmp_path, capsys):
    from tst_train.cli.prepare import prepare_command
    with pytest.raises(Exception) as e:
        prepare_command(["--input", "bundled", "--out", str(tmp_path / "d"), "--vocab-size", "2000000000"])
    assert "too large" in str(e.value) and not (tmp_path / "d").exists()
    bad = tmp_path / "badmeta"
    shutil.copytree(tiny_data, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["bytes_per_token"] = "three"
    (bad / "meta.json").write_text(json.dumps(meta))
    code, _, err = cli(capsys, "train", "--data", bad, "--out", tmp_path / "r", *TINY)
    assert code == 2 and "bytes_per_token" in err and one_line(err) and not (tmp_path / "r").exists()


def test_an_interrupted_overwrite_is_finished_by_the_rerun(tmp_path):
    from tst_train.data.prepare import _finish
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("the previous preparation")
    stale = tmp_path / ".data.old-killed"
    (stale / "d").mkdir(parents=True)  # a replacement killed before it removed the old folder
    work = tmp_path / "data.partial"
    work.mkdir()
    (work / "meta.json").write_text("{}")
    _finish(str(work), str(out))
    assert (out / "meta.json").is_file() and not (out / "old.txt").exists()
    assert not stale.exists() and not work.exists()


def test_wandb_without_a_login_is_one_line_before_anything_is_written(tiny_data, tmp_path, capsys, monkeypatch):
    """A newcomer's `--log.wandb=true` with W&B installed but not logged in: one line, exit 2, no run directory."""
    import sys
    import types

    fake = types.ModuleType("wandb")
    fake.api = types.SimpleNamespace(api_key=None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data), "--out", str(out), "--preset", "tiny", "--steps", "2",
                 "--log.wandb=true", "--log.tensorboard=false"])
    err = capsys.readouterr().err
    assert code == 2 and "wandb login" in err and err.count("\n") == 1 and not out.exists()
    monkeypatch.setenv("WANDB_MODE", "offline")  # logging locally needs no login
    from tst_train.metrics import check_wandb
    check_wandb(True)


def test_data_identity_on_resume_and_reuse(tiny_data, tmp_path, capsys):
    """A resume against a data folder of the same size but other tokens, a shard changed in place, and a compare
    rerun into the same --out with another --data are each refused in one line."""
    import numpy as np

    flags = ["--preset", "tiny", "--steps", "4", "--batch-size", "2", "--seq-len", "16", "--eval.tokens=256",
             "--log.progress=false", "--log.tensorboard=false", "--train.threads=1", "--checkpoint-every", "2"]
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    meta = json.loads((other / "meta.json").read_text())
    train = other / meta["splits"]["train"]["shards"][0]["file"]
    tokens = np.fromfile(train, dtype=np.uint16)
    np.roll(tokens, 12345).tofile(train)  # same size, other tokens: the old fingerprint could not tell
    from tst_train.data.layout import sample_sha256
    meta["splits"]["train"]["shards"][0]["sample_sha256"] = sample_sha256(str(train))  # a consistent other folder
    (other / "meta.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *flags, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and err.count("\n") == 1
    # a shard changed in place after `tst prepare`: refused at the start of any run on it
    np.roll(tokens, 7).tofile(train)
    assert main(["train", "--data", str(other), "--out", str(tmp_path / "new"), *flags]) == 2
    assert "changed since `tst prepare` wrote it" in capsys.readouterr().err and not (tmp_path / "new").exists()
    np.roll(tokens, 12345).tofile(train)  # restored to what meta.json records
    # compare into the same --out with other data of the same size: refused, nothing retrained
    out = tmp_path / "cmp"
    args = ["compare", "--out", str(out), *flags, "--arms", "baseline", "--tasks", "none"]
    assert main([*args, "--data", str(tiny_data)]) == 0
    capsys.readouterr()
    assert main([*args, "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and err.count("\n") == 1


def test_divergence_stops_the_run_with_one_line_and_says_so_in_its_summary(tiny_data, tmp_path, capsys):
    from tst_train.train import LossHealth
    run = tmp_path / "run"
    flags = ["--data", str(tiny_data), "--preset", "tiny", "--steps", "40", "--batch-size", "2", "--seq-len", "16",
             "--eval-every", "10", "--eval.tokens=256", "--log.progress=false", "--log.tensorboard=false",
             "--train.threads=1", "--mode", "baseline"]
    assert main(["train", *flags, "--out", str(run), "--lr", "10"]) == 2
    err = capsys.readouterr().err
    assert "training diverged: the validation loss" in err and err.count("\n") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert not summary["completed"] and "above ln(vocabulary) + 1" in summary["diverged"]
    # the rule itself: a loss above ln V + 1, or a gradient norm of exactly 0 for 20 steps in a row
    health = LossHealth(math.log(512))
    assert health.after_eval(10, 7.0) is None and "worse than guessing" in health.after_eval(10, 7.3)
    assert all(health.after_step(k, {"grad_norm": 0.0, "loss": 6.24}) is None for k in range(19))
    assert "gradient norm has been 0 for 20 steps" in health.after_step(19, {"grad_norm": 0.0, "loss": 6.24})
    assert health.after_step(20, {"grad_norm": 0.5, "loss": 6.0}) is None  # any movement resets the count
    # off on request: the same run trains to the end
    assert main(["train", *flags, "--out", str(tmp_path / "on"), "--lr", "10", "--train.divergence_check=false"]) == 0


@pytest.mark.parametrize("planted", ["summary.json.tmp", "summary.json", "metrics.jsonl", ".lock"])
def test_a_received_run_directory_cannot_point_the_trainers_writes_outside(tiny_data, tmp_path, capsys, planted):
    """Symbolic links planted where the trainer writes (its temporaries, its records, its lock): a resume never
    writes through them — a link is refused in one line or replaced, and the file outside is untouched."""
    run = tmp_path / "run"
    flags = ["--preset", "tiny", "--steps", "4", "--batch-size", "2", "--seq-len", "16", "--eval.tokens=256",
             "--log.progress=false", "--log.tensorboard=false", "--train.threads=1", "--checkpoint-every", "2"]
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *flags, "--steps", "2"]) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = run / planted
    if link.exists():
        link.unlink()
    link.symlink_to(victim)
    capsys.readouterr()
    code = main(["train", "--out", str(run), "--resume", "--steps", "2"])
    err = capsys.readouterr().err
    assert victim.read_text() == "precious"
    assert code == 0 or (code == 2 and "symbolic link" in err and err.count("\n") == 1), err


@pytest.mark.parametrize("name", ["/etc/hostname", "../outside.bin", "sub/../../outside.bin"])
def test_a_received_meta_json_cannot_name_a_shard_outside_its_folder(tiny_data, tmp_path, name):
    from tst_train.data.layout import check_data_dir
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    meta = json.loads((data / "meta.json").read_text())
    meta["splits"]["train"]["shards"][0]["file"] = name
    (data / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="lies outside the data folder"):
        check_data_dir(data)


def test_an_hf_index_cannot_load_weights_from_outside_its_folder_and_a_broken_file_is_one_line(tmp_path, capsys):
    from tst_train import api
    from tst_train.export import export_hf
    from tst_train.model import Transformer, model_config
    model = Transformer(model_config("tiny", 64))
    out = export_hf(model, model.config, tmp_path / "hf")
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(out / "model.safetensors", outside)
    index = {"weight_map": {k: "../elsewhere.safetensors" for k in ("model.embed_tokens.weight",)}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="outside"):
        api.load(out)
    (out / "model.safetensors.index.json").unlink()
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match="could not be read as safetensors"):
        api.load(out)


def test_an_export_past_a_file_size_limit_is_one_line(trained, tmp_path, capsys, monkeypatch):
    """safetensors reports a failed write as its own error, "I/O error: … (os error 27)": one line naming it."""
    import safetensors.torch

    def too_large(*a, **k):
        raise Exception("Error while serializing: I/O error: File too large (os error 27)")

    monkeypatch.setattr(safetensors.torch, "save_file", too_large)
    code, _, err = cli(capsys, "export", "--run", trained, "--out", tmp_path / "hf")
    assert code == 2 and "file too large" in err and one_line(err) and not (tmp_path / "hf").exists(), err


def test_an_error_quoting_a_name_with_a_line_break_is_still_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "eval", tmp_path / "bad\nname", "--tasks", "none")
    assert code == 2 and one_line(err) and "bad\\nname" in err, err
