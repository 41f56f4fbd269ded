#!/usr/bin/env python
"""Benchmark the multi-hot cross-entropy (MCE) and the fused LM-head + MCE.

Two tables, printed as markdown:

1. **MCE vs the paper's s-loop** (Listing 3: ``s`` mean-reduced ``F.cross_entropy`` calls on the same
   logits), forward + backward, for several bag sizes ``s`` and vocabulary sizes ``V``.
   Targets: speedup >= 0.5·s at s >= 4; peak memory <= 2/s of the loop's.
2. **Fused linear-MCE vs materialised logits** (``hidden @ W.T`` then our MCE), forward + backward.
   Targets: peak memory <= 20 % of the materialised path; time <= 1.3x.

Peak memory is the memory a forward + backward adds on top of its inputs (logits, or hidden and
weight): on CUDA ``max_memory_allocated`` minus the allocation before the step; on CPU the growth of the
process's resident-set high-water mark (``VmHWM`` reset through ``/proc/self/clear_refs``, falling
back to ``ru_maxrss``), with every case in a fresh subprocess so one case's freed memory cannot hide
another's. Times are medians over ``--repeats`` runs after one warm-up run (the warm-up is the run whose
memory is measured).

Usage::

    python benchmarks/bench_loss.py            # full run (CPU: about half an hour on 2 cores)
    python benchmarks/bench_loss.py --quick    # tiny sizes, a smoke test (seconds)
    python benchmarks/bench_loss.py --device cuda
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without install

from tst.bags import next_bag_targets  # noqa: E402
from tst import fused_linear_multi_hot_cross_entropy, multi_hot_cross_entropy  # noqa: E402

GIB = 2 ** 30
MIB = 2 ** 20


# ----------------------------------------------------------------------------- arguments and machine

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (a smoke test)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5; 1 with --quick)")
    p.add_argument("--mce-rows", type=int, default=None, help="rows N for the MCE table (CPU 2048, GPU 16384)")
    p.add_argument("--fused-rows", type=int, default=16384, help="rows N for the fused table")
    p.add_argument("--hidden", type=int, default=512, help="model width d for the fused table")
    p.add_argument("--mem-budget-gb", type=float, default=18.0,
                   help="largest materialised-logits case to run; larger ones run at a halved N")
    p.add_argument("--max-logits-gib", type=float, default=None,
                   help="cap on the materialised fp32 logits (N·V·4 bytes) in the fused table, to bound run time; "
                        "default 2 on CPU (N = 4096 at V = 131072), none on GPU")
    p.add_argument("--only", choices=["mce", "fused"], default=None, help="run one table only")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case (JSON) and print its result
    return p.parse_args(argv)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_header(args) -> str:
    dev = args.device
    lines = [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `python {' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}`",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"- torch {torch.__version__}, python {platform.python_version()}, device `{dev}`",
    ]
    if dev.startswith("cuda"):
        lines.append(f"- GPU: {torch.cuda.get_device_name(dev)}; bf16 autocast")
    avail = mem_available()
    if avail:
        lines.append(f"- host memory available at start: {avail / GIB:.1f} GiB")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- cases

def make_targets(n: int, vocab: int, s: int, device, gen) -> torch.Tensor:
    """Realistic next-bag targets ``(n, s)``: rows of up to 512 positions, the last one partly ignored."""
    L = min(n, 512)
    while n % L:
        L -= 1
    labels = torch.randint(0, vocab, (n // L, L * s), generator=gen)
    return next_bag_targets(labels, s).reshape(n, s).to(device)


def loop_mce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The paper's Listing 3 loop on already-shifted targets ``(N, s)``: s mean-reduced CE calls, uniform."""
    logits = logits.float()
    loss, wsum = 0.0, 0.0
    for i in range(targets.shape[-1]):
        loss = loss + 1.0 * F.cross_entropy(logits, targets[:, i], ignore_index=-100)
        wsum += 1.0
    return loss / wsum


