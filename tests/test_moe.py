"""The mixture of experts: router and grouped experts against a per-position loop, FLOPs on active parameters
by hand, the balancing loss and bias, Hugging Face Qwen3-MoE parity, and TST training with exact resume."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import tst
from conftest import sigterm_after
from tst_train import rundir
from tst_train.config import Config
from tst_train.errors import UserError
from tst_train.metrics import read_metrics
from tst_train.model import Transformer, model_config
from tst_train.moe import MoE
from tst_train.train import Trainer, run_training


def make_moe(norm_topk_prob=True, shared=None, seed=0, d=16, ffn=12, experts=6, k=2) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(d, ffn, experts, k, norm_topk_prob, shared)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(std=0.3)
    return moe


def loop_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Position by position: softmax over experts, the k most probable, their SwiGLUs weighted and summed."""
    out = []
    for h in x.reshape(-1, x.shape[-1]):  # (d,)
        probs = F.softmax(moe.router.gate.weight @ h, dim=-1)  # (E,)
        top = sorted(range(len(probs)), key=lambda e: -float(probs[e].detach()))[:moe.top_k]
        w = torch.stack([probs[e] for e in top])
        if moe.router.norm_topk_prob:
            w = w / w.sum()
        y = sum(wi * (moe.experts.w2[e] @ (F.silu(moe.experts.w1[e] @ h) * (moe.experts.w3[e] @ h)))
                for wi, e in zip(w, top))
        if moe.shared is not None:
            y = y + moe.shared(h)
        out.append(y)
    return torch.stack(out).reshape(x.shape)


