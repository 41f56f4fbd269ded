"""Every experiment command's report and plots, made from the run records alone (the trainer never plots):
Markdown (rendered to HTML by the ``markdown`` library) and matplotlib figures.

    compare  report.md / report.html with val_loss_vs_steps, _vs_data_tokens and train_loss (no wall-clock plot: the
             arms' steps cost the same, so it would draw the steps plot again with machine noise; step times are
             in the table)
    curve    curve.md with curve.png (loss against FLOPs)
    demo     demo.md with demo.png (loss against FLOPs: curve, TST, frontier) and loss_vs_step.png
    study    study.md with delta_vs_width.png and frontier.png;  sweep: its table and heatmaps
"""
from __future__ import annotations

import base64
import io
import math
import platform
from pathlib import Path

from ..config import Config
from ..metrics import read_metrics
from ..rundir import write_atomic
from . import compute, stats

COLORS = {"baseline": "#444444", "tst": "#d62728", "input-only": "#1f77b4", "output-only": "#2ca02c",
          "tst-reinit": "#9467bd", "baseline-equal-data": "#8c8c8c"}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported on first use: reports without plots
    need no matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, out: Path, name: str, dpi: int = 110) -> str:
    """Lay out, write ``out/name`` and free the figure; returns ``name`` (for the report's image link).

    Rendered in memory and written atomically (``rundir.write_atomic``), like every report file: a link planted
    under ``out`` is replaced, never written through."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(name).suffix.lstrip(".") or "png", dpi=dpi)
    pyplot().close(fig)
    write_atomic(out / name, buf.getvalue())
    return name


def _runs(out: Path, summary: dict) -> dict[str, list[list[dict]]]:
    return {arm: [read_metrics(out / r["run_dir"]) for r in a["seeds"].values()] for arm, a in summary["arms"].items()}


def _plot_eval(out: Path, runs: dict, summary: dict, x: str, xlabel: str, fname: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    every = []
    for arm, seed_runs in runs.items():
        for i, recs in enumerate(seed_runs):
            pts = [(r[x], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
            every += pts
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=COLORS.get(arm), alpha=0.9 if i == 0 else 0.45, lw=1.4,
                        label=arm if i == 0 else None, marker="o", ms=2.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (next-token CE, nats)")
    _zoom(ax, every)
    if x == "step":
        _mark_transition(ax, summary)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out, fname)


def _zoom(ax, pts: list[tuple[float, float]]) -> None:
    """Show the last 85% of the x range in full (the first evaluations sit far above everything else)."""
    if not pts:
        return
    xs = [x for x, _ in pts]
    cut = min(xs) + 0.15 * (max(xs) - min(xs))
    ys = [y for x, y in pts if x >= cut] or [y for _, y in pts]
    pad = 0.05 * (max(ys) - min(ys) + 1e-3)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)


def _mark_transition(ax, summary: dict) -> None:
    steps = {r["transition_step"] for a in summary["arms"].values() for r in a["seeds"].values() if r["transition_step"]}
    for t in steps:
        ax.axvline(t, color="#d62728", ls="--", lw=0.8, alpha=0.7)
        lo, hi = ax.get_ylim()
        ax.text(t, hi - 0.02 * (hi - lo), " transition", color="#d62728", fontsize=8, va="top")


def _plot_train_loss(out: Path, runs: dict, summary: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, seed_runs in runs.items():
        recs = [r for r in seed_runs[0] if "loss" in r and r.get("loss") is not None]
        if not recs:
            continue
        xs = [r["step"] for r in recs]
        ys = [r["loss"] for r in recs]
        ax.plot(xs, ys, color=COLORS.get(arm), alpha=0.25, lw=0.6)
        ax.plot(xs, _ema(ys, 0.95), color=COLORS.get(arm), lw=1.4, label=f"{arm} (EMA)")
    _mark_transition(ax, summary)
    ax.set_xlabel("step (equal FLOPs per step)")
    ax.set_ylabel("training loss (nats)")
    ax.set_title("Training loss; before the transition TST's is the MCE (log s dropped), not next-token CE",
                 fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out, "train_loss.png")


def _ema(ys: list[float], beta: float) -> list[float]:
    out, m = [], None
    for y in ys:
        m = y if m is None else beta * m + (1 - beta) * y
        out.append(m)
    return out


def make_plots(out: Path, summary: dict, runs: dict) -> list[tuple[str, str]]:
    """The comparison's figures from ``runs`` (each arm's per-seed records, ``_runs``)."""
    plots = [
        ("Validation loss vs steps (= FLOPs; transition marked)",
         _plot_eval(out, runs, summary, "step", "step (equal FLOPs per step)", "val_loss_vs_steps.png")),
        ("Validation loss vs data tokens consumed",
         _plot_eval(out, runs, summary, "data_tokens", "data tokens consumed", "val_loss_vs_data_tokens.png")),
        ("Training loss (transition spike)", _plot_train_loss(out, runs, summary)),
    ]
    if _has_routing(runs):
        plots.append(("Routing health (mixture of experts)", plot_routing(out, runs, summary)))
    return plots


ROUTING = (("load_cv", "expert load: coefficient of variation\n(0 = balanced; mean over layers)"),
           ("load_max_over_mean", "busiest expert's load / mean\n(worst layer)"),
           ("router_entropy", "router entropy (nats; mean over layers)"),
           ("router_aux", "balancing loss E·Σ f·P (1 = balanced)"))


def _has_routing(runs: dict) -> bool:
    return any("load_cv" in r for seed_runs in runs.values() for recs in seed_runs for r in recs[:50])


def plot_routing(out: Path, runs: dict, summary: dict, fname: str = "routing.png") -> str:
    """A mixture of experts' routing health against steps, per arm (EMA of the per-step records, seed 0 dark)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
    for ax, (key, label) in zip(axes.flat, ROUTING):
        for arm, seed_runs in runs.items():
            for i, recs in enumerate(seed_runs):
                pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, _ema(list(ys), 0.9), color=COLORS.get(arm), lw=1.2, alpha=0.9 if i == 0 else 0.35,
                            label=arm if i == 0 else None)
        _mark_transition(ax, summary)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, out, fname)


