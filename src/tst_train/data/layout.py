"""The data folder: what `tst prepare` writes and the trainer reads.

    DATA_DIR/meta.json        vocabulary, dtype, eos id, tokenizer, and per split the index:
                              token / document / byte counts and the list of shards
    DATA_DIR/tokenizer.json   the tokenizer (HF tokenizers; a tiktoken encoding is named in meta.json)
    DATA_DIR/train.bin        a split in one shard, or train-00000.bin, train-00001.bin, ... in several:
                              raw little-endian uint16 (uint32 when the vocabulary exceeds 65,536) ids,
                              whole documents, each followed by the end-of-text id
    DATA_DIR/train.docs.npy   per shard: int64 offsets (in tokens, within the shard) of its documents'
                              first tokens
    DATA_DIR/val.bin, val.docs.npy, ...

A split is one stream: its shards concatenated in order (a single-shard split's ``train.bin`` is the
whole stream, as nanoGPT's is). Format 1 (before sharding) had ``train.bin`` / ``val.bin`` and no
document index; it still loads: its documents are found from the end-of-text ids.
"""
from __future__ import annotations

import bisect
import json
import os

import numpy as np

from tst_train.errors import UserError

FORMAT_VERSION = 2
SPLITS = ("train", "val")
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
MAX_VOCAB_SIZE = 2 ** 21  # 2,097,152: token ids stay far inside uint32, and BPE training stays sane


def shard_names(split: str, n_shards: int) -> list[tuple[str, str]]:
    """(token file, document index file) of each shard of a split."""
    if n_shards == 1:
        return [(f"{split}.bin", f"{split}.docs.npy")]
    return [(f"{split}-{k:05d}.bin", f"{split}-{k:05d}.docs.npy") for k in range(n_shards)]


def _prepare_hint(data_dir: str) -> str:
    return f"run `tst prepare --input ... --out {data_dir}` first"


