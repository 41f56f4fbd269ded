"""Input readers for `tst prepare`: every input spec expands into *leaves* (one file or one stream
each), and a leaf yields its documents one at a time, in a fixed order, never all at once.

A document is either text (``str``) or, for pre-tokenized inputs, a 1-D integer ``numpy`` array of
token ids (without the end-of-text separator). Accepted input specs:

- ``bundled`` -- the demo corpus shipped with the package (Austen, World English Bible,
  Shakespeare; one document per chapter or scene; see ``tst_train/corpus/SOURCES.md``).
- ``.jsonl``, ``.jsonl.gz``, ``.jsonl.xz`` -- one JSON object per line; the document is its
  ``text_field`` (default ``"text"``): a string, or a list of token ids.
- ``.parquet`` -- the ``text_field`` column (needs ``pyarrow``): strings, or lists of token ids.
- ``hf:NAME[:SPLIT]`` -- a Hugging Face dataset, read with ``datasets.load_dataset(NAME,
  split=SPLIT, streaming=True)`` (SPLIT defaults to ``train``; needs ``datasets``).
- token files (pre-tokenized; need ``--tokenizer``, the tokenizer that made them): ``.bin``
  (nanoGPT: raw little-endian ids; llm.c: the same after its 1 KiB header), ``.ds`` (datatrove;
  documents from its ``.ds.index`` when present), ``.npy`` (a 1-D integer array). Raw ids are
  ``uint16`` when the tokenizer's vocabulary fits, else ``uint32`` (the rule nanoGPT, datatrove and
  nanotron use). Without an index, documents are the runs between end-of-text tokens.
- any other file given explicitly -- UTF-8 text, the whole file one document (a clear error for a
  binary or non-UTF-8 file).
- a folder -- its ``.txt``/``.md``, JSONL, parquet and (with ``--tokenizer``) token files,
  recursively, sorted by path; each by its own format. Files it does not read (other extensions,
  hidden files, binary or non-UTF-8 text) are reported as skipped, with the reason.

Documents that are empty (or only whitespace) are skipped. Every problem is a ``UserError``.
Readers read sequentially with ordinary file reads (no memory maps), so what they hold is one
document and one read buffer.
"""
from __future__ import annotations

import gzip
import json
import lzma
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Union

import numpy as np

from tst_train.errors import UserError

BUNDLED = "bundled"
TEXT_EXTS = (".txt", ".md")
JSONL_EXTS = (".jsonl", ".jsonl.gz", ".jsonl.xz")
PARQUET_EXTS = (".parquet",)
TOKEN_EXTS = (".bin", ".ds", ".npy")
_COMPANION_EXTS = (".ds.index", ".ds.metadata", ".ds.loss")  # datatrove's files next to a .ds shard
LLMC_HEADER_INTS = 256  # llm.c .bin files start with 256 int32: magic, version, token count, ...
LLMC_MAGIC = {20240520: np.uint16, 20240801: np.uint32}  # GPT-2 (version 1) / Llama-3 (version 7) shards
_READ_TOKENS = 1 << 20  # token-file read buffer, in tokens

Document = Union[str, np.ndarray]
SkipFn = Callable[[str, str], None]  # (path, reason)


@dataclass(frozen=True)
class ReadOptions:
    """What readers need besides the path: the text field, and for token files the tokenizer's
    end-of-text id and storage dtype (None when no tokenizer is given: token files are refused)."""

    text_field: str = "text"
    eos_id: int | None = None
    token_dtype: str | None = None


def bundled_path():
    """A Traversable for the bundled corpus file (package data)."""
    from importlib import resources

    return resources.files("tst_train").joinpath("corpus", "bundled.jsonl.xz")


def describe_formats() -> str:
    return ("`bundled`, text files or folders, .jsonl/.jsonl.gz/.jsonl.xz, .parquet, hf:NAME[:SPLIT], "
            "or token files (.bin, .ds, .npy) with --tokenizer")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# --------------------------------------------------------------------------------------------
