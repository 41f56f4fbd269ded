"""The tokenizer of a run, as files: copied into the run directory at its start, read back by ``eval``,
``generate`` and ``export`` (which then need neither the data directory nor the working directory it
was trained from), and written as a Hugging Face ``tokenizer.json`` for exports.

    RUN_DIR/data.json            the data directory's meta.json and its absolute path
    RUN_DIR/tokenizer.json       the data's Hugging Face tokenizer (runs on a BPE or a tokenizer.json)
    RUN_DIR/tokenizer.tiktoken   tiktoken runs: the encoding's ranks in tiktoken's own file format; its
                                 split pattern and special tokens are in data.json

A tiktoken encoding becomes a ``tokenizer.json`` through transformers' ``TikTokenConverter``, with
two corrections its output needs: the special tokens keep tiktoken's ids (the converter renumbers
them), and the split pattern is rewritten for the Oniguruma regex engine of ``tokenizers`` —
possessive quantifiers (``++``, ``?+``) dropped and ``$`` made end-of-text (``\\z``; in Oniguruma it
matches at every line end). Every conversion is checked against tiktoken on a probe text.
"""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from .data.loader import read_meta
from .data.prepare import Tokenizer, load_tokenizer
from .errors import UserError
from .rundir import write_atomic

DATA_FILE = "data.json"
HF_FILE = "tokenizer.json"
TIKTOKEN_FILE = "tokenizer.tiktoken"

# Text the converted tokenizer must encode exactly as tiktoken does (spaces, newlines, digits,
# contractions, non-ASCII, runs of whitespace at the end).
PROBE_TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
              "must be in want of a wife.\n\nCHAPTER 12\n\n\"I'll've 4096 tokens,\" she said  \t\n  "
              "Ünïcödé 東京 🙂 x \n\n\n   ")


def collect(data_dir: str | os.PathLike) -> dict[str, str]:
    """The files that give a run directory its own copy of the data's tokenizer and meta.json
    (``{file name: text}``), read and checked before the run directory is created."""
    data_dir = os.path.abspath(os.fspath(data_dir))
    meta = read_meta(data_dir)
    record = {"path": data_dir, "meta": meta}
    if not meta.get("tokenizer") and not (Path(data_dir) / HF_FILE).is_file():
        return {DATA_FILE: json.dumps(record, indent=2)}  # token ids without a tokenizer (e.g. synthetic data)
    tok = load_tokenizer(data_dir)  # it must load: a run whose tokenizer cannot be read is refused now
    if tok.kind == "tiktoken":
        enc = tok._impl
        lines = (f"{base64.b64encode(t).decode()} {rank}"
                 for t, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]))
        files = {TIKTOKEN_FILE: "\n".join(lines) + "\n"}
        record["tiktoken"] = {"name": enc.name, "pat_str": enc._pat_str, "special_tokens": enc._special_tokens,
                              "n_vocab": enc.n_vocab}
    else:
        files = {HF_FILE: (Path(data_dir) / (meta.get("tokenizer") or {}).get("file", HF_FILE)).read_text()}
    return {**files, DATA_FILE: json.dumps(record, indent=2)}


