"""The validation layer for received metadata: every field of each table, wrong in each way, is one line naming the
file and the field — never a traceback, never a silent use."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tst_train import api, received
from tst_train.cli import main
from tst_train.errors import UserError

WRONG = {int: ["7", 2.5, True], float: ["x"], bool: ["yes", 1], str: [3], (int, float): ["x", True],
         (int, list): ["x"], dict: [[1]]}


def _cases(fields):
    for f in fields:
        kinds = f.kind if isinstance(f.kind, tuple) else (f.kind,)
        for bad in WRONG.get(f.kind, WRONG.get(kinds[0], [])):
            yield f.name, bad, "not"
        if f.low is not None:
            yield f.name, f.low - 1, "below"
        if f.required:
            yield f.name, KeyError, "missing"


@pytest.mark.parametrize("table", ["HF_CONFIG", "EXPORT_INFO", "SHARD"])
def test_every_field_of_every_table_is_checked(table):
    fields = getattr(received, table)
    good = {f.name: (f.low if f.low is not None else 1) if f.kind in (int, float, received.NUMBER) else
            {str: "x", bool: True, (int, list): 0}.get(f.kind, 1) for f in fields}
    received.check(dict(good), fields, "f.json")
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