# leaves
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    """One file or stream of an input: ``kind`` is bundled, hf, text, jsonl, parquet or tokens;
    ``input_index`` is the position of the input spec it came from; ``explicit`` is True when the
    user named the file itself (a bad file is then an error, in a folder walk it is skipped)."""

    kind: str
    path: str
    input_index: int
    explicit: bool

    def identity(self) -> list:
        """What must not change between a run and its resume: the path, size and mtime of a file."""
        if self.kind == "hf":
            return [self.kind, self.path]
        if self.kind == "bundled":
            path = str(bundled_path())
        else:
            path = self.path
        try:
            st = os.stat(path)
        except OSError:
            return [self.kind, self.path, None, None]
        return [self.kind, os.path.abspath(self.path), st.st_size, st.st_mtime_ns]

    def documents(self, opts: ReadOptions, start: int = 0, on_skip: SkipFn | None = None) -> Iterator[Document]:
        """The leaf's non-empty documents, from the `start`-th one (the earlier ones are read, not returned)."""
        docs = _READERS[self.kind](self, opts, on_skip)
        for i, d in enumerate(_nonempty(docs)):
            if i >= start:
                yield d


def _nonempty(docs: Iterator[Document]) -> Iterator[Document]:
    for d in docs:
        if isinstance(d, str):
            if d and not d.isspace():
                yield d
        elif d.size:
            yield d


def _kind_of_file(path: str) -> str | None:
    low = path.lower()
    if low.endswith(JSONL_EXTS):
        return "jsonl"
    if low.endswith(PARQUET_EXTS):
        return "parquet"
    if low.endswith(TOKEN_EXTS):
        return "tokens"
    if low.endswith(TEXT_EXTS):
        return "text"
    return None


def check_input(spec: str) -> None:
    """Fail early (before any work) on a spec that cannot be read."""
    if spec == BUNDLED or spec.startswith("hf:"):
        if spec.startswith("hf:") and not spec[3:].partition(":")[0]:
            raise UserError(f"bad input {spec!r}: expected hf:NAME[:SPLIT], e.g. hf:roneneldan/TinyStories:train")
        return
    if not os.path.exists(spec):
        raise UserError(f"input {spec!r} does not exist: pass {describe_formats()}")
    if not (os.path.isdir(spec) or os.path.isfile(spec)):
        raise UserError(f"input {spec!r} is neither a file nor a folder")


def _walk(folder: str, input_index: int, opts: ReadOptions, on_skip: SkipFn, exclude: tuple) -> list[Leaf]:
    leaves = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) not in exclude]
        for d in sorted(dirnames):
            if d.startswith("."):
                on_skip(os.path.join(dirpath, d) + os.sep, "hidden folder")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            path = os.path.join(dirpath, fn)
            kind = _kind_of_file(fn)
            if fn.startswith("."):
                on_skip(path, "hidden file")
            elif fn.lower().endswith(_COMPANION_EXTS):
                continue  # read with its .ds shard
            elif kind is None:
                ext = os.path.splitext(fn)[1] or "no extension"
                on_skip(path, f"not a text, JSONL, parquet or token file ({ext}); name it as an input to read it as text")
            elif kind == "tokens" and opts.eos_id is None:
                on_skip(path, "token file; pass --tokenizer (the tokenizer that made it) to read it")
            else:
                leaves.append(Leaf(kind, path, input_index, explicit=False))
    leaves.sort(key=lambda leaf: leaf.path)
    return leaves