@pytest.mark.parametrize("norm_topk_prob", [True, False])
@pytest.mark.parametrize("grouped", [False, True])  # one matmul per expert, or torch's grouped matmul
def test_router_and_grouped_experts_match_a_per_position_loop(norm_topk_prob, grouped):
    if grouped and not hasattr(F, "grouped_mm") and not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no grouped matmul")
    moe = make_moe(norm_topk_prob)
    moe.experts.use_grouped_mm = grouped
    ref = make_moe(norm_topk_prob)
    x = torch.randn(3, 5, 16)
    y, y_ref = moe(x), loop_reference(ref, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    for (name, p), q in zip(moe.named_parameters(), ref.parameters()):  # router gate included: it gets the gradient
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_shared_expert_and_bags():
    from tst_train.model import FeedForward
    torch.manual_seed(1)
    shared = FeedForward(16, 8)
    moe, ref = make_moe(shared=shared), make_moe(shared=shared)
    x = torch.randn(2, 4, 16)
    torch.testing.assert_close(moe(x), loop_reference(ref, x), rtol=1e-5, atol=1e-5)
    m = Transformer(model_config("moe-tiny", 256))
    assert m(torch.randint(0, 256, (2, 8, 4))).shape == (2, 8, 256)  # bags: the router sees their means


def test_balancing_loss_by_hand_and_statistics():
    moe = make_moe(experts=4, k=1).train()
    x = torch.randn(1, 40, 16)
    moe(x)
    probs = F.softmax(x.reshape(-1, 16) @ moe.router.gate.weight.T, dim=-1)  # (N, E)
    counts = torch.bincount(probs.argmax(-1), minlength=4).float()
    expected = 4 * ((counts / 40) * probs.mean(0)).sum()
    torch.testing.assert_close(moe.aux_loss, expected)
    load, sums = moe.read_stats()
    assert load.tolist() == counts.tolist() and sums[1] == 40
    torch.testing.assert_close(sums[0] / 40, -(probs * probs.log()).sum(-1).mean())
    assert moe.read_stats()[0].sum() == 0  # read resets
    with torch.no_grad():
        moe(x)  # evaluation records nothing
    assert moe.read_stats()[0].sum() == 0


def test_bias_update_moves_choices_toward_the_underloaded_expert():
    moe = make_moe(experts=3, k=1)
    moe.update_bias(torch.tensor([10.0, 1.0, 1.0]), 0.5)
    assert moe.router.expert_bias.tolist() == [-0.5, 0.5, 0.5]


def test_flops_count_active_parameters_by_hand():
    cfg = model_config("moe-tiny", 512)  # d 64, 2 layers, 4 heads / 2 kv (hd 16), 8 experts of 176, top-2
    with torch.device("meta"):
        model = Transformer(cfg)
    attn = 64 * 16 * (4 + 2 * 2) + 4 * 16 * 64
    mlp = 64 * 8 + 2 * 3 * 64 * 176  # router + the two chosen experts
    assert model.flops_per_position(100) == 6 * (2 * (attn + mlp) + 64 * 512) + 12 * 2 * 64 * 100
    expert = 3 * 64 * 176
    assert model.num_params() - model.num_active_params() == 2 * 6 * expert  # six idle experts per layer
    assert tst.flops_per_position(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176, vocab_size=512,
                                  seq_len=100) == 6 * (2 * (attn + 3 * 64 * 176) + 64 * 512) + 12 * 2 * 64 * 100


@pytest.mark.parametrize("shape", [dict(preset="moe-tiny"), dict(preset="moe-tiny", norm_topk_prob=False),
                                   dict(preset="tiny", qk_norm=True)])
def test_hf_export_matches_transformers_and_loads_back(tmp_path, shape):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from tst_train.export import export_hf
    from tst_train.loading import load
    cfg = model_config(shape.pop("preset"), 512, **shape)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)  # gains other than 1, so a missed norm shows
    export_hf(model, cfg, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == config["architectures"][0] == ("Qwen3MoeForCausalLM" if cfg.n_experts else "Qwen3ForCausalLM")
    x = torch.randint(0, 512, (2, 20))
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(hf(x).logits, ours, rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(load(tmp_path / "hf").model(x), ours, rtol=0, atol=0)


def test_hf_adapter_counts_the_active_parameters_of_an_hf_mixture_of_experts(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from tst.integrations.hf import inactive_expert_params
    from tst_train.export import export_hf
    cfg = model_config("moe-tiny", 512)
    ours = Transformer(cfg)
    export_hf(ours, cfg, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    active = hf.num_parameters(exclude_embeddings=True) - inactive_expert_params(hf.config)
    assert active == ours.num_active_params() - ours.tok_embeddings.weight.numel()
    dense = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128)
    assert inactive_expert_params(dense) == 0


@pytest.mark.parametrize("loss_impl", ["fused", "logits"])
def test_hf_adapter_adds_the_models_own_balancing_loss_when_asked(tmp_path, loss_impl):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from tst.integrations.hf import tst_causal_lm_loss
    from tst_train.export import export_hf
    cfg = model_config("moe-tiny", 512)
    export_hf(Transformer(cfg), cfg, tmp_path / "hf")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    asked = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", output_router_logits=True,
                                                              router_aux_loss_coef=0.5)
    phase = tst.TSTConfig(bag_size=4, superposition_frac=0.5).schedule(10).phase_at(0)
    rows = torch.randint(0, 512, (2, phase.tokens_per_row(8)))
    a = tst_causal_lm_loss(plain, rows, phase, 8, loss_impl=loss_impl)
    b = tst_causal_lm_loss(asked, rows, phase, 8, loss_impl=loss_impl)
    embeds = tst.superpose(asked.get_input_embeddings(), phase.fold(rows, 8)[0])
    aux = asked(inputs_embeds=embeds, use_cache=False).aux_loss
    torch.testing.assert_close(b - a, 0.5 * aux)


def test_fused_hf_experts_load_like_per_expert_ones():
    from tst_train.hf_format import from_hf_state_dict, to_hf_state_dict
    cfg = model_config("moe-tiny", 256)
    model = Transformer(cfg)
    per_expert = to_hf_state_dict(model)
    fused = {k: v for k, v in per_expert.items() if ".experts." not in k}
    for i in range(cfg.n_layers):
        w = {n: torch.stack([per_expert[f"model.layers.{i}.mlp.experts.{e}.{n}.weight"] for e in range(8)])
             for n in ("gate_proj", "up_proj", "down_proj")}
        fused[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.cat((w["gate_proj"], w["up_proj"]), dim=1)
        fused[f"model.layers.{i}.mlp.experts.down_proj"] = w["down_proj"]
    a, b = from_hf_state_dict(per_expert, cfg), from_hf_state_dict(fused, cfg)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    Transformer(cfg).load_state_dict(a)  # strict


def test_shapes_hf_has_no_class_for_are_one_line(tmp_path):
    from tst_train.export import export_hf
    for cfg in (model_config("moe-tiny", 256, qk_norm=False), model_config("moe-tiny", 256, shared_ffn_dim=32)):
        with pytest.raises(UserError, match="no Hugging Face class"):
            export_hf(Transformer(cfg), cfg, tmp_path / "x")
    cfg = model_config("moe-tiny", 256)
    model = Transformer(cfg)
    model.layers[0].feed_forward.router.expert_bias[0] = 0.1
    with pytest.raises(UserError, match="router_bias_rate"):
        export_hf(model, cfg, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def moe_config(data, **model) -> Config:
    cfg = Config()
    cfg.data.path = str(data)
    cfg.model.preset = "moe-tiny"
    for k, v in model.items():
        setattr(cfg.model, k, v)
    cfg.train.steps, cfg.train.batch_size, cfg.train.seq_len = 16, 4, 32
    cfg.train.warmup_steps, cfg.train.lr, cfg.train.threads = 4, 3e-3, 1
    cfg.tst.mode, cfg.tst.bag_size, cfg.tst.superposition_frac = "tst", 4, 0.5
    cfg.eval.every, cfg.eval.tokens, cfg.eval.batch_size = 8, 2048, 8
    cfg.log.progress = cfg.log.tensorboard = False
    return cfg.validate()


def test_tst_trains_a_mixture_of_experts_and_logs_routing_health(tiny_data, tmp_path):
    summary = run_training(moe_config(tiny_data, router_bias_rate=0.001), tmp_path / "run")
    assert summary["completed"]
    steps = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert {r["phase"] for r in steps} == {"superposition", "recovery"}
    for r in steps:
        assert 0 <= r["load_cv"] and 1 <= r["load_max_over_mean"] <= 8 and 0 < r["router_entropy"] <= 2.08
        assert len(r["load_cv_by_layer"]) == 2 and r["router_aux"] >= 0.99  # E·Σ f·P ≥ 1 up to rounding
    plan = json.loads((tmp_path / "run" / rundir.PLAN_FILE).read_text())
    assert plan["params_active"] < plan["params"]
    from tst_train.experiments.report import model_line
    line = model_line(tmp_path, {"arms": {"tst": {"seeds": {"0": {"run_dir": "run"}}}}})
    assert "8 SwiGLU experts of width 176, 2 per position" in line and "M parameters active per position" in line


def test_balancing_loss_reaches_the_router_but_not_the_logged_loss(tiny_data, tmp_path):
    grads = {}
    for coef in (0.0, 1.0):
        cfg = moe_config(tiny_data, router_aux_coef=coef)
        cfg.train.steps, cfg.train.grad_clip = 1, 0.0  # clipping would couple every gradient to the router's
        trainer = Trainer(cfg, tmp_path / f"c{coef}", resume=False)
        trainer.optimizer.step = lambda: None  # keep the gradients to compare them
        trainer.optimizer.zero_grad = lambda set_to_none=True: None
        out = trainer.train_step(0, trainer.schedule.phase_at(0))
        grads[coef] = (out["loss"], trainer.model.layers[0].feed_forward.router.gate.weight.grad.clone(),
                       trainer.model.lm_head.weight.grad.clone())
    assert grads[0.0][0] == grads[1.0][0]  # the logged loss is the language-model loss alone
    assert not torch.equal(grads[0.0][1], grads[1.0][1])
    assert torch.equal(grads[0.0][2], grads[1.0][2])  # the head does not feel the router's loss


@pytest.mark.parametrize("stop_at", [8, 11])  # at the phase boundary, in recovery
def test_resume_across_the_transition_is_bit_identical(tiny_data, tmp_path, stop_at):
    ref = tmp_path / "ref"
    run_training(moe_config(tiny_data, router_bias_rate=0.01), ref)
    cfg = moe_config(tiny_data, router_bias_rate=0.01)
    run = tmp_path / "run"
    rundir.create(run, cfg)
    trainer = Trainer(cfg, run, resume=False)
    sigterm_after(trainer, stop_at)  # preemption: handled at the step boundary
    assert trainer.run()["steps"] == stop_at
    assert Trainer(cfg, run, resume=True).run()["completed"]
    keep = ("loss", "val_loss", "load_cv", "router_entropy")
    rec = lambda d: [{k: r[k] for k in keep if k in r} | {"step": r["step"]} for r in read_metrics(d)]
    assert rec(run) == rec(ref)  # the choice bias is in the checkpoint: the same experts after resume


def test_checkpoints_from_before_the_mixture_of_experts_still_resume(tmp_path):
    from dataclasses import asdict

    from tst_train.checkpoint import check_compatible
    now = asdict(model_config("tiny", 256))
    before = {k: v for k, v in now.items() if k not in ("qk_norm", "n_experts", "top_k", "norm_topk_prob", "shared_ffn_dim")}
    check_compatible({"model": before, "data": 1}, {"model": now, "data": 1}, tmp_path)
    with pytest.raises(UserError, match="incompatible"):
        check_compatible({"model": before | {"dim": 8}, "data": 1}, {"model": now, "data": 1}, tmp_path)


def test_expert_settings_that_mean_nothing_are_refused():
    for overrides, says in (({"n_experts": 8}, "top_k=0 must be between"), ({"top_k": 2}, "needs n_experts"),
                            ({"shared_ffn_dim": 16}, "needs n_experts"), ({"n_experts": 4, "top_k": 5}, "top_k=5")):
        with pytest.raises(ValueError, match=says):
            model_config("tiny", 256, **overrides)


def test_run_names_say_how_many_experts():
    from tst_train.experiments.names import run_name
    cfg = Config()
    cfg.model.preset, cfg.train.steps = "qwen3-moe-tiny", 100
    assert run_name(cfg).startswith("d128-L4-E32k4-lr0.001-100steps-")
    cfg.model.top_k = 2
    assert run_name(cfg).startswith("d128-L4-E32k2-")
    cfg.model.preset, cfg.model.top_k = "tiny", 0
    assert run_name(cfg).startswith("d64-L2-lr")  # dense names as before


def test_compare_report_shows_routing_health_by_phase_and_band(tmp_path):
    from tst_train.experiments.report import plot_routing, routing_table
    rec = lambda step, phase, cv: {"step": step, "phase": phase, "loss": 1.0, "load_cv": cv, "load_max_over_mean": 2.0,
                                   "router_entropy": 2.0, "router_aux": 1.01}
    runs = {"baseline": [[rec(k, "recovery", 0.1) for k in range(1, 11)]],
            "tst": [[rec(k, "superposition" if k <= 3 else "recovery", 0.5 if k <= 3 else 0.2) for k in range(1, 11)]]}
    table = routing_table(runs, bands=2)
    assert "| tst | 1–3 | **superposition** | 0.500 |" in table and "| tst | 4–10 | **recovery** | 0.200 |" in table
    assert "| baseline | 1–10 | **whole run** | 0.100 |" in table and "| baseline | 1–5 | recovery | 0.100 |" in table and "| tst | 1–5 | recovery/superposition | 0.380 |" in table
    summary = {"arms": {"tst": {"seeds": {"0": {"transition_step": 3}}}}}
    assert (tmp_path / plot_routing(tmp_path, runs, summary)).is_file()


def test_lifecycle_of_a_mixture_of_experts_through_its_export(tiny_data, tmp_path, capsys):
    """train → export (Qwen3MoeForCausalLM) → eval and generate on the export → --init-from the export; a dense
    run cannot start from it."""
    from tst_train.cli import main
    flags = ["--preset", "moe-tiny", "--steps", "6", "--batch-size", "2", "--seq-len", "32", "--train.threads=1",
             "--log.progress=false", "--log.tensorboard=false", "--eval.tokens=512"]
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *flags]) == 0
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["Qwen3MoeForCausalLM"]
    assert main(["eval", str(tmp_path / "hf"), "--data", str(tiny_data), "--tasks", "none",
                 "--out", str(tmp_path / "e.json")]) == 0
    run_eval = json.loads((tmp_path / "run" / "summary.json").read_text())["final_val_loss"]
    assert json.loads((tmp_path / "e.json").read_text())["validation"]["val_loss"] == pytest.approx(run_eval, abs=1e-5)
    assert main(["generate", str(tmp_path / "hf"), "--prompt", "It is", "--temperature", "0",
                 "--max-new-tokens", "4"]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "more"), *flags, "--mode", "baseline",
                 "--init-from", str(tmp_path / "hf")]) == 0
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "dense"), *flags[2:], "--preset", "tiny",
                 "--init-from", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "does not match this run's model" in err and "n_experts 8 vs 0" in err and err.count("\n") == 1