def routing_table(runs: dict, bands: int = 5) -> str:
    """Routing health per arm, by phase and by step band (the run cut into ``bands`` equal parts): means over the
    bands' steps and the seeds."""
    head = "| arm | steps | phase | load CV | max/mean | router entropy | balancing loss |"
    rows = [head, "|" + "---|" * 7]
    for arm, seed_runs in runs.items():
        recs = [r for seed in seed_runs for r in seed if r.get("load_cv") is not None]
        if not recs:
            continue
        last = max(r["step"] for r in recs)
        one_phase = len({r["phase"] for r in recs}) == 1  # a baseline: its phase row is the whole run
        groups = {}
        for r in recs:
            groups.setdefault(("phase", r["phase"]), []).append(r)
            band = min(bands - 1, (r["step"] - 1) * bands // last)
            groups.setdefault(("band", band), []).append(r)
        for (kind, key), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] == "band", min(r["step"] for r in kv[1]))):
            steps = f"{min(r['step'] for r in rs)}–{max(r['step'] for r in rs)}"
            phase = key if kind == "phase" else "/".join(sorted({r["phase"] for r in rs}))
            if kind == "phase" and one_phase:
                phase = "whole run"
            mean = lambda k: sum(r[k] for r in rs if r.get(k) is not None) / max(1, sum(r.get(k) is not None for r in rs))
            rows.append(f"| {arm} | {steps} | {'**' + phase + '**' if kind == 'phase' else phase} | "
                        f"{mean('load_cv'):.3f} | {mean('load_max_over_mean'):.2f} | {mean('router_entropy'):.3f} | "
                        f"{mean('router_aux'):.4f} |")
    return "\n".join(rows)


def verdict(summary: dict) -> str:
    """One paragraph that states what was found, whatever it is."""
    c = summary["comparisons"].get("tst")
    if not c or c["delta_val_loss"]["mean"] is None:
        return "No TST-vs-baseline comparison in this report (the baseline or tst arm is missing)."
    d = c["delta_val_loss"]
    n = d["n"]
    ci = d.get("ci95")
    if ci and ci[1] < 0:
        head = f"TST beat the equal-FLOPs baseline: Δ = {d['mean']:+.4f} nats, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}] over {n} seeds."
    elif ci and ci[0] > 0:
        head = f"TST lost to the equal-FLOPs baseline: Δ = {d['mean']:+.4f} nats, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}] over {n} seeds."
    elif ci:
        head = (f"No significant difference at equal FLOPs: Δ = {d['mean']:+.4f} nats, 95% CI "
                f"[{ci[0]:+.4f}, {ci[1]:+.4f}] includes 0 ({n} seeds).")
    else:
        word = "lower" if d["mean"] < 0 else "higher"
        head = (f"With one seed, TST's final validation loss is {abs(d['mean']):.4f} nats {word} than the "
                f"equal-FLOPs baseline's. One seed gives no confidence interval: rerun with --seeds 3 or "
                f"more (seeds alone moved the final loss by 0.03–0.3 nats in our CPU experiments, "
                f"depending on the learning rate).")
    s = c["steps_ratio"]
    if s["mean"] is not None:
        tail = (f" TST reached the baseline's final loss {s['mean']:.2f}× sooner (in {c['ratio_reached']}/{n} seeds) — "
                "read on the baseline's own decaying run, which caps it near 1.25×; the compute saving needs the "
                "baseline's compute curve (`tst curve`).")
    else:
        tail = " TST never reached the baseline's final validation loss within the run."
    return head + tail


