"""Reading a prepared data folder: validation, memory-mapped token streams, the training stream
(`TokenLoader`) and the fixed validation windows (`val_batches`).

A data folder (made by `tst prepare`) holds ``train.bin`` and ``val.bin`` -- raw little-endian
arrays of ``meta["dtype"]`` (uint16 or uint32), each one flat stream of documents separated by
``meta["eos_id"]`` -- plus ``meta.json`` and the tokenizer.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from tst_train.errors import UserError

SPLITS = ("train", "val")
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def _prepare_hint(data_dir: str) -> str:
    return f"run `tst prepare --input ... --out {data_dir}` first"


def read_meta(data_dir) -> dict:
    """meta.json of a data folder, parsed (no consistency checks; see `check_data_dir`)."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise UserError(f"data dir {data_dir} does not exist: {_prepare_hint(data_dir)}")
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        raise UserError(f"data dir {data_dir} has no meta.json: {_prepare_hint(data_dir)}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): re-run `tst prepare ... --out {data_dir} --overwrite`") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a JSON object: re-run `tst prepare ... --out {data_dir} --overwrite`")
    return meta


def check_data_dir(data_dir) -> dict:
    """Validate a data folder (meta.json parses and has the needed fields; train.bin/val.bin exist and
    their sizes match the token counts and dtype) and return its meta; else raise UserError."""
    data_dir = os.fspath(data_dir)
    meta = read_meta(data_dir)
    redo = f"re-run `tst prepare ... --out {data_dir} --overwrite`"
    vs = meta.get("vocab_size")
    if not isinstance(vs, int) or vs <= 0:
        raise UserError(f"{data_dir}/meta.json has no valid vocab_size: {redo}")
    if meta.get("dtype") not in _DTYPES:
        raise UserError(f"{data_dir}/meta.json has dtype {meta.get('dtype')!r}, expected uint16 or uint32: {redo}")
    if not isinstance(meta.get("eos_id"), int):
        raise UserError(f"{data_dir}/meta.json has no eos_id: {redo}")
    itemsize = np.dtype(_DTYPES[meta["dtype"]]).itemsize
    splits = meta.get("splits")
    if not isinstance(splits, dict):
        raise UserError(f"{data_dir}/meta.json has no splits: {redo}")
    for name in SPLITS:
        info = splits.get(name)
        if not isinstance(info, dict) or not isinstance(info.get("tokens"), int) or info["tokens"] < 0:
            raise UserError(f"{data_dir}/meta.json has no token count for split {name!r}: {redo}")
        path = os.path.join(data_dir, f"{name}.bin")
        if not os.path.isfile(path):
            raise UserError(f"data dir {data_dir} has no {name}.bin: {redo}")
        size, want = os.path.getsize(path), info["tokens"] * itemsize
        if size != want:
            raise UserError(f"{path} has {size:,} bytes but meta.json says {info['tokens']:,} {meta['dtype']} tokens "
                            f"({want:,} bytes): the file is truncated or from another run; {redo}")
    return meta


