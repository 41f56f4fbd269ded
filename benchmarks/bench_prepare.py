#!/usr/bin/env python3
"""Benchmark `tst prepare`: throughput against the tokenizer's own `encode_batch` on the same cores,
peak resident memory on a 50 MB and a 500 MB input, and the time to resume after a kill at 50 %.

    python benchmarks/bench_prepare.py             # the full run (~25 min on the shared 2-core VM)
    python benchmarks/bench_prepare.py --quick     # a smoke test on 1 MB of the bundled corpus (~15 s)

Inputs, cached under .cache/ (git-ignored): the ~80 MB offline corpus of
``scripts/build_corpus.py --large`` (built on first use: needs apt-get download and pip download);
"in50" is its first 50 MB of documents as one JSONL file; "in500" is the corpus repeated (cycled) to
500 MB, as eight JSONL files. The tokenizer is a 32,768-token BPE that `tst prepare` trains on in50
(that run is measured too).

What is measured, each `tst prepare` in a fresh subprocess (its wall time from start to exit, its peak
RSS from ``wait4``):

- raw: a subprocess loads in50 into memory (not timed), then times ``encode_batch`` (and
  ``encode_batch_fast``) over it in batches of ~8 MiB of text -- the tokenizer alone, all cores.
- prepare in50 with ``--tokenizer`` (the whole command: count pass, tokenize, merge, rename),
  interleaved with the raw runs (raw, prepare, raw, prepare, ...) so both see the same background load.
  tokens/s counts the document tokens (the end-of-text separators excluded, as in raw).
- prepare in500 with ``--tokenizer``, once.
- kill at 50 %: SIGKILL once half of in50's chunks are tokenized, then the rerun's wall time, and a
  byte comparison of its output with the uninterrupted run's.

Medians of ``--repeats`` runs. The report (markdown) goes to stdout and to ``--report`` if given.
"""
from __future__ import annotations

import argparse
import glob
import json
import lzma
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, ".cache")
MB = 1_000_000


def log(msg: str) -> None:
    print(f"[bench_prepare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    import tokenizers

    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "tokenizers": tokenizers.__version__, "load_avg": os.getloadavg()}


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------

def corpus_files(quick: bool) -> list[str]:
    if quick:
        return ["bundled"]
    large = os.path.join(CACHE, "large")
    files = sorted(glob.glob(os.path.join(large, "*.jsonl.xz")))
    if not files:
        log("building the offline corpus (scripts/build_corpus.py --large)")
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build_corpus.py"), "--no-bundled",
                        "--large", large, "--cache", os.path.join(CACHE, "pkgs")], check=True)
        files = sorted(glob.glob(os.path.join(large, "*.jsonl.xz")))
    return files


def corpus_texts(files: list[str]):
    """The corpus documents (texts), in file order."""
    if files == ["bundled"]:
        from tst_train.data.sources import iter_documents

        yield from iter_documents("bundled")
        return
    for path in files:
        with lzma.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def write_input(files: list[str], folder: str, total_mb: float, n_files: int) -> dict:
    """`total_mb` of document text (UTF-8), cycling through the corpus, as `n_files` JSONL files."""
    if os.path.isfile(os.path.join(folder, "done.json")):
        with open(os.path.join(folder, "done.json")) as f:
            return json.load(f)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    want, per_file = int(total_mb * MB), int(total_mb * MB) // n_files + 1
    written = docs = 0
    k, out, in_file = 0, None, 0
    while written < want:
        for text in corpus_texts(files):
            if out is None or in_file >= per_file:
                if out:
                    out.close()
                out, in_file = open(os.path.join(folder, f"part-{k:03d}.jsonl"), "w", encoding="utf-8"), 0
                k += 1
            n = len(text.encode("utf-8"))
            out.write(json.dumps({"text": text}) + "\n")
            written, in_file, docs = written + n, in_file + n, docs + 1
            if written >= want:
                break
    out.close()
    info = {"text_bytes": written, "documents": docs, "files": k}
    with open(os.path.join(folder, "done.json"), "w") as f:
        json.dump(info, f)
    return info


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------