def read_meta(data_dir) -> dict:
    """meta.json of a data folder, parsed (no consistency checks; see `check_data_dir`)."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise UserError(f"data dir {data_dir} does not exist: {_prepare_hint(data_dir)}")
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        hint = _prepare_hint(data_dir)
        if os.path.isdir(data_dir + ".partial"):
            hint = f"its preparation is unfinished ({data_dir}.partial): rerun the same `tst prepare` to finish it"
        raise UserError(f"data dir {data_dir} has no meta.json: {hint}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): re-run `tst prepare ... --out {data_dir} --overwrite`") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a JSON object: re-run `tst prepare ... --out {data_dir} --overwrite`")
    return meta


def split_shards(meta: dict, split: str) -> list[dict]:
    """The shard list of a split: format 2's index, or format 1's single file (no document index)."""
    info = meta["splits"][split]
    if meta.get("format_version", 1) < 2:
        return [{"file": f"{split}.bin", "tokens": info["tokens"]}]
    return info.get("shards")


SAMPLE_BLOCK = 1 << 16  # bytes per sampled block
SAMPLE_BLOCKS = 32  # spread over the file, first and last included


def sample_sha256(path: str) -> str:
    """A content hash of a shard that costs the same for 1 MB and 100 GB: its size and 32 blocks of 64 KiB spread
    evenly over it (the first and the last included). Written by `tst prepare`; checked at every start, so a
    shard replaced or changed in place since then is caught (a change that touches no sampled block is not)."""
    import hashlib
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        last = max(0, size - SAMPLE_BLOCK)
        for i in range(SAMPLE_BLOCKS):
            f.seek(last * i // (SAMPLE_BLOCKS - 1))
            h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()


def data_identity(meta: dict) -> dict:
    """What a run trained on, beyond its size: the training shards' content hashes and the tokenizer's (empty
    entries for data folders written before they were recorded)."""
    shards = split_shards(meta, "train") or []
    return {"train_shards": [s.get("sample_sha256") for s in shards], "tokenizer": meta.get("tokenizer_sha256")}


def verify_content(data_dir, meta: dict) -> None:
    """The training shards still hold what `tst prepare` wrote (their recorded sampled hashes), else UserError."""
    for shard in split_shards(meta, "train") or []:
        want = shard.get("sample_sha256")
        if want and sample_sha256(os.path.join(os.fspath(data_dir), shard["file"])) != want:
            raise UserError(f"{os.path.join(os.fspath(data_dir), shard['file'])} changed since `tst prepare` wrote it "
                            f"(its content hash differs from meta.json's): re-run `tst prepare ... --out {data_dir} "
                            "--overwrite`, or restore the file")


def check_data_dir(data_dir) -> dict:
    """Validate a data folder (meta.json parses and has the needed fields; every shard exists and its
    size matches its token count and dtype; every document index has one entry per document) and
    return its meta; else raise UserError."""
    data_dir = os.fspath(data_dir)
    meta = read_meta(data_dir)
    redo = f"re-run `tst prepare ... --out {data_dir} --overwrite`"
    from ..received import DATA_META, check
    version = meta.get("format_version", 1)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UserError(f"{data_dir} has data format {version!r}; this version of the package reads up to "
                        f"{FORMAT_VERSION}: upgrade token-superposition")
    check(meta, DATA_META, f"{data_dir}/meta.json")
    if meta["dtype"] not in DTYPES:
        raise UserError(f"{data_dir}/meta.json has dtype {meta.get('dtype')!r}, expected uint16 or uint32: {redo}")
    top = min(MAX_VOCAB_SIZE, np.iinfo(DTYPES[meta["dtype"]]).max + 1)
    if meta["vocab_size"] > top:
        raise UserError(f"{data_dir}/meta.json: field 'vocab_size' is {meta['vocab_size']:,}, above {top:,} "
                        f"(the most {meta['dtype']} ids can hold, at most {MAX_VOCAB_SIZE:,}): {redo}")
    if meta["eos_id"] >= meta["vocab_size"]:
        raise UserError(f"{data_dir}/meta.json: field 'eos_id' is {meta['eos_id']}, outside the vocabulary of "
                        f"{meta['vocab_size']:,}: {redo}")
    spec = meta.get("tokenizer") or {}
    if spec.get("type") == "tiktoken" and not isinstance(spec.get("name"), str):
        raise UserError(f"{data_dir}/meta.json: field 'tokenizer' names a tiktoken encoding without a 'name': {redo}")
    itemsize = np.dtype(DTYPES[meta["dtype"]]).itemsize
    splits = meta.get("splits")
    if not isinstance(splits, dict):
        raise UserError(f"{data_dir}/meta.json has no splits: {redo}")
    for name in SPLITS:
        info = splits.get(name)
        if not isinstance(info, dict) or not isinstance(info.get("tokens"), int) or info["tokens"] < 0:
            raise UserError(f"{data_dir}/meta.json has no token count for split {name!r}: {redo}")
        shards = split_shards(meta, name)
        if isinstance(shards, list):
            from ..received import SHARD, check
            for shard in shards:
                check(shard, SHARD, f"{data_dir}/meta.json (a shard of split {name!r})")
        if not isinstance(shards, list) or not shards or sum(s.get("tokens", -1) for s in shards) != info["tokens"]:
            raise UserError(f"{data_dir}/meta.json: the shards of split {name!r} do not add up to its "
                            f"{info['tokens']:,} tokens: {redo}")
        for shard in shards:
            _check_shard(data_dir, shard, itemsize, meta["dtype"], redo)
    return meta


def _inside(data_dir: str, name, what: str) -> str:
    """``data_dir/name`` when ``name`` is a file name that stays inside ``data_dir`` (not absolute, no ``..``, no
    link out), else UserError: a received meta.json must not make training read another file."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{data_dir}/meta.json: a shard's {what} is not a file name ({name!r})")
    path = os.path.join(data_dir, name)
    root = os.path.realpath(data_dir)
    if os.path.isabs(name) or not os.path.realpath(path).startswith(root + os.sep):
        raise UserError(f"{data_dir}/meta.json names the shard {what} {name!r}, which lies outside the data folder: "
                        "refused (a data folder reads only its own files)")
    return path


