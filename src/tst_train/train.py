"""Two-phase TST training: one loop, the phase looked up by step from ``tst.TSTSchedule``.

    tst train --data DATA_DIR --out RUN_DIR --preset tiny --steps 2000 --bag-size 4 --superposition-frac 0.3
    torchrun --nproc_per_node=8 -m tst train --data DATA_DIR --out RUN_DIR --config configs/smollm2_135m_tst.toml

The recovery phase is the ``bag_size == 1`` case of the same step: the loader reads
``phase.tokens_per_row(seq_len)`` tokens per row, ``phase.fold`` makes ``(inputs, targets)``, and the loss
is the MCE (plain CE when each position has one target). Nothing else changes at the transition —
same weights, same optimizer state, same continuous learning-rate schedule — unless an ablation asks.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import tst

from . import checkpoint, distributed, errors, rundir, tokenizer_files
from .build import build_model, fingerprint
from .config import Config, auto_eval_every, numbers_differ
from .console import Console
from .data.layout import verify_content
from .data.loader import TokenLoader, check_data_dir, load_split
from .errors import UserError
from .evaluate import Validator
from .metrics import MetricsWriter, check_wandb, copy_records, mfu, truncate_after
from .model import Transformer
from .loading import split_source
from .objective import TrainObjective
from .optim import build_optimizer, lr_at, reset_moments, set_lr

# Dense bf16 peaks (TFLOP/s) for MFU when --log.peak_tflops is not given.
KNOWN_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "B200": 2250.0}


@dataclass
class TrainState:
    """Everything a checkpoint restores besides the model and optimizer."""
    step: int = 0  # completed steps = the next 0-based step to run
    data_tokens: int = 0  # raw tokens consumed (global)
    positions: int = 0  # positions computed on (global)
    flops: float = 0.0
    train_time: float = 0.0  # seconds inside training steps (no eval, no checkpointing)
    loader: dict = field(default_factory=dict)
    step_times: list = field(default_factory=list)
    best_val_loss: float = math.inf
    last_val_loss: float | None = None  # the latest evaluation (so a resumed finished run still reports it)
    rng: dict = field(default_factory=dict)


class StopFlag:
    """SIGTERM/SIGINT → checkpoint at the next step boundary and exit cleanly (preemption, Ctrl-C).

    ``pending``: a stop signal that arrived before the loop installed this handler (a parallel sweep's worker
    notes one that lands while a run is still being set up), so that run stops at its first step boundary.
    """

    pending: int | None = None

    def __init__(self, on_stop=None) -> None:
        self.signum = StopFlag.pending
        self.on_stop = on_stop  # called with the signal number on each stop signal (a sweep forwards it)
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a notebook worker)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = self.signum or signum  # the first signal is the cause (a parallel sweep forwards a SIGTERM)
        if self.on_stop is not None:
            self.on_stop(signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def check_token_ids(rows: torch.Tensor, vocab_size: int, data_path: str) -> None:
    """Token ids at or beyond the vocabulary mean data and meta.json disagree: refuse, don't index out of range."""
    top = int(rows.max())
    if top >= vocab_size or int(rows.min()) < 0:
        raise UserError(f"{data_path} holds token id {top} but its vocab_size is {vocab_size}: the data does not "
                        f"match its meta.json; re-run `tst prepare` for this directory")


def make_schedule(cfg: Config) -> tst.TSTSchedule:
    """The run's schedule; ``weights = "fitted"`` fits the bag weights to the data's token mutual information."""
    fitted = None
    if cfg.tst.weights == "fitted" and cfg.tst.mode != "baseline" and cfg.tst.bag_size > 1:
        from .mutual_info import fitted_weights
        fitted = fitted_weights(cfg.data.path, cfg.tst.bag_size)["weights"]
    try:
        return cfg.tst.schedule(cfg.train.steps, fitted_weights=fitted)
    except ValueError as e:
        raise UserError(f"--tst.{e}") from None