def run_measured(cmd: list[str], kill_when=None) -> dict:
    """Run `cmd`; its wall time, peak RSS (MiB) and output. `kill_when()` is polled: True -> SIGKILL."""
    import tempfile

    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fout, stderr=ferr, text=True)
        killed = False
        while True:  # wait4 gives the child's own rusage: ru_maxrss is its peak RSS
            pid, status, usage = os.wait4(p.pid, 0 if kill_when is None else os.WNOHANG)
            if pid:
                break
            if kill_when():
                os.kill(p.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if p.returncode != 0 and not killed:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "stdout": out, "stderr": err, "killed": killed}


def prepare_cmd(inputs: list[str], out: str, *extra: str) -> list[str]:
    # what the `tst` console script runs (`python -m tst` would first import the torch-only core package)
    return [sys.executable, "-c", "import sys; from tst_train.cli import main; sys.exit(main())", "prepare", "--input", *inputs, "--out", out, "--overwrite", *extra]


def prepare_run(inputs: list[str], out: str, *extra: str, kill_when=None) -> dict:
    r = run_measured(prepare_cmd(inputs, out, *extra), kill_when)
    if not r["killed"]:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
        sp = meta["splits"]
        r["tokens"] = sp["train"]["tokens"] + sp["val"]["tokens"]
        r["doc_tokens"] = r["tokens"] - sp["train"]["documents"] - sp["val"]["documents"]  # without separators
        r["tok_per_s"] = r["doc_tokens"] / r["wall_s"]
        r["tok_per_cpu_s"] = r["doc_tokens"] / r["cpu_s"]  # the whole process: start-up, count, tokenize, merge
        r["stage_line"] = next((line for line in r["stderr"].splitlines() if line.startswith("prepared ")), "")
    return r


RAW_SCRIPT = r"""
import json, sys, time
from tokenizers import Tokenizer
from tst_train.data.sources import read_documents
docs = read_documents(sys.argv[1:-2])
tok = Tokenizer.from_file(sys.argv[-2])
fn = getattr(tok, sys.argv[-1])
batches, cur, w = [], [], 0
for d in docs:
    cur.append(d); w += len(d.encode())
    if w >= 8 << 20:
        batches.append(cur); cur, w = [], 0
batches.append(cur)
t, c = time.perf_counter(), time.process_time(); n = 0
for b in batches:
    n += sum(len(e.ids) for e in fn(b, add_special_tokens=False))
dt, dc = time.perf_counter() - t, time.process_time() - c  # process_time: CPU time of all threads
print(json.dumps({"doc_tokens": n, "seconds": dt, "tok_per_s": n / dt, "cpu_s": dc, "tok_per_cpu_s": n / dc}))
"""


def raw_run(inputs: list[str], tok: str, fn: str) -> dict:
    r = run_measured([sys.executable, "-c", RAW_SCRIPT, *inputs, tok, fn])
    return dict(json.loads(r["stdout"]), peak_rss_mib=r["peak_rss_mib"])


def files_of(folder: str) -> dict[str, bytes]:
    return {fn: open(os.path.join(folder, fn), "rb").read() for fn in sorted(os.listdir(folder))}


