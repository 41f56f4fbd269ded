#!/usr/bin/env python
"""bf16 loss tables for the GPU check (``scripts/gpu_check.sh``), forward + backward through the LM head.

1. **MCE vs the paper's s-loop, fused vs materialised** — N = 16384 rows, d = 2048, V ∈ {32768, 131072},
   s ∈ {1, 4, 8, 16}; bf16 hidden and LM-head weight. Implementations: ``loop`` (materialised logits, then
   Listing 3: ``s`` float32 ``F.cross_entropy`` calls), ``mce`` (materialised logits, then our one-LSE
   ``multi_hot_cross_entropy``), ``fused-torch`` and ``fused-triton`` (``fused_linear_multi_hot_cross_entropy``
   with each backend). Targets: fused-triton at s = 8 ≤ 1.15× its s = 1; its peak memory ≤ 20 % of ``mce``'s.
2. **s = 1 against the anchors** — ``ce`` (materialised logits + ``F.cross_entropy``), ``fused-triton``,
   Liger's fused linear CE, Cut Cross-Entropy (default gradient filter, and exact with ``filter_eps=None``).
   Targets: fused-triton no slower than Liger; within 1.5× of CCE.

Time: median of ``--repeats`` runs after one warm-up, CUDA events (host clock on CPU). Peak: CUDA
``max_memory_allocated`` during one forward + backward, minus what was allocated before it (so it
includes the gradients the step produces). A case whose estimated memory exceeds what the GPU has free is
not run and says so. ``--dry-run``: tiny shapes on the CPU (fused-triton through Triton's interpreter);
CUDA-only implementations are listed as skipped. Writes ``OUT/loss.md`` (rewritten after every row, so
a timeout keeps what was measured) and ``OUT/loss.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_loss (which puts src/ on the path)

from bench_loss import GIB, fmt_mem, loop_mce, make_targets, verdict  # noqa: E402

from tst import fused_linear_multi_hot_cross_entropy, multi_hot_cross_entropy  # noqa: E402

S_LOOP_IMPLS = ("loop", "mce", "fused-torch", "fused-triton")
ANCHOR_IMPLS = ("ce", "fused-triton", "liger", "cce", "cce-exact")
CUDA_ONLY = {"liger", "cce", "cce-exact"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory for loss.md and loss.json")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (what make test runs)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per case (median)")
    p.add_argument("--budget-s", type=float, default=240.0, help="stop starting new cases after this many seconds")
    return p.parse_args(argv)


def shapes(dry: bool) -> dict:
    if dry:
        return dict(n=8, d=32, vocabs=(512, 1000), sizes=(1, 4))
    return dict(n=16384, d=2048, vocabs=(32768, 131072), sizes=(1, 4, 8, 16))


# ----------------------------------------------------------------------------- implementations

def make_loss(impl: str, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """A zero-argument closure: ``impl``'s mean loss of ``hidden @ weight.T`` against ``targets`` ``(N, s)``."""
    flat = targets[:, 0]  # (N,) for the single-label implementations (s = 1)
    if impl == "loop":
        return lambda: loop_mce(hidden @ weight.t(), targets)
    if impl == "mce":
        return lambda: multi_hot_cross_entropy(hidden @ weight.t(), targets)
    if impl in ("fused-torch", "fused-triton"):
        backend = impl.split("-")[1]
        return lambda: fused_linear_multi_hot_cross_entropy(hidden, weight, targets, backend=backend)
    if impl == "ce":
        return lambda: F.cross_entropy((hidden @ weight.t()).float(), flat)
    if impl == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        return lambda: liger_fused_linear_cross_entropy(hidden, weight, flat)
    if impl.startswith("cce"):
        from cut_cross_entropy import linear_cross_entropy
        eps = None if impl == "cce-exact" else "high"
        return lambda: linear_cross_entropy(hidden, weight, flat, filter_eps=eps)
    raise ValueError(impl)