def expand_inputs(inputs: list[str], opts: ReadOptions, on_skip: SkipFn, exclude=()) -> list[Leaf]:
    """The leaves of all inputs, in input order (a folder's files sorted by path); `on_skip` hears
    about every file of a folder walk that is not read, with the reason. Folder walks do not enter the
    folders in `exclude` (the output being written)."""
    exclude = tuple(os.path.abspath(e) for e in exclude)
    if not inputs:
        raise UserError(f"no input given: pass --input with {describe_formats()}")
    for spec in inputs:
        check_input(spec)
    leaves: list[Leaf] = []
    for i, spec in enumerate(inputs):
        if spec == BUNDLED:
            leaves.append(Leaf("bundled", spec, i, True))
        elif spec.startswith("hf:"):
            leaves.append(Leaf("hf", spec, i, True))
        elif os.path.isdir(spec):
            found = _walk(spec, i, opts, on_skip, exclude)
            if not found:
                raise UserError(f"folder {spec!r} has no text, JSONL, parquet or token files that can be read")
            leaves += found
        else:
            kind = _kind_of_file(spec) or "text"  # any other extension, named explicitly: text
            if kind == "tokens" and opts.eos_id is None:
                raise UserError(f"{spec} is a token file (pre-tokenized): pass --tokenizer with the tokenizer "
                                "that made it (its vocabulary and end-of-text token)")
            leaves.append(Leaf(kind, spec, i, True))
    return leaves


# --------------------------------------------------------------------------------------------
# text values: a string, or a list of token ids (pre-tokenized JSONL / parquet / HF rows)
# --------------------------------------------------------------------------------------------

def _as_document(val, where: str, field: str, opts: ReadOptions) -> Document | None:
    if val is None or isinstance(val, str):
        return val
    if isinstance(val, (list, tuple, np.ndarray)):
        if opts.eos_id is None:
            raise UserError(f"{where}: field {field!r} holds token ids (a pre-tokenized input): pass --tokenizer "
                            "with the tokenizer that made them")
        arr = np.asarray(val)
        if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
            raise UserError(f"{where}: field {field!r} is a list but not a flat list of integer token ids")
        return arr.astype(np.int64, copy=False)
    raise UserError(f"{where}: field {field!r} is a {type(val).__name__}, not a string or a list of token ids")


# --------------------------------------------------------------------------------------------
# readers, one per kind: (leaf, opts, on_skip) -> documents (empty ones are dropped by the caller)
# --------------------------------------------------------------------------------------------

def _text_problem(raw: bytes) -> str | None:
    nul = raw.find(b"\x00")
    if nul >= 0:
        return f"binary (a NUL byte at offset {nul:,})"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start:,})"
    return None


def _read_text(leaf: Leaf, opts: ReadOptions, on_skip: SkipFn | None) -> Iterator[str]:
    try:
        with open(leaf.path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read input file {leaf.path}: {e.strerror}") from None
    problem = _text_problem(raw)
    if problem is None:
        yield raw.decode("utf-8")
    elif leaf.explicit:
        raise UserError(f"input {leaf.path} is {problem}: pass UTF-8 text (e.g. `iconv -f latin1 -t utf-8`), "
                        f"or a file of a known format ({describe_formats()})")
    elif on_skip is not None:
        on_skip(leaf.path, problem)


def _read_jsonl(leaf: Leaf, opts: ReadOptions, on_skip: SkipFn | None) -> Iterator[Document]:
    path, field = leaf.path, opts.text_field
    opener = gzip.open if path.endswith(".gz") else lzma.open if path.endswith(".xz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:  # as for .txt: not UTF-8 is refused, never replaced
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {lineno} is not valid JSON ({e.msg}): "
                                    "expected one JSON object per line") from None
                if not isinstance(obj, dict) or field not in obj:
                    keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
                    raise UserError(f"{path} line {lineno} has no {field!r} field (has {keys}): pass --text-field NAME")
                doc = _as_document(obj[field], f"{path} line {lineno}", field, opts)
                if doc is not None:
                    yield doc
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start} of a line: {e.reason}): pass UTF-8 JSONL "
                        "(e.g. `iconv -f latin1 -t utf-8`)") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"cannot read {path}: {e} (corrupt or truncated file?)") from None