def plan(cfg: Config, meta: dict) -> dict:
    """What the run will do: steps per phase, data tokens, FLOPs, epochs — printed by ``--dry-run``."""
    mcfg = build_model(cfg, meta["vocab_size"])
    with torch.device("meta"):
        model = Transformer(mcfg)
    schedule = make_schedule(cfg)
    t = cfg.train
    positions = t.steps * t.batch_size * t.seq_len
    flops_pp = model.flops_per_position(t.seq_len)
    flops = sum((end - start) * t.batch_size * t.seq_len * model.flops_per_position(p.positions_per_row(t.seq_len))
                for start, end, p in schedule.phases)
    data_tokens = schedule.data_tokens(t.batch_size, t.seq_len)
    train_tokens = meta["splits"]["train"]["tokens"]
    start, why = resolve_data_start(cfg, meta)
    phases = [{"phase": p.name, "steps": end - start, "first_step": start, "bag_size": p.bag_size,
               "target_bag_size": p.target_bag_size,
               "weights": p.weights if isinstance(p.weights, str) else [round(float(w), 6) for w in p.weights],
               "data_tokens": schedule.data_tokens(t.batch_size, t.seq_len, end) - schedule.data_tokens(t.batch_size, t.seq_len, start)}
              for start, end, p in schedule.phases]
    return {
        "model": asdict(mcfg), "params": model.num_params(), "params_non_embedding": model.num_params(exclude_embedding=True),
        "params_active": model.num_active_params(),
        "transition_step": schedule.transition_step, "phases": phases,
        "positions": positions, "data_tokens": data_tokens, "flops_per_position": flops_pp,
        "flops": flops, "train_tokens_available": train_tokens,
        "epochs": data_tokens / train_tokens, "data_repeats": start + data_tokens > train_tokens,
        "data_start": start, "data_start_reason": why,
        "eval_every": auto_eval_every(cfg), "eval_tokens": cfg.eval.tokens,
        **({"fitted_weights": _fit_record(cfg)} if cfg.tst.weights == "fitted" and schedule.transition_step else {}),
    }


def _fit_record(cfg: Config) -> dict:
    from .mutual_info import fitted_weights
    r = fitted_weights(cfg.data.path, cfg.tst.bag_size)
    return {"fit": r["fit"], "mutual_information": r["mutual_information"], "sample_tokens": r["sample_tokens"],
            "weights": [float(w) for w in r["weights"]]}


def format_plan(p: dict) -> str:
    lines = [f"model: {p['params'] / 1e6:.2f}M parameters ({p['params_non_embedding'] / 1e6:.2f}M without the input embedding)"]
    experts = p["model"].get("n_experts")
    if experts:  # FLOPs count the active ones
        lines.append(f"  mixture of experts: {experts} experts per block, {p['model']['top_k']} per position; "
                     f"{p['params_active'] / 1e6:.2f}M parameters active per position")
    for ph in p["phases"]:
        lines.append(f"  {ph['phase']:<13} steps {ph['first_step']}..{ph['first_step'] + ph['steps'] - 1} "
                     f"({ph['steps']} steps), bag_size={ph['bag_size']}, targets/position={ph['target_bag_size']}, "
                     f"data tokens {ph['data_tokens']:,}")
    lines.append(f"positions: {p['positions']:,}; FLOPs: {p['flops']:.3e} ({p['flops_per_position']:.3e}/position)")
    every = f"every {p['eval_every']} steps, " if p["eval_every"] else ""
    lines.append(f"validation: {every}at the phase boundary and at the end, on {p['eval_tokens']:,} held-out tokens")
    lines.append(f"data tokens needed: {p['data_tokens']:,} of {p['train_tokens_available']:,} available "
                 f"({p['epochs']:.2f} epochs)")
    start = p.get("data_start", 0)
    if start:
        lines.append(f"data: the stream starts at token {start:,} ({p['data_start_reason']})")
    if p["data_repeats"]:
        lines.append(f"WARNING: data repeats: the run reads past the end of the training split "
                     f"({(start + p['data_tokens']) / p['train_tokens_available']:.2f} epochs' worth from its start)")
    else:
        lines.append("data: enough for a single epoch (no token is seen twice"
                     + (", nor any the source run saw)" if start else ")"))
    return "\n".join(lines)


