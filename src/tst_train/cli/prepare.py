"""``tst prepare``: argument parsing for ``tst_train.data.prepare.prepare``."""
from __future__ import annotations

import argparse

from ..data.prepare import DEFAULT_VOCAB_SIZE, prepare
from .args import ArgumentParser

DESCRIPTION = "Tokenize documents into a training data directory (tokenizer, token files, meta.json)."


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="tst prepare", description=DESCRIPTION)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="`bundled`, text files/folders (*.txt, *.md), .jsonl[.gz|.xz], .parquet, hf:NAME[:SPLIT]")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="output data folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--vocab-size", type=int, default=None, metavar="N",
                   help=f"train a byte-level BPE of N tokens on the train split (default {DEFAULT_VOCAB_SIZE})")
    g.add_argument("--tokenizer", default=None, metavar="SPEC",
                   help="use an existing tokenizer: path/to/tokenizer.json or tiktoken:NAME")
    p.add_argument("--val-fraction", type=float, default=0.02, metavar="F",
                   help="fraction of documents held out for validation (default 0.02, at least 1 document)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed for the train/val split (default 0)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="1 = tokenizer training and encoding in this thread only; "
                   "otherwise parallel on all cores (cap with RAYON_NUM_THREADS); the output is the same")
    p.add_argument("--text-field", default="text", metavar="NAME", help="JSONL field / parquet or HF column (default text)")
    p.add_argument("--max-docs", type=int, default=None, metavar="N", help="use only the first N documents")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty DATA_DIR")
    return p


def prepare_command(argv: list[str] | None = None) -> int:
    args = build_parser(ArgumentParser(prog="tst prepare", description=DESCRIPTION)).parse_args(argv)
    prepare(args.input, args.out, vocab_size=args.vocab_size, tokenizer=args.tokenizer,
            val_fraction=args.val_fraction, seed=args.seed, workers=args.workers, text_field=args.text_field,
            max_docs=args.max_docs, overwrite=args.overwrite)
    return 0
