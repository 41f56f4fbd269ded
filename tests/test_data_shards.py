"""Streaming `tst prepare` at scale, on tiny inputs: identity with the pre-sharding writer, shards and
their document index, kill-and-resume equality, `--task i/n` + merge, pre-tokenized inputs, and the
loader's document starts."""
from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tst_train.data import TokenLoader, TokenStream, check_data_dir, load_split, load_tokenizer
from tst_train.data import plan as plan_module
from tst_train.data import shards as shards_module
from tst_train.data.prepare import prepare
from tst_train.errors import UserError

from test_data import SINGLE_SHARD_FILES, files_of, make_docs, write_jsonl

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@pytest.fixture(scope="module")
def docs():
    return make_docs(60)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, docs):
    """The documents as JSONL, a BPE tokenizer.json for them, and the reference preparation with it."""
    root = tmp_path_factory.mktemp("corpus")
    src = write_jsonl(root / "docs.jsonl", docs)
    ref = prepare([src], root / "ref", vocab_size=320, val_fraction=0.2, seed=3)
    tok_file = str(root / "ref" / "tokenizer.json")
    with_tok = prepare([src], root / "with_tok", tokenizer=tok_file, val_fraction=0.2, seed=3)
    return {"root": root, "src": src, "ref": root / "ref", "meta": ref, "tok": tok_file,
            "with_tok": root / "with_tok", "with_tok_meta": with_tok}


def stream_of(data_dir, split) -> np.ndarray:
    return np.asarray(load_split(data_dir, split))


# --------------------------------------------------------------------------------------------
# identity with the pre-sharding writer (commit 0baf433): same split, tokenizer and token streams
# --------------------------------------------------------------------------------------------

def old_writer(docs: list[str], vocab_size: int, val_fraction: float, seed: int):
    """A copy of the in-memory algorithm `tst prepare` used before streaming: every document in a list,
    a shuffled list of indices, a BPE trained on the training documents in shuffled order, each split
    encoded as one stream of document + eos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(val_fraction * len(docs))), len(docs) - 1)
    val, train = [docs[i] for i in order[:n_val]], [docs[i] for i in order[n_val:]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train, trainer=trainer, length=len(train))
    eos = tok.token_to_id("<|endoftext|>")
    streams = {}
    for name, part in (("train", train), ("val", val)):
        ids = []
        for e in tok.encode_batch(part, add_special_tokens=False):
            ids += e.ids + [eos]
        streams[name] = np.array(ids, dtype=np.uint16).tobytes()
    return streams, tok.to_str()


def test_bundled_subset_is_byte_identical_to_the_old_writer(tmp_path, monkeypatch):
    from tst_train.data.sources import read_documents

    docs = read_documents(["bundled"], max_docs=60)
    want, want_tok = old_writer(docs, 500, 0.02, 0)  # the default seed and val fraction
    monkeypatch.setattr(plan_module, "CHUNK_WEIGHT", 40_000)  # many chunks, several shards: same streams
    meta = prepare(["bundled"], tmp_path / "b", vocab_size=500, max_docs=60, shard_tokens=20_000)
    assert len(meta["splits"]["train"]["shards"]) > 5
    for split in ("train", "val"):
        assert stream_of(tmp_path / "b", split).tobytes() == want[split], split
    assert load_tokenizer(tmp_path / "b")._impl.to_str() == want_tok
    assert meta["splits"]["val"]["documents"] == 1 and meta["splits"]["train"]["documents"] == 59


def test_default_layout_is_the_old_layout_plus_the_document_index(corpus, docs):
    """One shard per split keeps the old file names (train.bin, val.bin), whose bytes are the old writer's."""
    assert sorted(os.listdir(corpus["ref"])) == SINGLE_SHARD_FILES
    want, _ = old_writer(docs, 320, 0.2, 3)
    for split in ("train", "val"):
        assert (corpus["ref"] / f"{split}.bin").read_bytes() == want[split]