def _peak_flops(cfg: Config, device: torch.device, world: int) -> float | None:
    if cfg.log.peak_tflops:
        return cfg.log.peak_tflops * 1e12 * world
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in KNOWN_PEAK_TFLOPS.items():
            if key in name:
                return tf * 1e12 * world
    return None


class LossHealth:
    """The divergence rule (``train.divergence_check``, on by default): a run has diverged when its validation loss
    exceeds ln(V) + 1 — worse than guessing every token uniformly, which a fresh model already beats — or when its
    gradient norm has been exactly zero for ``FLAT_STEPS`` steps in a row (the weights no longer move: what a huge
    learning rate leaves, with the loss frozen). NaN and infinity are caught on their own, at once."""

    FLAT_STEPS = 20

    def __init__(self, uniform_loss: float) -> None:
        self.limit, self.flat = uniform_loss + 1.0, 0

    def after_step(self, step: int, out: dict) -> str | None:
        self.flat = self.flat + 1 if out["grad_norm"] == 0.0 else 0
        if self.flat >= self.FLAT_STEPS:
            return (f"the gradient norm has been 0 for {self.flat} steps (step {step}, loss {out['loss']:.3f}): the "
                    "weights no longer move; lower --train.lr")
        return None

    def after_eval(self, step: int, val_loss: float) -> str | None:
        if val_loss > self.limit:
            return (f"the validation loss {val_loss:.3f} at step {step} is above ln(vocabulary) + 1 = {self.limit:.3f}, "
                    "worse than guessing uniformly; lower --train.lr")
        return None