def load_split(data_dir, split: str) -> np.ndarray:
    """The 1-D token stream of `split` ("train" or "val"), memory-mapped read-only."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    meta = check_data_dir(data_dir)
    n = meta["splits"][split]["tokens"]
    dtype = _DTYPES[meta["dtype"]]
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(os.path.join(os.fspath(data_dir), f"{split}.bin"), dtype=dtype, mode="r", shape=(n,))


def check_vocab(meta: dict, model_vocab_size: int) -> None:
    """UserError when the data's vocabulary does not fit the model's embedding table."""
    vs = int(meta["vocab_size"])
    if vs > int(model_vocab_size):
        raise UserError(f"the data's vocabulary has {vs:,} tokens but the model's has only {int(model_vocab_size):,}: "
                        f"set the model vocab_size to at least {vs:,} (or prepare the data with a smaller vocabulary)")


def _as_stream(data_dir_or_array, split: str) -> np.ndarray:
    if isinstance(data_dir_or_array, (str, os.PathLike)):
        return load_split(data_dir_or_array, split)
    if isinstance(data_dir_or_array, torch.Tensor):
        arr = data_dir_or_array.detach().cpu().numpy()
    else:
        arr = np.asarray(data_dir_or_array)
    if arr.ndim != 1:
        raise ValueError(f"token stream must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"token stream must hold integers, got {arr.dtype}")
    return arr


class TokenLoader:
    """A deterministic sequential stream over one split, sliced per rank.

    ``next_batch(batch_size, row_tokens, row_stride)`` builds a GLOBAL batch of ``batch_size``
    rows; row ``j`` is ``stream[pos + j*row_stride : pos + j*row_stride + row_tokens]``, and this
    rank gets rows ``[rank*batch_size//world_size, (rank+1)*batch_size//world_size)``. Then
    ``pos += batch_size * row_stride``. ``row_tokens`` may exceed ``row_stride`` (e.g. seq_len+1
    tokens with stride seq_len: the 1-token lookahead for next-token targets), so consecutive rows
    -- and consecutive batches -- overlap by exactly ``row_tokens - row_stride`` tokens and the data
    is otherwise read once, in order, with no gap. Because only ``pos`` is carried between calls,
    the row geometry may change between batches (TST's phase switch to s-times longer rows) and the
    stream continues seamlessly. When a batch would read past the end, the loader wraps: ``pos =
    0``, ``epoch += 1``, and the batch is read from the start (no partial batches).
    """

    def __init__(self, data_dir_or_array, split: str = "train", *, rank: int = 0, world_size: int = 1):
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        self._data = _as_stream(data_dir_or_array, split)
        self.split = split
        self.rank = rank
        self.world_size = world_size
        self._pos = 0
        self._epoch = 0
        self._consumed = 0

    @property
    def num_tokens(self) -> int:
        return int(self._data.shape[0])

    @property
    def position(self) -> int:
        return self._pos

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def tokens_consumed(self) -> int:
        return self._consumed

    def next_batch(self, batch_size: int, row_tokens: int, row_stride: int) -> torch.Tensor:
        """This rank's rows of the next global batch, as a (batch_size // world_size, row_tokens) LongTensor."""
        for name, v in (("batch_size", batch_size), ("row_tokens", row_tokens), ("row_stride", row_stride)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        batch_size, row_tokens, row_stride = int(batch_size), int(row_tokens), int(row_stride)
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size {self.world_size}")
        n = self.num_tokens
        span = (batch_size - 1) * row_stride + row_tokens
        if row_tokens > n or span > n:
            raise UserError(f"dataset too small: a batch of {batch_size} rows of {row_tokens} tokens "
                            f"(stride {row_stride}) spans {span:,} tokens but the {self.split} split has {n:,}; "
                            "use more data or a smaller batch / sequence length")
        if self._pos + span > n:
            self._pos = 0
            self._epoch += 1
        lo = self.rank * batch_size // self.world_size
        hi = (self.rank + 1) * batch_size // self.world_size
        start = self._pos + lo * row_stride
        if row_stride == row_tokens:  # rows tile a contiguous slice
            rows = np.asarray(self._data[start:start + (hi - lo) * row_tokens]).reshape(hi - lo, row_tokens)
        else:
            rows = np.stack([np.asarray(self._data[start + k * row_stride:start + k * row_stride + row_tokens])
                             for k in range(hi - lo)])
        self._pos += batch_size * row_stride
        self._consumed += batch_size * row_stride
        return torch.from_numpy(rows.astype(np.int64))

    def state_dict(self) -> dict:
        return {"position": self._pos, "epoch": self._epoch, "tokens_consumed": self._consumed}

    def load_state_dict(self, d: dict) -> None:
        try:
            pos, epoch, consumed = int(d["position"]), int(d["epoch"]), int(d["tokens_consumed"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"bad data-loader state {d!r}: expected position, epoch and tokens_consumed "
                            "(corrupt checkpoint?)") from None
        if not 0 <= pos <= self.num_tokens or epoch < 0 or consumed < 0:
            raise UserError(f"data-loader state position {pos:,} does not fit the {self.split} split of "
                            f"{self.num_tokens:,} tokens: resuming with a different data dir?")
        self._pos, self._epoch, self._consumed = pos, epoch, consumed


class ValBatches(list):
    """A list of (B, seq_len + 1) LongTensors, plus what they cover:

    ``tokens``    -- number of predicted (target) tokens, = windows * seq_len
    ``windows``   -- number of rows in all batches
    ``truncated`` -- True when the val split was smaller than the requested budget (all of it is used)
    ``available`` -- number of tokens in the val split
    """

    tokens: int
    windows: int
    truncated: bool
    available: int


def val_batches(data_dir_or_array, seq_len: int, budget_tokens: int, batch_size: int = 1) -> ValBatches:
    """Fixed held-out evaluation windows from the START of val.bin.

    Window ``k`` is ``val[k*seq_len : k*seq_len + seq_len + 1]`` (inputs + next-token targets; windows
    do not overlap in their targets, stride ``seq_len``), for ``k < max(1, budget_tokens // seq_len)``
    -- so the same tokens are evaluated every time, whatever the training setup. If val.bin holds
    fewer windows, all complete windows are used and ``.truncated`` is True. Windows are grouped
    into (``batch_size``, seq_len + 1) LongTensors (the last one may have fewer rows). Returns a
    `ValBatches` list; ``.tokens`` is the number of target tokens covered.
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    if not isinstance(budget_tokens, int) or budget_tokens < 1:
        raise ValueError(f"budget_tokens must be a positive int, got {budget_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    val = _as_stream(data_dir_or_array, "val")
    n = int(val.shape[0])
    avail = (n - 1) // seq_len if n > 0 else 0
    if avail < 1:
        raise UserError(f"the validation split has {n:,} tokens, fewer than one window of seq_len+1 = {seq_len + 1}: "
                        "prepare the data with a larger --val-fraction")
    want = max(1, budget_tokens // seq_len)
    windows = min(want, avail)
    data = np.asarray(val[:windows * seq_len + 1]).astype(np.int64)
    idx = np.arange(windows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    rows = torch.from_numpy(data[idx])
    out = ValBatches(rows[i:i + batch_size] for i in range(0, windows, batch_size))
    out.tokens = windows * seq_len
    out.windows = windows
    out.truncated = windows < want
    out.available = n
    return out