def _check_shard(data_dir: str, shard: dict, itemsize: int, dtype: str, redo: str) -> None:
    path = _inside(data_dir, shard.get("file"), "file")
    if "docs_file" in shard:
        _inside(data_dir, shard["docs_file"], "document index")
    if not os.path.isfile(path):
        raise UserError(f"data dir {data_dir} has no {shard['file']}: {redo}")
    size, want = os.path.getsize(path), shard["tokens"] * itemsize
    if size != want:
        raise UserError(f"{path} has {size:,} bytes but meta.json says {shard['tokens']:,} {dtype} tokens "
                        f"({want:,} bytes): the file is truncated or from another run; {redo}")
    if "docs_file" in shard:
        docs = os.path.join(data_dir, shard["docs_file"])
        try:
            starts = np.load(docs, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the document index {docs} ({e}): {redo}") from None
        if starts.shape != (shard["documents"],):
            raise UserError(f"{docs} has {starts.shape} entries but meta.json says {shard['documents']:,} "
                            f"documents: {redo}")
        if starts.size and (starts.dtype.kind not in "iu" or starts[0] != 0 or starts[-1] >= shard["tokens"]
                            or not (np.diff(starts) > 0).all()):
            raise UserError(f"{docs} is not an index of document starts (increasing whole numbers from 0, each "
                            f"inside the shard's {shard['tokens']:,} tokens): {redo}")


class TokenStream:
    """One split of a data folder as a single read-only 1-D array over its shards (memory-mapped).

    ``len``, ``shape``, ``dtype``, slicing (``stream[a:b]`` -> a numpy copy, across shard boundaries),
    ``stream[i]``, ``np.asarray(stream)`` (reads it all), and ``doc_starts(a, b)``: the positions in
    ``[a, b)`` where a document begins (from the shards' document indexes; for format 1, the
    positions that follow an end-of-text id, and 0).
    """

    def __init__(self, data_dir: str, meta: dict, split: str):
        self.split = split
        self.dtype = np.dtype(DTYPES[meta["dtype"]])
        self._eos = int(meta["eos_id"])
        self._dir = data_dir
        self._shards = split_shards(meta, split)
        self._bounds = np.cumsum([0] + [s["tokens"] for s in self._shards]).tolist()  # shard k = [b[k], b[k+1])
        self._maps: dict[int, np.ndarray] = {}
        self._starts: dict[int, np.ndarray] = {}

    # --- the array protocol that TokenLoader and val_batches use
    @property
    def shape(self) -> tuple[int]:
        return (self._bounds[-1],)

    @property
    def ndim(self) -> int:
        return 1

    def __len__(self) -> int:
        return self._bounds[-1]

    def __array__(self, dtype=None, copy=None):
        arr = self[0:len(self)]
        return arr if dtype is None else arr.astype(dtype)

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step != 1:
                raise IndexError("TokenStream slices take step 1")
            return self._read(a, max(a, b))
        i = int(key)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {key} is out of range for a stream of {n} tokens")
        return self._read(i, i + 1)[0]

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            shard = self._shards[k]
            path = os.path.join(self._dir, shard["file"])
            self._maps[k] = (np.memmap(path, dtype=self.dtype, mode="r", shape=(shard["tokens"],))
                             if shard["tokens"] else np.zeros(0, dtype=self.dtype))
        return self._maps[k]

    def _pieces(self, a: int, b: int):
        """(shard, local start, local end, global start) of each shard piece of [a, b)."""
        k = bisect.bisect_right(self._bounds, a) - 1
        while a < b and k < len(self._shards):
            lo, hi = self._bounds[k], self._bounds[k + 1]
            end = min(b, hi)
            if end > a:
                yield k, a - lo, end - lo, a
            a = max(a, end)
            k += 1

    def _read(self, a: int, b: int) -> np.ndarray:
        parts = [np.asarray(self._shard(k)[x:y]) for k, x, y, _ in self._pieces(a, b)]
        if len(parts) == 1:
            return parts[0].copy()
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    # --- document boundaries
    def doc_starts(self, a: int, b: int) -> np.ndarray:
        """Sorted int64 positions in [a, b) where a document starts."""
        out = []
        for k, x, y, g in self._pieces(a, b):
            shard = self._shards[k]
            if "docs_file" in shard:
                if k not in self._starts:
                    self._starts[k] = np.load(os.path.join(self._dir, shard["docs_file"]), mmap_mode="r")
                starts = self._starts[k]
                lo, hi = np.searchsorted(starts, [x, y])
                out.append(np.asarray(starts[lo:hi], dtype=np.int64) - x + g)
            else:  # format 1: a document starts at 0 and after every end-of-text id
                prev = self._shard(k)[max(x - 1, 0):y - 1]
                pos = np.flatnonzero(np.asarray(prev) == self._eos) + max(x - 1, 0) + 1
                if x == 0:
                    pos = np.concatenate([[0], pos])
                out.append(pos.astype(np.int64) - x + g)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def load_split(data_dir, split: str) -> TokenStream:
    """The token stream of `split` ("train" or "val"): a `TokenStream` over its shards."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    data_dir = os.fspath(data_dir)
    return TokenStream(data_dir, check_data_dir(data_dir), split)