class Trainer:
    """Holds the pieces of one run; ``run()`` is the loop."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.dist = distributed.init(t.device, t.collective_timeout_s)
        self.meta = check_data_dir(cfg.data.path)
        verify_content(cfg.data.path, self.meta)  # a shard changed in place since `tst prepare` is refused
        self.mcfg = build_model(cfg, self.meta["vocab_size"])
        if t.batch_size % self.dist.world_size:
            raise UserError(f"--batch-size {t.batch_size} is not divisible by the {self.dist.world_size} ranks")
        self.local_rows = t.batch_size // self.dist.world_size
        self.micro_rows = t.micro_batch_size or self.local_rows
        if self.local_rows % self.micro_rows:
            raise UserError(f"--train.micro_batch_size {self.micro_rows} does not divide the {self.local_rows} rows per rank")
        self.schedule = make_schedule(cfg)
        self.device = self.dist.device
        self.autocast_dtype = distributed.autocast_dtype(cfg.train.dtype, self.device)
        torch.manual_seed(t.seed)
        with torch.device("meta"):
            self.model = Transformer(self.mcfg)
        self.model.to_empty(device=self.device)
        self.model.init_weights()
        if t.init_from and not resume:  # weights only: the optimizer and the schedule start fresh
            from .loading import init_from
            distributed.print0(init_from(self.model, t.init_from, cfg.data.path))
        if t.compile:
            for block in self.model.layers:
                block.compile()
        self.objective = distributed.parallelize(TrainObjective(self.model, fused=t.fused_loss),
                                                 self.model.layers, self.dist, self.autocast_dtype)
        self.optimizer = build_optimizer(self.model, t)
        self.loader = TokenLoader(cfg.data.path, "train", rank=self.dist.rank, world_size=self.dist.world_size)
        self.validator = Validator(load_split(cfg.data.path, "val"), t.seq_len, cfg.eval.tokens,
                                   cfg.eval.batch_size, self.meta.get("bytes_per_token") or 0.0, self.device)
        check_token_ids(self.validator.rows, self.mcfg.vocab_size, cfg.data.path)
        self.flops_per_position = self.model.flops_per_position(t.seq_len)
        self.peak_flops = _peak_flops(cfg, self.device, self.dist.world_size)
        self.fingerprint = fingerprint(cfg, self.mcfg, self.meta)
        self.ckpt_root = run_dir / "checkpoints"
        self.state = TrainState()
        self.health, self.diverged = LossHealth(math.log(self.mcfg.vocab_size)), None
        self.pinned = frozenset(int(x) for x in cfg.checkpoint.keep_steps.split(",") if x)
        if resume:
            self._resume()
        elif t.branch_from:
            self._branch()
        else:  # a continued run starts after the data its source consumed (train.data_start)
            start = resolve_data_start(cfg, self.meta)[0]
            if start:
                self.loader.load_state_dict({"position": start, "epoch": 0, "tokens_consumed": 0})

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> None:
        checkpoint.clean_partial(self.ckpt_root)
        state = checkpoint.load_latest(self.ckpt_root, self.model, self.optimizer, self.fingerprint)
        if state is None:
            distributed.print0(f"no checkpoint in {self.ckpt_root}; starting from step 0")
            truncate_after(self.run_dir, 0)
            return
        self.state = TrainState(**state)
        self.loader.load_state_dict(self.state.loader)
        if self.state.rng:
            torch.set_rng_state(self.state.rng["cpu"])
        truncate_after(self.run_dir, self.state.step)
        distributed.print0(f"resumed from step {self.state.step}")

    def _branch(self) -> None:
        """Start from the trunk's checkpoint at the branch step: its weights, optimizer moments, data position
        and counters, so the branch equals a run trained alone with this run's steps."""
        trunk_dir, step = split_source(self.cfg.train.branch_from)
        trunk = rundir.read_config(trunk_dir)
        problem = branch_mismatch(trunk, self.cfg, step)
        if problem:
            raise UserError(f"--train.branch_from {self.cfg.train.branch_from}: {problem}")
        path = checkpoint.checkpoint_at(trunk_dir / "checkpoints", step)
        if not path.is_dir():
            raise UserError(f"--train.branch_from: {trunk_dir} has no checkpoint at step {step} (train it with "
                            f"--checkpoint.keep_steps={step} to keep one there)")
        state = checkpoint.load_state(path, self.model, self.optimizer, fingerprint(trunk, self.mcfg, self.meta))
        self.state = TrainState(**state)
        self.loader.load_state_dict(self.state.loader)
        if self.state.rng:
            torch.set_rng_state(self.state.rng["cpu"])

    def save_checkpoint(self) -> None:
        self.state.loader = self.loader.state_dict()
        self.state.rng = {"cpu": torch.get_rng_state()}
        checkpoint.save(self.ckpt_root, self.state.step, self.model, self.optimizer, asdict(self.state),
                        self.fingerprint, self.cfg.checkpoint.keep, self.pinned)

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int, phase: tst.Phase) -> dict:
        """One optimizer step on one global batch: fold, forward/backward per micro-batch, clip, update."""
        t = self.cfg.train
        lr = lr_at(step, t)
        set_lr(self.optimizer, lr)
        n_rows = phase.rows_per_step(t.batch_size)  # s× the rows with the batch fold
        rows = self.loader.next_batch(n_rows, phase.tokens_per_row(t.seq_len), phase.data_tokens_per_row(t.seq_len))
        check_token_ids(rows, self.mcfg.vocab_size, self.cfg.data.path)  # on the CPU copy: no device sync
        # (b, P, s) bags and their targets: ids (b, P, t) with the phase's weighting and objective
        inputs, targets = phase.fold(rows.to(self.device), t.seq_len, self.meta.get("eos_id"))
        positions = phase.positions(inputs, self.meta.get("eos_id"))  # None unless documents restart them
        local_rows, micro_rows = self.local_rows * n_rows // t.batch_size, self.micro_rows * n_rows // t.batch_size
        # Normalise by the *global* weighted count of valid targets so that accumulation and data
        # parallelism give exactly the gradient of one big batch.
        norm = distributed.all_reduce_sum(tst.multi_hot_weight_sum(targets).double()).item()
        # FSDP2 averages gradients over ranks; scaling by world size turns that average into the sum.
        scale = self.dist.world_size / norm
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(0, local_rows, micro_rows):
            j = i + micro_rows
            with distributed.autocast(self.device, self.autocast_dtype):
                part = self.objective(inputs[i:j], targets.rows(i, j), None if positions is None else positions[i:j])
            ((part * scale) + self._router_loss((j - i) / n_rows)).backward()
            loss_sum += part.detach().double()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or math.inf)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = distributed.all_reduce_sum(loss_sum).item() / norm  # .item() is the step's one sync point
        return {"loss": loss, "lr": lr, "grad_norm": float(grad_norm), **self._routing()}

    def _router_loss(self, share: float) -> torch.Tensor | float:
        """A mixture of experts' load-balancing term for a micro-batch holding ``share`` of the global rows:
        summed over micro-batches and ranks it is ``router_aux_coef`` × their mean balancing loss (the logged
        ``loss`` stays the language-model loss alone)."""
        aux = self.model.router_aux_loss()
        coef = self.cfg.model.router_aux_coef
        if aux is None or not coef:
            return 0.0
        return aux * (coef * share * self.dist.world_size)  # FSDP2 averages over ranks: × world makes it the sum

    def _routing(self) -> dict:
        """A mixture of experts' routing health over the step just taken (nothing for a dense model), and the
        auxiliary-loss-free bias update: per layer, the load's coefficient of variation across experts (0 =
        balanced) and max/mean, the router's mean entropy (nats; ln E = uniform), the balancing loss."""
        layers = self.model.moe_layers()
        if not layers:
            return {}
        # one collective for both: (layers, E) choices per expert and (layers, 3) entropy / positions / loss sums
        both = distributed.all_reduce_sum(torch.stack([torch.cat(layer.read_stats()) for layer in layers]))
        loads, sums = both[:, :-3], both[:, -3:]  # (layers, E), (layers, 3)
        if self.cfg.model.router_bias_rate:
            for layer, load in zip(layers, loads):
                layer.update_bias(load, self.cfg.model.router_bias_rate)
        mean = loads.mean(-1)
        cv = (loads.std(-1, unbiased=False) / mean).tolist()
        peak = (loads.max(-1).values / mean).tolist()
        ent = (sums[:, 0] / sums[:, 1]).tolist()
        return {"router_aux": float((sums[:, 2] / sums[:, 1]).mean()),
                "load_cv": sum(cv) / len(cv), "load_max_over_mean": max(peak), "router_entropy": sum(ent) / len(ent),
                "load_cv_by_layer": [round(x, 5) for x in cv], "router_entropy_by_layer": [round(x, 5) for x in ent]}

    def on_transition(self) -> None:
        """Ablations at the phase boundary; by default nothing happens (weights and moments carry over)."""
        ablation = self.cfg.tst
        if ablation.reinit_embeddings:
            head, emb = self.model.lm_head.weight, self.model.tok_embeddings.weight
            gen_state = torch.get_rng_state()
            torch.manual_seed(self.cfg.train.seed + 1)  # deterministic, independent of the run so far
            with torch.no_grad():
                for w in {id(head): head, id(emb): emb}.values():
                    torch.nn.init.normal_(w, mean=0.0, std=self.mcfg.init_std)
            torch.set_rng_state(gen_state)
            reset_moments(self.optimizer, [head, emb])  # fresh weights get fresh moments
        if ablation.reset_optimizer:
            reset_moments(self.optimizer)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        cfg, st = self.cfg, self.state
        t = cfg.train
        writer = MetricsWriter(self.run_dir, cfg.to_dict(), cfg.log.tensorboard, cfg.log.wandb, cfg.log.wandb_project)
        console = Console(cfg.log.progress and distributed.is_main(), t.steps, st.step, cfg.log.every)
        interrupted = None
        wall_start = time.perf_counter() - st.train_time
        with StopFlag() as stop:
            while st.step < t.steps:
                step = st.step
                phase = self.schedule.phase_at(step)
                if self.schedule.is_transition(step):
                    self.on_transition()
                t0 = time.perf_counter()
                out = self.train_step(step, phase)  # all ranks participate
                dt = time.perf_counter() - t0
                self._account(phase, dt)
                writer.log(self._step_record(phase, out, dt))
                console.step(st.step, f"{phase.name} s={phase.bag_size} loss={out['loss']:.3f} "
                                      f"{t.batch_size * t.seq_len / dt:,.0f} pos/s")
                if not math.isfinite(out["loss"]):
                    raise UserError(f"the loss became {out['loss']} at step {st.step}; lower --train.lr "
                                    f"or check the data")
                diverged = self.health.after_step(st.step, out)
                if self.due(auto_eval_every(cfg)):
                    record = self._evaluate(phase, wall_start)
                    writer.log(record)
                    console.line(_eval_line(record, t.steps))
                    diverged = diverged or self.health.after_eval(st.step, record["val_loss"])
                if diverged and cfg.train.divergence_check:
                    self.diverged = diverged
                    break
                if self.due(cfg.checkpoint.every) or st.step in self.pinned:
                    self.save_checkpoint()
                if distributed.any_rank(stop.signum is not None, self.device):
                    interrupted = signal.Signals(stop.signum or signal.SIGTERM).name
                    if not (self.due(cfg.checkpoint.every) or st.step in self.pinned):
                        self.save_checkpoint()
                    break
        console.close()
        writer.close()
        return self._summary(interrupted, time.perf_counter() - wall_start)

    def _phase_flops_per_position(self, phase: tst.Phase) -> float:
        """FLOPs per position at the phase's attention context (L, or L/s with the batch fold)."""
        return self.model.flops_per_position(phase.positions_per_row(self.cfg.train.seq_len))

    def _account(self, phase: tst.Phase, dt: float) -> None:
        t, st = self.cfg.train, self.state
        st.step += 1
        st.data_tokens += phase.data_tokens_per_step(t.batch_size, t.seq_len)
        st.positions += t.batch_size * t.seq_len  # every phase computes on B·L positions
        st.flops += self._phase_flops_per_position(phase) * t.batch_size * t.seq_len
        st.train_time += dt
        st.step_times.append(dt)

    def _step_record(self, phase: tst.Phase, out: dict, dt: float) -> dict:
        t, st = self.cfg.train, self.state
        positions_per_s = t.batch_size * t.seq_len / dt
        flops_per_s = positions_per_s * self._phase_flops_per_position(phase)
        return {"step": st.step, "phase": phase.name, "bag_size": phase.bag_size,
                "target_bag_size": phase.target_bag_size, **out,
                "data_tokens": st.data_tokens, "positions": st.positions, "flops": st.flops,
                "step_time": dt, "data_tokens_per_s": phase.data_tokens_per_step(t.batch_size, t.seq_len) / dt,
                "positions_per_s": positions_per_s, "mfu": mfu(flops_per_s, self.peak_flops),
                "epoch": self.loader.epoch}

    def due(self, every: int) -> bool:
        """After the step just completed: at the end, at the phase boundary, and every ``every`` steps (0 = never)."""
        step = self.state.step
        return step == self.cfg.train.steps or self.schedule.is_transition(step) or (every > 0 and step % every == 0)

    def _evaluate(self, phase: tst.Phase, wall_start: float) -> dict:
        st = self.state
        res = self.validator.evaluate(self.objective, self.autocast_dtype)
        st.best_val_loss = min(st.best_val_loss, res["val_loss"])
        st.last_val_loss = res["val_loss"]
        return {"step": st.step, "phase": phase.name, **res, "data_tokens": st.data_tokens,
                "positions": st.positions, "flops": st.flops, "train_time": st.train_time,
                "wall_time": time.perf_counter() - wall_start}

    def _summary(self, interrupted: str | None, wall_time: float) -> dict:
        st = self.state
        return {"completed": interrupted is None and self.diverged is None and st.step >= self.cfg.train.steps,
                "diverged": self.diverged,
                "interrupted_by": interrupted, "steps": st.step, "transition_step": self.schedule.transition_step,
                "data_tokens": st.data_tokens, "positions": st.positions, "flops": st.flops,
                "train_time": st.train_time, "wall_time": wall_time,
                "step_time_median": statistics.median(st.step_times) if st.step_times else None,
                "best_val_loss": st.best_val_loss if math.isfinite(st.best_val_loss) else None,
                "final_val_loss": st.last_val_loss,
                "epochs": st.data_tokens / self.meta["splits"]["train"]["tokens"],
                "params": self.model.num_params()}


