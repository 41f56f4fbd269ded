"""``tst prepare``: argument parsing for ``tst_train.data.prepare.prepare``."""
from __future__ import annotations

import argparse

from ..data.prepare import DEFAULT_SHARD_TOKENS, DEFAULT_VOCAB_SIZE, prepare
from .args import ArgumentParser

DESCRIPTION = ("Tokenize documents into a training data directory (tokenizer, sharded token files with a "
               "document index, meta.json). Streams the inputs; a killed run, rerun with the same arguments, "
               "continues where it stopped.")
EPILOG = """scale-out (e.g. a SLURM array; see scripts/slurm_prepare.sh):
  tst prepare ARGS --plan-only              # one job: count documents, draw the split, train/load the tokenizer
  tst prepare ARGS --task I/N               # N jobs: tokenize the I-th of N ranges of the input
  tst prepare ARGS                          # one job: merge into the shards (and tokenize anything missing)"""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="tst prepare", description=DESCRIPTION)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="`bundled`, text files or folders, .jsonl[.gz|.xz], .parquet, hf:NAME[:SPLIT], or token files "
                        "(.bin nanoGPT/llm.c, .ds datatrove, .npy) with --tokenizer; any other file named here is "
                        "read as UTF-8 text")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="output data folder (work in progress: DATA_DIR.partial)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--vocab-size", type=int, default=None, metavar="N",
                   help=f"train a byte-level BPE of N tokens on the train split (default {DEFAULT_VOCAB_SIZE})")
    g.add_argument("--tokenizer", default=None, metavar="SPEC",
                   help="use an existing tokenizer: path/to/tokenizer.json or tiktoken:NAME (required for token files)")
    p.add_argument("--val-fraction", type=float, default=0.02, metavar="F",
                   help="fraction of documents held out for validation (default 0.02, at least 1 document)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed for the train/val split and order (default 0)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="1 = tokenizer training and encoding in this thread only; "
                   "otherwise parallel on all cores (cap with RAYON_NUM_THREADS); the output is the same")
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="JSONL field / parquet or HF column: text, or a list of token ids (default text)")
    p.add_argument("--max-docs", type=int, default=None, metavar="N", help="use only the first N documents")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, metavar="N",
                   help=f"tokens per output shard; a shard ends at the first document end after N "
                        f"(default {DEFAULT_SHARD_TOKENS:,})")
    p.add_argument("--task", default=None, metavar="I/N",
                   help="tokenize only the I-th of N ranges of the input (0 <= I < N; after --plan-only)")
    p.add_argument("--plan-only", action="store_true",
                   help="stop after the plan (document count, split, tokenizer), before the --task runs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty DATA_DIR (and an unfinished DATA_DIR.partial made with other arguments)")
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def prepare_command(argv: list[str] | None = None) -> int:
    args = build_parser(ArgumentParser(prog="tst prepare", description=DESCRIPTION)).parse_args(argv)
    from ..errors import io_errors
    with io_errors(f"preparing {args.out}"):  # disk full, read-only: one line naming the cause
        prepare(args.input, args.out, vocab_size=args.vocab_size, tokenizer=args.tokenizer,
                val_fraction=args.val_fraction, seed=args.seed, workers=args.workers, text_field=args.text_field,
                max_docs=args.max_docs, overwrite=args.overwrite, shard_tokens=args.shard_tokens, task=args.task,
                plan_only=args.plan_only)
    return 0
