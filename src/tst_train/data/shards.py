"""Stages 2 and 3 of `tst prepare`: tokenize the chunks, then merge them into the split shards.

Tokenize: chunk ``c`` (consecutive documents, see ``plan.py``) becomes ``chunks/c.bin`` (each
document's ids followed by the end-of-text id, in input order) and ``chunks/c.npy`` ((documents, 2)
int64: tokens including the separator, UTF-8 bytes). A reader thread reads the next chunk while the
tokenizer encodes this one (HF tokenizers and tiktoken release the GIL and use every core), so
preparation runs at the tokenizer's own speed. Every file is written under a temporary name and
renamed into place: a file that exists is complete, which is what resume relies on.

Merge: the documents are copied in the split's shuffled order into shards: a shard closes at the
first document end at or after ``shard_tokens`` tokens, so shards hold whole documents. Reads are
``pread`` calls of one document each (no memory maps: the resident memory stays flat). What grows with
the corpus is ~28 bytes per document: the offsets (8) and lengths (4) of all documents, the order (4),
and one split's lengths (4) and their running sum (8) while its shard boundaries are found.
"""
from __future__ import annotations

import os
import queue
import socket
import sys
import threading
from collections import OrderedDict
from typing import Iterator

import numpy as np

from tst_train.data import tokenizer as tokenizer_mod
from tst_train.data.layout import sample_sha256, shard_names
from tst_train.data.plan import doc_weight
from tst_train.data.sources import Leaf, ReadOptions, iter_from
from tst_train.data.tokenizer import Tokenizer
from tst_train.errors import UserError

ENCODE_BATCH_WEIGHT = 2 << 20  # text per encode_batch call: enough documents for every core, bounded memory
_WRITE_BUFFER = 16 << 20  # bytes gathered before a write in the merge
_OPEN_FILES = 64  # chunk files kept open by the merge


def tmp_name(path: str) -> str:
    """A temporary name next to `path`, unique per host and process (tasks on many machines share a folder)."""
    return f"{path}.tmp-{socket.gethostname()}-{os.getpid()}"


def publish(tmp: str, path: str) -> None:
    """Put a finished file in place (atomic on POSIX): a reader sees no file or the whole file."""
    os.replace(tmp, path)


def save_npy(path: str, arr: np.ndarray) -> None:
    tmp = tmp_name(path)
    with open(tmp, "wb") as f:
        np.save(f, arr)
    publish(tmp, path)


def write_bytes(path: str, data) -> None:
    tmp = tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
    publish(tmp, path)


# --------------------------------------------------------------------------------------------
# tokenize
# --------------------------------------------------------------------------------------------

def chunk_paths(work: str, c: int) -> tuple[str, str]:
    return os.path.join(work, "chunks", f"{c:06d}.bin"), os.path.join(work, "chunks", f"{c:06d}.npy")


def chunk_done(work: str, c: int) -> bool:
    return os.path.exists(chunk_paths(work, c)[1])  # the table is written after the tokens


def _read_chunks(chunks: list, pending: list[int], leaves: list[Leaf], opts: ReadOptions):
    """(chunk, its documents) for each pending chunk, in order; consecutive chunks share one reader."""
    it, at = None, None
    for c in pending:
        leaf, first, n_docs, weight = chunks[c]
        if at != c:  # not the chunk after the previous one: open the input at this chunk's first document
            it = iter_from(leaves, opts, leaf, first)
        docs = [d for _, (_, _, d) in zip(range(n_docs), it)]
        if len(docs) != n_docs or sum(doc_weight(d) for d in docs) != weight:
            raise UserError(f"the input changed since this preparation was planned (chunk {c} starting at "
                            f"{leaves[leaf].path} document {first} differs): rerun with --overwrite to start over")
        yield c, docs
        at = c + 1