def resolve_data_start(cfg: Config, meta: dict) -> tuple[int, str]:
    """(token position where the training stream starts, why) — ``train.data_start``, checked against the split."""
    from .loading import data_start
    start, why = data_start(cfg)
    tokens = meta["splits"]["train"]["tokens"]
    if start >= tokens:
        raise UserError(f"--train.data_start: position {start:,} is past the {tokens:,} training tokens of "
                        f"{cfg.data.path}" + (f" ({why})" if why else ""))
    return start, why


def branch_mismatch(trunk: Config, branch: Config, step: int) -> str | None:
    """Why ``branch`` cannot continue ``trunk``'s state from ``step`` (None when it can): the settings must be
    the same but the step count, and the learning rate and phase the same at every step before ``step``."""
    a, b = copy.deepcopy(trunk), copy.deepcopy(branch)
    a.train.steps = b.train.steps = 1
    a.train.branch_from = b.train.branch_from
    diffs = numbers_differ(a, b)
    if diffs:
        return f"the trunk was trained with other settings ({'; '.join(diffs)})"
    if not 0 < step < branch.train.steps or step > trunk.train.steps:
        return f"step {step} is not inside both runs (trunk {trunk.train.steps} steps, branch {branch.train.steps})"
    sa, sb = make_schedule(trunk), make_schedule(branch)
    for k in range(step):
        pa, pb = sa.phase_at(k), sb.phase_at(k)
        if lr_at(k, trunk.train) != lr_at(k, branch.train) or (pa.name, pa.bag_size) != (pb.name, pb.bag_size):
            return (f"the two schedules differ at step {k} (learning rate {lr_at(k, trunk.train):g} vs "
                    f"{lr_at(k, branch.train):g}, phase {pa.name} vs {pb.name}): branch at or before the trunk's "
                    f"decay start and phase boundary")
    return None