def write(run_dir: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        write_atomic(run_dir / name, text)


def has_snapshot(run_dir: Path) -> bool:
    return (run_dir / DATA_FILE).is_file()


def run_data(run_dir: Path, data_path: str) -> dict:
    """``{"path", "meta"}`` of a run's data: the run's own copy, else (older runs) the data directory."""
    if has_snapshot(run_dir):
        from .received import RUN_DATA, RUN_META, RUN_TRAIN_SPLIT, check, read_json
        source = str(run_dir / DATA_FILE)
        record = read_json(run_dir / DATA_FILE, RUN_DATA)
        check(record["meta"], RUN_META, source + ": meta")
        check(record["meta"]["splits"].get("train"), RUN_TRAIN_SPLIT, source + ": meta: splits: train")
        return record
    return {"path": os.path.abspath(data_path), "meta": read_meta(data_path)}


def run_tokenizer(run_dir: Path, data_path: str) -> Tokenizer:
    """The tokenizer a run was trained with, from its own files (older runs: from their data directory)."""
    if not has_snapshot(run_dir):
        return load_tokenizer(data_path)
    from .received import TIKTOKEN_INFO, check
    record = run_data(run_dir, data_path)  # checked: meta is a dict with a vocab_size and an eos_id or null
    source, meta = str(run_dir / DATA_FILE), record["meta"]
    if "tiktoken" in record:
        info = check(record["tiktoken"], TIKTOKEN_INFO, source + ": tiktoken")
        if meta.get("eos_id") is None:
            raise UserError(f"{source}: meta: field 'eos_id' is null, but a tiktoken run has an end-of-text id")
        if info["n_vocab"] != meta["vocab_size"] or info["n_vocab"] > 1 << 31:
            raise UserError(f"{source}: tiktoken: field 'n_vocab' is {info['n_vocab']}, not the data's vocab_size")
        return _tiktoken_from_file(run_dir / TIKTOKEN_FILE, info, meta["eos_id"])
    return hf_tokenizer_file(run_dir / HF_FILE, meta.get("eos_id"), meta.get("tokenizer") or {})


def hf_tokenizer_file(path: Path, eos_id: int | None, spec: dict | None = None) -> Tokenizer:
    """A ``tokenizer.json`` as our uniform :class:`Tokenizer` (``eos_id`` None: no end-of-text token)."""
    from tokenizers import Tokenizer as HFTokenizer
    if not path.is_file():
        raise UserError(f"{path.parent} has no {path.name}: a tokenizer is needed to read and write text")
    try:
        impl = HFTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on unreadable files
        raise UserError(f"cannot read tokenizer {path}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    vocab = impl.get_vocab(with_added_tokens=True)
    size = max(impl.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1 if vocab else 0)
    return Tokenizer("hf", impl, size, -1 if eos_id is None else eos_id, spec or {"type": "hf", "file": path.name})


def _tiktoken_from_file(path: Path, info: dict, eos_id: int) -> Tokenizer:
    try:
        import tiktoken
    except ImportError:
        raise UserError(f"{path.parent} was trained with a tiktoken encoding: pip install tiktoken") from None
    ranks = _read_ranks(path)
    ids = [*ranks.values(), *info["special_tokens"].values()]
    if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) + 1 != info["n_vocab"]:
        raise UserError(f"{path}: its ranks and data.json's special tokens are not distinct ids below n_vocab "
                        f"({info['n_vocab']:,}), the largest n_vocab - 1")
    if not 0 <= eos_id < info["n_vocab"]:
        raise UserError(f"{path.parent / DATA_FILE}: meta: field 'eos_id' is {eos_id}, outside the vocabulary")
    try:
        enc = tiktoken.Encoding(info["name"], pat_str=info["pat_str"], mergeable_ranks=ranks,
                                special_tokens=info["special_tokens"])
    except ValueError as e:  # the split pattern does not compile
        raise UserError(f"{path.parent / DATA_FILE}: tiktoken: field 'pat_str' is not a valid pattern "
                        f"({str(e).splitlines()[0]})") from None
    return Tokenizer("tiktoken", enc, enc.n_vocab, eos_id, {"type": "tiktoken", "name": info["name"]})


def _read_ranks(path: Path) -> dict[bytes, int]:
    """``tokenizer.tiktoken``: one ``<base64 token> <rank>`` a line, each token once, every single byte present
    (tiktoken's encoder needs them: without one it aborts mid-encode); otherwise one line naming the line."""
    from .received import read_text
    lines = read_text(path).splitlines()
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(lines, 1):
        parts = line.split()
        try:
            if len(parts) != 2 or not parts[1].isascii() or not parts[1].isdigit():
                raise ValueError
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except ValueError:
            raise UserError(f"{path}: line {n} is not '<base64 token> <rank>'") from None
        if token in ranks or not token:
            raise UserError(f"{path}: line {n}: {'an empty' if not token else 'a repeated'} token")
        ranks[token] = rank
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise UserError(f"{path}: the single byte {missing[0]:#04x} has no rank (every byte needs one)")
    return ranks


def to_hf(tok: Tokenizer):
    """A ``tokenizers.Tokenizer`` equivalent to ``tok`` (the same one for HF tokenizers; converted for tiktoken)."""
    if tok.kind == "hf":
        return tok._impl
    return tiktoken_to_hf(tok._impl)


def tiktoken_to_hf(enc):
    """A tiktoken ``Encoding`` → ``tokenizers.Tokenizer`` with the same ids, checked on :data:`PROBE_TEXT`."""
    try:
        from tokenizers import AddedToken
        from transformers.convert_slow_tokenizer import TikTokenConverter
    except ImportError:
        raise UserError("exporting a tiktoken run needs transformers: pip install 'token-superposition[hf]'") from None

    class _FromEncoding(TikTokenConverter):
        def load_tiktoken_bpe(self, url):
            return enc._mergeable_ranks

        def extract_vocab_merges_from_model(self, url):
            vocab, merges = super().extract_vocab_merges_from_model(url)
            return {**vocab, **enc._special_tokens}, merges  # the specials at tiktoken's ids

    pattern = re.sub(r"([?+*}])\+", r"\1", enc._pat_str).replace("$", r"\z")
    hf = _FromEncoding(vocab_file=None, pattern=pattern).converted()
    hf.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in enc._special_tokens])
    if hf.encode(PROBE_TEXT, add_special_tokens=False).ids != enc.encode_ordinary(PROBE_TEXT):
        raise UserError(f"the tiktoken encoding {enc.name!r} does not convert to a Hugging Face tokenizer that "
                        "reproduces it; export without a tokenizer is not supported")
    return hf