def machine_description() -> str:
    """CPU model, core count, GPU (if any) and torch version, for the record."""
    import os

    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    from ..rundir import cpu_kernels
    kernels = cpu_kernels()
    kernels = f" ({kernels} kernels)" if kernels else ""
    return f"{cpu}{kernels}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def write_report(out: Path, summary: dict) -> None:
    runs = _runs(out, summary)  # every run's records, read once for the figures and the routing table
    plots = make_plots(out, summary, runs)
    cfg = summary["config"]
    t, s = cfg["train"], cfg["tst"]
    setup = (f"Model preset `{cfg['model']['preset']}`, {t['steps']} steps × {t['batch_size']} rows × "
             f"{t['seq_len']} positions, lr {t['lr']}, warmup {t['warmup_steps']}, decay over the last "
             f"{t['decay_frac']:.0%}; TST bag size {s['bag_size']}, superposition fraction "
             f"{s['superposition_frac']}, weighting {s['weights']}. Seeds: {summary['seeds']}. Data: "
             f"`{summary['data']}`. Machine: {machine_description()}.")
    md = ["# TST vs baseline: equal-FLOPs comparison", "", verdict(summary), "", "## Setup", "", setup, "",
          model_line(out, summary), "", "Every setting that differs from the defaults (`tst compare --help` lists "
          "them all):", "", format_overrides(cfg), "",
          "## Results", "", format_table(summary), "", tasks_note(summary), "",
          "Δ < 0 means the arm's validation loss is lower than the baseline's. Validation is always "
          "next-token cross-entropy on the same held-out tokens. Steps ratio = baseline steps ÷ the "
          "steps the arm needs to reach the baseline's final validation loss (interpolated between "
          "evaluations) on the baseline's own run — not the compute saving, which needs the baseline's compute curve "
          "(`tst curve`). Wall-clock figures come from one shared machine and runs done one after another: "
          "compare step times, not single timings.", ""]
    for title, fname in plots:
        md += [f"## {title}", "", f"![{title}]({fname})", ""]
    if _has_routing(runs):
        md += ["## Routing health by phase and step band", "", "Per-step records of each MoE layer, averaged over "
               "the steps and seeds; bold rows are whole phases. The entropy of a uniform router is ln E.", "",
               routing_table(runs), ""]
    md += ["## Runs", "", "Each arm's run directory (config, metrics.jsonl, checkpoints) is under `runs/`.", ""]
    write_atomic(out / "report.md", "\n".join(md))
    write_atomic(out / "report.html", _html(md, out))


def _html(md_lines: list[str], out: Path) -> str:
    """The Markdown report rendered by the ``markdown`` library (tables as real tables), plots embedded."""
    import markdown

    text = "\n".join(md_lines)
    for fname in {line[line.rindex("](") + 2:-1] for line in md_lines if line.startswith("![")}:
        data = base64.b64encode((out / fname).read_bytes()).decode()
        text = text.replace(f"]({fname})", f"](data:image/png;base64,{data})")
    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}code{background:#f4f4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>TST report</title><style>{style}</style>"
            f"</head><body>{body}</body></html>")


__all__ = ["write_report", "make_plots", "verdict"]


TASK_COLUMNS = {"cloze_acc": "cloze acc", "cloze_target_logprob": "cloze target log-prob",
                "wordnet_acc_norm": "wordnet acc_norm"}


def format_table(summary: dict) -> str:
    """The headline table, as markdown (printed at the end and put in the report); task scores, when
    the comparison scored tasks, in the last columns."""
    task_keys = [k for k in TASK_COLUMNS if any(k in a.get("tasks", {}) for a in summary["arms"].values())]
    ci = " (mean, 95% CI)" if len(summary["seeds"]) > 1 else ""
    lines = [f"| arm | final val loss{ci} | Δ vs baseline (equal FLOPs){ci} | steps to the baseline's final loss (ratio) | "
             "Δ vs baseline at equal data | data tokens | median step time (range over seeds) |"
             + "".join(f" {TASK_COLUMNS[k]} |" for k in task_keys),
             "|---|---|---|---|---|---|---|" + "---|" * len(task_keys)]
    for arm, a in summary["arms"].items():
        c = summary["comparisons"].get(arm)
        first = next(iter(a["seeds"].values()))
        lines.append(f"| {arm} | {stats.fmt(a['final_val_loss'], 4, False)} | {stats.fmt(c['delta_val_loss'], 4) if c else '—'} | "
                     f"{_fmt_speedup(c, len(a['seeds'])) if c else '—'} | "
                     f"{stats.fmt(c['equal_data_delta_val_loss'], 4) if c else '—'} | "
                     f"{first['data_tokens']:,} | {_timing(a['step_time_median'])} |"
                     + "".join(f" {stats.fmt(a['tasks'].get(k), 3, False)} |" for k in task_keys))
    return "\n".join(lines)