def extension_hint(saved: Config, cfg: Config, out: Path) -> str:
    """Why ``--resume --steps N`` does not retrain ``out`` in place, and the command that trains it to N steps: a
    new run that branches from ``out``'s newest checkpoint where the two schedules still agree (before the old
    decay), so it equals a run planned for N steps from the start — and ``out`` stays as it is."""
    from .loading import checkpoint_steps
    a, b = copy.deepcopy(saved), copy.deepcopy(cfg)
    a.train.steps = b.train.steps
    if numbers_differ(a, b):
        return f"cannot change {', '.join(d.split(':')[0] for d in numbers_differ(a, b))} when resuming {out}"
    usable = [k for k in sorted(checkpoint_steps(out)) if branch_mismatch(saved, cfg, k) is None]
    decay = saved.train.steps - round(saved.train.decay_frac * saved.train.steps)
    if not usable:
        return (f"{out} was planned for {saved.train.steps:,} steps and keeps no checkpoint before its learning-rate "
                f"decay (step {decay:,}) from which {cfg.train.steps:,} steps could continue; train runs you may "
                f"extend with --checkpoint.keep_steps={decay}")
    return (f"{out} was planned for {saved.train.steps:,} steps (its learning rate decays from step {decay:,}); "
            f"to train it for {cfg.train.steps:,}, branch a new run from its checkpoint at step {usable[-1]:,}, where "
            f"the schedules agree: tst train --config {out / rundir.CONFIG_FILE} --out {out}-{cfg.train.steps} "
            f"--steps {cfg.train.steps} --train.branch_from={out}:{usable[-1]}")


