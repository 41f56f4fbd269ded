"""The four questions of README.md, read from the collected runs with the package's own definitions.

    python experiments/2026-12-07-moe/analyze.py [FULL_ROOT] > experiments/2026-12-07-moe/results.md

The routing windows are means over steps: with FULL_ROOT (run.sh's OUT_ROOT, whose metrics.jsonl hold every step)
they read every step; without it, the collected evals.jsonl here (every 10th step).
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tst_train import rundir  # noqa: E402
from tst_train.experiments import compute, names, stats  # noqa: E402
from tst_train.experiments.compute import Point  # noqa: E402
from tst_train.experiments.curve import final_point  # noqa: E402
from tst_train.experiments.report import frontier_lines  # noqa: E402
from tst_train.metrics import read_metrics  # noqa: E402

DENSE = ROOT / "src" / "tst_train" / "experiments" / "data" / "frontier_bundled.json"  # the demo-scale records
STEPS, PHASE1, LAST = 1000, range(1, 251), range(801, 1001)  # README: the run, its superposition steps, the last 20 %
HEALTH = (("load_cv", "load CV", 3), ("load_max_over_mean", "busiest ÷ mean", 2), ("router_entropy", "entropy (nats)", 4))


def runs(root: Path) -> list[tuple[object, Path]]:
    return [(rundir.read_config(d), d) for d in sorted(root.glob("**/runs/*")) if rundir.is_run_dir(d) and final_point(d)]


FULL = Path(sys.argv[1]) if len(sys.argv) > 1 else None


@functools.cache
def records(run_dir: Path) -> list[dict]:
    """A run's step records, read once (the full ones under FULL when given)."""
    return read_metrics(FULL / run_dir.relative_to(HERE) if FULL is not None else run_dir)


def window_mean(run_dir: Path, key: str, steps: range) -> float:
    """Per-step records over ``steps`` (each already a mean over layers, except the worst-layer max/mean)."""
    vals = [r[key] for r in records(run_dir) if r.get(key) is not None and r["step"] in steps]
    return sum(vals) / len(vals)


def main() -> None:
    compare = {(names.arm_name(c), c.train.seed): d for c, d in runs(HERE / "compare")}
    curve = runs(HERE / "curve")
    seeds = sorted({s for _, s in compare})
    base = {s: compare[("baseline", s)] for s in seeds}
    tst_arm = next(a for a, _ in compare if a != "baseline")
    tst = {s: compare[(tst_arm, s)] for s in seeds}
    print("# Results (read by analyze.py)\n")

    print("## 1. Equal FLOPs: TST − baseline at 1,000 steps\n")
    print("| seed | baseline | TST | TST − baseline |\n|---|---|---|---|")
    for s in seeds:
        b, t = final_point(base[s])[1], final_point(tst[s])[1]
        print(f"| {s} | {b:.4f} | {t:.4f} | {t - b:+.4f} |")
    delta = stats.paired([final_point(tst[s])[1] for s in seeds], [final_point(base[s])[1] for s in seeds])
    print(f"\nΔ over seeds {seeds}: **{stats.fmt(delta, 4)}** (95 % t interval, init seeds only).\n")

    print("## 2. The saving on the baseline's own curve\n")
    curves: dict[int, list] = {}
    for cfg, d in curve:
        curves.setdefault(cfg.train.seed, []).append(final_point(d))
    points = {s: final_point(tst[s]) for s in seeds}
    sp = compute.speedup_over_seeds(curves, points)
    print(f"Baseline FLOPs to reach TST's final loss ÷ TST's FLOPs: **{compute.format_speedup(sp)}**; per seed: "
          + ", ".join(f"{s}: {compute.format_speedup(v)}" for s, v in sp["per_seed"].items()) + ".\n")
    print("| steps | FLOPs | baseline final val loss (mean [95 %]) |\n|---|---|---|")
    by_steps: dict[int, dict] = {}
    for cfg, d in curve:
        by_steps.setdefault(cfg.train.steps, {})[cfg.train.seed] = final_point(d)
    for steps, pts in sorted(by_steps.items()):
        losses = [p[1] for p in pts.values()]
        print(f"| {steps} | {max(p[0] for p in pts.values()):.3e} | {stats.fmt(stats.mean_ci(losses), 4, False)} |")
    same = [(cfg.train.seed, final_point(d)[1], final_point(base[cfg.train.seed])[1]) for cfg, d in curve
            if cfg.train.steps == STEPS and cfg.train.seed in base]
    worst = max(abs(a - b) for _, a, b in same)
    print(f"\nThe curve's 1,000-step point is a cooldown branch of its 2,000-step run; the comparison trained the same "
          f"baseline on its own: largest |branch − separate| over {len(same)} seeds = {worst:.2e} nats.\n")

    print("## 3. Against the frontier with steps\n")
    dense = json.loads(DENSE.read_text())
    baselines = [Point(f"dense {p['shape']} lr {p['lr']:g}, {p['steps']} steps", p["flops"], tuple(p["losses"]),
                       tuple(p["seeds"])) for p in dense["points"]]
    for steps, pts in sorted(by_steps.items()):
        baselines.append(Point(f"MoE {names.shape_name(curve[0][0])}, {steps} steps", max(p[0] for p in pts.values()),
                               tuple(p[1] for p in pts.values()), tuple(pts)))
    tst_point = Point("TST", max(p[0] for p in points.values()), tuple(p[1] for p in points.values()), tuple(seeds))
    print(f"Dense points from `{DENSE.relative_to(ROOT)}` (records: {', '.join(dense['records'])}); those above 4× TST's "
          "FLOPs are left out of the table.\n")
    print("\n".join(frontier_lines(tst_point, baselines, "; active parameters", max_ratio=4.0)))
    print("\n## 4. Routing health\n")
    print("Means over the window's per-step records (load CV and entropy: mean over the 4 layers; busiest ÷ mean: "
          "the worst layer), then over seeds; TST − baseline paired by seed (95 % t interval, init seeds only). "
          "A uniform router's entropy is ln 32 = 3.466 nats.\n")
    print(f"Read from {'every step (the full records of ' + str(FULL) + ')' if FULL else 'every 10th step (the collected records)'}.\n")
    print("| window | measure | baseline | TST | TST − baseline |\n|---|---|---|---|---|")
    for label, window in (("steps 1–250 (TST's superposition phase)", PHASE1), ("steps 801–1000 (last 20 %)", LAST)):
        for key, name, digits in HEALTH:
            b = [window_mean(base[s], key, window) for s in seeds]
            t = [window_mean(tst[s], key, window) for s in seeds]
            print(f"| {label} | {name} | {stats.fmt(stats.mean_ci(b), digits, False)} | "
                  f"{stats.fmt(stats.mean_ci(t), digits, False)} | {stats.fmt(stats.paired(t, b), digits)} |")
    print("\nThe per-step curves and the table by phase and step band: [`compare/report.md`](compare/report.md) "
          "(`routing.png`).")


if __name__ == "__main__":
    main()
