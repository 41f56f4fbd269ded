"""`tst prepare`: documents -> tokenizer + sharded token files with a document index + meta.json,
streaming, resumable, and spread over many machines with ``--task i/n``.

    tst prepare --input bundled --out data/bundled
    tst prepare --input corpus/ more.jsonl.xz --out data/mine --vocab-size 16384
    tst prepare --input docs.parquet --out data/x --tokenizer tiktoken:cl100k_base
    tst prepare --input fineweb/ --out data/fw --tokenizer tok.json        # folders of .bin/.npy/.ds token files

Stages (all deterministic for a given input, seed and tokenizer; the work lives in ``OUT.partial/``):

1. plan (``plan.py``): count the documents in one streaming pass and cut them into chunks; draw the
   split (a seeded shuffle of the documents; the first ``val_fraction`` of them are validation);
   train a byte-level BPE on the training documents (HF ``tokenizers``, streamed; ``--vocab-size``,
   8192 by default) or load ``--tokenizer``. -> ``plan.json``, ``order.npy``, ``tokenizer.json``.
2. tokenize (``shards.py``): every chunk -> ``chunks/NNNNNN.bin`` + its document table. ``--task i/n``
   does the i-th of n contiguous ranges of chunks (one SLURM array task each).
3. merge (``shards.py``): the documents, in the split's shuffled order, into ``train*.bin`` /
   ``val*.bin`` shards with their document indexes, then ``meta.json``.
4. ``OUT.partial`` is renamed to ``OUT``.

A run that is killed and rerun with the same arguments continues: the plan, finished chunks and
finished shards are kept, and the result is byte-identical to an uninterrupted run (a file exists
only once complete). Memory stays flat: the inputs are streamed; what grows with the corpus is the
order and the document offsets and lengths, ~28 bytes per document, in the merge.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from tst_train.data.layout import FORMAT_VERSION, MAX_VOCAB_SIZE
from tst_train.data.plan import count_documents, split_order, train_tokenizer
from tst_train.data.shards import _ChunkReader, merge_split, save_npy, tokenize_chunks, write_bytes
from tst_train.data.sources import ReadOptions, expand_inputs
from tst_train.data.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    EOT,
    MIN_VOCAB_SIZE,
    Tokenizer,
    load_tokenizer,
    resolve_tokenizer,
    tokenizer_from,
)
from tst_train.errors import UserError
from tst_train.hashing import sha256_file

__all__ = ["prepare", "DEFAULT_SHARD_TOKENS", "DEFAULT_VOCAB_SIZE", "Tokenizer", "load_tokenizer"]

DEFAULT_SHARD_TOKENS = 100_000_000  # tokens per shard (200 MB of uint16), as nanoGPT's FineWeb shards
PLAN_FILE = "plan.json"
ORDER_FILE = "order.npy"
LOCK_FILE = ".lock"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------

def parse_task(task) -> tuple[int, int] | None:
    """``"i/n"`` (or a pair) -> (i, n) with 0 <= i < n."""
    if task is None:
        return None
    try:
        i, n = (int(x) for x in (task.split("/") if isinstance(task, str) else task))
    except (ValueError, TypeError):
        raise UserError(f"--task {task!r} must be I/N, e.g. --task 3/64 ($SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--task {i}/{n}: need 0 <= I < N")
    return i, n


def _check_args(vocab_size, tokenizer, val_fraction, workers, max_docs, shard_tokens) -> None:
    if vocab_size is not None and tokenizer is not None:
        raise UserError("pass either --vocab-size (train a BPE) or --tokenizer (use an existing one), not both")
    if vocab_size is not None:
        if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
            raise UserError(f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least "
                            f"{MIN_VOCAB_SIZE} (256 bytes + {EOT}); try 8192")
        if vocab_size > MAX_VOCAB_SIZE:
            raise UserError(f"--vocab-size {vocab_size:,} is too large: at most {MAX_VOCAB_SIZE:,} (about 8× the largest "
                            "released tokenizers); typical values are 8192–131072")
    if not (0.0 <= float(val_fraction) < 1.0):
        raise UserError(f"--val-fraction {val_fraction} must be in [0, 1) (e.g. 0.02); at least one "
                        "document is always held out")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UserError(f"--workers {workers} must be a positive integer")
    if max_docs is not None and (not isinstance(max_docs, int) or max_docs < 2):
        raise UserError(f"max_docs {max_docs} must be at least 2 (one train and one val document)")
    if not isinstance(shard_tokens, int) or shard_tokens < 1:
        raise UserError(f"--shard-tokens {shard_tokens} must be a positive integer (e.g. 100000000)")


def _check_out_dir(out_dir: str, overwrite: bool, inputs: list[str] = ()) -> None:
    """``--out`` must be free, or (with ``--overwrite``) a data folder `tst prepare` made; an input inside it (or
    inside its work folder) is refused: replacing the folder would delete what it reads."""
    out = os.path.realpath(out_dir)
    for i in inputs:
        real = os.path.realpath(i)
        for folder in (out, out + ".partial"):
            if real == folder or real.startswith(folder + os.sep):
                raise UserError(f"--input {i} lies inside {folder}, which `tst prepare` writes and replaces: "
                                "move the input, or choose another --out")
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise UserError(f"--out {out_dir} exists and is not a folder: choose another path")
        if os.listdir(out_dir) and not overwrite:
            raise UserError(f"--out {out_dir} already exists and is not empty: pass --overwrite to replace "
                            "it, or choose another folder")
        if os.listdir(out_dir) and not _made_by_prepare(out_dir):
            raise UserError(f"--out {out_dir} is not a data folder `tst prepare` made (no meta.json of ours): "
                            "--overwrite replaces only those; choose another folder")


def _made_by_prepare(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("created_by", "")).startswith("tst prepare")


def _created_by() -> str:
    try:
        from importlib.metadata import version

        v = version("token-superposition")
    except Exception:
        v = "unknown"
    return f"tst prepare (token-superposition {v})"


def _fingerprint(args: dict, leaves) -> dict:
    """What a resumed run must share with the run that started: the arguments that change the output
    and the identity (path, size, mtime) of every input file."""
    h = hashlib.sha256()
    for leaf in leaves:
        h.update(json.dumps(leaf.identity()).encode() + b"\n")
    inputs = [os.path.abspath(i) if os.path.exists(i) else i for i in args["inputs"]]  # same files from any cwd
    fp = dict(args, inputs=inputs, files=len(leaves), files_sha256=h.hexdigest())
    tok = args.get("tokenizer")
    if tok and not tok.startswith("tiktoken:"):
        fp["tokenizer"] = os.path.abspath(tok)
        fp["tokenizer_sha256"] = sha256_file(tok) if os.path.isfile(tok) else None
    return fp


# --------------------------------------------------------------------------------------------
# the work folder
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(work: str, shared: bool):
    """An OS file lock on the work folder: one run without --task at a time, and none while tasks run
    (tasks share the lock with each other). Released however the process ends."""
    import fcntl

    fh = open(os.path.join(work, LOCK_FILE), "a")
    try:
        try:
            fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            who = "a `tst prepare` without --task" if shared else "another `tst prepare` (or --task runs)"
            raise UserError(f"{work} is in use by {who}: wait for it to finish") from None
        except OSError:
            pass  # a file system without locks (some NFS mounts): go on unlocked
        yield
    finally:
        fh.close()


def _read_plan(work: str) -> dict | None:
    path = os.path.join(work, PLAN_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _differences(a: dict, b: dict) -> str:
    keys = {"input files" if k.startswith("files") else k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    return ", ".join(sorted(keys))


def _open_work(work: str, fp: dict, overwrite: bool, task) -> dict | None:
    """The plan of an unfinished preparation with the same fingerprint (None: start afresh)."""
    plan = _read_plan(work) if os.path.isdir(work) else None
    if plan is not None and plan["fingerprint"] != fp:
        what = _differences(plan["fingerprint"], fp)
        if overwrite and task is None:
            log(f"discarding the unfinished preparation in {work} (it had other {what})")
            shutil.rmtree(work)
            return None
        raise UserError(f"{work} holds an unfinished preparation with other arguments or inputs (differs in: "
                        f"{what}): rerun with the same arguments to finish it, or pass --overwrite to start over")
    return plan


def _make_plan(work: str, leaves, opts: ReadOptions, skipped: list, n_inputs: int, fp: dict, tok: Tokenizer | None,
               vocab_size: int | None, max_docs, val_fraction: float, seed: int, workers) -> dict:
    count = count_documents(leaves, opts, n_inputs, max_docs, skipped)
    if tok is None and count.pretokenized:
        raise UserError("the input holds pre-tokenized documents (token ids): pass --tokenizer with the tokenizer "
                        "that made them instead of training one")
    order, n_val = split_order(count.documents, val_fraction, seed)
    if tok is None:
        tok = train_tokenizer(leaves, opts, count.documents, order[:n_val], vocab_size or DEFAULT_VOCAB_SIZE, workers)
    tok.save(os.path.join(work, "tokenizer.json"))
    save_npy(os.path.join(work, ORDER_FILE), order)
    plan = {"fingerprint": fp, "documents": count.documents, "val_documents": n_val, "chunks": count.chunks,
            "tokenizer": tok.spec, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "dtype": tok.dtype,
            "skipped_files": count.skipped, "skipped_count": count.skipped_count}
    write_bytes(os.path.join(work, PLAN_FILE), json.dumps(plan).encode())
    return plan


def _report_skipped(plan: dict) -> None:
    if plan["skipped_count"]:
        shown = plan["skipped_files"][:10]
        more = plan["skipped_count"] - len(shown)
        log(f"skipped {plan['skipped_count']} file(s) of the folder walk" + (f" (first {len(shown)} below; all in "
            "meta.json's skipped_files, up to 200)" if more > 0 else "") + ":")
        for path, why in shown:
            log(f"  {path}: {why}")


def _meta(plan: dict, splits: dict, args: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "vocab_size": plan["vocab_size"],
        "dtype": plan["dtype"],
        "eos_id": plan["eos_id"],
        "eos_token": plan["tokenizer"].get("eos_token", EOT),
        "tokenizer": plan["tokenizer"],
        "requested_vocab_size": (args["vocab_size"] or DEFAULT_VOCAB_SIZE) if args["tokenizer"] is None else None,
        "splits": splits,
        "bytes_per_token": splits["val"]["bytes"] / max(1, splits["val"]["tokens"]),
        "train_bytes_per_token": splits["train"]["bytes"] / max(1, splits["train"]["tokens"]),
        "sources": list(args["inputs"]),
        "text_field": args["text_field"],
        "max_docs": args["max_docs"],
        "seed": args["seed"],
        "val_fraction": args["val_fraction"],
        "shard_tokens": args["shard_tokens"],
        "skipped_files": plan["skipped_files"],
        "skipped_count": plan["skipped_count"],
        "created_by": _created_by(),
    }


def _tokenizer_sha256(work: str, spec: dict) -> str:
    """The tokenizer's identity: its file's content hash (a tiktoken encoding: its name's)."""
    import hashlib
    path = os.path.join(work, spec.get("file") or "")
    if spec.get("file") and os.path.isfile(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _merge(work: str, plan: dict, args: dict) -> dict:
    order = np.load(os.path.join(work, ORDER_FILE))
    n_val = plan["val_documents"]
    is_val = np.zeros(plan["documents"], dtype=bool)
    is_val[order[:n_val]] = True
    reader = _ChunkReader(work, plan["chunks"], np.dtype(plan["dtype"]).itemsize, is_val)
    del is_val
    splits = {}
    try:
        for name, docs in (("train", order[n_val:]), ("val", order[:n_val])):
            shards = merge_split(work, reader, name, docs, args["shard_tokens"])
            splits[name] = {"tokens": sum(s["tokens"] for s in shards), "documents": len(docs),
                            "bytes": reader.bytes[name], "shards": shards}
    finally:
        reader.close()
    meta = _meta(plan, splits, args)
    meta["tokenizer_sha256"] = _tokenizer_sha256(work, plan["tokenizer"])
    write_bytes(os.path.join(work, "meta.json"), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def _finish(work: str, out_dir: str) -> None:
    """Remove the intermediate files and put the finished folder at `out_dir` (replacing an old one).
    Safe to repeat after a kill at any point: meta.json in `work` marks a finished merge."""
    shutil.rmtree(os.path.join(work, "chunks"), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(work, ORDER_FILE))
    parent = os.path.dirname(out_dir)
    for stale in glob.glob(os.path.join(parent, f".{os.path.basename(out_dir)}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # an earlier replacement killed before it cleaned up
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
        os.rename(out_dir, os.path.join(old, "d"))
    os.rename(work, out_dir)
    for name in (PLAN_FILE, LOCK_FILE):  # after the rename: until then they mark the unfinished work
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_tmp(work: str) -> None:
    """Temporary files of killed runs (only when no other run can be writing: under the exclusive lock)."""
    for folder in (work, os.path.join(work, "chunks")):
        if os.path.isdir(folder):
            for fn in os.listdir(folder):
                if ".tmp-" in fn:
                    os.remove(os.path.join(folder, fn))


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------

def prepare(inputs: list[str], out_dir, *, vocab_size: int | None = None, tokenizer: str | None = None,
            val_fraction: float = 0.02, seed: int = 0, workers: int | None = None, text_field: str = "text",
            max_docs: int | None = None, overwrite: bool = False, shard_tokens: int = DEFAULT_SHARD_TOKENS,
            task=None, plan_only: bool = False) -> dict | None:
    """Prepare a data folder (see the module docstring); returns its meta (also in meta.json).

    ``plan_only``: stop after the plan. ``task="i/n"``: tokenize only the i-th of n ranges of chunks
    (the plan must exist: run with ``plan_only`` first); the run without ``task`` then merges. These
    two return None.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(i) for i in inputs]
    _check_args(vocab_size, tokenizer, val_fraction, workers, max_docs, shard_tokens)
    task = parse_task(task)
    if task is not None and plan_only:
        raise UserError("--plan-only and --task are different stages: run --plan-only once, then the --task runs")
    _check_out_dir(out_dir, overwrite, [i for i in inputs if i != "bundled" and not i.startswith("hf:")])
    t0 = time.perf_counter()

    work = out_dir + ".partial"
    tok = resolve_tokenizer(tokenizer) if tokenizer is not None else None
    opts = ReadOptions(text_field=text_field, eos_id=tok.eos_id if tok else None, token_dtype=tok.dtype if tok else None)
    skipped: list = []
    leaves = expand_inputs(inputs, opts, lambda path, why: skipped.append([path, why]), exclude=(out_dir, work))
    args = {"inputs": inputs, "vocab_size": vocab_size, "tokenizer": tokenizer, "val_fraction": val_fraction,
            "seed": seed, "text_field": text_field, "max_docs": max_docs, "shard_tokens": shard_tokens,
            "format_version": FORMAT_VERSION}
    fp = _fingerprint(args, leaves)
    plan = _open_work(work, fp, overwrite, task)
    if plan is None and task is not None:
        raise UserError(f"--task needs the plan in {work}: run the same `tst prepare` with --plan-only first "
                        "(one job), then the --task runs, then the same command without --task to merge")
    os.makedirs(work, exist_ok=True)
    with _locked(work, shared=task is not None):
        if task is None:
            _remove_stale_tmp(work)
        if plan is None:
            try:
                plan = _make_plan(work, leaves, opts, skipped, len(inputs), fp, tok, vocab_size, max_docs,
                                  val_fraction, seed, workers)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)  # nothing to resume yet
                raise
        elif task is None:
            log(f"resuming the preparation in {work}")
        _report_skipped(plan)
        try:
            return _after_plan(work, out_dir, plan, args, leaves, opts, workers, task, plan_only, t0)
        except BaseException as e:
            if not isinstance(e, UserError):
                log(f"stopped ({type(e).__name__}): the finished part is kept in {work}; rerun the same command "
                    "to continue")
            raise


def _after_plan(work: str, out_dir: str, plan: dict, args: dict, leaves, opts: ReadOptions, workers, task,
                plan_only: bool, t0: float) -> dict | None:
    """Tokenize (this task's chunks, or every chunk still missing), merge, and put the folder in place."""
    if plan_only:
        log(f"planned {work}: {plan['documents']:,} documents in {len(plan['chunks'])} chunks; now run "
            "the --task I/N jobs (or the same command without --plan-only)")
        return None
    n_chunks = len(plan["chunks"])
    t1 = time.perf_counter()
    meta_path = os.path.join(work, "meta.json")
    if os.path.isfile(meta_path):  # merged already (killed while finishing)
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    else:
        tok = tokenizer_from(work, plan)  # the plan's tokenizer as saved: the same in every run and task
        todo = range(n_chunks) if task is None else range(task[0] * n_chunks // task[1], (task[0] + 1) * n_chunks // task[1])
        done = tokenize_chunks(work, plan["chunks"], list(todo), leaves, opts, tok, workers)
        if task is not None:
            log(f"task {task[0]}/{task[1]}: tokenized {done} of its {len(todo)} chunks ({len(todo) - done} were "
                f"done already) in {time.perf_counter() - t1:.1f}s")
            return None
        meta = _merge(work, plan, args)
    t2 = time.perf_counter()
    _finish(work, out_dir)
    s = meta["splits"]
    log(f"prepared {out_dir}: train {s['train']['tokens']:,} tokens / {s['train']['documents']:,} docs in "
        f"{len(s['train']['shards'])} shard(s), val {s['val']['tokens']:,} tokens / {s['val']['documents']:,} docs, "
        f"vocab {meta['vocab_size']:,}, {meta['bytes_per_token']:.3f} bytes/token (plan {t1 - t0:.1f}s, "
        f"tokenize+merge {t2 - t1:.1f}s)")
    return meta


def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) of an in-memory document list, exactly as ``tst prepare`` splits its inputs (the
    plan's shuffled order; the first documents are validation) — for tools that need the held-out
    documents themselves, e.g. ``scripts/build_tasks.py``."""
    from .plan import split_order
    order, n_val = split_order(len(docs), val_fraction, seed)
    return [docs[i] for i in order[n_val:]], [docs[i] for i in order[:n_val]]