def unavailable(impl: str, device: torch.device) -> str | None:
    """Why ``impl`` cannot run here (None: it can)."""
    if impl in CUDA_ONLY and device.type != "cuda":
        return "needs CUDA"
    package = {"liger": "liger_kernel", "cce": "cut_cross_entropy", "cce-exact": "cut_cross_entropy"}.get(impl)
    if package:
        try:
            __import__(package)
        except Exception as exc:  # noqa: BLE001 - an old triton can break the import itself
            return f"{package} not importable ({type(exc).__name__}): carry its wheel, see docs/gpu.md"
    return None


def estimated_bytes(impl: str, n: int, vocab: int, d: int, s: int) -> int:
    """Rough peak of one forward + backward: the logits-sized buffers each implementation keeps."""
    logits = n * vocab
    per_impl = {"loop": 2 + 4 + 4 * s + 4 + 2, "mce": 2 + 2 + 4, "ce": 2 + 4 + 4 + 4 + 2}
    if impl in per_impl:
        return logits * per_impl[impl] + vocab * d * 6
    return 2 ** 28 * 3 + vocab * d * 10  # fused: a 256 MiB chunk (+ its float32 copy on torch) + gradient buffers


# ----------------------------------------------------------------------------- measurement

class Timer:
    """Elapsed seconds of ``fn()``: CUDA events on a GPU, the host clock elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def measure(impl: str, inputs: dict, device: torch.device, repeats: int) -> dict:
    """Loss, peak bytes and median seconds of forward + backward for one implementation."""
    hidden, weight = inputs["hidden"], inputs["weight"]
    loss_fn = make_loss(impl, hidden, weight, inputs["targets"])
    value = {}

    def step():
        hidden.grad = weight.grad = None
        loss = loss_fn()
        loss.backward()
        value["loss"] = loss.detach()

    step()  # warm-up: compiles kernels, builds cuBLAS plans
    peak = scratch = None
    if device.type == "cuda":
        hidden.grad = weight.grad = None
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        peak = torch.cuda.max_memory_allocated(device) - base
        scratch = peak - sum(t.grad.numel() * t.grad.element_size() for t in (hidden, weight))
    timer = Timer(device)
    times = [timer(step) for _ in range(repeats)]
    hidden.grad = weight.grad = None
    return {"loss": float(value["loss"]), "peak": peak, "scratch": scratch, "time": statistics.median(times),
            "times": times}


def build_inputs(n: int, d: int, vocab: int, device: torch.device, dry: bool) -> dict:
    """hidden ``(N, d)`` ~ N(0, 1) and weight ``(V, d)`` ~ N(0, 1/d), so logits ~ N(0, 1); bf16 on the GPU.

    Drawn on the device (a CPU draw of the 268M weights at V = 131072 takes seconds); the targets are
    set per bag size by :func:`with_targets`.
    """
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.float32 if dry else torch.bfloat16  # the CPU has no fast bf16 matmul; the kernel path is the same
    hidden = torch.randn(n, d, generator=gen, device=device).to(dtype).requires_grad_(True)
    weight = (torch.randn(vocab, d, generator=gen, device=device) / d ** 0.5).to(dtype).requires_grad_(True)
    return {"hidden": hidden, "weight": weight}


def with_targets(inputs: dict, s: int) -> dict:
    """``inputs`` plus next-bag targets ``(N, s)``: rows of 512 positions, the last position's bag partial."""
    n, vocab = inputs["hidden"].shape[0], inputs["weight"].shape[0]
    gen = torch.Generator().manual_seed(s)
    return {**inputs, "targets": make_targets(n, vocab, s, inputs["hidden"].device, gen)}


