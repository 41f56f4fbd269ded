"""Stage 1 of `tst prepare`: the plan. One streaming pass over the inputs counts the documents and cuts
them into chunks (the units of tokenization, resume and `--task`); the split is drawn; the tokenizer
is trained (on the training documents, streamed in a second pass) or loaded.

The split is by document and is the one `tst prepare` has always drawn: the document indices
``0..n-1`` (input order) are shuffled with ``random.Random(seed).shuffle``, the first
``max(1, round(val_fraction * n))`` of the shuffled order are the validation split (in that order),
the rest are the training split (in that order). The permutation is kept in a compact
``array('I')`` (4 bytes per document), not a list.
"""
from __future__ import annotations

import random
import sys
from array import array
from dataclasses import dataclass, field

import numpy as np

from tst_train.data import tokenizer as tokenizer_mod
from tst_train.data.sources import Leaf, ReadOptions, iter_from
from tst_train.data.tokenizer import Tokenizer, train_bpe
from tst_train.errors import UserError

CHUNK_WEIGHT = 8 << 20  # a chunk closes after ~8 MiB of text (the tokenization and resume unit)
CHUNK_DOCS = 1 << 16  # ... or 65,536 documents
MAX_SKIPPED_LISTED = 200  # skipped files named in the plan and meta.json (all are counted)


def doc_weight(doc) -> int:
    """A document's size for cutting chunks: its UTF-8 bytes, or 4 bytes per token of a pre-tokenized one."""
    if isinstance(doc, str):
        return len(doc) if doc.isascii() else len(doc.encode("utf-8"))
    return 4 * int(doc.size)


@dataclass
class Count:
    """What the counting pass found: chunks are [leaf, first document in the leaf, documents, weight]."""

    documents: int = 0
    chunks: list = field(default_factory=list)
    pretokenized: bool = False
    skipped: list = field(default_factory=list)
    skipped_count: int = 0


def count_documents(leaves: list[Leaf], opts: ReadOptions, n_inputs: int, max_docs: int | None,
                    skipped: list) -> Count:
    """Count the documents (up to `max_docs`) and cut them into chunks; `skipped` holds the folder walk's
    skipped files so far and collects the files found unreadable while reading."""
    from tqdm import tqdm

    out = Count(skipped=list(skipped[:MAX_SKIPPED_LISTED]), skipped_count=len(skipped))

    def on_skip(path: str, why: str) -> None:
        out.skipped_count += 1
        if len(out.skipped) < MAX_SKIPPED_LISTED:
            out.skipped.append([path, why])

    per_input = [0] * n_inputs
    last_input = n_inputs
    cur = None  # the open chunk
    with tqdm(desc="count", unit="doc", file=sys.stderr, disable=None, leave=False) as bar:
        for li, j, doc in iter_from(leaves, opts, on_skip=on_skip):
            if max_docs is not None and out.documents >= max_docs:
                last_input = leaves[li].input_index
                break
            if cur is None or cur[3] >= CHUNK_WEIGHT or cur[2] >= CHUNK_DOCS:
                cur = [li, j, 0, 0]
                out.chunks.append(cur)
            cur[2] += 1
            cur[3] += doc_weight(doc)
            out.documents += 1
            out.pretokenized |= not isinstance(doc, str)
            per_input[leaves[li].input_index] += 1
            bar.update()
    for i in range(min(last_input, n_inputs)):  # inputs after a --max-docs stop are not read
        if per_input[i] == 0:
            raise UserError(f"input {_input_name(leaves, i)!r} holds no (non-empty) documents"
                            + (f" ({out.skipped_count} file(s) skipped, e.g. {out.skipped[0][0]}: "
                               f"{out.skipped[0][1]})" if out.skipped else ""))
    if out.documents < 2:
        raise UserError(f"the input holds {out.documents} document(s); need at least 2 (one is held out "
                        "for validation): add documents or split the text into several files")
    return out


def _input_name(leaves: list[Leaf], i: int) -> str:
    for leaf in leaves:
        if leaf.input_index == i:
            return leaf.path
    return f"#{i}"


def split_order(n_docs: int, val_fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """(the shuffled document order, the number of validation documents): the first ones of the order."""
    order = array("I" if n_docs < 2**32 else "Q", range(n_docs))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(val_fraction * n_docs)), n_docs - 1)
    return np.frombuffer(order, dtype=np.uint32 if order.typecode == "I" else np.uint64), n_val


def train_tokenizer(leaves: list[Leaf], opts: ReadOptions, n_docs: int, val_docs: np.ndarray, vocab_size: int,
                    workers: int | None) -> Tokenizer:
    """A BPE trained on the training documents, streamed in input order (the result does not depend on
    the order: BPE training counts words)."""
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[val_docs] = True

    def texts():
        for i, (_, _, doc) in enumerate(iter_from(leaves, opts)):
            if i >= n_docs:
                return
            if not is_val[i]:  # a long document in pieces (the same word counts: cut where words split anyway)
                long = isinstance(doc, str) and len(doc) > tokenizer_mod.LONG_DOC_CHARS
                yield from tokenizer_mod.pieces_of(doc) if long else [doc]

    print(f"training a {vocab_size:,}-token BPE on {n_docs - len(val_docs):,} training documents", file=sys.stderr)
    return train_bpe(texts(), vocab_size, workers, length=n_docs - len(val_docs))
