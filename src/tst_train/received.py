"""One validation layer for the metadata files a user may receive from someone else: a Hugging Face model's
``config.json`` and our ``tst_export.json``, a data folder's ``meta.json`` shard entries, a run directory's JSON.

Each file has a table of fields — name, type, whether it must be there, and the range its value must lie in — and
:func:`check` raises a one-line ``UserError`` naming the file and the field, before any of it is used. Cross-field
rules (an end-of-text id inside the vocabulary, a tokenizer no larger than the embedding) follow the table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class Field:
    name: str
    kind: type | tuple  # the JSON type(s) the value must have
    required: bool = True
    low: float | None = None  # inclusive
    nullable: bool = False
    items: type | tuple | None = None  # a list's elements, a dict's values: their JSON type(s)

    def problem(self, obj: dict) -> str | None:
        if self.name not in obj:
            return "is missing" if self.required else None
        value = obj[self.name]
        if value is None:
            return None if self.nullable or not self.required else "is null"
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            return f"is {value!r}, not {' or '.join(k.__name__ for k in kinds)}"
        if self.low is not None and isinstance(value, (int, float)) and not value >= self.low:  # NaN too
            return f"is {value!r}, below {self.low:g}"
        if self.items is not None and isinstance(value, (list, dict)):
            items = self.items if isinstance(self.items, tuple) else (self.items,)
            for x in value.values() if isinstance(value, dict) else value:
                if isinstance(x, bool) and bool not in items or not isinstance(x, items):
                    return f"holds {x!r}, not {' or '.join(k.__name__ for k in items)}"
        return None


POSITIVE, NUMBER = 1, (int, float)
HF_CONFIG = (Field("hidden_size", int, low=POSITIVE), Field("intermediate_size", int, low=POSITIVE),
             Field("num_hidden_layers", int, low=POSITIVE), Field("num_attention_heads", int, low=POSITIVE),
             Field("num_key_value_heads", int, False, POSITIVE, True), Field("vocab_size", int, low=POSITIVE),
             Field("head_dim", int, False, POSITIVE, True), Field("max_position_embeddings", int, False, POSITIVE),
             Field("rms_norm_eps", NUMBER, False, 0), Field("rope_theta", NUMBER, False, POSITIVE),
             Field("tie_word_embeddings", bool, False), Field("initializer_range", NUMBER, False, 0),
             Field("eos_token_id", (int, list), False, 0, True), Field("bos_token_id", int, False, 0, True))
# a Qwen3-MoE config.json's expert fields (transformers 5 writes the count as num_local_experts, 4 as num_experts)
QWEN3_MOE = (Field("num_experts", int, False, POSITIVE), Field("num_local_experts", int, False, POSITIVE),
             Field("num_experts_per_tok", int, low=POSITIVE), Field("moe_intermediate_size", int, low=POSITIVE),
             Field("norm_topk_prob", bool, False), Field("decoder_sparse_step", int, False, POSITIVE),
             Field("mlp_only_layers", list, False, items=int))
EXPORT_INFO = (Field("train_seq_len", int, False, POSITIVE), Field("step", int, False, 0, True),
               Field("data_position", int, False, 0, True), Field("data_path", str, False, nullable=True))
SHARD = (Field("file", str), Field("tokens", int, low=0), Field("documents", int, False, 0),
         Field("docs_file", str, False), Field("sample_sha256", str, False))
# a data folder's meta.json (its splits and shards are checked in data/layout.py, with the SHARD table)
DATA_META = (Field("vocab_size", int, low=POSITIVE), Field("dtype", str), Field("eos_id", int, low=0),
             Field("bytes_per_token", NUMBER, False, 0, True), Field("format_version", int, False, POSITIVE),
             Field("tokenizer", dict, False, nullable=True), Field("splits", dict))
# a checkpoint's checkpoint.json and manifest.json (each file's size and SHA-256)
CHECKPOINT_INFO = (Field("step", int, low=0), Field("fingerprint", dict))
MANIFEST = (Field("files", dict, items=dict),)
MANIFEST_ENTRY = (Field("bytes", int, low=0), Field("sha256", str))
# a checkpoint's trainer_state.json (after its tensors and ±inf are decoded): every field train.TrainState has
TRAINER_STATE = (Field("step", int, low=0), Field("data_tokens", int, low=0), Field("positions", int, low=0),
                 Field("flops", NUMBER, low=0), Field("train_time", NUMBER, low=0), Field("loader", dict),
                 Field("step_times", list, items=NUMBER), Field("best_val_loss", NUMBER),
                 Field("last_val_loss", NUMBER, False, nullable=True), Field("rng", dict, False))
LOADER_STATE = (Field("position", int, low=0), Field("epoch", int, low=0), Field("tokens_consumed", int, low=0))
# a run directory's data.json: the data folder's meta.json as the run saw it (and the folder's path)
RUN_DATA = (Field("meta", dict), Field("path", str, False))
RUN_META = (Field("vocab_size", int, low=POSITIVE), Field("eos_id", int, False, 0, True),
            Field("tokenizer", dict, False, nullable=True), Field("splits", dict))
RUN_TRAIN_SPLIT = (Field("tokens", int, low=0), Field("shards", list, False, items=dict))
# a tiktoken run's data.json "tiktoken" record (its ranks are in tokenizer.tiktoken, checked line by line)
TIKTOKEN_INFO = (Field("name", str), Field("pat_str", str), Field("special_tokens", dict, items=int),
                 Field("n_vocab", int, low=POSITIVE))


def check(obj, fields: tuple[Field, ...], source: str, only: bool = False) -> dict:
    """``obj`` if it is a JSON object whose fields meet ``fields`` (``only``: and it has no others); else one line
    naming ``source`` and the field."""
    if not isinstance(obj, dict):
        raise UserError(f"{source} does not hold a JSON object")
    if only:
        extra = sorted(set(obj) - {f.name for f in fields}, key=str)
        if extra:
            raise UserError(f"{source}: field {extra[0]!r} is not one this file has")
    for f in fields:
        problem = f.problem(obj)
        if problem:
            raise UserError(f"{source}: field {f.name!r} {problem}")
    return obj


def read_text(path: Path) -> str:
    """A received text file as UTF-8; unreadable, not UTF-8 or not a regular file (a FIFO would block the read
    forever, a device never end) is one line."""
    try:
        if Path(path).exists() and not Path(path).is_file():
            raise OSError(f"{Path(path).name} is not a regular file")
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def read_json(path: Path, fields: tuple[Field, ...] = ()) -> dict:
    """A received JSON file, parsed and checked; unreadable or malformed is one line."""
    text = read_text(path)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return check(obj, fields, str(path))


def check_hf_config(config: dict, source: str) -> dict:
    """A Hugging Face ``config.json``: the table (and a mixture of experts' own), then the ids inside the vocabulary."""
    check(config, HF_CONFIG, source)
    if config.get("model_type") == "qwen3_moe":
        check(config, QWEN3_MOE, source)
        if config.get("num_experts") is None and config.get("num_local_experts") is None:
            raise UserError(f"{source}: field 'num_experts' is missing")
    vocab = config["vocab_size"]
    for key in ("eos_token_id", "bos_token_id"):
        ids = config.get(key)
        for i in ids if isinstance(ids, list) else [ids]:
            if i is not None and (not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab):
                raise UserError(f"{source}: field {key!r} holds {i!r}, outside the vocabulary of {vocab:,}")
    return config
