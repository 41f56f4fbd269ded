"""Input readers for `tst prepare`: each input spec yields documents (strings), in a fixed order.

Accepted input specs:

- ``bundled`` -- the demo corpus shipped with the package (Austen, World English Bible,
  Shakespeare; one document per chapter or scene; see ``tst_train/corpus/SOURCES.md``).
- a text file (``.txt``, ``.md``) -- the whole file is one document.
- a folder -- every ``*.txt`` / ``*.md`` file under it (recursively, sorted by path) is one document.
- ``.jsonl``, ``.jsonl.gz``, ``.jsonl.xz`` -- one JSON object per line; the document is its
  ``text_field`` (default ``"text"``).
- ``.parquet`` -- the ``text_field`` column (needs ``pyarrow``).
- ``hf:NAME[:SPLIT]`` -- a Hugging Face dataset via ``datasets.load_dataset(NAME, split=SPLIT)``
  (SPLIT defaults to ``train``; needs the ``datasets`` package and, usually, network access).

Documents that are empty or only whitespace are skipped. Every problem is a ``UserError``.
"""
from __future__ import annotations

import gzip
import json
import lzma
import os
from typing import Iterable, Iterator

from tst_train.errors import UserError

BUNDLED = "bundled"
TEXT_EXTS = (".txt", ".md")
JSONL_EXTS = (".jsonl", ".jsonl.gz", ".jsonl.xz")
PARQUET_EXTS = (".parquet",)


def bundled_path():
    """A Traversable for the bundled corpus file (package data)."""
    from importlib import resources

    return resources.files("tst_train").joinpath("corpus", "bundled.jsonl.xz")


def describe_formats() -> str:
    return ("`bundled`, a .txt/.md file, a folder of .txt/.md files, .jsonl/.jsonl.gz/.jsonl.xz, "
            ".parquet, or hf:NAME[:SPLIT]")


def _nonempty(docs: Iterable[str]) -> Iterator[str]:
    for d in docs:
        if d and not d.isspace():
            yield d


def _read_text_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read input file {path}: {e.strerror}") from None
    return raw.decode("utf-8", errors="replace")


def _iter_jsonl(path: str, text_field: str) -> Iterator[str]:
    opener = gzip.open if path.endswith(".gz") else lzma.open if path.endswith(".xz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {lineno} is not valid JSON ({e.msg}): "
                                    "expected one JSON object per line") from None
                if not isinstance(obj, dict) or text_field not in obj:
                    keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
                    raise UserError(f"{path} line {lineno} has no {text_field!r} field (has {keys}): "
                                    "pass --text-field NAME")
                val = obj[text_field]
                if val is None:
                    continue
                if not isinstance(val, str):
                    raise UserError(f"{path} line {lineno}: field {text_field!r} is a "
                                    f"{type(val).__name__}, not a string")
                yield val
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"cannot read {path}: {e} (corrupt or truncated file?)") from None


def _iter_parquet(path: str, text_field: str) -> Iterator[str]:
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
    if text_field not in names:
        raise UserError(f"{path} has no column {text_field!r} (columns: {names[:8]}): pass --text-field NAME")
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for val in batch.column(0).to_pylist():
            if val is None:
                continue
            if not isinstance(val, str):
                raise UserError(f"{path}: column {text_field!r} holds {type(val).__name__} values, not strings")
            yield val


def _iter_hf(spec: str, text_field: str) -> Iterator[str]:
    rest = spec[len("hf:"):]
    name, _, split = rest.partition(":")
    split = split or "train"
    if not name:
        raise UserError(f"bad input {spec!r}: expected hf:NAME[:SPLIT], e.g. hf:roneneldan/TinyStories:train")
    try:
        import datasets
    except ImportError:
        raise UserError(f"input {spec!r} needs the Hugging Face `datasets` package: pip install datasets "
                        "(or export the data to .jsonl/.parquet and pass that file)") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # network errors, unknown dataset or split, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load Hugging Face dataset {name!r} split {split!r}: {msg} "
                        "(offline? export it to .jsonl/.parquet and pass that file instead)") from None
    cols = getattr(ds, "column_names", None)
    if cols is not None and text_field not in cols:
        raise UserError(f"Hugging Face dataset {name!r} has no column {text_field!r} (columns: {list(cols)[:8]}): "
                        "pass --text-field NAME")
    for row in ds:
        val = row.get(text_field) if isinstance(row, dict) else None
        if isinstance(val, str):
            yield val


def _iter_bundled() -> Iterator[str]:
    p = bundled_path()
    try:
        with p.open("rb") as raw, lzma.open(raw, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]
    except FileNotFoundError:
        raise UserError("the bundled corpus file tst_train/corpus/bundled.jsonl.xz is missing from the "
                        "installation: reinstall the package or run scripts/build_corpus.py") from None


def _files_under(folder: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.lower().endswith(TEXT_EXTS + JSONL_EXTS + PARQUET_EXTS) and not fn.startswith("."):
                out.append(os.path.join(dirpath, fn))
    return sorted(out)


def check_input(spec: str) -> None:
    """Fail early (before any work) on a spec that cannot be read."""
    if spec == BUNDLED or spec.startswith("hf:"):
        return
    if not os.path.exists(spec):
        raise UserError(f"input {spec!r} does not exist: pass {describe_formats()}")
    if os.path.isdir(spec):
        return
    low = spec.lower()
    if not low.endswith(TEXT_EXTS + JSONL_EXTS + PARQUET_EXTS):
        raise UserError(f"input {spec!r} has an unknown extension: pass {describe_formats()}")


def iter_documents(spec: str, text_field: str = "text") -> Iterator[str]:
    """Documents of one input spec, in a deterministic order, empty ones skipped."""
    check_input(spec)
    if spec == BUNDLED:
        yield from _nonempty(_iter_bundled())
        return
    if spec.startswith("hf:"):
        yield from _nonempty(_iter_hf(spec, text_field))
        return
    if os.path.isdir(spec):
        files = _files_under(spec)
        if not files:
            raise UserError(f"folder {spec!r} has no text, JSONL or parquet files")
        for path in files:  # each file by its own format (a text file is one document)
            yield from iter_documents(path, text_field)
        return
    low = spec.lower()
    if low.endswith(TEXT_EXTS):
        yield from _nonempty([_read_text_file(spec)])
    elif low.endswith(JSONL_EXTS):
        yield from _nonempty(_iter_jsonl(spec, text_field))
    else:
        yield from _nonempty(_iter_parquet(spec, text_field))


def read_documents(inputs: list[str], text_field: str = "text", max_docs: int | None = None) -> list[str]:
    """All documents of all inputs, in input order (stopping after `max_docs` if given)."""
    if not inputs:
        raise UserError(f"no input given: pass --input with {describe_formats()}")
    for spec in inputs:
        check_input(spec)
    docs: list[str] = []
    for spec in inputs:
        n0 = len(docs)
        for d in iter_documents(spec, text_field):
            if max_docs is not None and len(docs) >= max_docs:
                break
            docs.append(d)
        if len(docs) == n0 and (max_docs is None or len(docs) < max_docs):
            raise UserError(f"input {spec!r} holds no (non-empty) documents")
    return docs
