#!/usr/bin/env python
"""Our training step against the stack a user would otherwise pick, and against the CPU's own matmul peak.

    python benchmarks/bench_train_step.py --out benchmarks/train_step      # ~5 min on 2 cores
    python benchmarks/bench_train_step.py --smoke --out /tmp/ts           # seconds (make test runs it)

For each shape — the demo's d512/L1 and a deeper d256/L4, vocabulary 4,096, 8 rows × 32 positions, fp32, one
thread (as the experiments run) — and each phase (the baseline's next-token step; TST's superposition step,
s = 4), the time of one optimizer step of:

* ``ours``: the reference trainer's own ``Trainer.train_step`` (data, fold, the fused LM-head loss, clipping,
  AdamW ``foreach``), on a synthetic data folder;
* ``hf``: ``transformers.LlamaForCausalLM`` of the identical shape with its own cross-entropy (``labels=``),
  ``torch.optim.AdamW`` and the same clipping — the stack most users start from (next-token only);
* ``hf+adapter``: the same model through our Hugging Face adapter (``tst_causal_lm_loss``), both phases;
* ``ours, fused AdamW``: our step with ``--train.fused_optimizer=true``.

Steps run round robin (one of each in turn) so machine noise falls on all alike; the figures are medians over
the repeats, with the minimum and maximum. FLOPs per position come from the model (``tst.flops``: 6·N +
attention, positions only); MFU is the achieved FLOP/s against a large fp32 ``torch.mm`` timed in the same run.
Our step is also split into data + fold, forward + loss, backward and clip + optimizer, to say where the time goes.
Writes ``OUT/train_step.md`` and ``OUT/train_step.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without install
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_train import synthetic_data  # noqa: E402
from tst_train.config import Config  # noqa: E402
from tst_train.experiments import stats  # noqa: E402
from tst_train.experiments.report import machine_description  # noqa: E402
from tst_train.hf_format import hf_config_dict, to_hf_state_dict  # noqa: E402
from tst_train.model import scaled_shape  # noqa: E402
from tst_train.train import Trainer  # noqa: E402

VOCAB = 4096
SHAPES = {"d512/L1 (the demo's)": (512, 1), "d256/L4": (256, 4)}
SMOKE_SHAPES = {"d64/L1": (64, 1)}


def config(data: Path, dim: int, layers: int, rows: int, seq: int, mode: str) -> Config:
    cfg = Config()
    shape = scaled_shape(dim)
    cfg.data.path = str(data)
    cfg.model.preset, cfg.model.dim, cfg.model.n_layers = "tiny", dim, layers
    cfg.model.n_heads, cfg.model.n_kv_heads, cfg.model.ffn_dim = shape["n_heads"], shape["n_kv_heads"], shape["ffn_dim"]
    cfg.train.steps, cfg.train.batch_size, cfg.train.seq_len, cfg.train.threads = 1000, rows, seq, 1
    cfg.train.warmup_steps, cfg.train.device, cfg.train.dtype = 10, "cpu", "fp32"
    cfg.tst.mode, cfg.tst.bag_size, cfg.tst.superposition_frac = mode, 4, 0.5
    cfg.eval.tokens, cfg.log.progress, cfg.log.tensorboard = 256, False, False
    return cfg.validate()


class Ours:
    """The trainer's own step, at a fixed step of the phase asked for."""

    def __init__(self, cfg: Config, run_dir: Path, phase: str) -> None:
        self.trainer = Trainer(cfg, run_dir, resume=False)
        self.step_no = 0 if phase == "superposition" else cfg.train.steps - 1 - 200  # stable lr, after the boundary
        self.phase = self.trainer.schedule.phase_at(self.step_no)
        self.flops_per_position = self.trainer._phase_flops_per_position(self.phase)

    def __call__(self) -> None:
        self.trainer.train_step(self.step_no, self.phase)