def build_inputs(spec: dict) -> dict:
    """The case's tensors, shared by both implementations (so timing pairs see identical data)."""
    device = torch.device(spec["device"])
    gen = torch.Generator().manual_seed(0)
    n, vocab, s = spec["n"], spec["vocab"], spec["s"]
    out = {"targets": make_targets(n, vocab, s, device, gen)}
    if spec["table"] == "mce":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # autocast models hand over bf16
        out["logits"] = (torch.randn(n, vocab, generator=gen) * 2).to(device, dtype).requires_grad_(True)
    else:
        d = spec["d"]
        out["hidden"] = torch.randn(n, d, generator=gen).to(device).requires_grad_(True)
        out["weight"] = (torch.randn(vocab, d, generator=gen) / d ** 0.5).to(device).requires_grad_(True)
    return out


def build_step(spec: dict, impl: str, inputs: dict):
    """A zero-argument forward+backward closure for ``impl``; returns (step, leaves)."""
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    targets = inputs["targets"]
    if spec["table"] == "mce":
        logits = inputs["logits"]
        fn = (lambda: loop_mce(logits, targets)) if impl == "loop" else \
             (lambda: multi_hot_cross_entropy(logits, targets))
        leaves = [logits]
    else:
        hidden, weight = inputs["hidden"], inputs["weight"]
        if impl == "fused":
            fn = lambda: fused_linear_multi_hot_cross_entropy(hidden, weight, targets)  # noqa: E731
        else:
            fn = lambda: multi_hot_cross_entropy(hidden @ weight.t(), targets)  # noqa: E731
        leaves = [hidden, weight]

    def step() -> float:
        for t in leaves:
            t.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = fn()
        loss.backward()
        value = loss.item()  # also synchronises CUDA
        for t in leaves:
            t.grad = None  # do not carry one implementation's gradients into the other's run
        return value

    return step, leaves


# ----------------------------------------------------------------------------- measurement

def _rss_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_of(step, device: torch.device, leaves) -> tuple[float, int, str]:
    """Run ``step`` once; return (loss, bytes it added on top of its inputs at peak, method)."""
    for t in leaves:
        t.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        loss = step()
        return loss, torch.cuda.max_memory_allocated(device) - base, "cuda_max_allocated"
    if _reset_hwm():
        base = _rss_status("VmRSS")
        loss = step()
        return loss, _rss_status("VmHWM") - base, "VmHWM"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    loss = step()
    return loss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base, "ru_maxrss"


def run_memory_here(spec: dict) -> dict:
    """Loss and peak memory of one forward+backward of ``spec['impl']`` (the process's first run)."""
    inputs = build_inputs(spec)
    step, leaves = build_step(spec, spec["impl"], inputs)
    loss, peak, method = peak_of(step, torch.device(spec["device"]), leaves)
    return {"loss": loss, "peak": peak, "mem_method": method}


def run_timing_here(spec: dict) -> dict:
    """Wall and CPU times of ``spec['impls']``, interleaved run by run.

    Interleaving (A B, B A, A B, …) exposes both implementations to the same background load, which
    matters on a shared machine; CPU time (all threads) is reported too because it is much less
    sensitive to other processes than wall time. One warm-up run each first.
    """
    inputs = build_inputs(spec)
    steps = {impl: build_step(spec, impl, inputs)[0] for impl in spec["impls"]}
    for step in steps.values():
        step()
    res = {impl: {"wall": [], "cpu": []} for impl in steps}
    order = list(steps)
    for _ in range(spec["repeats"]):
        for impl in order:
            w0, c0 = time.perf_counter(), time.process_time()
            steps[impl]()
            res[impl]["wall"].append(time.perf_counter() - w0)
            res[impl]["cpu"].append(time.process_time() - c0)
        order.reverse()
    return res