def tasks_note(summary: dict) -> str:
    """What the task columns are, or that no task was scored."""
    t = summary.get("tasks") or {}
    if not t.get("names"):
        return "No downstream task was scored (`--tasks none`)."
    size = "all items" if not t.get("limit") else f"the first {t['limit']} items of each"
    return (f"Downstream tasks ({', '.join(t['names'])}; {size}; scored in {t['seconds']:.0f}s), on each run's final "
            "model: cloze = LAMBADA-style final word of held-out bundled-corpus passages (accuracy of the greedy "
            "word; mean log-probability of the word in nats); wordnet = a WordNet definition → its word out of 4 "
            "(length-normalised log-likelihood; chance 0.25). See docs/evaluation.md.")


# Settings each arm sets for itself (they appear per arm, not as overrides).
_PER_ARM = {"data.path", "train.seed", "tst.mode", "tst.reinit_embeddings", "train.threads", "log.progress"}


def overrides(config: dict) -> list[tuple[str, object, object]]:
    """(key, value, default) of every config field that differs from its default."""
    defaults = Config().to_dict()
    return [(f"{sec}.{k}", v, defaults[sec][k]) for sec, values in config.items() for k, v in values.items()
            if v != defaults[sec][k] and f"{sec}.{k}" not in _PER_ARM]


def format_best(best: dict | None) -> str:
    """The sweep's lowest-loss cell, as a sentence."""
    if not best:
        return "No cell has finished yet."
    group = f" in group {best['group']}" if best.get("group") else ""
    return (f"Lowest final validation loss: s = {best['bag_size']}, r = {best['superposition_frac']:g}, "
            f"{best['weights']} weights{group} — {best['final_val_loss']:.4f}, Δ {best['delta_val_loss']:+.4f} "
            "against its own baseline.")


def format_overrides(config: dict) -> str:
    rows = overrides(config)
    if not rows:
        return "(none: every setting is the default)"
    return "\n".join(["| setting | value | default |", "|---|---|---|"]
                     + [f"| `--{k}` | `{v}` | `{d}` |" for k, v, d in rows])


def model_line(out: Path, summary: dict) -> str:
    """The resolved model shape (a preset plus any --model.* overrides), from a run's plan.json."""
    import json
    first = next(iter(next(iter(summary["arms"].values()))["seeds"].values()))
    plan_file = out / first["run_dir"] / "plan.json"
    if not plan_file.is_file():
        return ""
    p = json.loads(plan_file.read_text())
    m = p["model"]
    mlp = f"SwiGLU width {m['ffn_dim']}"
    if m.get("n_experts"):  # FLOPs count the active parameters
        mlp = (f"{m['n_experts']} SwiGLU experts of width {m['ffn_dim']}, {m['top_k']} per position "
               f"({p['params_active'] / 1e6:.2f}M parameters active per position)")
    return (f"Model as trained: {p['params'] / 1e6:.2f}M parameters — dim {m['dim']}, {m['n_layers']} layers, "
            f"{m['n_heads']} query / {m['n_kv_heads']} key-value heads, {mlp}, vocabulary "
            f"{m['vocab_size']:,}, {'tied' if m['tie_embeddings'] else 'untied'} embeddings.")


def _timing(spread: dict) -> str:
    """A median time with its range over seeds (``0.163 s (0.160–0.171)``)."""
    if not spread or spread.get("median") is None:
        return "n/a"
    rng = f" ({spread['min']:.3f}–{spread['max']:.3f})" if spread["n"] > 1 else ""
    return f"{spread['median']:.3f} s{rng}"


def _fmt_speedup(c: dict, n: int) -> str:
    s = c["steps_ratio"]
    if s["mean"] is None:
        return f"never reached (0/{n} seeds)"
    text = f"{s['mean']:.2f}×"
    if s.get("ci95"):
        text += f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"
    return text + f" ({c['ratio_reached']}/{n} seeds reached)"