def _read_parquet(leaf: Leaf, opts: ReadOptions, on_skip: SkipFn | None) -> Iterator[Document]:
    path, field = leaf.path, opts.text_field
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading {path} needs pyarrow: pip install pyarrow "
                        "(or pip install 'token-superposition[data]')") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise UserError(f"cannot read parquet file {path}: {e}") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise UserError(f"{path} has no column {field!r} (columns: {names[:8]}): pass --text-field NAME")
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        for val in batch.column(0).to_pylist():
            doc = _as_document(val, path, field, opts)
            if doc is not None:
                yield doc


def _read_hf(leaf: Leaf, opts: ReadOptions, on_skip: SkipFn | None) -> Iterator[Document]:
    spec, field = leaf.path, opts.text_field
    name, _, split = spec[len("hf:"):].partition(":")
    split = split or "train"
    try:
        import datasets
    except ImportError:
        raise UserError(f"input {spec!r} needs the Hugging Face `datasets` package: pip install datasets "
                        "(or export the data to .jsonl/.parquet and pass that file)") from None
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # network errors, unknown dataset or split, ...
        raise UserError(f"cannot load Hugging Face dataset {name!r} split {split!r}: {_first_line(e)} "
                        "(offline? export it to .jsonl/.parquet and pass that file instead)") from None
    cols = getattr(ds, "column_names", None)  # None for some streaming datasets: checked per row then
    if cols is not None and field not in cols:
        raise UserError(f"Hugging Face dataset {name!r} has no column {field!r} (columns: {list(cols)[:8]}): "
                        "pass --text-field NAME")
    for i, row in enumerate(ds):
        if not isinstance(row, dict) or field not in row:
            raise UserError(f"Hugging Face dataset {name!r} row {i} has no field {field!r}: pass --text-field NAME")
        doc = _as_document(row[field], f"Hugging Face dataset {name!r} row {i}", field, opts)
        if doc is not None:
            yield doc


def _read_bundled(leaf: Leaf, opts: ReadOptions, on_skip: SkipFn | None) -> Iterator[str]:
    p = bundled_path()
    try:
        with p.open("rb") as raw, lzma.open(raw, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]
    except FileNotFoundError:
        raise UserError("the bundled corpus file tst_train/corpus/bundled.jsonl.xz is missing from the "
                        "installation: reinstall the package or run scripts/build_corpus.py") from None


# --------------------------------------------------------------------------------------------
# token files
# --------------------------------------------------------------------------------------------

def token_file_layout(path: str, default_dtype) -> tuple[int, np.dtype, int]:
    """(byte offset of the first token, dtype, number of tokens) of a .bin / .ds / .npy token file."""
    size = os.path.getsize(path)
    low = path.lower()
    if low.endswith(".npy"):
        try:
            arr = np.load(path, mmap_mode="r")
        except Exception as e:
            raise UserError(f"cannot read {path} as a .npy array: {_first_line(e)}") from None
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"{path} holds a {arr.dtype} array of shape {arr.shape}: expected 1-D integer token ids")
        if not arr.dtype.isnative and arr.dtype.itemsize > 1:
            raise UserError(f"{path} is a big-endian array: convert it with arr.astype('<u4')")
        return int(arr.offset), arr.dtype, int(arr.shape[0])
    dtype = np.dtype(default_dtype)
    offset = 0
    if low.endswith(".bin") and size >= 4 * LLMC_HEADER_INTS:
        with open(path, "rb") as f:
            head = np.frombuffer(f.read(4 * LLMC_HEADER_INTS), dtype="<i4")
        if int(head[0]) in LLMC_MAGIC:  # an llm.c shard: magic, version, token count, then the ids
            dtype = np.dtype(LLMC_MAGIC[int(head[0])])
            offset = 4 * LLMC_HEADER_INTS
            n = int(head[2])
            if offset + n * dtype.itemsize != size:
                raise UserError(f"{path}: its llm.c header says {n:,} tokens but the file holds "
                                f"{(size - offset) // dtype.itemsize:,} (truncated?)")
            return offset, dtype, n
    if size % dtype.itemsize:
        raise UserError(f"{path} has {size:,} bytes, not a whole number of {dtype.name} tokens: is it a token "
                        "file of this tokenizer?")
    return offset, dtype, size // dtype.itemsize