def _run(spec: dict, isolate: bool) -> dict:
    """Run a memory or timing job, in a fresh subprocess when ``isolate`` (clean RSS accounting on CPU)."""
    here = run_memory_here if spec["mode"] == "memory" else run_timing_here
    if not isolate:
        return here(spec)
    out = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_pair(spec: dict, impls: tuple[str, str], isolate: bool) -> dict:
    """Per implementation: loss, peak (own fresh process each) and median wall / CPU times (shared process)."""
    result = {impl: _run({**spec, "mode": "memory", "impl": impl}, isolate) for impl in impls}
    timing = _run({**spec, "mode": "timing", "impls": list(impls)}, isolate)
    for impl in impls:
        result[impl].update(timing[impl])
        result[impl]["wall_median"] = statistics.median(timing[impl]["wall"])
        result[impl]["cpu_median"] = statistics.median(timing[impl]["cpu"])
    print(f"  [{spec['table']} V={spec['vocab']} N={spec['n']} s={spec['s']}] "
          + json.dumps({k: {"wall": v["wall"], "cpu": v["cpu"]} for k, v in result.items()}), file=sys.stderr)
    return result


# ----------------------------------------------------------------------------- tables

def fmt_mem(b: int) -> str:
    return f"{b / GIB:.2f} GiB" if b >= GIB else f"{b / MIB:.0f} MiB"


def verdict(ok: bool, detail: str) -> str:
    return ("met" if ok else "**missed**") + f" ({detail})"