# ---------------------------------------------------------------------------------- loss against compute
def frontier_lines(tst: compute.Point, baselines: list[compute.Point], flops_note: str = "",
                   max_ratio: float | None = None) -> list[str]:
    """A TST point against the frontier with steps, for a record: the best baseline at no more FLOPs with the
    Welch Δ and verdict (``compute.against_frontier``), then every baseline point (up to ``max_ratio`` × TST's
    FLOPs), the frontier's members marked ★."""
    f = compute.against_frontier(tst, baselines)
    b = f["best"]
    lines = [f"Best baseline at no more FLOPs than TST ({tst.flops:.3e}{flops_note}): **{b.name}**, "
             f"{stats.fmt(stats.mean_ci(b.losses), 4, False)} ({len(b.losses)} seeds) at {b.flops:.3e} FLOPs "
             f"({b.flops / tst.flops:.2f}× TST's). TST − it: **{stats.fmt(f['delta'], 4)}** — {f['verdict']}.", "",
             "Every baseline point (the frontier's members marked ★):", "",
             "| baseline | seeds | FLOPs (× TST's) | final val loss |", "|---|---|---|---|"]
    front = {p.name for p in compute.frontier(baselines)}
    for p in sorted(baselines, key=lambda p: p.flops):
        if max_ratio is None or p.flops <= max_ratio * tst.flops:
            lines.append(f"| {'★ ' if p.name in front else ''}{p.name} | {len(p.losses)} | {p.flops:.3e} "
                         f"({p.flops / tst.flops:.2f}) | {stats.fmt(stats.mean_ci(p.losses), 4, False)} |")
    return lines


def plot_loss_vs_flops(out: Path, series: list[dict], fname: str, title: str) -> str:
    """Final validation loss against total training FLOPs (log axis). Each series: ``label``, ``color``,
    ``marker``, ``points`` [(FLOPs, mean loss, [lo, hi] or None, text or None)] and ``line`` (join the points:
    a compute curve) — means over seeds with their 95 % intervals."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for s in series:
        pts = sorted(s["points"])
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[y - ci[0] if ci else 0 for _, y, ci, _ in pts], [ci[1] - y if ci else 0 for _, y, ci, _ in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt=s.get("marker", "o") + ("-" if s.get("line") else ""), color=s["color"],
                    label=s["label"], markersize=s.get("size", 5), capsize=3, elinewidth=0.9, lw=1.2)
        for x, y, _, text in pts:
            if text:
                ax.annotate(text, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points", color=s["color"])
    xs = [p[0] for s in series for p in s["points"]]
    if xs and max(xs) > 20 * min(xs):  # a log axis labelled 1, 2, 5 of each decade
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0e}".replace("e+", "e")))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:  # less than a decade and a half: a linear axis, where its ticks stay distinct
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
    ax.set_xlabel("total training FLOPs (positions × FLOPs per position)")
    ax.set_ylabel("final validation loss (nats; mean, 95 % CI)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out, fname)


def curve_series(curve: dict, label: str, color: str) -> dict:
    """A ``curve.summarize_curve`` record as a series of ``plot_loss_vs_flops`` (a joined compute curve)."""
    return {"label": label, "color": color, "marker": "o", "line": True,
            "points": [(p["flops"], p["loss"]["mean"], p["loss"].get("ci95"), f"{p['steps']} steps")
                       for p in curve["points"] if p["loss"]["mean"] is not None]}


def write_curve_report(out: Path, curve: dict) -> None:
    """``curve.md`` (with ``curve.png``): each budget's FLOPs and final loss, and branch − separate where run."""
    plot = plot_loss_vs_flops(out, [curve_series(curve, f"{curve['shape']} lr {curve['lr']:g} baseline", "#444444")],
                              "curve.png", f"Compute curve of {curve['shape']} (branches of one warmup–stable run)")
    has_sep = any("separate" in p for p in curve["points"])
    md = [f"# Compute curve: {curve['shape']}, lr {curve['lr']:g}", "",
          f"Baseline final validation loss at {len(curve['budgets'])} step budgets ({', '.join(map(str, curve['budgets']))}; "
          f"{curve['positions_per_step']} positions a step, the last {curve['decay_frac']:.0%} of each budget decays "
          f"the learning rate). The longest budget is one run; each shorter one is a cooldown branch of it. "
          f"Seeds {curve['seeds']}; intervals are 95 % over init seeds only (one data order). "
          f"Data: `{curve['data']}`. Machine: {machine_description()}.", "",
          "| steps | FLOPs | final val loss | per seed |" + (" separate run | branch − separate |" if has_sep else ""),
          "|---|---|---|---|" + ("---|---|" if has_sep else "")]
    for p in curve["points"]:
        per = ", ".join(f"{s}: {v['loss']:.4f}" for s, v in p["per_seed"].items())
        row = f"| {p['steps']:,} | {p['flops']:.3e} | {stats.fmt(p['loss'], 4, False)} | {per} |" if p["flops"] else \
            f"| {p['steps']:,} | n/a | n/a | |"
        if has_sep:
            sep = ", ".join(f"{s}: {v:.4f}" for s, v in (p.get("separate") or {}).items() if v is not None)
            row += f" {sep or '—'} | {stats.fmt(p.get('branch_minus_separate'), 5) if 'separate' in p else '—'} |"
        md.append(row)
    md += ["", f"![compute curve]({plot})", ""]
    write_atomic(out / "curve.md", "\n".join(md))


