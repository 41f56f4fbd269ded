"""The validation layer for received metadata: every field of each table, wrong in each way, is one line naming the
file and the field — never a traceback, never a silent use."""
from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from tst_train import api, received
from tst_train.cli import main
from tst_train.errors import UserError

WRONG = {int: ["7", 2.5, True], float: ["x"], bool: ["yes", 1], str: [3], (int, float): ["x", True],
         (int, list): ["x"], dict: [[1]], list: ["x", {}]}
GOOD = {str: "x", bool: True, (int, list): 0, dict: {}, list: []}
TABLES = ["HF_CONFIG", "EXPORT_INFO", "SHARD", "DATA_META", "TRAINER_STATE", "LOADER_STATE", "TIKTOKEN_INFO",
          "RUN_DATA", "RUN_META", "RUN_TRAIN_SPLIT", "CHECKPOINT_INFO", "MANIFEST", "MANIFEST_ENTRY", "QWEN3_MOE"]


def _cases(fields):
    for f in fields:
        kinds = f.kind if isinstance(f.kind, tuple) else (f.kind,)
        for bad in WRONG.get(f.kind, WRONG.get(kinds[0], [])):
            yield f.name, bad, "not"
        if f.low is not None:
            yield f.name, f.low - 1, "below"
            if float in kinds:
                yield f.name, float("nan"), "below"
        if f.required:
            yield f.name, KeyError, "missing"
        if f.items is not None:  # an element of the wrong type
            yield f.name, {"k": "x"} if f.kind is dict else ["x"], "holds"


def test_every_table_is_tested():
    assert sorted(TABLES) == sorted(n for n, v in vars(received).items()
                                    if isinstance(v, tuple) and v and isinstance(v[0], received.Field))


@pytest.mark.parametrize("table", TABLES)
def test_every_field_of_every_table_is_checked(table):
    fields = getattr(received, table)
    good = {f.name: (f.low if f.low is not None else 1) if f.kind in (int, float, received.NUMBER) else
            GOOD.get(f.kind, 1) for f in fields}
    received.check(dict(good), fields, "f.json", only=True)
    with pytest.raises(UserError, match="f.json: field 'surplus' is not one this file has"):
        received.check(good | {"surplus": 1}, fields, "f.json", only=True)
    for name, bad, words in _cases(fields):
        obj = dict(good)
        if bad is KeyError:
            del obj[name]
        else:
            obj[name] = bad
        with pytest.raises(UserError, match=f"f.json: field '{name}' .*{words}"):
            received.check(obj, fields, "f.json")