def _drop_expert(sd):
    sd.pop("model.layers.1.mlp.experts.3.up_proj.weight")


def _extra_expert(sd):
    sd["model.layers.1.mlp.experts.9.up_proj.weight"] = sd["model.layers.1.mlp.experts.3.up_proj.weight"].clone()


def _narrow_expert(sd):
    sd["model.layers.1.mlp.experts.3.up_proj.weight"] = sd["model.layers.1.mlp.experts.3.up_proj.weight"][:, :5].clone()


MALFORMED_MOE = {  # a received Qwen3-MoE directory: (config.json edit, weights edit, what the one line says)
    "experts a string": (lambda c: c.update(num_experts="8"), None, "field 'num_experts' is '8'"),
    "no top-k": (lambda c: c.pop("num_experts_per_tok"), None, "field 'num_experts_per_tok' is missing"),
    "top-k above experts": (lambda c: c.update(num_experts_per_tok=99), None, "top_k=99"),
    "dense layers between": (lambda c: c.update(mlp_only_layers=[0]), None, "mlp_only_layers"),
    "sliding window": (lambda c: c.update(use_sliding_window=True), None, "sliding-window"),
    "an expert missing": (None, _drop_expert, "has experts [0, 1, 2, 4, 5]"),
    "an expert too many": (None, _extra_expert, "not 0…7"),
    "an expert of the wrong shape": (None, _narrow_expert, "do not match its config.json"),
}