def chunks_done(work: str) -> tuple[int, int]:
    """(chunks tokenized, chunks planned) of an unfinished preparation."""
    try:
        with open(os.path.join(work, "plan.json")) as f:
            total = len(json.load(f)["chunks"])
    except (OSError, ValueError):
        return 0, 0
    done = len(glob.glob(os.path.join(work, "chunks", "*.npy")))
    return done, total


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 MB / 3 MB of the bundled corpus, 1 repeat")
    ap.add_argument("--repeats", type=int, default=None, help="runs of each measurement (default 3; --quick 1)")
    ap.add_argument("--small-mb", type=float, default=None, help="the small input (default 50; --quick 1)")
    ap.add_argument("--big-mb", type=float, default=None, help="the big input (default 500; --quick 3)")
    ap.add_argument("--vocab-size", type=int, default=None, help="the BPE trained on the small input (default 32768)")
    ap.add_argument("--work", default=None, help="inputs and outputs (default .cache/bench_prepare[-quick], git-ignored)")
    ap.add_argument("--report", default=None, help="also write the markdown report here")
    args = ap.parse_args(argv)
    for name, full, quick in (("repeats", 3, 1), ("small_mb", 50, 1), ("big_mb", 500, 3), ("vocab_size", 32768, 512),
                              ("work", os.path.join(CACHE, "bench_prepare"), os.path.join(CACHE, "bench_prepare-quick"))):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    os.makedirs(args.work, exist_ok=True)
    env = machine()
    log(f"machine: {env}")
    files = corpus_files(args.quick)
    small = write_input(files, os.path.join(args.work, f"in{args.small_mb:g}"), args.small_mb, 1)
    big = write_input(files, os.path.join(args.work, f"in{args.big_mb:g}"), args.big_mb, 8)
    small_in = sorted(glob.glob(os.path.join(args.work, f"in{args.small_mb:g}", "*.jsonl")))
    big_in = sorted(glob.glob(os.path.join(args.work, f"in{args.big_mb:g}", "*.jsonl")))
    out = lambda name: os.path.join(args.work, name)  # noqa: E731

    log(f"BPE-{args.vocab_size} trained by tst prepare on {small['text_bytes'] / MB:.0f} MB")
    bpe = prepare_run(small_in, out("bpe"), "--vocab-size", str(args.vocab_size))
    tok = os.path.join(out("bpe"), "tokenizer.json")

    raws, fasts, preps = [], [], []
    for k in range(args.repeats):
        log(f"repeat {k + 1}/{args.repeats}: raw encode_batch, prepare, raw encode_batch_fast")
        raws.append(raw_run(small_in, tok, "encode_batch"))
        preps.append(prepare_run(small_in, out(f"small-{k}"), "--tokenizer", tok))
        fasts.append(raw_run(small_in, tok, "encode_batch_fast"))
    log(f"prepare {big['text_bytes'] / MB:.0f} MB")
    bigrun = prepare_run(big_in, out("big"), "--tokenizer", tok)
    shutil.rmtree(out("big"), ignore_errors=True)

    log("kill at 50 %, then resume")
    work = out("killed") + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out("killed"), ignore_errors=True)
    state = {}

    def half_done() -> bool:
        done, total = chunks_done(work)
        state["at"] = (done, total)
        return total > 0 and done >= total / 2

    killed = run_measured(prepare_cmd(small_in, out("killed"), "--tokenizer", tok), kill_when=half_done)
    resumed = run_measured(prepare_cmd(small_in, out("killed"), "--tokenizer", tok))
    identical = files_of(out("killed")) == files_of(out("small-0"))
    env["load_avg_end"] = os.getloadavg()

    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    report = render(env, args, small, big, bpe, raws, fasts, preps, bigrun, killed, resumed, state, identical, med)
    print(report)
    if args.report:
        with open(args.report, "w") as f:
            f.write(report)
    for k in range(args.repeats):
        shutil.rmtree(out(f"small-{k}"), ignore_errors=True)
    shutil.rmtree(out("killed"), ignore_errors=True)
    return 0 if identical and not os.path.exists(work) else 1


