"""Reading a prepared data folder: the training stream (`TokenLoader`) and the fixed validation
windows (`val_batches`). The folder's format, its validation and the sharded token stream are in
``layout.py`` (re-exported here: ``check_data_dir``, ``load_split``, ``read_meta``).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from tst_train.data.layout import TokenStream, check_data_dir, load_split, read_meta
from tst_train.errors import UserError

__all__ = ["TokenLoader", "ValBatches", "check_data_dir", "check_vocab", "load_split", "read_meta", "val_batches"]


def check_vocab(meta: dict, model_vocab_size: int) -> None:
    """UserError when the data's vocabulary does not fit the model's embedding table."""
    vs = int(meta["vocab_size"])
    if vs > int(model_vocab_size):
        raise UserError(f"the data's vocabulary has {vs:,} tokens but the model's has only {int(model_vocab_size):,}: "
                        f"set the model vocab_size to at least {vs:,} (or prepare the data with a smaller vocabulary)")


def _as_stream(data_dir_or_array, split: str) -> TokenStream | np.ndarray:
    if isinstance(data_dir_or_array, (str, os.PathLike)):
        return load_split(data_dir_or_array, split)
    if isinstance(data_dir_or_array, TokenStream):
        return data_dir_or_array
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

    The stream of a data folder is its split's shards end to end (`TokenStream`): the same global
    order and state whatever the sharding. ``next_batch(..., return_doc_starts=True)`` also returns
    where documents begin, from the folder's document index (for document-aware bagging).
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

    def next_batch(self, batch_size: int, row_tokens: int, row_stride: int, *, return_doc_starts: bool = False):
        """This rank's rows of the next global batch, as a (batch_size // world_size, row_tokens) LongTensor.

        With ``return_doc_starts=True``: ``(rows, starts)``, where ``starts`` is a bool tensor of the same
        shape, True where a document begins (from the data folder's document index; needs a data folder
        or a `TokenStream`, not a bare array)."""
        for name, v in (("batch_size", batch_size), ("row_tokens", row_tokens), ("row_stride", row_stride)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        batch_size, row_tokens, row_stride = int(batch_size), int(row_tokens), int(row_stride)
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size {self.world_size}")
        if return_doc_starts and not isinstance(self._data, TokenStream):
            raise ValueError("document starts need a data folder (a TokenStream), not a bare token array")
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
        stop = start + (hi - lo - 1) * row_stride + row_tokens  # this rank's rows cover [start, stop)
        flat = np.asarray(self._data[start:stop])  # one read: (stop - start,)
        rows = _rows(flat, hi - lo, row_tokens, row_stride)  # (B_rank, row_tokens)
        self._pos += batch_size * row_stride
        self._consumed += batch_size * row_stride
        tokens = torch.from_numpy(rows.astype(np.int64))
        if not return_doc_starts:
            return tokens
        mask = np.zeros(stop - start, dtype=bool)
        mask[self._data.doc_starts(start, stop) - start] = True
        return tokens, torch.from_numpy(_rows(mask, hi - lo, row_tokens, row_stride))

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


def _rows(flat: np.ndarray, n_rows: int, row_tokens: int, row_stride: int) -> np.ndarray:
    """Rows ``flat[k*row_stride : k*row_stride + row_tokens]``: (n_rows, row_tokens), overlapping when
    row_tokens > row_stride (the next-token lookahead)."""
    if row_stride == row_tokens:  # rows tile the slice
        return flat[:n_rows * row_tokens].reshape(n_rows, row_tokens)
    return np.lib.stride_tricks.sliding_window_view(flat, row_tokens)[::row_stride][:n_rows].copy()


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
    """Fixed held-out evaluation windows from the START of the val split.

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