def mce_table(args, isolate: bool) -> str:
    cuda = args.device.startswith("cuda")
    n = args.mce_rows or (64 if args.quick else (16384 if cuda else 2048))
    vocabs = [512] if args.quick else [8192, 32768]
    sizes = [2, 4] if args.quick else [2, 4, 8, 16]
    rows = ["| V | s | loop wall | ours wall | speedup (wall) | speedup (CPU time) | target ≥0.5·s | loop peak | "
            "ours peak | mem ratio | target ≤2/s | loss rel. diff |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    method = "?"
    for vocab in vocabs:
        for s in sizes:
            spec = dict(table="mce", device=args.device, n=n, vocab=vocab, s=s, repeats=args.repeats)
            r = measure_pair(spec, ("loop", "ours"), isolate)
            loop, ours = r["loop"], r["ours"]
            method = loop["mem_method"]
            speed = loop["wall_median"] / ours["wall_median"]
            speed_cpu = loop["cpu_median"] / ours["cpu_median"]
            ratio = ours["peak"] / max(loop["peak"], 1)
            t_speed = verdict(speed >= 0.5 * s, f"{speed / (0.5 * s):.2f}× the target") if s >= 4 else "n/a (s<4)"
            t_mem = verdict(ratio <= 2 / s, f"{ratio:.3f} vs {2 / s:.3f}")
            diff = abs(loop["loss"] - ours["loss"]) / abs(loop["loss"])
            rows.append(f"| {vocab} | {s} | {loop['wall_median'] * 1e3:.0f} ms | {ours['wall_median'] * 1e3:.0f} ms | "
                        f"{speed:.2f}× | {speed_cpu:.2f}× | {t_speed} | {fmt_mem(loop['peak'])} | "
                        f"{fmt_mem(ours['peak'])} | {ratio:.3f} | {t_mem} | {diff:.1e} |")
    dtype = "bf16 logits (loss upcasts)" if cuda else "fp32"
    head = (f"### MCE (one log-sum-exp) vs the paper's s-loop (Listing 3), forward + backward\n\n"
            f"N = {n} rows, {dtype}; medians of {args.repeats} interleaved runs after one warm-up each; peak = "
            f"memory added on top of the logits ({method}). Loss rel. diff: the two agree up to the "
            f"normalisation of the partial last bag (see `tst.loss`).\n\n")
    return head + "\n".join(rows) + "\n"


def fused_rows_for(vocab: int, args) -> tuple[int, str]:
    """Rows for the fused table, halved while the materialised path would not fit the memory budget."""
    n = args.fused_rows
    budget = args.mem_budget_gb * GIB
    avail = mem_available()
    if avail and not args.device.startswith("cuda"):
        budget = min(budget, 0.75 * avail)
    note = ""
    cap = args.max_logits_gib
    if cap is None and not args.device.startswith("cuda"):
        cap = 2.0
    while cap and n > 1 and n * vocab * 4 > cap * GIB:
        n //= 2
        note = (f"N reduced to {n} to bound CPU run time: materialised fp32 logits capped at {cap:g} GiB "
                f"(`--max-logits-gib`)")
    # Materialised peak ≈ logits + their gradient (2·N·V·4 bytes) plus the (V, d) weight, its grad, hidden.
    while n > 1 and 2 * n * vocab * 4 + 3 * vocab * args.hidden * 4 > budget:
        n //= 2
        note = f"N reduced to {n}: the materialised path would need > {budget / GIB:.1f} GiB"
    return n, note


def fused_table(args, isolate: bool) -> str:
    cuda = args.device.startswith("cuda")
    d = 32 if args.quick else args.hidden
    vocabs = [1024] if args.quick else [32768, 131072]
    rows = ["| V | N | s | materialised wall | fused wall | time ratio (wall) | time ratio (CPU time) | target ≤1.3× | "
            "materialised peak | fused peak | mem ratio | target ≤20 % | loss rel. diff |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for vocab in vocabs:
        n, note = (256, "") if args.quick else fused_rows_for(vocab, args)
        if note:
            notes.append(f"- V = {vocab}: {note}.")
        for s in (1, 4):
            spec = dict(table="fused", device=args.device, n=n, d=d, vocab=vocab, s=s, repeats=args.repeats)
            r = measure_pair(spec, ("materialised", "fused"), isolate)
            mat, fus = r["materialised"], r["fused"]
            tr = fus["wall_median"] / mat["wall_median"]
            tr_cpu = fus["cpu_median"] / mat["cpu_median"]
            mr = fus["peak"] / max(mat["peak"], 1)
            diff = abs(mat["loss"] - fus["loss"]) / abs(mat["loss"])
            rows.append(f"| {vocab} | {n} | {s} | {mat['wall_median']:.2f} s | {fus['wall_median']:.2f} s | "
                        f"{tr:.2f}× | {tr_cpu:.2f}× | {verdict(tr <= 1.3, f'{tr:.2f}×')} | {fmt_mem(mat['peak'])} | "
                        f"{fmt_mem(fus['peak'])} | {mr * 100:.1f} % | {verdict(mr <= 0.2, f'{mr * 100:.1f} %')} | "
                        f"{diff:.1e} |")
    prec = "bf16 autocast" if cuda else "fp32"
    head = (f"### Fused linear-MCE vs materialised logits, forward + backward\n\n"
            f"d = {d}, {prec}, default chunk size; medians of {args.repeats} interleaved runs after one warm-up "
            f"each; peak = memory added on top of hidden and weight.\n\n")
    return head + "\n".join(rows) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.case:
        spec = json.loads(args.case)
        print(json.dumps(run_memory_here(spec) if spec["mode"] == "memory" else run_timing_here(spec)))
        return
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    isolate = not args.quick and not args.device.startswith("cuda")  # CPU RSS needs a clean process per case
    print(f"## bench_loss ({'quick' if args.quick else 'full'})\n\n{machine_header(args)}\n", flush=True)
    if args.quick:
        print("_Quick mode: sizes are far too small for these figures to mean anything (a smoke test)._\n")
    if args.only in (None, "mce"):
        print(mce_table(args, isolate), flush=True)
    if args.only in (None, "fused"):
        print(fused_table(args, isolate), flush=True)


if __name__ == "__main__":
    main()