class HF:
    """``LlamaForCausalLM`` of the same shape and weights: its own CE (next-token), or our adapter's loss."""

    def __init__(self, ours: Ours, adapter: bool) -> None:
        import transformers
        model = ours.trainer.model
        cfg = transformers.LlamaConfig(**{k: v for k, v in hf_config_dict(model.config).items()
                                          if k not in ("architectures", "model_type", "torch_dtype")})
        cfg._attn_implementation = "sdpa"
        self.model = transformers.LlamaForCausalLM(cfg).float()
        self.model.load_state_dict(to_hf_state_dict(model), strict=False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        self.adapter, self.phase, self.t = adapter, ours.phase, ours.trainer.cfg.train
        self.loader = ours.trainer.loader
        self.flops_per_position = ours.flops_per_position

    def __call__(self) -> None:
        from tst.integrations.hf import tst_causal_lm_loss
        rows = self.loader.next_batch(self.phase.rows_per_step(self.t.batch_size), self.phase.tokens_per_row(self.t.seq_len),
                                      self.phase.data_tokens_per_row(self.t.seq_len))
        if self.adapter:
            loss = tst_causal_lm_loss(self.model, rows, self.phase, self.t.seq_len, loss_impl="fused")
        else:
            ids = rows[:, :self.t.seq_len + 1]  # (B, L + 1): inputs and shifted labels, as HF shifts itself
            loss = self.model(input_ids=ids[:, :-1], labels=ids[:, 1:].contiguous()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of an n³ fp32 matmul on this thread count (median of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def breakdown(ours: Ours, repeats: int) -> dict:
    """Where our step's time goes: data + fold, forward + loss, backward, clip + AdamW (medians, seconds)."""
    tr, t = ours.trainer, ours.trainer.cfg.train
    parts = {"data + fold": [], "forward + loss": [], "backward": [], "clip + optimizer": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = tr.loader.next_batch(ours.phase.rows_per_step(t.batch_size), ours.phase.tokens_per_row(t.seq_len),
                                    ours.phase.data_tokens_per_row(t.seq_len))
        inputs, targets = ours.phase.fold(rows, t.seq_len, tr.meta.get("eos_id"))
        t1 = time.perf_counter()
        loss = tr.objective(inputs, targets, None)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), 1.0)
        tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k].append(dt)
    return {k: statistics.median(v) for k, v in parts.items()}


def measure(args, work: Path) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    rows, seq = (2, 16) if args.smoke else (8, 32)
    data = synthetic_data(work / "data", VOCAB, 2_000_000 if not args.smoke else 200_000, 4096)
    peak = matmul_peak(256 if args.smoke else 2048, 3 if args.smoke else 10)
    result = {"machine": machine(), "peak_flops": peak, "rows": rows, "seq_len": seq, "repeats": args.repeats,
              "shapes": {}}
    for label, (dim, layers) in shapes.items():
        for phase in ("recovery", "superposition"):
            cfg = config(data, dim, layers, rows, seq, "tst")
            ours = Ours(cfg, work / f"run-{dim}-{layers}-{phase}", phase)
            fused_cfg = config(data, dim, layers, rows, seq, "tst")
            fused_cfg.train.fused_optimizer = True
            impls = {"ours": ours, "ours, fused AdamW": Ours(fused_cfg, work / f"run-{dim}-{layers}-{phase}-fused", phase),
                     "hf+adapter": HF(ours, adapter=True)}
            if phase == "recovery":
                impls["hf"] = HF(ours, adapter=False)
            times = {k: [] for k in impls}
            for f in impls.values():  # warm-up: allocator, first-call dispatch
                for _ in range(2):
                    f()
            for _ in range(args.repeats):
                for k, f in impls.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
            fpp = ours.flops_per_position
            row = {}
            for k, ts in times.items():
                med = statistics.median(ts)
                row[k] = {"step_s": stats.spread(ts), "positions_per_s": rows * seq / med,
                          "flops_per_s": rows * seq * fpp / med, "mfu": rows * seq * fpp / med / peak,
                          "vs_ours": med / statistics.median(times["ours"])}
            row["flops_per_position"] = fpp
            row["breakdown_ours"] = breakdown(ours, max(3, args.repeats // 2))
            result["shapes"][f"{label}, {phase}"] = row
    return result


def machine() -> str:
    import transformers
    return f"{machine_description()}; 1 thread; transformers {transformers.__version__}"


def report(r: dict) -> str:
    md = ["# Training step: ours against Hugging Face, and against the CPU's matmul peak", "",
          f"Machine: {r['machine']}. {r['rows']} rows × {r['seq_len']} positions a step, fp32, vocabulary {VOCAB:,}; "
          f"medians over {r['repeats']} steps each, round robin (min–max in brackets). Matmul peak (fp32 `torch.mm`, "
          f"same run): {r['peak_flops'] / 1e9:.1f} GFLOP/s. MFU = positions × FLOPs per position ÷ step time ÷ that "
          "peak. `vs ours` > 1: slower than ours.", "",
          "| shape, phase | stack | step (s) | positions/s | GFLOP/s | MFU | vs ours |", "|---|---|---|---|---|---|---|"]
    for key, row in r["shapes"].items():
        for impl in ("ours", "ours, fused AdamW", "hf", "hf+adapter"):
            if impl in row:
                v = row[impl]
                s = v["step_s"]
                md.append(f"| {key} | {impl} | {s['median']:.4f} ({s['min']:.4f}–{s['max']:.4f}) | "
                          f"{v['positions_per_s']:,.0f} | {v['flops_per_s'] / 1e9:.1f} | {v['mfu']:.0%} | {v['vs_ours']:.2f}× |")
    md += ["", "Where our step's time goes (medians, share of their sum):", "",
           "| shape, phase | data + fold | forward + loss | backward | clip + optimizer |", "|---|---|---|---|---|"]
    for key, row in r["shapes"].items():
        b = row["breakdown_ours"]
        total = sum(b.values())
        md.append(f"| {key} | " + " | ".join(f"{v * 1e3:.1f} ms ({v / total:.0%})" for v in b.values()) + " |")
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--smoke", action="store_true", help="a tiny shape and 3 repeats: the path, in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = 3
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        result = measure(args, Path(work))
    (args.out / "train_step.json").write_text(json.dumps(result, indent=1))
    (args.out / "train_step.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