def _read_tokens(leaf: Leaf, opts: ReadOptions, on_skip: SkipFn | None) -> Iterator[np.ndarray]:
    offset, dtype, n = token_file_layout(leaf.path, opts.token_dtype)
    index = leaf.path + ".index"
    with open(leaf.path, "rb") as f:
        f.seek(offset)
        if leaf.path.lower().endswith(".ds") and os.path.isfile(index):
            yield from _docs_by_index(f, dtype, n, index, opts.eos_id)
        else:
            yield from _docs_by_eos(f, dtype, n, opts.eos_id)


def _docs_by_eos(f, dtype, n: int, eos: int) -> Iterator[np.ndarray]:
    """The runs of tokens between end-of-text ids (a separator before or after each document, or both)."""
    pending: list[np.ndarray] = []  # pieces of the document that continues into the next buffer
    left = n
    while left:
        buf = np.fromfile(f, dtype=dtype, count=min(left, _READ_TOKENS))
        left -= buf.size
        cuts = np.flatnonzero(buf == eos)
        start = 0
        for c in cuts:
            yield np.concatenate(pending + [buf[start:c]]).astype(np.int64) if pending else buf[start:c].astype(np.int64)
            pending = []
            start = int(c) + 1
        if start < buf.size:
            pending.append(buf[start:])
    if pending:
        yield np.concatenate(pending).astype(np.int64)


def _docs_by_index(f, dtype, n: int, index_path: str, eos: int) -> Iterator[np.ndarray]:
    """datatrove: the .ds.index file holds each document's end (uint64, in tokens); a trailing eos is dropped
    (it is added back as the separator)."""
    n_docs = os.path.getsize(index_path) // 8
    prev = 0
    with open(index_path, "rb") as fi:
        for _ in range(0, n_docs, _READ_TOKENS):
            ends = np.fromfile(fi, dtype="<u8", count=_READ_TOKENS)
            for end in ends.tolist():
                if end < prev or end > n:
                    raise UserError(f"{index_path} is inconsistent with its .ds file (document end {end:,}, "
                                    f"{n:,} tokens)")
                doc = np.fromfile(f, dtype=dtype, count=end - prev).astype(np.int64)
                prev = end
                yield doc[:-1] if doc.size and doc[-1] == eos else doc


_READERS = {
    "bundled": _read_bundled,
    "hf": _read_hf,
    "text": _read_text,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "tokens": _read_tokens,
}


# --------------------------------------------------------------------------------------------
# documents across leaves
# --------------------------------------------------------------------------------------------

def iter_from(leaves: list[Leaf], opts: ReadOptions, leaf: int = 0, doc: int = 0,
              on_skip: SkipFn | None = None) -> Iterator[tuple[int, int, Document]]:
    """(leaf index, document index within the leaf, document) from document `doc` of leaf `leaf` on."""
    for li in range(leaf, len(leaves)):
        start = doc if li == leaf else 0
        for j, d in enumerate(leaves[li].documents(opts, start, on_skip), start):
            yield li, j, d


def iter_documents(spec: str, text_field: str = "text") -> Iterator[Document]:
    """Documents of one input spec (no tokenizer: token files are refused), in order, empty ones skipped."""
    opts = ReadOptions(text_field=text_field)
    for _, _, d in iter_from(expand_inputs([spec], opts, lambda path, why: None), opts):
        yield d


def read_documents(inputs: list[str], text_field: str = "text", max_docs: int | None = None) -> list[Document]:
    """All documents of all inputs, in memory (for small inputs and tests; `tst prepare` streams)."""
    opts = ReadOptions(text_field=text_field)
    out: list[Document] = []
    for _, _, d in iter_from(expand_inputs(inputs, opts, lambda path, why: None), opts):
        if max_docs is not None and len(out) >= max_docs:
            break
        out.append(d)
    return out