# --------------------------------------------------------------------------------------------
# shards and the document index
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sharded(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "d"
    meta = prepare([corpus["src"]], out, tokenizer=corpus["tok"], val_fraction=0.2, seed=3, shard_tokens=700)
    return out, meta


def test_shards_hold_whole_documents_and_concatenate_to_the_stream(sharded, corpus):
    out, meta = sharded
    tok = load_tokenizer(out)
    for split in ("train", "val"):
        shards = meta["splits"][split]["shards"]
        ref = stream_of(corpus["with_tok"], split)
        assert np.array_equal(stream_of(out, split), ref)
        assert meta["splits"][split]["tokens"] == len(ref)
        assert sum(s["documents"] for s in shards) == meta["splits"][split]["documents"]
        pieces = []
        for k, s in enumerate(shards):
            ids = np.fromfile(out / s["file"], dtype=np.uint16)
            starts = np.load(out / s["docs_file"])
            assert len(ids) == s["tokens"] and len(starts) == s["documents"]
            assert ids[-1] == tok.eos_id  # whole documents
            ends = np.flatnonzero(ids == tok.eos_id) + 1  # the documents hold no eos inside
            assert np.array_equal(starts, np.concatenate([[0], ends[:-1]]))
            if k < len(shards) - 1:
                assert s["tokens"] >= 700 and s["tokens"] - (len(ids) - starts[-1]) < 700  # closes at the first end past 700
            pieces.append(ids)
        if split == "train":
            assert len(shards) > 3 and shards[0]["file"] == "train-00000.bin"
    assert set(os.listdir(out)) == {"meta.json", "tokenizer.json"} | {
        s[key] for split in ("train", "val") for s in meta["splits"][split]["shards"] for key in ("file", "docs_file")}
    assert meta["shard_tokens"] == 700


def test_token_stream_slices_across_shards(sharded):
    out, _ = sharded
    stream = load_split(out, "train")
    flat = np.concatenate([np.fromfile(out / s["file"], dtype=np.uint16)
                           for s in json.loads((out / "meta.json").read_text())["splits"]["train"]["shards"]])
    assert isinstance(stream, TokenStream) and len(stream) == len(flat) and stream.shape == flat.shape
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = sorted(rng.integers(0, len(flat) + 1, size=2))
        assert np.array_equal(stream[a:b], flat[a:b])
    assert int(stream[-1]) == int(flat[-1]) and int(stream[5]) == int(flat[5])
    with pytest.raises(IndexError):
        stream[len(flat)]


def test_loader_over_shards_equals_loader_over_one_file(sharded, corpus):
    out, _ = sharded
    one = [TokenLoader(corpus["with_tok"], rank=r, world_size=2) for r in range(2)]
    many = [TokenLoader(out, rank=r, world_size=2) for r in range(2)]
    for geom in [(4, 33, 32)] * 50 + [(2, 129, 128)] * 50:  # a phase change and several wraps
        for a, b in zip(one, many):
            assert torch.equal(a.next_batch(*geom), b.next_batch(*geom))
            assert a.state_dict() == b.state_dict()
    assert many[0].epoch >= 2
    resumed = TokenLoader(out, rank=1, world_size=2)
    resumed.load_state_dict(many[1].state_dict())
    assert torch.equal(resumed.next_batch(2, 129, 128), one[1].next_batch(2, 129, 128))


def test_check_data_dir_checks_every_shard_and_index(sharded, tmp_path):
    import shutil

    out, meta = sharded
    shard = meta["splits"]["train"]["shards"][2]
    for breakage, msg in [
        (lambda d: os.remove(d / shard["file"]), f"no {shard['file']}"),
        (lambda d: (d / shard["file"]).write_bytes(b"\x00\x00"), "truncated"),
        (lambda d: np.save(d / shard["docs_file"], np.zeros(1, dtype=np.int64)), "documents"),
        (lambda d: (d / shard["docs_file"]).write_bytes(b"junk"), "cannot read the document index"),
    ]:
        d = tmp_path / f"copy{len(os.listdir(tmp_path))}"
        shutil.copytree(out, d)
        breakage(d)
        with pytest.raises(UserError, match=msg):
            check_data_dir(d)
        with pytest.raises(UserError, match=msg):
            TokenLoader(d)


# --------------------------------------------------------------------------------------------
# document starts (for document-aware bagging)
# --------------------------------------------------------------------------------------------

def brute_force_starts(tok, split_docs: list[str]) -> set[int]:
    """Where each document begins in the split's stream, from encoding each document on its own."""
    starts, pos = set(), 0
    for d in split_docs:
        starts.add(pos)
        pos += len(tok.encode(d)) + 1
    return starts


def split_documents_of(data_dir, split) -> list[str]:
    """The split's documents in stream order, from the document index (independent of eos)."""
    stream, tok = stream_of(data_dir, split), load_tokenizer(data_dir)
    meta = json.loads((data_dir / "meta.json").read_text())
    out, base = [], 0
    for s in meta["splits"][split]["shards"]:
        starts = np.load(data_dir / s["docs_file"]).tolist() + [s["tokens"]]
        out += [tok.decode(stream[base + a:base + b - 1]) for a, b in zip(starts, starts[1:])]
        base += s["tokens"]
    return out


def test_doc_starts_match_brute_force_on_every_rank_and_geometry(sharded, docs):
    out, _ = sharded
    tok = load_tokenizer(out)
    train_docs = split_documents_of(out, "train")
    assert sorted(train_docs + split_documents_of(out, "val")) == sorted(docs)
    truth = brute_force_starts(tok, train_docs)
    loaders = [TokenLoader(out, rank=r, world_size=2) for r in range(2)]
    plain = TokenLoader(out)
    for geom in [(4, 33, 32)] * 12 + [(2, 65, 64)] * 12:  # includes a wrap
        pos = plain.position if plain.position + (geom[0] - 1) * geom[2] + geom[1] <= plain.num_tokens else 0
        full = plain.next_batch(*geom)
        parts = [ld.next_batch(*geom, return_doc_starts=True) for ld in loaders]
        rows = torch.cat([p[0] for p in parts])
        starts = torch.cat([p[1] for p in parts])
        assert torch.equal(rows, full) and starts.dtype == torch.bool and starts.shape == rows.shape
        want = torch.tensor([[pos + j * geom[2] + k in truth for k in range(geom[1])] for j in range(geom[0])])
        assert torch.equal(starts, want)
    with pytest.raises(ValueError, match="data folder"):
        TokenLoader(np.arange(100)).next_batch(1, 10, 10, return_doc_starts=True)


def test_doc_starts_follow_the_index_not_eos_and_format_1_still_loads(tmp_path):
    """A document whose text contains "<|endoftext|>" gets the eos id inside it (HF tokenizers match added
    tokens in text): the index still says where documents begin. A format-1 folder (no index) loads,
    with its documents found from the eos ids."""
    docs = make_docs(12)
    docs[4] = "Before the marker <|endoftext|> and after it, still one document."
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    meta = prepare([src], tmp_path / "d", vocab_size=300, val_fraction=0.2, seed=0)
    tok = load_tokenizer(tmp_path / "d")
    train_docs = [d for d in split_documents_of(tmp_path / "d", "train")]
    assert docs[4] in train_docs
    n = meta["splits"]["train"]["tokens"]
    _, starts = TokenLoader(tmp_path / "d").next_batch(1, n, n, return_doc_starts=True)
    got = set(torch.nonzero(starts[0]).flatten().tolist())
    assert got == brute_force_starts(tok, train_docs)
    stream = stream_of(tmp_path / "d", "train")
    by_eos = {0} | {int(i) + 1 for i in np.flatnonzero(stream[:-1] == tok.eos_id)}
    assert by_eos - got and len(by_eos) == len(got) + 1  # eos scanning would split document 4

    old = tmp_path / "old"  # the same folder as format 1 wrote it
    old.mkdir()
    for split in ("train", "val"):
        (old / f"{split}.bin").write_bytes((tmp_path / "d" / f"{split}.bin").read_bytes())
    (old / "tokenizer.json").write_bytes((tmp_path / "d" / "tokenizer.json").read_bytes())
    v1 = dict(meta, format_version=1, splits={k: {kk: vv for kk, vv in v.items() if kk != "shards"}
                                              for k, v in meta["splits"].items()})
    (old / "meta.json").write_text(json.dumps(v1))
    assert check_data_dir(old)["format_version"] == 1
    a, b = TokenLoader(old), TokenLoader(tmp_path / "d")
    for _ in range(3):
        (x, sx), (y, _) = a.next_batch(2, 40, 39, return_doc_starts=True), b.next_batch(2, 40, 39, return_doc_starts=True)
        assert torch.equal(x, y)
        pos = a.position - 2 * 39
        want = torch.tensor([[pos + j * 39 + k in by_eos for k in range(40)] for j in range(2)])
        assert torch.equal(sx, want)


# --------------------------------------------------------------------------------------------
# kill and resume
# --------------------------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {src!r})
    from tst_train.data import plan, shards, prepare as prep
    plan.CHUNK_WEIGHT = 2000
    stage, n = sys.argv[1], int(sys.argv[2])
    calls = [0]
    if stage in ("tokenize", "merge"):
        publish = shards.publish
        def killing_publish(tmp, path):
            in_stage = ("chunks" in path) == (stage == "tokenize")
            calls[0] += in_stage
            if in_stage and calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-file: the temporary file is written, not renamed
            publish(tmp, path)
        shards.publish = killing_publish
    elif stage == "plan":
        def killing_train(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        prep.train_tokenizer = killing_train
    prep.prepare([sys.argv[3]], sys.argv[4], vocab_size=320, val_fraction=0.2, seed=3, shard_tokens=900)
""")


@pytest.mark.parametrize("stage,n", [("plan", 0), ("tokenize", 8), ("merge", 3)])  # tokenize: at chunk 3's table
def test_kill_and_resume_is_byte_identical(corpus, tmp_path, stage, n):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(src=SRC))
    out = tmp_path / "d"
    r = subprocess.run([sys.executable, str(script), stage, str(n), corpus["src"], str(out)], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    work = tmp_path / "d.partial"
    assert not out.exists() and work.is_dir()
    if stage == "tokenize":
        chunks = sorted(os.listdir(work / "chunks"))
        assert sum(f.endswith(".npy") for f in chunks) == 3 and any(".tmp-" in f for f in chunks)
    meta = prepare([corpus["src"]], out, vocab_size=320, val_fraction=0.2, seed=3, shard_tokens=900)
    ref = tmp_path / "ref"  # uninterrupted (and with the default chunks: the output does not depend on them)
    prepare([corpus["src"]], ref, vocab_size=320, val_fraction=0.2, seed=3, shard_tokens=900)
    assert files_of(out) == files_of(ref)  # every file, meta.json included
    assert not work.exists() and len(meta["splits"]["train"]["shards"]) > 2


def test_resume_tokenizes_only_the_missing_chunks(corpus, tmp_path, monkeypatch):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(src=SRC))
    out = tmp_path / "d"
    r = subprocess.run([sys.executable, str(script), "tokenize", "9", corpus["src"], str(out)], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    plan = json.loads((tmp_path / "d.partial" / "plan.json").read_text())
    encoded = []
    real_encode = shards_module.encode_chunk
    monkeypatch.setattr(shards_module, "encode_chunk", lambda *a: encoded.append(1) or real_encode(*a))
    prepare([corpus["src"]], out, vocab_size=320, val_fraction=0.2, seed=3, shard_tokens=900)
    assert len(encoded) == len(plan["chunks"]) - 4 and len(plan["chunks"]) > 8
    assert np.array_equal(stream_of(out, "train"), stream_of(corpus["ref"], "train"))


def test_rerun_with_other_arguments_is_refused_unless_overwrite(corpus, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards_module, "encode_chunk", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"], seed=3)
    monkeypatch.undo()
    with pytest.raises(UserError, match="differs in: seed"):
        prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"], seed=4)
    other = write_jsonl(tmp_path / "other.jsonl", make_docs(5))
    with pytest.raises(UserError, match="differs in: input files, inputs"):
        prepare([corpus["src"], other], tmp_path / "d", tokenizer=corpus["tok"], seed=3)
    meta = prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"], seed=4, overwrite=True)
    assert meta["seed"] == 4 and not (tmp_path / "d.partial").exists()


def test_input_changed_after_the_plan_is_refused(corpus, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "d.jsonl", make_docs(20))
    monkeypatch.setattr(shards_module, "encode_chunk", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        prepare([src], tmp_path / "o", tokenizer=corpus["tok"])
    monkeypatch.undo()
    write_jsonl(tmp_path / "d.jsonl", make_docs(21))
    with pytest.raises(UserError, match="input files"):
        prepare([src], tmp_path / "o", tokenizer=corpus["tok"])


# --------------------------------------------------------------------------------------------
# scale-out: --plan-only, --task i/n, then the merge
# --------------------------------------------------------------------------------------------

def test_tasks_then_merge_equal_a_local_run(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan_module, "CHUNK_WEIGHT", 1500)
    args = dict(tokenizer=corpus["tok"], val_fraction=0.2, seed=3, shard_tokens=800)
    out = tmp_path / "d"
    with pytest.raises(UserError, match="run the same `tst prepare` with --plan-only first"):
        prepare([corpus["src"]], out, task="0/3", **args)
    assert prepare([corpus["src"]], out, plan_only=True, **args) is None
    plan = json.loads((tmp_path / "d.partial" / "plan.json").read_text())
    assert len(plan["chunks"]) >= 6
    for i in (2, 0):  # task 1 of 3 never runs (a failed array task): the merge tokenizes its chunks
        assert prepare([corpus["src"]], out, task=f"{i}/3", **args) is None
    n = len(plan["chunks"])
    done = sorted(int(f[:6]) for f in os.listdir(tmp_path / "d.partial" / "chunks") if f.endswith(".npy"))
    assert done == list(range(0, n // 3)) + list(range(2 * n // 3, n))
    assert prepare([corpus["src"]], out, task="0/3", **args) is None  # a rerun task (requeue) finds its work done
    assert "tokenized 0 of its" in capsys.readouterr().err
    encoded = []
    real_encode = shards_module.encode_chunk
    monkeypatch.setattr(shards_module, "encode_chunk", lambda *a: encoded.append(1) or real_encode(*a))
    meta = prepare([corpus["src"]], out, **args)
    assert len(encoded) == 2 * n // 3 - n // 3
    local = prepare([corpus["src"]], tmp_path / "local", **args)
    assert files_of(out) == files_of(tmp_path / "local") and meta == local


def test_task_argument_and_lock_errors(corpus, tmp_path):
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(UserError, match="--task"):
            prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"], task=bad)
    with pytest.raises(UserError, match="different stages"):
        prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"], task="0/2", plan_only=True)
    prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"], plan_only=True)
    with open(tmp_path / "d.partial" / ".lock", "a") as fh:  # another run holds the folder
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="in use by a `tst prepare` without --task"):
            prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"], task="0/2")
        with pytest.raises(UserError, match="in use by another"):
            prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"])
    prepare([corpus["src"]], tmp_path / "d", tokenizer=corpus["tok"])
    check_data_dir(tmp_path / "d")


def test_cli_task_flags(corpus, tmp_path, capsys):
    from tst_train.cli import main

    base = ["prepare", "--input", corpus["src"], "--out", str(tmp_path / "d"), "--tokenizer", corpus["tok"]]
    assert main(base + ["--task", "0/2"]) == 2
    assert "--plan-only first" in capsys.readouterr().err
    assert main(base + ["--plan-only"]) == 0
    assert main(base + ["--task", "0/2"]) == 0 and main(base + ["--task", "1/2"]) == 0
    assert main(base + ["--shard-tokens", "0"]) == 2
    assert main(base) == 0
    meta = check_data_dir(tmp_path / "d")
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 60


# --------------------------------------------------------------------------------------------
# pre-tokenized inputs: the same documents as token files give the same data folder
# --------------------------------------------------------------------------------------------

def _doc_ids(corpus, docs) -> list[np.ndarray]:
    tok = load_tokenizer(corpus["with_tok"])
    return [np.asarray(tok.encode(d), dtype=np.uint16) for d in docs]


def _write_nanogpt_bin(path, ids, eos):  # nanoGPT (openwebtext prepare.py): each document, then eos
    np.concatenate([np.append(x, eos) for x in ids]).astype(np.uint16).tofile(path)


def _write_llmc_bin(path, ids, eos):  # llm.c: a 256-int32 header; eos BEFORE each document
    toks = np.concatenate([np.insert(x, 0, eos) for x in ids]).astype(np.uint16)
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(toks))
    with open(path, "wb") as f:
        f.write(header.tobytes() + toks.tobytes())


def _write_datatrove_ds(path, ids, eos):  # datatrove: the tokens (eos appended) + .ds.index of uint64 ends
    toks = np.concatenate([np.append(x, eos) for x in ids]).astype(np.uint16)
    toks.tofile(path)
    np.cumsum([len(x) + 1 for x in ids]).astype("<u8").tofile(str(path) + ".index")


def _write_npy(path, ids, eos):  # build-nanogpt FineWeb shards: np.save of a uint16 array, eos first
    np.save(path, np.concatenate([np.insert(x, 0, eos) for x in ids]).astype(np.uint16))


@pytest.mark.parametrize("fmt", ["nanogpt.bin", "llmc.bin", "datatrove.ds", "shard.npy", "parquet", "jsonl"])
def test_pretokenized_inputs_give_the_text_preparation(corpus, docs, tmp_path, monkeypatch, fmt):
    from tst_train.data import sources

    monkeypatch.setattr(sources, "_READ_TOKENS", 7)  # documents and index entries cross many read buffers
    ids = _doc_ids(corpus, docs)
    eos = corpus["with_tok_meta"]["eos_id"]
    half = len(ids) // 2
    parts = (ids[:half], ids[half:])  # two files, to check the order across files
    if fmt == "parquet":
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
        for path, part in zip(paths, parts):
            pq.write_table(pa.table({"input_ids": [x.tolist() for x in part]}), path)
    elif fmt == "jsonl":
        paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
        for path, part in zip(paths, parts):
            path.write_text("".join(json.dumps({"input_ids": x.tolist()}) + "\n" for x in part))
    else:
        writer = {"nanogpt.bin": _write_nanogpt_bin, "llmc.bin": _write_llmc_bin, "datatrove.ds": _write_datatrove_ds,
                  "shard.npy": _write_npy}[fmt]
        paths = [tmp_path / "a" / fmt, tmp_path / "b" / fmt]
        for path, part in zip(paths, parts):
            path.parent.mkdir()
            writer(path, part, eos)
    inputs = [str(p) for p in paths]
    if fmt in ("nanogpt.bin", "datatrove.ds"):
        inputs = [str(p.parent) for p in paths]  # folder walks read token files when --tokenizer is given
    out = tmp_path / "out"
    meta = prepare(inputs, out, tokenizer=corpus["tok"], val_fraction=0.2, seed=3, text_field="input_ids")
    for split in ("train", "val"):
        assert (out / f"{split}.bin").read_bytes() == (corpus["with_tok"] / f"{split}.bin").read_bytes()
        assert meta["splits"][split] == corpus["with_tok_meta"]["splits"][split]  # bytes from decoding, too
    assert meta["skipped_count"] == 0  # datatrove's .ds.index is read with its shard, not skipped


def test_pretokenized_input_errors(corpus, tmp_path):
    eos = corpus["with_tok_meta"]["eos_id"]
    good = tmp_path / "good.bin"
    _write_nanogpt_bin(good, [np.array([5, 6, 7]), np.array([8, 9])], eos)
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x02")
    big = tmp_path / "big.bin"
    np.array([5, 60000, eos, 7, eos], dtype=np.uint16).tofile(big)
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, 1000)
    (tmp_path / "short.bin").write_bytes(header.tobytes() + b"\x01\x00" * 10)
    (tmp_path / "ids.jsonl").write_text('{"text": [1, 2, 3]}\n{"text": [4, 5]}\n')
    (tmp_path / "floats.jsonl").write_text('{"text": [1.5, 2]}\n{"text": [4, 5]}\n')
    np.save(tmp_path / "2d.npy", np.zeros((2, 3), dtype=np.uint16))
    tok = corpus["tok"]
    cases = [
        ([good], dict(vocab_size=300), "token file .*pass --tokenizer"),
        ([str(tmp_path / "ids.jsonl")], dict(vocab_size=300), "holds token ids .*pass --tokenizer"),
        ([str(tmp_path / "ids.jsonl")], dict(), "holds token ids"),
        ([str(tmp_path / "odd.bin")], dict(tokenizer=tok), "not a whole number of uint16 tokens"),
        ([big], dict(tokenizer=tok), "token id 60000 is outside the tokenizer's vocabulary of 320"),
        ([str(tmp_path / "short.bin")], dict(tokenizer=tok), "llm.c header says 1,000 tokens"),
        ([str(tmp_path / "floats.jsonl")], dict(tokenizer=tok), "not a flat list of integer token ids"),
        ([str(tmp_path / "2d.npy")], dict(tokenizer=tok), "expected 1-D integer token ids"),
    ]
    for inputs, kw, msg in cases:
        with pytest.raises(UserError, match=msg):
            prepare([str(i) for i in inputs], tmp_path / "o", overwrite=True, **kw)
    meta = prepare([str(good)], tmp_path / "ok", tokenizer=tok, val_fraction=0.5)
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == 7


def test_folder_walk_skips_the_output_being_written(corpus, tmp_path, docs):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, d in enumerate(docs[:8]):
        (folder / f"{i}.txt").write_text(d, encoding="utf-8")
    first = prepare([str(folder)], folder / "data", tokenizer=corpus["tok"])
    again = prepare([str(folder)], folder / "data", tokenizer=corpus["tok"], overwrite=True)  # data/ is not an input
    assert first["splits"] == again["splits"] and first["skipped_count"] == again["skipped_count"] == 0


def test_hf_input_is_streamed_row_by_row(corpus, docs, tmp_path, monkeypatch):
    """An iterable-only dataset (as `load_dataset(..., streaming=True)` returns: no len, no indexing,
    columns unknown up front) gives the same folder as the JSONL; it is iterated once per pass."""
    import types

    passes = []

    class Streaming:
        column_names = None

        def __init__(self, rows):
            self.rows = rows

        def __iter__(self):
            passes.append(1)
            return iter(self.rows)

    rows = [{"text": d, "id": i} for i, d in enumerate(docs)]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(
        load_dataset=lambda name, split, streaming: Streaming(rows) if streaming else 1 / 0))
    meta = prepare(["hf:someone/stream"], tmp_path / "o", tokenizer=corpus["tok"], val_fraction=0.2, seed=3)
    got, want = files_of(tmp_path / "o"), files_of(corpus["with_tok"])
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in got if k != "meta.json")
    assert meta["splits"] == corpus["with_tok_meta"]["splits"]
    assert len(passes) == 2  # the counting pass and the tokenizing pass (no BPE to train)
    rows[7] = {"body": "no text field"}
    with pytest.raises(UserError, match="row 7 has no field 'text'"):
        prepare(["hf:someone/stream"], tmp_path / "o2", tokenizer=corpus["tok"])