def test_ids_outside_the_vocabulary_and_a_non_object(tmp_path):
    base = {f.name: 4 for f in received.HF_CONFIG if f.required}
    with pytest.raises(UserError, match="'eos_token_id' holds 9, outside the vocabulary of 4"):
        received.check_hf_config(base | {"eos_token_id": [1, 9]}, "config.json")
    with pytest.raises(UserError, match="does not hold a JSON object"):
        received.check([1, 2], received.HF_CONFIG, "config.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(UserError, match="cannot read"):
        received.read_json(tmp_path / "bad.json")


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c.pop("hidden_size"), "'hidden_size' is missing"),
    (lambda c: c.update(hidden_size="64"), "'hidden_size' is '64', not int"),
    (lambda c: c.update(eos_token_id=99999), "outside the vocabulary"),
    (lambda c: c.update(vocab_size=100), "do not match its config.json"),
])
def test_a_malformed_export_is_one_line_in_every_command(tiny_run, tiny_data, tmp_path, capsys, edit, expected):
    hf = tmp_path / "hf"
    api.export(tiny_run, hf)
    config = json.loads((hf / "config.json").read_text())
    edit(config)
    (hf / "config.json").write_text(json.dumps(config))
    for argv in (["eval", str(hf), "--data", str(tiny_data), "--tasks", "cloze", "--limit", "2"],
                 ["generate", str(hf), "--prompt", "It is", "--max-new-tokens", "2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_malformed_run_record_is_one_line(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "data.json").write_text("{bad")
    assert main(["eval", str(run), "--tasks", "cloze", "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "data.json" in err and err.count("\n") == 1


def test_non_utf8_jsonl_is_refused_like_non_utf8_text(tmp_path):
    from tst_train.data.prepare import prepare
    src = tmp_path / "docs.jsonl"
    src.write_bytes(b'{"text": "caf\xe9 au lait, a longer line of text"}\n' * 5)
    with pytest.raises(UserError, match="is not UTF-8 text"):
        prepare([str(src)], tmp_path / "out", vocab_size=300)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_rotated_away_while_reading_is_retried_not_called_damaged(tiny_run, tmp_path, monkeypatch):
    """`tst eval` on a run that is still training: rotation may remove the newest checkpoint between listing and
    reading. That is said as such and the newest remaining one is taken — not reported as damage."""
    from tst_train import checkpoint
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    newest = checkpoint.list_checkpoints(run / "checkpoints")[-1]
    real, notes = checkpoint.verify, []

    def rotating(path):
        if path == newest and path.exists():
            shutil.rmtree(path)  # the training process's rotation, mid-read
        return real(path)

    monkeypatch.setattr(checkpoint, "verify", rotating)
    found = checkpoint.latest_valid(run / "checkpoints", warn=notes.append)
    assert found == checkpoint.list_checkpoints(run / "checkpoints")[-1] != newest
    assert len(notes) == 1 and "replaced while reading" in notes[0] and "damaged" not in notes[0]


def test_disk_full_during_a_checkpoint_is_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    """torch.distributed.checkpoint wraps the OSError in a CheckpointException (a BaseException): one line."""
    from torch.distributed.checkpoint.api import CheckpointException, _wrap_exception

    from tst_train import checkpoint

    def full(*a, **k):
        try:
            raise OSError(28, "No space left on device")
        except OSError as e:
            raise CheckpointException("write failed", {0: _wrap_exception(e)}) from None

    monkeypatch.setattr(checkpoint.dcp, "save", full)
    code = main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "2",
                 "--batch-size", "2", "--seq-len", "16", "--eval.tokens=256", "--log.progress=false",
                 "--log.tensorboard=false"])
    err = capsys.readouterr().err
    assert code == 2 and "no space left on device" in err and err.count("\n") == 1 and "Traceback" not in err


def test_disk_full_or_read_only_in_export_and_prepare_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    import errno

    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["export", "--run", str(tiny_run), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "exporting to" in err and "no space left on device" in err and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()  # nothing half-written
    from tst_train.data import shards

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(shards, "encode_chunk", read_only)
    assert main(["prepare", "--input", "bundled", "--out", str(tmp_path / "d"), "--vocab-size", "300",
                 "--max-docs", "20"]) == 2
    err = capsys.readouterr().err  # prepare says what it keeps for a rerun, then the one error line
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: preparing") and last.endswith("read-only file system") and "Traceback" not in err


@pytest.mark.parametrize("tokenizer", ["bpe", "tiktoken:cl100k_base"])
def test_a_long_document_in_pieces_gives_the_same_ids(tmp_path, monkeypatch, tokenizer):
    """One huge document is tokenized in pieces cut where the pre-tokenizer splits anyway: the same ids as whole."""
    from tst_train.data import shards
    from tst_train.data import tokenizer as tokenizer_mod
    from tst_train.data.tokenizer import load_tiktoken, train_bpe
    text = ("It's 12345 apples,  and 6789 pears...  Well -- said she; \"no!\" " * 400 + "naïve café ² _x_ \n\n") * 5
    tok = train_bpe([text], 400) if tokenizer == "bpe" else load_tiktoken("cl100k_base")
    assert tokenizer_mod.splits_safely(tok)
    whole = np.asarray(tok.encode(text), dtype=np.int64)
    monkeypatch.setattr(tokenizer_mod, "LONG_DOC_CHARS", 997)  # many cuts, at odd places
    pieces = tokenizer_mod.pieces_of(text)
    assert len(pieces) > 50 and "".join(pieces) == text
    ids, table = shards.encode_chunk(tok, ["a short one", text, "another"], 1, "test")
    n0 = len(tok.encode("a short one"))
    assert np.array_equal(ids[n0 + 1:n0 + 1 + whole.size].astype(np.int64), whole)
    assert table[1, 0] == whole.size + 1


def test_bad_prompts_and_an_eval_out_that_is_a_directory_are_one_line(tiny_run, tmp_path, capsys):
    bad = tmp_path / "prompts.txt"
    bad.write_bytes(b"\xff\xfeabc\n")
    (tmp_path / "outdir").mkdir()
    for argv, expected in ((["generate", str(tiny_run), "--prompt", "\udc80abc", "--max-new-tokens", "2"], "not valid Unicode"),
                           (["generate", str(tiny_run), "--prompts-file", str(bad), "--max-new-tokens", "2"], "not UTF-8"),
                           (["eval", str(tiny_run), "--tasks", "cloze", "--limit", "2", "--out", str(tmp_path / "outdir")],
                            "is a directory")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------------- a checkpoint's trainer state
def _state_edit(**change):
    return lambda s: s.update(change)


@pytest.mark.parametrize("edit,expected", [
    (_state_edit(step="4"), "field 'step' is '4', not int"),
    (_state_edit(step=4000), "field 'step' is 4000, but the checkpoint is step"),
    (lambda s: s.pop("loader"), "field 'loader' is missing"),
    (lambda s: s["loader"].update(position=-5), "loader: field 'position' is -5, below 0"),
    (_state_edit(step_times=["x"]), "field 'step_times' holds 'x'"),
    (_state_edit(surplus=1), "field 'surplus' is not one this file has"),
    (_state_edit(rng={"cpu": {"__tensor_uint8__": "AAAA"}}), "field 'rng' does not hold a CPU random-generator"),
    (_state_edit(best_val_loss=None), "field 'best_val_loss' is null"),
    (lambda s: s.clear(), "field 'step' is missing"),
])
def test_a_malformed_trainer_state_with_a_matching_manifest_is_one_line(tiny_run, tiny_data, tmp_path, capsys, edit,
                                                                       expected):
    """The manifest catches an edited trainer_state.json — unless it is rewritten to match, which anyone can do.
    Then the state's own table refuses it, in one line naming the file and the field."""
    from tst_train import checkpoint
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "summary.json").unlink()
    for ckpt in checkpoint.list_checkpoints(run / "checkpoints"):
        state = json.loads((ckpt / checkpoint.STATE_FILE).read_text())
        edit(state)
        (ckpt / checkpoint.STATE_FILE).write_text(json.dumps(state))
        files = json.loads((ckpt / checkpoint.MANIFEST_FILE).read_text())["files"]
        (ckpt / checkpoint.MANIFEST_FILE).write_text(json.dumps({"files": checkpoint._hash_files(ckpt, files)}))
        checkpoint.verify(ckpt)  # the checksums hold
    for argv in (["train", "--out", str(run), "--resume"],
                 ["train", "--data", str(tiny_data), "--out", str(tmp_path / "b"), "--preset", "tiny", "--steps", "2",
                  "--init-from", str(run), "--log.tensorboard=false"]):  # init-from reads its data position
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "trainer_state.json" in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------------- a tiktoken run's files
def _tiktoken_run(tmp_path, specials=None):
    """A run directory's tokenizer files for a 256-byte tiktoken encoding plus an end-of-text token."""
    import base64
    run = tmp_path / "run"
    run.mkdir()
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    (run / "tokenizer.tiktoken").write_text("\n".join(lines) + "\n")
    specials = {"<|endoftext|>": 256} if specials is None else specials
    record = {"path": str(tmp_path), "meta": {"vocab_size": 257, "eos_id": 256, "splits": {"train": {"tokens": 9}}},
              "tiktoken": {"name": "bytes", "pat_str": r"\S+|\s+", "special_tokens": specials, "n_vocab": 257}}
    (run / "data.json").write_text(json.dumps(record))
    return run


def _lines(fn):
    def edit(run):
        lines = (run / "tokenizer.tiktoken").read_text().splitlines()
        (run / "tokenizer.tiktoken").write_text("\n".join(fn(lines)) + "\n")
    return edit


def _json(name: str, fn):
    """An edit of directory ``d``'s JSON file ``name`` in place: ``fn`` changes the parsed object."""
    def edit(d):
        obj = json.loads((d / name).read_text())
        fn(obj)
        (d / name).write_text(json.dumps(obj))
    return edit


def _record(fn):
    return _json("data.json", fn)


TIKTOKEN_DAMAGE = {
    "not two fields": (_lines(lambda ls: ls + ["garbage"]), "line 257 is not '<base64 token> <rank>'"),
    "three fields": (_lines(lambda ls: ls + ["QUE= 5 7"]), "line 257 is not"),
    "bad base64": (_lines(lambda ls: ls + ["@@@@ 300"]), "line 257 is not"),
    "negative rank": (_lines(lambda ls: ls[:-1] + ["/w== -3"]), "line 256 is not"),
    "a byte without a rank": (_lines(lambda ls: ls[1:]), "the single byte 0x00 has no rank"),
    "a repeated token": (_lines(lambda ls: ls + [ls[5].split()[0] + " 300"]), "line 257: a repeated token"),
    "a repeated rank": (_lines(lambda ls: ls + ["QUE= 5"]), "not distinct ids below n_vocab"),
    "a rank past n_vocab": (_lines(lambda ls: ls + ["QUE= 99999999999999"]), "not distinct ids below n_vocab"),
    "empty": (lambda run: (run / "tokenizer.tiktoken").write_text(""), "has no rank"),
    "not UTF-8": (lambda run: (run / "tokenizer.tiktoken").write_bytes(b"\xff\xfe\n"), "UnicodeDecodeError"),
    "missing": (lambda run: (run / "tokenizer.tiktoken").unlink(), "cannot read"),
    "a directory": (lambda run: ((run / "tokenizer.tiktoken").unlink(), (run / "tokenizer.tiktoken").mkdir()),
                    "is not a regular file"),
    "a FIFO": (lambda run: ((run / "tokenizer.tiktoken").unlink(), os.mkfifo(run / "tokenizer.tiktoken")),
               "is not a regular file"),  # reading it would block for ever
    "pattern that does not compile": (_record(lambda r: r["tiktoken"].update(pat_str="(")), "'pat_str' is not a valid"),
    "special token id not int": (_record(lambda r: r["tiktoken"].update(special_tokens={"<|e|>": "x"})),
                                 "tiktoken: field 'special_tokens' holds 'x'"),
    "n_vocab not the vocab_size": (_record(lambda r: r["tiktoken"].update(n_vocab=5)), "'n_vocab' is 5"),
    "no name": (_record(lambda r: r["tiktoken"].pop("name")), "tiktoken: field 'name' is missing"),
    "eos outside": (_record(lambda r: r["meta"].update(eos_id=999)), "'eos_id' is 999, outside the vocabulary"),
    "eos null": (_record(lambda r: r["meta"].update(eos_id=None)), "'eos_id' is null"),
    "meta null": (_record(lambda r: r.update(meta=None)), "data.json: field 'meta' is null"),
    "no vocab_size": (_record(lambda r: r["meta"].pop("vocab_size")), "meta: field 'vocab_size' is missing"),
    "no train split": (_record(lambda r: r["meta"].update(splits={})), "splits: train does not hold a JSON object"),
}


@pytest.mark.parametrize("how", list(TIKTOKEN_DAMAGE))
def test_a_malformed_tiktoken_run_is_one_line(tmp_path, how):
    from tst_train.tokenizer_files import run_tokenizer
    run = _tiktoken_run(tmp_path)
    tok = run_tokenizer(run, "unused")
    assert tok.vocab_size == 257 and tok.decode(tok.encode("a b")) == "a b"
    edit, expected = TIKTOKEN_DAMAGE[how]
    edit(run)
    with pytest.raises(UserError, match=re.escape(expected)) as e:
        run_tokenizer(run, "unused")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------- a data folder's meta.json
def _meta(fn):
    return _json("meta.json", fn)


DATA_DAMAGE = {
    "vocab_size true": (_meta(lambda m: m.update(vocab_size=True)), "'vocab_size' is True, not int"),
    "vocab_size past the dtype": (_meta(lambda m: m.update(vocab_size=10 ** 12)), "above 65,536"),
    "eos_id negative": (_meta(lambda m: m.update(eos_id=-1)), "'eos_id' is -1, below 0"),
    "eos_id outside": (_meta(lambda m: m.update(eos_id=10 ** 6)), "outside the vocabulary of 512"),
    "format_version negative": (_meta(lambda m: m.update(format_version=-1)), "'format_version' is -1, below 1"),
    "tokenizer a string": (_meta(lambda m: m.update(tokenizer="x")), "'tokenizer' is 'x', not dict"),
    "tiktoken without a name": (_meta(lambda m: m.update(tokenizer={"type": "tiktoken"})), "without a 'name'"),
    "bytes_per_token NaN": (_meta(lambda m: m.update(bytes_per_token=float("nan"))), "'bytes_per_token' is nan"),
    "nested too deep": (lambda d: (d / "meta.json").write_text("[" * 100000 + "]" * 100000), "is not valid JSON"),
    "document index past its shard": (lambda d: np.save(d / "train.docs.npy", np.full(_docs(d), 10 ** 12)),
                                      "is not an index of document starts"),
    "document index of floats": (lambda d: np.save(d / "train.docs.npy", np.zeros(_docs(d), np.float32)),
                                 "is not an index of document starts"),
    "document index not increasing": (lambda d: np.save(d / "train.docs.npy", np.zeros(_docs(d), np.int64)),
                                      "is not an index of document starts"),
}


def _docs(d) -> int:
    return json.loads((d / "meta.json").read_text())["splits"]["train"]["shards"][0]["documents"]


@pytest.mark.parametrize("how", list(DATA_DAMAGE))
def test_a_malformed_data_folder_is_one_line(tiny_data, tmp_path, how):
    """Each of these trained on (or crashed with a traceback) before: a data folder's meta.json has a table too."""
    from tst_train.data.layout import check_data_dir
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    edit, expected = DATA_DAMAGE[how]
    edit(data)
    with pytest.raises(UserError, match=re.escape(expected)) as e:
        check_data_dir(data)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------- a checkpoint's info and manifest
@pytest.mark.parametrize("name,edit,expected", [
    ("checkpoint.json", lambda o: o.update(fingerprint=[]), "field 'fingerprint' is [], not dict"),
    ("checkpoint.json", lambda o: o.update(step="x"), "field 'step' is 'x', not int"),
    ("checkpoint.json", lambda o: o.update(step=7), "field 'step' is 7, but the checkpoint is step"),
    ("manifest.json", lambda o: o["files"].update({"__0_0.distcp": 3}), "field 'files' holds 3, not dict"),
    ("manifest.json", lambda o: o["files"].update({"/etc/hostname": {"bytes": 1, "sha256": "x"}}),
     "names '/etc/hostname', not a file of the checkpoint"),  # not even hashed: it could be any size
    ("manifest.json", lambda o: next(iter(o["files"].values())).update(bytes="x"), "field 'bytes' is 'x', not int"),
])
def test_a_malformed_checkpoint_info_or_manifest_is_damage_in_one_line(tiny_run, tmp_path, capsys, name, edit,
                                                                      expected):
    """checkpoint.json is outside the manifest and the manifest vouches only for the others: both have tables."""
    from tst_train import checkpoint
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for ckpt in checkpoint.list_checkpoints(run / "checkpoints"):
        obj = json.loads((ckpt / name).read_text())
        edit(obj)
        (ckpt / name).write_text(json.dumps(obj))
    for argv in (["eval", str(run), "--tasks", "cloze", "--limit", "2"],
                 ["export", "--run", str(run), "--out", str(tmp_path / "hf")]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert "is damaged" in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert expected in err  # the one error line names the newest checkpoint's damage
