"""The three questions of README.md, read from the collected runs with the package's own definitions.

    python experiments/2026-12-07-compute-curves/analyze.py > experiments/2026-12-07-compute-curves/results.md
"""
from __future__ import annotations

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

SEPARATE = [ROOT / "experiments" / "2026-12-03-demo-shapes", ROOT / "experiments" / "2026-12-02-demo-budget"]
TST_ARM = "s4-r0.25-fitted+fold-batch"  # the demo's TST setting, in 2026-12-03-demo-shapes


def runs(root: Path) -> list[tuple[object, Path]]:
    out = []
    for d in sorted(root.glob("**/runs/*")):
        if rundir.is_run_dir(d) and final_point(d):
            out.append((rundir.read_config(d), d))
    return out


def key(cfg) -> tuple:
    return names.shape_name(cfg), cfg.train.lr, cfg.train.steps


def main() -> None:
    here = runs(HERE)
    separate = [r for root in SEPARATE for r in runs(root)]
    print("# Results (read by analyze.py)\n")

    print("## 1. Cooldown branch against a separately trained run\n")
    print("Every branch of this record that a committed record also trained as a run of its own (same shape, rate, "
          "steps and seed).\n")
    print("| shape | lr | steps | seed | branch | separate run (committed) | branch − separate |\n|---|---|---|---|---|---|---|")
    diffs = []
    for cfg, d in sorted(here, key=lambda r: (names.shape(r[0]), r[0].train.steps, r[0].train.seed)):
        if not cfg.train.branch_from:
            continue
        for scfg, sd in separate:
            if names.is_baseline(scfg) and key(scfg) == key(cfg) and scfg.train.seed == cfg.train.seed:
                b, s = final_point(d)[1], final_point(sd)[1]
                diffs.append(b - s)
                print(f"| {names.shape_name(cfg)} | {cfg.train.lr:g} | {cfg.train.steps} | {cfg.train.seed} | {b:.6f} | "
                      f"{s:.6f} | {b - s:+.2e} |")
    print(f"\n{len(diffs)} pairs; largest |branch − separate| = {max(map(abs, diffs)):.2e} nats.\n")

    print("## 2. The demo's TST on its own baseline's compute curve\n")
    curves: dict[int, list] = {}
    for cfg, d in here:
        if names.shape_name(cfg) == "d512-L1" and cfg.train.lr == 5e-4:
            curves.setdefault(cfg.train.seed, []).append(final_point(d))
    tst = {cfg.train.seed: final_point(d) for cfg, d in separate
           if names.arm_name(cfg) == TST_ARM and names.shape_name(cfg) == "d512-L1" and cfg.train.steps == 1000}
    sp = compute.speedup_over_seeds(curves, tst)
    print(f"TST (d512-L1, lr 5e-4, {TST_ARM}, 1000 steps, seeds {sorted(tst)}): final loss "
          f"{stats.fmt(stats.mean_ci([p[1] for p in tst.values()]), 4, False)} at {max(p[0] for p in tst.values()):.3e} FLOPs.\n")
    print(f"Equal-loss speed-up on the baseline's curve: **{compute.format_speedup(sp)}**; per seed: "
          + ", ".join(f"{s}: {compute.format_speedup(v)}" for s, v in sp["per_seed"].items()) + ".\n")
    print("The baseline's curve (mean over seeds 0–2):\n")
    print("| steps | FLOPs | final val loss |\n|---|---|---|")
    by_steps: dict[int, list] = {}
    for cfg, d in here:
        if names.shape_name(cfg) == "d512-L1":
            by_steps.setdefault(cfg.train.steps, []).append(final_point(d))
    for steps, pts in sorted(by_steps.items()):
        print(f"| {steps} | {pts[0][0]:.3e} | {stats.fmt(stats.mean_ci([p[1] for p in pts]), 4, False)} |")

    print("\n## 3. The frontier with steps\n")
    points: dict[tuple, list] = {}
    for cfg, d in here + separate:
        if names.is_baseline(cfg):
            points.setdefault(key(cfg), {})[cfg.train.seed] = final_point(d)
    baselines = [Point(f"{s} lr {lr:g}, {steps} steps", max(p[0] for p in v.values()),
                       tuple(p[1] for p in v.values()), tuple(v)) for (s, lr, steps), v in points.items()]
    tst_point = Point("TST", max(p[0] for p in tst.values()), tuple(p[1] for p in tst.values()), tuple(tst))
    print("\n".join(frontier_lines(tst_point, baselines)))

if __name__ == "__main__":
    main()