def run_training(cfg: Config, out: Path, resume: bool = False, show_plan: bool = True) -> dict:
    """Train into run directory ``out`` (a new one, or an existing one with ``resume``): the Python API.

    Everything is checked — config, data, model shape, checkpoint — before anything is written, so a
    failed start leaves no run directory behind. Writes ``plan.json`` and, when the run ends or stops,
    ``summary.json``; returns the summary (``completed`` is False after a stop signal).
    """
    cfg.validate()
    check_wandb(cfg.log.wandb and distributed.is_main())
    if not resume:  # a run directory records its data and starting weights by absolute path
        cfg = copy.deepcopy(cfg)
        cfg.data.path = os.path.abspath(cfg.data.path)
        if cfg.train.init_from:
            from .loading import absolute_source
            cfg.train.init_from = absolute_source(cfg.train.init_from)
        if cfg.train.branch_from:
            trunk, step = split_source(cfg.train.branch_from)
            cfg.train.branch_from = f"{os.path.abspath(trunk)}:{step}"
    distributed.init(cfg.train.device, cfg.train.collective_timeout_s)
    main = distributed.is_main()
    with contextlib.ExitStack() as held:
        if resume and main:
            held.enter_context(rundir.locked(out))
        elif main:
            rundir.check_new(out)
        trainer = Trainer(cfg, out, resume)
        p = plan(cfg, trainer.meta)
        # eval, generate and export then need no data directory
        tokenizer = tokenizer_files.collect(cfg.data.path) if main and not tokenizer_files.has_snapshot(out) else None
        if not resume and main:
            rundir.create(out, cfg)
            held.enter_context(rundir.locked(out))
        if tokenizer:
            tokenizer_files.write(out, tokenizer)
        if cfg.train.branch_from and not resume and main:  # the branch's record starts with the trunk's
            trunk, step = split_source(cfg.train.branch_from)
            copy_records(trunk, out, step)
        distributed.barrier()
        if main:
            rundir.write_json(out / rundir.PLAN_FILE, p)
            if not resume and show_plan:  # a multi-run command prints one line per run instead
                print(format_plan(p))
        with errors.io_errors(f"training into {out}"):
            summary = trainer.run()
            if main:
                rundir.write_json(out / rundir.SUMMARY_FILE, summary)
        if summary["diverged"]:  # recorded in summary.json, then one line and exit 2
            raise UserError(f"training diverged: {summary['diverged']} (recorded in {out / rundir.SUMMARY_FILE}; "
                            "--train.divergence_check=false trains on regardless)")
    return summary


def _eval_line(record: dict, total: int) -> str:
    bpb = f", {record['val_bpb']:.4f} bits/byte" if record.get("val_bpb") else ""
    return f"step {record['step']}/{total} ({record['phase']}): val_loss {record['val_loss']:.4f}{bpb}"