def render(env, args, small, big, bpe, raws, fasts, preps, bigrun, killed, resumed, state, identical, med) -> str:
    raw_tps, fast_tps, prep_tps = med(raws, "tok_per_s"), med(fasts, "tok_per_s"), med(preps, "tok_per_s")
    raw_cps, fast_cps, prep_cps = med(raws, "tok_per_cpu_s"), med(fasts, "tok_per_cpu_s"), med(preps, "tok_per_cpu_s")
    full = med(preps, "wall_s")
    done, total = state.get("at", (0, 0))
    if killed["killed"]:
        first = f"SIGKILL after {killed['wall_s']:.1f} s with {done} of {total} chunks tokenized; the rerun took"
    else:
        first = f"not killed (the run finished first: {total} chunk(s)); a rerun took"
    kill_line = (f"Kill at 50 %: {first} **{resumed['wall_s']:.1f} s** (an uninterrupted run: {full:.1f} s; killed + "
                 f"resumed {killed['wall_s'] + resumed['wall_s']:.1f} s), peak RSS {resumed['peak_rss_mib']:.0f} MiB; "
                 f"output {'byte-identical to' if identical else 'DIFFERENT from'} the uninterrupted run's.")
    lines = [
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}; command: `python benchmarks/bench_prepare.py"
        f"{' --quick' if args.quick else ''}`",
        f"- CPU: {env['cpu']}, {env['cores']} logical cores; python {env['python']}, tokenizers {env['tokenizers']}",
        f"- load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in env['load_avg'])}; at end "
        f"{', '.join(f'{x:.2f}' for x in env['load_avg_end'])}",
        f"- inputs: small = {small['text_bytes'] / MB:.1f} MB of text, {small['documents']:,} documents, 1 JSONL file; "
        f"big = {big['text_bytes'] / MB:.1f} MB, {big['documents']:,} documents, {big['files']} JSONL files",
        f"- tokenizer: BPE-{args.vocab_size} trained by `tst prepare --vocab-size {args.vocab_size}` on the small "
        f"input: {bpe['wall_s']:.1f} s, peak RSS {bpe['peak_rss_mib']:.0f} MiB",
        f"- medians of {args.repeats} interleaved runs; tokens/s counts document tokens (separators excluded); CPU "
        "time is user + system of all threads (raw: of the encode loop only; prepare: of the whole process)",
        "",
        "| measurement | tokens | wall | tokens/s (wall) | vs raw encode_batch | CPU time | tokens per CPU-s | vs raw | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| raw `encode_batch`, small, in memory | {raws[0]['doc_tokens']:,} | {med(raws, 'seconds'):.1f} s | "
        f"{raw_tps:,.0f} | 1.00 | {med(raws, 'cpu_s'):.1f} s | {raw_cps:,.0f} | 1.00 | "
        f"{med(raws, 'peak_rss_mib'):.0f} MiB (corpus in memory) |",
        f"| raw `encode_batch_fast`, small, in memory | {fasts[0]['doc_tokens']:,} | {med(fasts, 'seconds'):.1f} s | "
        f"{fast_tps:,.0f} | {fast_tps / raw_tps:.2f} | {med(fasts, 'cpu_s'):.1f} s | {fast_cps:,.0f} | "
        f"{fast_cps / raw_cps:.2f} | {med(fasts, 'peak_rss_mib'):.0f} MiB |",
        f"| `tst prepare --tokenizer`, small | {preps[0]['doc_tokens']:,} | {full:.1f} s | {prep_tps:,.0f} | "
        f"**{prep_tps / raw_tps:.2f}** (vs fast {prep_tps / fast_tps:.2f}) | {med(preps, 'cpu_s'):.1f} s | "
        f"{prep_cps:,.0f} | **{prep_cps / raw_cps:.2f}** (vs fast {prep_cps / fast_cps:.2f}) | "
        f"**{med(preps, 'peak_rss_mib'):.0f} MiB** |",
        f"| `tst prepare --tokenizer`, big | {bigrun['doc_tokens']:,} | {bigrun['wall_s']:.1f} s | "
        f"{bigrun['tok_per_s']:,.0f} | {bigrun['tok_per_s'] / raw_tps:.2f} | {bigrun['cpu_s']:.1f} s | "
        f"{bigrun['tok_per_cpu_s']:,.0f} | {bigrun['tok_per_cpu_s'] / raw_cps:.2f} | **{bigrun['peak_rss_mib']:.0f} MiB** |",
        "",
        f"Stage times (from `tst prepare`'s last line): small run 1: `{preps[0]['stage_line'].split('(')[-1].rstrip(')')}`; "
        f"big: `{bigrun['stage_line'].split('(')[-1].rstrip(')')}`.",
        "",
        kill_line,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
