#!/usr/bin/env python
"""Peak memory of `tst prepare` on one large single-line document, with and without tokenizing it in pieces.

    python benchmarks/bench_long_document.py --sizes-mb 1,10,50 --out benchmarks/long_document.md

Each size: a one-line text file of that many MB (the bundled corpus joined with spaces, repeated), prepared with the
bundled corpus beside it (a data folder needs documents to hold out for validation), in a
fresh process with a 4,096-token BPE; the process's peak resident memory (``ru_maxrss`` of the child) and wall time.
``pieces`` is today's path (a document over ``LONG_DOC_CHARS`` is tokenized in pieces cut where the pre-tokenizer
splits anyway, same ids); ``whole`` sets that limit out of reach, as before. ``--whole-up-to-mb`` bounds the sizes
run the old way (it needs ~170x the document in memory).
"""
from __future__ import annotations

import argparse
import json
import lzma
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys
sys.path.insert(0, {src!r})
import tst_train.data.tokenizer as tokenizer
if {whole}:
    tokenizer.LONG_DOC_CHARS = 1 << 62
import resource
from tst_train.cli import main
code = main(["prepare", "--input", {doc!r}, "bundled", "--out", {out!r}, "--vocab-size", "4096"])
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def corpus_text() -> str:
    with lzma.open(ROOT / "src" / "tst_train" / "corpus" / "bundled.jsonl.xz", "rt", encoding="utf-8") as f:
        return " ".join(" ".join(json.loads(line)["text"].split()) for line in f)


def run(doc: Path, out: Path, whole: bool) -> tuple[float, float]:
    code = CHILD.format(src=str(ROOT / "src"), whole=whole, doc=str(doc), out=str(out))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_KIB"))
    return peak / 1024, seconds  # MiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mb", default="1,10,50")
    p.add_argument("--whole-up-to-mb", type=float, default=10)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    text = corpus_text()
    rows = ["| document | path | peak RSS (MiB) | wall (s) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as work:
        for mb in [float(x) for x in args.sizes_mb.split(",")]:
            size = int(mb * 1e6)
            doc = Path(work) / f"doc{mb:g}.txt"
            doc.write_text((text * (size // len(text) + 1))[:size], encoding="utf-8")
            for whole in (False, True):
                if whole and mb > args.whole_up_to_mb:
                    continue
                rss, seconds = run(doc, Path(work) / f"out{mb:g}{whole}", whole)
                rows.append(f"| {mb:g} MB, one line | {'whole (before)' if whole else 'pieces'} | {rss:,.0f} | {seconds:.0f} |")
                print(rows[-1], flush=True)
    args.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