@pytest.mark.parametrize("case", list(MALFORMED_MOE))
def test_a_malformed_received_qwen3_moe_directory_is_one_line(tmp_path, capsys, case):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    from tst_train.cli import main
    from tst_train.export import export_hf
    cfg = model_config("moe-tiny", 256)
    export_hf(Transformer(cfg), cfg, tmp_path / "hf")
    edit_config, edit_weights, says = MALFORMED_MOE[case]
    if edit_config:
        config = json.loads((tmp_path / "hf" / "config.json").read_text())
        edit_config(config)
        (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    if edit_weights:
        sd = load_file(tmp_path / "hf" / "model.safetensors")
        edit_weights(sd)
        save_file(sd, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    assert main(["generate", str(tmp_path / "hf"), "--prompt", "It is", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_model_config_from_hf_checks_a_config_it_is_handed_directly():
    """The public converter validates its input itself, so an API caller that skipped the loader gets the same one
    line (a UserError), not a KeyError from a missing expert field."""
    from tst_train.errors import UserError
    from tst_train.export import hf_config_dict, model_config_from_hf
    config = hf_config_dict(model_config("moe-tiny", 256))
    assert model_config_from_hf(dict(config)).n_experts == 8
    for edit, _, says in (MALFORMED_MOE[c] for c in ("experts a string", "no top-k")):
        bad = dict(config)
        edit(bad)
        with pytest.raises(UserError, match=says):
            model_config_from_hf(bad)