def run_case(impl: str, n: int, d: int, vocab: int, s: int, device: torch.device, args, inputs: dict) -> dict:
    """One table cell: measured, or why not (skipped, out of memory, over the time budget, failed)."""
    why = unavailable(impl, device)
    if why:
        return {"skipped": why}
    if time.monotonic() > args.deadline:
        return {"skipped": "not run: time budget spent"}
    if device.type == "cuda":
        need, free = estimated_bytes(impl, n, vocab, d, s), torch.cuda.mem_get_info(device)[0]
        if need > 0.9 * free:
            return {"skipped": f"needs ≈{need / GIB:.0f} GiB, {free / GIB:.0f} GiB free"}
    try:
        return measure(impl, inputs, device, args.repeats)
    except torch.cuda.OutOfMemoryError:
        return {"skipped": "out of memory"}
    except Exception as exc:  # noqa: BLE001 - a failing anchor must not stop the other rows
        return {"skipped": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"}
    finally:
        for t in (inputs["hidden"], inputs["weight"]):
            t.grad = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- tables

def cell_time(r: dict) -> str:
    return f"{r['time'] * 1e3:.1f} ms" if "time" in r else f"_{r['skipped']}_"


def cell_mem(r: dict) -> str:
    """Peak, and in brackets the scratch part of it (the peak less the gradients the step returns)."""
    if "time" not in r:
        return "–"
    return f"{fmt_mem(r['peak'])} ({fmt_mem(r['scratch'])})" if r["peak"] is not None else "n/a (CPU)"


def ratio(a: dict, b: dict) -> float | None:
    return a["time"] / b["time"] if "time" in a and "time" in b else None


def rel_diff(a: dict, ref: dict) -> str:
    if "loss" not in a or "loss" not in ref:
        return "–"
    return f"{abs(a['loss'] - ref['loss']) / max(abs(ref['loss']), 1e-30):.1e}"


def matmul_floor_s(n: int, vocab: int, d: int, tflops: float | None) -> float | None:
    """The three LM-head matmuls (forward, d hidden, d weight) at the measured bf16 rate: no loss is faster."""
    return 3 * 2 * n * vocab * d / (tflops * 1e12) if tflops else None


def s_loop_table(results: dict, sh: dict, tflops: float | None) -> str:
    rows = ["| V | s | loop | MCE (materialised) | fused torch | **fused triton** | matmul floor | triton vs loop | "
            "triton s / triton s=1 (≤1.15× at s=8) | peak (scratch) loop | MCE | triton | scratch triton / MCE "
            "(≤20 %) | scratch triton / bf16 logits | loss rel. diff triton vs MCE |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for vocab in sh["vocabs"]:
        base = results.get((vocab, 1), {}).get("fused-triton", {})
        for s in sh["sizes"]:
            r = results.get((vocab, s))
            if r is None:
                continue
            tri, mce, loop = r["fused-triton"], r["mce"], r["loop"]
            floor = matmul_floor_s(sh["n"], vocab, sh["d"], tflops)
            vs_loop = ratio(loop, tri)
            vs_s1 = ratio(tri, base)
            t_s = "–" if vs_s1 is None else (f"{vs_s1:.2f}×" if s != 8 else verdict(vs_s1 <= 1.15, f"{vs_s1:.2f}×"))
            mem = tri["scratch"] / mce["scratch"] if tri.get("scratch") and mce.get("scratch") else None
            t_m = "–" if mem is None else verdict(mem <= 0.2, f"{mem * 100:.1f} %")
            of_logits = f"{tri['scratch'] / (sh['n'] * vocab * 2) * 100:.1f} %" if tri.get("scratch") else "–"
            rows.append(f"| {vocab} | {s} | {cell_time(loop)} | {cell_time(mce)} | {cell_time(r['fused-torch'])} | "
                        f"{cell_time(tri)} | {f'{floor * 1e3:.1f} ms' if floor else '–'} | "
                        f"{f'{vs_loop:.2f}×' if vs_loop else '–'} | {t_s} | {cell_mem(loop)} | {cell_mem(mce)} | "
                        f"{cell_mem(tri)} | {t_m} | {of_logits} | {rel_diff(tri, mce)} |")
    return "\n".join(rows)


def anchor_table(results: dict, sh: dict) -> str:
    rows = ["| V | implementation | time | peak | our time ÷ its time | target | loss | loss rel. diff vs `ce` |",
            "|---|---|---|---|---|---|---|---|"]
    for vocab in sh["vocabs"]:
        r = results.get(vocab)
        if r is None:
            continue
        ours = r["fused-triton"]
        for impl in ANCHOR_IMPLS:
            x = r[impl]
            rel = ratio(ours, x) if impl != "fused-triton" else None
            rel_cell = f"{rel:.2f}×" if rel else "–"
            target = "–"
            if rel is not None and impl == "liger":
                target = verdict(rel <= 1.0, f"ours {rel:.2f}× Liger's time")
            elif rel is not None and impl == "cce":
                target = verdict(rel <= 1.5, f"ours {rel:.2f}× CCE's time")
            loss = f"{x['loss']:.5f}" if "loss" in x else "–"
            rows.append(f"| {vocab} | {'**' + impl + '**' if impl == 'fused-triton' else impl} | {cell_time(x)} | "
                        f"{cell_mem(x)} | {rel_cell} | {target} | {loss} | {rel_diff(x, r['ce'])} |")
    return "\n".join(rows)


def bf16_matmul_tflops(device: torch.device) -> float | None:
    """The bf16 matmul rate this GPU reaches now (8192³, median of 10 after 3 warm-ups): the floor's ceiling."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    timer = Timer(device)
    for _ in range(3):
        a @ b
    return 2 * 8192 ** 3 / statistics.median(timer(lambda: a @ b) for _ in range(10)) / 1e12


def write_report(args, sh: dict, s_loop: dict, anchors: dict, tflops: float | None, done: bool) -> None:
    dtype = "fp32 (dry run)" if args.dry_run else "bf16 hidden and weight"
    status = "" if done else "\n_Incomplete: the run was stopped before every case was measured._\n"
    text = (f"### Loss: MCE vs the paper's s-loop, fused vs materialised (forward + backward)\n\n"
            f"N = {sh['n']} rows, d = {sh['d']}, {dtype}; median of {args.repeats} runs after one warm-up; peak = "
            f"memory one step adds (the gradients it returns included), scratch = peak less those gradients (the "
            f"loss's own memory; the memory target is on it); matmul floor = the three LM-head matmuls at the "
            f"measured bf16 rate ({f'{tflops:.0f} TFLOP/s' if tflops else 'not measured'}).{status}\n\n"
            f"{s_loop_table(s_loop, sh, tflops)}\n\n"
            f"### Loss at s = 1: ours vs Liger's fused linear CE and Cut Cross-Entropy\n\n"
            f"Same inputs and timing. `cce` uses its default gradient filter (`filter_eps=\"high\"`: skips blocks "
            f"whose softmax is below 2^-12, which near-uniform random logits favour); `cce-exact` turns it off.\n\n"
            f"{anchor_table(anchors, sh)}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loss.md").write_text(text)
    dump = {"shapes": {k: list(v) if isinstance(v, tuple) else v for k, v in sh.items()}, "bf16_tflops": tflops,
            "s_loop": {f"{v}/{s}": r for (v, s), r in s_loop.items()},
            "anchors": {str(v): r for v, r in anchors.items()}}
    (args.out / "loss.json").write_text(json.dumps(dump, indent=1, default=str))


def main(argv=None) -> None:
    args = parse_args(argv)
    args.deadline = time.monotonic() + args.budget_s
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton's first import: the kernel runs on the CPU
        args.repeats = min(args.repeats, 1)
    elif not torch.cuda.is_available():
        sys.exit("gpu_loss.py: no CUDA device (use --dry-run on a CPU)")
    sh = shapes(args.dry_run)
    tflops = bf16_matmul_tflops(device)
    s_loop, anchors = {}, {}
    for vocab in sh["vocabs"]:
        shared = build_inputs(sh["n"], sh["d"], vocab, device, args.dry_run)
        for s in sh["sizes"]:
            inputs = with_targets(shared, s)
            s_loop[(vocab, s)] = {i: run_case(i, sh["n"], sh["d"], vocab, s, device, args, inputs)
                                  for i in S_LOOP_IMPLS}
            if s == 1:
                anchors[vocab] = {i: (s_loop[(vocab, 1)][i] if i in s_loop[(vocab, 1)] else
                                      run_case(i, sh["n"], sh["d"], vocab, 1, device, args, inputs))
                                  for i in ANCHOR_IMPLS}
            write_report(args, sh, s_loop, anchors, tflops, done=False)
            print(f"[loss] V={vocab} s={s}: " + ", ".join(f"{i} {cell_time(r)}" for i, r in s_loop[(vocab, s)].items()),
                  flush=True)
        del shared, inputs
    write_report(args, sh, s_loop, anchors, tflops, done=True)


if __name__ == "__main__":
    main()