def plot_loss_vs_step(out: Path, series: list[tuple[str, str, list[list[dict]]]], fname: str) -> str:
    """Training loss (smoothed) and validation loss against step for each (label, colour, runs' records), with
    the phase boundary marked where a run changes phase. Before the boundary TST's training loss is the MCE over
    the bag, not next-token CE: only the validation points compare across arms there."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    boundaries, every = set(), []
    for label, color, runs in series:
        for i, recs in enumerate(runs):
            steps = [r for r in recs if r.get("loss") is not None and "val_loss" not in r]
            if steps:
                ax.plot([r["step"] for r in steps], _ema([r["loss"] for r in steps], 0.98), color=color, lw=1.0,
                        alpha=0.8 if i == 0 else 0.4, label=f"{label}: training loss (EMA)" if i == 0 else None)
                every += [(r["step"], r["loss"]) for r in steps]
            evals = [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
            if evals:
                ax.plot(*zip(*evals), "o", color=color, ms=5, mfc="white" if i else color,
                        label=f"{label}: validation loss" if i == 0 else None)
            phases = [r["phase"] for r in steps]
            boundaries |= {steps[j]["step"] - 1 for j in range(1, len(phases)) if phases[j] != phases[j - 1]}
    _zoom(ax, every)
    for b in sorted(boundaries):
        ax.axvline(b, color="#d62728", ls="--", lw=0.8, alpha=0.7)
        lo, hi = ax.get_ylim()
        ax.text(b, hi - 0.02 * (hi - lo), " phase boundary", color="#d62728", fontsize=8, va="top")
    ax.set_xlabel("step (equal FLOPs per step)")
    ax.set_ylabel("loss (nats)")
    ax.set_title("Loss against step; before the boundary TST's training loss is its MCE, not next-token CE", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out, fname)


def write_demo_md(out: Path, lines: list[str], result: dict, what_ran: str, note: str, shipped: list) -> None:
    """``demo.md``: the verdict lines (the first is the headline), what ran, and two figures — loss against
    compute (TST, its baseline's curve, the shipped baselines and the frontier) and loss against step."""
    from .compute import Point, frontier
    t = result["tst"]
    measured = [Point(f"{result['curve']['shape']} {p['steps']}", p["flops"], tuple(v["loss"] for v in p["per_seed"].values()))
                for p in result["curve"]["points"] if p["per_seed"]]
    front = frontier(list(shipped) + measured)
    series = [{"label": f"other baselines ({len(shipped)}: shipped records)", "color": "#9ecae1", "marker": "o",
               "size": 3, "points": [(p.flops, p.loss, None, None) for p in shipped]}] if shipped else []
    series += [{"label": "frontier: best baseline at no more FLOPs", "color": "#3182bd", "marker": "o", "line": True,
                "size": 4, "points": [(p.flops, p.loss, None, p.name.split(" lr")[0] + (f", {p.meta['steps']:,} steps"
                                                                                    if "steps" in p.meta else ""))
                                      for p in front]},
               curve_series(result["curve"], f"{result['curve']['shape']} baseline curve (measured here)", "#444444"),
               {"label": f"TST {result['curve']['shape']} (measured here)", "color": "#d62728", "marker": "s", "size": 7,
                "points": [(t["flops"], t["loss"]["mean"], t["loss"].get("ci95"), "TST")]}]
    fig1 = plot_loss_vs_flops(out, series, "demo.png", "Validation loss against compute: TST, its baseline's curve "
                              "and the frontier")
    runs = [(result["curve"]["points"][0]["per_seed"], "baseline (branch of the 1.5× run)", "#444444"),
            (t["per_seed"], "TST", "#d62728")]
    fig2 = plot_loss_vs_step(out, [(label, color, [read_metrics(out / "runs" / v["run"]) for v in per.values()])
                                   for per, label, color in runs], "loss_vs_step.png")
    md = ["# `tst demo`: how much compute TST saves, and where it stands", "", f"**{lines[0]}**", ""]
    md += [f"- {line}" for line in lines[1:]]
    md += ["", "## What ran", "", f"{what_ran} Machine: {machine_description()}.", "",
           f"Baselines beyond this run: {note}.", "",
           "Definitions (`tst_train/experiments/compute.py`): the compute curve is monotone and interpolated linearly "
           "in log FLOPs; beyond it the speed-up is a bound, never an extrapolation; the frontier is the best "
           "baseline over every shape, learning rate and step budget at no more FLOPs, and \"on the frontier\" needs "
           "the Welch 95 % interval below zero.", "",
           f"![loss against compute]({fig1})", "", f"![loss against step]({fig2})", ""]
    write_atomic(out / "demo.md", "\n".join(md))


# ---------------------------------------------------------------------------------- the study and the sweep
def format_study(result: dict, plots: list[str]) -> str:
    md = ["# Where TST pays: width, depth and the compute frontier", "",
          "Δ = TST − baseline final validation loss (next-token CE on held-out data) at equal FLOPs, paired by "
          "seed; brackets are 95 % intervals. Δ < 0: TST is better.", ""]
    if result.get("against_frontier"):
        md += ["## TST against the baseline frontier", "",
               "Each TST group against the best baseline group that cost the same or fewer total FLOPs (any shape, "
               "lr or step count in this pool — the frontier is only as good as the shapes and budgets tried); "
               "Welch interval. \"On the frontier\" only where the whole interval lies below zero.", "",
               "| TST group | FLOPs | loss | best baseline at ≤ its FLOPs | FLOPs | loss | Δ | verdict |",
               "|---|---|---|---|---|---|---|---|"]
        for a in result["against_frontier"]:
            b = a["best_baseline"]
            md.append(f"| d{a['dim']}/L{a['n_layers']} lr {a['lr']:g}, {a['steps']} steps, {a['arm']} | {a['flops']:.2e} | "
                      f"{stats.fmt(a['loss'], signed=False)} | d{b['dim']}/L{b['n_layers']} lr {b['lr']:g}, {b['steps']} steps | "
                      f"{b['flops']:.2e} | {stats.fmt(b['loss'], signed=False)} | {stats.fmt(a['delta'])} | {a['verdict']} |")
        md.append("")
    if result["width_trends"]:
        md += ["## Δ against width", "", "| depth | lr | steps | TST cell | widths | Δ per width | trend per doubling | "
               "crossover width [95 % bootstrap] |", "|---|---|---|---|---|---|---|---|"]
        for t in result["width_trends"]:
            per = "; ".join(f"d{w}: {stats.fmt(d)}" for w, d in zip(t["widths"], t["delta"]))
            slope = f"{t['slope_per_doubling']:+.3f}" if "slope_per_doubling" in t else "n/a"
            cross = t.get("crossover_width")
            cross_txt = "none (Δ does not fall with width)" if cross is None else f"{cross:.0f}"
            if cross is not None and t.get("crossover_ci95"):
                cross_txt += f" [{t['crossover_ci95'][0]:.0f}, {t['crossover_ci95'][1]:.0f}]"
            elif cross is not None and t.get("crossover_found_in") is None:
                cross_txt += " (no interval: one seed at some width)"
            elif cross is not None:
                cross_txt += f" (interval undefined: {100 * (1 - t['crossover_found_in']):.0f}% of resamples find no crossover)"
            if t.get("crossover_extrapolated"):
                cross_txt += f", extrapolated beyond the measured d{min(t['widths'])}–d{max(t['widths'])}"
            md.append(f"| {t['n_layers']} | {t['lr']:g} | {t['steps']} | {t['arm']} | {', '.join(map(str, t['widths']))} | "
                      f"{per} | {slope} | {cross_txt} |")
        md.append("")
    md += ["## Every group", "", "| width | depth | lr | steps | FLOPs/position | TST cell | seeds | baseline | TST | Δ |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["groups"]:
        md.append(f"| {r['dim']} | {r['n_layers']} | {r['lr']:g} | {r['steps']} | {r['flops_per_position'] / 1e6:.1f} M | "
                  f"{r['arm']} | {len(r['seeds'])} | {stats.fmt(r['baseline'], signed=False)} | {stats.fmt(r['tst'], signed=False)} | "
                  f"{stats.fmt(r['delta'])} |")
    md += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(md) + "\n"


def plot_width(out: Path, result: dict) -> str | None:
    trends = result["width_trends"]
    if not trends:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for t in trends:
        xs = t["widths"]
        ys = [d["mean"] for d in t["delta"]]
        err = [[d["mean"] - d["ci95"][0] for d in t["delta"]], [d["ci95"][1] - d["mean"] for d in t["delta"]]] \
            if all(d.get("ci95") for d in t["delta"]) else None
        label = f"L={t['n_layers']}, lr {t['lr']:g}, {t['steps']} steps, {t['arm']}"
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        if "slope_per_doubling" in t:
            lo, hi = math.log2(min(xs)) - 0.5, math.log2(max(xs)) + 1.5
            grid = [lo + (hi - lo) * i / 40 for i in range(41)]
            ax.plot([2 ** g for g in grid], [t["intercept"] + t["slope_per_doubling"] * g for g in grid], ls="--",
                    color=line[0].get_color(), alpha=0.6)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("model width d (log scale)")
    ax.set_ylabel("Δ final val loss, TST − baseline (nats)")
    ax.set_title("TST vs the equal-FLOPs baseline against width (95% CI; dashed: fitted trend)", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out, "delta_vs_width.png", dpi=120)


def plot_frontier(out: Path, rows: list[dict]) -> str | None:
    if len({(r["dim"], r["n_layers"]) for r in rows}) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for which, marker, color in (("baseline", "o", "tab:blue"), ("tst", "s", "tab:red")):
        pts = sorted({(r["flops"], r[which]["mean"], r["dim"], r["n_layers"], tuple(r[which].get("ci95") or ()))
                      for r in rows if r[which]["mean"]})
        # a shared baseline appears in several rows: the set keeps one point per (FLOPs, loss, shape)
        err = [[y - ci[0] if ci else 0 for _, y, _, _, ci in pts], [ci[1] - y if ci else 0 for _, y, _, _, ci in pts]]
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, fmt=marker, color=color, label=which,
                    markersize=4.5, capsize=2, elinewidth=0.8)
        for f, y, d, n, _ in pts:
            ax.annotate(f"{d}/{n}", (f, y), fontsize=6, xytext=(3, 2), textcoords="offset points", color=color)
        env, best = [], math.inf
        for f, y, *_ in pts:
            if y < best:
                best = y
                env.append((f, y))
        ax.step([p[0] for p in env], [p[1] for p in env], where="post", color=color, alpha=0.5)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    # a short log axis: label 1, 2 and 5 of each decade (matplotlib's own minor labels overlap)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0e}".replace("e+", "e")))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("total training FLOPs (positions × FLOPs/position)")
    ax.set_ylabel("final validation loss (mean over seeds, 95% CI)")
    ax.set_title("Compute frontier: every shape (width/depth), baseline vs TST; line: best at ≤ these FLOPs", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, out, "frontier.png", dpi=120)


def format_sweep_table(result: dict) -> str:
    lines = ["| group | weighting | bag size | superposition frac | baseline final val loss | final val loss | "
             f"Δ vs baseline{' (95% CI)' if any(c['final_val_loss']['n'] > 1 for c in result['cells']) else ''} | "
             "steps to the baseline's final loss (ratio) |", "|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        f, d, sp, bl = c["final_val_loss"], c["delta_val_loss"], c["steps_ratio"], c["baseline_final_val_loss"]
        fv = "n/a" if f["mean"] is None else f"{f['mean']:.4f}"
        bv = "n/a" if bl["mean"] is None else f"{bl['mean']:.4f}"
        dv = "n/a" if d["mean"] is None else f"{d['mean']:+.4f}" + (
            f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d.get("ci95") else "")
        n = f["n"]
        sv = "never reached" if sp["mean"] is None else f"{sp['mean']:.2f}×"
        weighting = c["weights"] + (f" +{c['variant']}" if c.get("variant") else "")
        lines.append(f"| {c['group'] or '—'} | {weighting} | {c['bag_size']} | {c['superposition_frac']:g} | {bv} | "
                     f"{fv} | {dv} | {sv} ({c['ratio_reached']}/{n} seeds) |")
    return "\n".join(lines)


def plot_heatmaps(out: Path, result: dict, bags, fracs, weightings) -> list[tuple[str, str]]:
    import numpy as np

    from .report import pyplot, save_figure
    plt = pyplot()
    files = []
    for w in weightings:
        grid = np.full((len(fracs), len(bags)), np.nan)
        for c in result["cells"]:
            if c["weights"] == w and c["delta_val_loss"]["mean"] is not None:
                grid[fracs.index(c["superposition_frac"]), bags.index(c["bag_size"])] = c["delta_val_loss"]["mean"]
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(bags), 1.2 + 0.8 * len(fracs)))
        lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        for i in range(len(fracs)):
            for j in range(len(bags)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:+.3f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(bags)), [str(b) for b in bags])
        ax.set_yticks(range(len(fracs)), [f"{f:g}" for f in fracs])
        ax.set_xlabel("bag size s")
        ax.set_ylabel("superposition fraction r")
        ax.set_title(f"Δ final val loss vs baseline ({w})", fontsize=9)
        fig.colorbar(im, ax=ax)
        files.append((w, save_figure(fig, out, f"heatmap_{w}.png")))
    return files