def _prefetch(gen: Iterator, depth: int = 1) -> Iterator:
    """Run `gen` in a thread, `depth` items ahead (reading overlaps encoding); its errors surface here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer
            q.put((None, e))

    t = threading.Thread(target=run, name="tst-prepare-reader", daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()


def _check_ids(ids: np.ndarray, tok: Tokenizer, where: str) -> None:
    if ids.size and (int(ids.max()) >= tok.vocab_size or int(ids.min()) < 0):
        bad = int(ids.max()) if int(ids.max()) >= tok.vocab_size else int(ids.min())
        raise UserError(f"{where}: token id {bad} is outside the tokenizer's vocabulary of {tok.vocab_size:,} "
                        "(the wrong --tokenizer for these token files, or an inconsistent tokenizer file)")


def _text_batches(docs: list) -> Iterator[tuple[int, int]]:
    """[a, b) ranges of consecutive documents: runs of texts up to ENCODE_BATCH_WEIGHT, or one token array."""
    a = 0
    while a < len(docs):
        if not isinstance(docs[a], str):
            yield a, a + 1
            a += 1
            continue
        b, weight = a, 0
        while b < len(docs) and isinstance(docs[b], str) and (b == a or (weight < ENCODE_BATCH_WEIGHT
                                                                         and len(docs[b]) <= tokenizer_mod.LONG_DOC_CHARS)):
            weight += doc_weight(docs[b])
            b += 1
            if len(docs[b - 1]) > tokenizer_mod.LONG_DOC_CHARS:  # a long document is encoded on its own, in pieces
                break
        yield a, b
        a = b


def _encode_long(tok: Tokenizer, text: str, workers: int | None) -> np.ndarray:
    """One long document's ids, encoded piece by piece (a few pieces at a time) and joined."""
    pieces = tokenizer_mod.pieces_of(text)
    out = []
    for i in range(0, len(pieces), 4):
        out += [np.asarray(ids, dtype=np.int64) for ids in tok.encode_batch(pieces[i:i + 4], workers)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def encode_chunk(tok: Tokenizer, docs: list, workers: int | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids of every document each followed by eos, as the storage dtype; (documents, 2) [tokens, bytes])."""
    pieces, table = [], np.zeros((len(docs), 2), dtype=np.int64)
    eos = np.array([tok.eos_id], dtype=np.int64)
    safe = tokenizer_mod.splits_safely(tok)
    for a, b in _text_batches(docs):
        if isinstance(docs[a], str) and safe and b == a + 1 and len(docs[a]) > tokenizer_mod.LONG_DOC_CHARS:
            encoded = [_encode_long(tok, docs[a], workers)]
            nbytes = [doc_weight(docs[a])]
        elif isinstance(docs[a], str):
            encoded = [np.asarray(ids, dtype=np.int64) for ids in tok.encode_batch(docs[a:b], workers)]
            nbytes = [doc_weight(d) for d in docs[a:b]]
        else:  # pre-tokenized: no tokenizer run; the bytes (for bits per byte) from decoding
            encoded = [docs[a]]
            nbytes = [len(tok.decode(docs[a]).encode("utf-8"))]
        for k, (ids, nb) in enumerate(zip(encoded, nbytes), a):
            _check_ids(ids, tok, where)
            pieces += [ids, eos]
            table[k] = (ids.size + 1, nb)
    return np.concatenate(pieces).astype(tok.dtype), table


def tokenize_chunks(work: str, chunks: list, todo: list[int], leaves: list[Leaf], opts: ReadOptions,
                    tok: Tokenizer, workers: int | None) -> int:
    """Tokenize the chunks in `todo` that are not done yet; returns how many were tokenized."""
    from tqdm import tqdm

    pending = [c for c in todo if not chunk_done(work, c)]
    if not pending:
        return 0
    os.makedirs(os.path.join(work, "chunks"), exist_ok=True)
    total = sum(chunks[c][3] for c in pending)
    with tqdm(total=total, desc="tokenize", unit="B", unit_scale=True, file=sys.stderr, disable=None,
              leave=False) as bar:
        for c, docs in _prefetch(_read_chunks(chunks, pending, leaves, opts)):
            leaf, first = chunks[c][:2]
            ids, table = encode_chunk(tok, docs, workers, f"{leaves[leaf].path} (from document {first})")
            del docs
            bin_path, table_path = chunk_paths(work, c)
            write_bytes(bin_path, ids.tobytes())
            save_npy(table_path, table)
            bar.update(chunks[c][3])
    return len(pending)


# --------------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------------

class _ChunkReader:
    """Documents of the tokenized chunks, by global document index, with pread (few files kept open)."""

    def __init__(self, work: str, chunks: list, itemsize: int, is_val: np.ndarray):
        firsts = np.cumsum([0] + [ch[2] for ch in chunks])  # (C+1,) first document of each chunk
        self.offsets = np.zeros(int(firsts[-1]) + 1, dtype=np.int64)  # (n+1,) token offset of each document
        self.bytes = {"train": 0, "val": 0}
        base = 0
        for c in range(len(chunks)):
            table = np.load(chunk_paths(work, c)[1])  # (docs, 2)
            a, b = int(firsts[c]), int(firsts[c + 1])
            if table.shape != (b - a, 2):
                raise UserError(f"{chunk_paths(work, c)[1]} does not match the plan: delete {work} and rerun")
            self.offsets[a + 1:b + 1] = base + np.cumsum(table[:, 0])
            base = int(self.offsets[b])
            val = is_val[a:b]
            self.bytes["val"] += int(table[val, 1].sum())
            self.bytes["train"] += int(table[~val, 1].sum())
        self.chunk_base = self.offsets[firsts]  # (C+1,) token offset where each chunk starts
        self._lengths = np.diff(self.offsets).astype(np.uint32)  # (n,) tokens of each document (with eos)
        self.work, self.itemsize = work, itemsize
        self._fds: OrderedDict[int, int] = OrderedDict()

    def lengths(self, docs: np.ndarray) -> np.ndarray:
        return self._lengths[docs]

    def _fd(self, c: int) -> int:
        if c in self._fds:
            self._fds.move_to_end(c)
        else:
            if len(self._fds) >= _OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
            self._fds[c] = os.open(chunk_paths(self.work, c)[0], os.O_RDONLY)
        return self._fds[c]

    def copy(self, docs: np.ndarray, out) -> None:
        """Write the tokens of `docs` (global indices), in that order, to the file `out`."""
        starts = self.offsets[docs]
        chunk = np.searchsorted(self.chunk_base, starts, side="right") - 1
        local = (starts - self.chunk_base[chunk]) * self.itemsize
        sizes = self._lengths[docs].astype(np.int64) * self.itemsize
        buf = bytearray()
        for c, off, size in zip(chunk.tolist(), local.tolist(), sizes.tolist()):
            piece = os.pread(self._fd(c), size, off)
            if len(piece) != size:
                raise UserError(f"{chunk_paths(self.work, c)[0]} is truncated: delete it and rerun to re-tokenize it")
            buf += piece
            if len(buf) >= _WRITE_BUFFER:
                out.write(buf)
                buf.clear()
        out.write(buf)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def shard_bounds(lengths: np.ndarray, shard_tokens: int) -> list[int]:
    """Document indices where shards begin (and the end): a shard closes at the first document end at or
    after `shard_tokens` tokens."""
    cum = np.cumsum(lengths, dtype=np.int64)
    bounds, start_total = [0], 0
    while True:
        k = int(np.searchsorted(cum, start_total + shard_tokens, side="left"))
        if k >= len(cum) - 1:
            break
        bounds.append(k + 1)
        start_total = int(cum[k])
    bounds.append(len(lengths))
    return bounds


def merge_split(work: str, reader: _ChunkReader, split: str, docs: np.ndarray, shard_tokens: int) -> list[dict]:
    """Write the shards of one split (`docs`: its documents in order); returns their index entries.
    Shards that exist already (a resumed run) are kept."""
    lengths = reader.lengths(docs)  # (docs,) uint32
    bounds = shard_bounds(lengths, shard_tokens)
    names = shard_names(split, len(bounds) - 1)
    entries = []
    for (a, b), (bin_name, docs_name) in zip(zip(bounds, bounds[1:]), names):
        bin_path, docs_path = os.path.join(work, bin_name), os.path.join(work, docs_name)
        starts = np.concatenate([[0], np.cumsum(lengths[a:b - 1], dtype=np.int64)])  # (docs,) int64
        if not os.path.exists(bin_path):
            save_npy(docs_path, starts)
            tmp = tmp_name(bin_path)
            with open(tmp, "wb") as f:
                reader.copy(docs[a:b], f)
            publish(tmp, bin_path)
        entries.append({"file": bin_name, "docs_file": docs_name, "tokens": int(lengths[a:b].sum(dtype=np.int64)),
                        "documents": b - a, "sample_sha256": sample_sha256(bin_path)})
    return entries
