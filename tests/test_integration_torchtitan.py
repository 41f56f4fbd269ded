"""tst.integrations.torchtitan against the installed TorchTitan 0.3.0, on the CPU.

TorchTitan's own ``Trainer.__init__`` needs a CUDA device and a process group, so the trainer tests build
the same components (model from the config, loss, optimizers, LR schedulers, the real text dataloader) on
the CPU with a small stand-in for ``Trainer.__init__`` and drive TorchTitan's real ``train_step`` /
``post_dataloading_process`` / ``forward_backward_step`` through :class:`TSTTrainer`. FlexAttention has no
CPU backward in this PyTorch, so the debug model runs with TorchTitan's SDPA inner attention.
"""
import contextlib
import dataclasses
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torchtitan")

import tst  # noqa: E402
from tst.integrations import torchtitan as tti  # noqa: E402

IGNORE = -100
VOCAB = 2048  # the Llama3 debug model's vocabulary


@pytest.fixture(scope="module")
def tt():
    tti.import_torchtitan()
    import torchtitan.components.loss as loss_mod
    import torchtitan.hf_datasets as hf_datasets
    import torchtitan.hf_datasets.text_datasets as text_datasets
    import torchtitan.models.common.attention as attention
    import torchtitan.models.llama3.config_registry as llama3_registry
    import torchtitan.trainer as trainer_mod
    from torchtitan.config import ConfigManager
    from torchtitan.distributed import ParallelDims
    from torchtitan.components.optimizer.optimizer import default_adamw
    from torchtitan.models.common.embedding import Embedding
    from torchtitan.models.llama3 import Llama3StateDictAdapter, model_registry
    return types.SimpleNamespace(loss=loss_mod, text=text_datasets, hf=hf_datasets, attention=attention,
                                 registry=llama3_registry, trainer=trainer_mod, ParallelDims=ParallelDims,
                                 model_registry=model_registry, ConfigManager=ConfigManager, Embedding=Embedding,
                                 default_adamw=default_adamw, Llama3StateDictAdapter=Llama3StateDictAdapter)


def _sdpa(tt, model_config):
    """Swap FlexAttention (no CPU backward) for TorchTitan's SDPA inner attention, in place."""
    for _, _, parent, attr in list(model_config.traverse(tt.attention.FlexAttention.Config)):
        new = tt.attention.ScaledDotProductAttention.Config()
        if isinstance(parent, list):
            parent[attr] = new
        else:
            setattr(parent, attr, new)
    return model_config


def _debug_model(tt, *, superposed, seed=0):
    converters = [tti.SuperposedEmbeddingConverter.Config()] if superposed else None
    spec = tt.model_registry("debugmodel", converters=converters)
    _sdpa(tt, spec.model)
    torch.manual_seed(seed)
    model = spec.model.build()
    model.init_states()
    return model


def _listing3(pred, labels, weights):
    """Independent transcription of the paper's Listing 3: s separate mean-reduced F.cross_entropy calls."""
    B, L, V = pred.shape
    s = labels.shape[1] // L
    logits = pred.reshape(B * L, V).to(torch.promote_types(pred.dtype, torch.float32))  # fp32 (fp64 stays)
    lab = F.pad(labels, (0, s - 1), value=IGNORE)[:, s - 1:].reshape(B, L, s)
    loss, w_total = 0.0, 0.0
    for i in range(s):
        loss = loss + weights[i] * F.cross_entropy(logits, lab[:, :, i].flatten(), ignore_index=IGNORE)
        w_total += weights[i]
    return loss / w_total


def _listing3_sums(pred, labels, weights):
    """The same transcription with reduction='sum': per offset Σ CE, weighted by s·w_i/Σw."""
    B, L, V = pred.shape
    s = labels.shape[1] // L
    logits = pred.reshape(B * L, V).to(torch.promote_types(pred.dtype, torch.float32))  # fp32 (fp64 stays)
    lab = F.pad(labels, (0, s - 1), value=IGNORE)[:, s - 1:].reshape(B, L, s)
    total = 0.0
    for i in range(s):
        ce = F.cross_entropy(logits, lab[:, :, i].flatten(), ignore_index=IGNORE, reduction="sum")
        total = total + weights[i] * s / sum(weights) * ce
    return total


# ------------------------------------------------------------------------------------------------
# Import isolation and the CLI entry point
# ------------------------------------------------------------------------------------------------

def test_importing_tst_never_imports_torchtitan():
    code = ("import sys, tst, tst.integrations, tst.integrations.torchtitan as m; "
            "m.phase1_throughput(1.0, 0.5, 2); assert 'torchtitan' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cli_config_and_two_run_commands(tt):
    p1, p2 = tti.two_run_commands("llama3_debugmodel", bag_size=4, superposition_frac=0.3, total_steps=20,
                                  dump_folder="/tmp/run", nproc_per_node=2,
                                  extra_args=("--training.seq_len", "64"))
    assert p1[:4] == ["torchrun", "--nproc_per_node=2", "-m", "torchtitan.train"]
    c1 = tt.ConfigManager().parse_args(p1[4:])
    c2 = tt.ConfigManager().parse_args(p2[4:])
    assert isinstance(c1, tti.TSTTrainer.Config) and type(c2) is tt.trainer.Trainer.Config
    assert dataclasses.asdict(c1.tst) == {"bag_size": 4, "superposition_frac": 0.3, "mode": "tst", "weights": "uniform",
                                          "loss": "mce", "bagging": "stream", "fold": "sequence",
                                          "transition_steps": 0, "stop_at_transition": True}
    assert (c1.training.steps, c2.training.steps, c1.training.seq_len, c2.training.seq_len) == (20, 20, 64, 64)
    assert c1.checkpoint.enable and c2.checkpoint.enable and c1.dump_folder == c2.dump_folder == "/tmp/run"
    assert isinstance(c1.model_spec.model.tok_embeddings, tti.TorchTitanSuperposedEmbedding.Config)
    assert isinstance(c1.loss, tti.ChunkedMultiHotLossWrapper.Config)
    assert type(c2.model_spec.model.tok_embeddings) is tt.Embedding.Config  # stock: no TST code
    # any TorchTitan config function gets a tst_ twin
    assert isinstance(tti.tst_llama3_debugmodel_ce_loss().loss, tti.MultiHotCrossEntropyLoss.Config)
    with pytest.raises(ValueError, match="0 < round"):
        tti.two_run_commands("llama3_debugmodel", bag_size=4, superposition_frac=1.0, total_steps=20,
                             dump_folder="x")


# ------------------------------------------------------------------------------------------------
# The superposed embedding in TorchTitan's Llama3
# ------------------------------------------------------------------------------------------------

def test_superposed_llama3_forward_equals_mean_embeddings(tt):
    plain = _debug_model(tt, superposed=False)
    model = _debug_model(tt, superposed=True)
    emb = model.tok_embeddings
    assert isinstance(emb, tti.TorchTitanSuperposedEmbedding) and isinstance(emb, tt.Embedding)
    assert list(model.state_dict()) == list(plain.state_dict())  # same keys, same order
    model.load_state_dict(plain.state_dict(), strict=True)  # and plain checkpoints load as they are
    adapter = tt.Llama3StateDictAdapter(model.config, None)  # TorchTitan's HF conversion is unchanged
    hf = adapter.to_hf(model.state_dict())
    assert torch.equal(hf["model.embed_tokens.weight"], emb.weight)
    plain.load_state_dict(adapter.from_hf(hf), strict=True)
    B, L, s = 2, 8, 3
    g = torch.Generator().manual_seed(1)
    bags = torch.randint(0, VOCAB, (B, L, s), generator=g)
    with torch.no_grad():
        out = model(bags, positions=tti.latent_positions(B, L))
        assert out.shape == (B, L, VOCAB)
        mean = emb.weight.double()[bags].mean(-2).float()  # (B, L, d)
        model.tok_embeddings = None  # Decoder.forward passes the input through when there is no embedding
        ref = model(mean)
        model.tok_embeddings = emb
        assert torch.allclose(out, ref, atol=2e-5, rtol=1e-4)
        # the sequence length comes from the embedding output: positions=None (RoPE 0…L−1) is the same
        assert torch.allclose(model(bags), out, atol=1e-6)
        # 2-D tokens and s = 1 bags are the ordinary lookup, identical to the stock model
        tokens = bags[..., 0]
        assert torch.equal(model(tokens), plain(tokens))
        assert torch.equal(model(tokens[..., None]), plain(tokens))


def test_superpose_built_module_in_place(tt):
    model = _debug_model(tt, superposed=False)
    weight = model.tok_embeddings.weight
    keys = list(model.state_dict())
    tti.superpose_embedding_module(model)
    assert isinstance(model.tok_embeddings, tti.TorchTitanSuperposedEmbedding)
    assert model.tok_embeddings.weight is weight and list(model.state_dict()) == keys
    plain = torch.nn.Module()
    plain.tok_embeddings = torch.nn.Embedding(10, 4)
    tti.superpose_embedding_module(plain)
    assert type(plain.tok_embeddings).__name__ == "SuperposedEmbedding"
    assert plain.tok_embeddings(torch.tensor([[[1, 3]]])).shape == (1, 1, 4)


# ------------------------------------------------------------------------------------------------
# The loss
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", ["uniform", "power"])
def test_loss_matches_listing3(tt, weights):
    B, L, s, V = 3, 5, 4, 37
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(B, L, V, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, V, (B, L * s), generator=g)
    w = [1.0] * s if weights == "uniform" else [1.0 / (i + 1) for i in range(s)]
    loss_fn = tti.MultiHotCrossEntropyLoss.Config(weights=weights).build()
    gvt = (labels != IGNORE).sum()
    loss, metrics = loss_fn(pred, labels, gvt)
    assert metrics == {}
    ref = _listing3_sums(pred, labels, w) / gvt
    tol = 1e-12 if weights == "uniform" else 1e-6  # the MCE keeps bag weights in float32
    assert torch.allclose(loss, ref, rtol=tol, atol=0)
    (g1,) = torch.autograd.grad(loss, pred)
    (g2,) = torch.autograd.grad(ref, pred)
    assert torch.allclose(g1, g2, rtol=tol, atol=1e-12)
    # Listing 3 proper (one mean per offset) differs only at the last position of each row
    lit = _listing3(pred, labels, w).detach()
    assert abs(float(loss.detach() - lit)) < float(lit) / (L - 1)
    assert torch.allclose(tti.tst_cross_entropy_loss(pred, labels, weights=weights), ref * gvt, rtol=tol)


def test_loss_s1_is_torchtitan_cross_entropy(tt):
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 6, 11, generator=g)
    labels = torch.randint(0, 11, (2, 6), generator=g)
    labels[0, 2] = IGNORE
    gvt = (labels != IGNORE).sum()
    ours, _ = tti.MultiHotCrossEntropyLoss.Config().build()(pred, labels, gvt)
    stock, _ = tt.loss.CrossEntropyLoss.Config().build()(pred, labels, gvt)
    plain = F.cross_entropy(pred.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    assert torch.equal(ours, stock) and torch.allclose(ours, plain, rtol=1e-6)
    assert torch.equal(tti.tst_cross_entropy_loss(pred, labels), stock * gvt)


def test_loss_is_additive_over_microbatches(tt):
    """TorchTitan's contract: Σ over micro-batches/ranks of (local sum ÷ global valid tokens) = the global loss."""
    g = torch.Generator().manual_seed(4)
    pred = torch.randn(4, 6, 13, generator=g)
    labels = torch.randint(0, 13, (4, 12), generator=g)
    labels[1, :5] = IGNORE
    loss_fn = tti.MultiHotCrossEntropyLoss.Config(weights="power").build()
    gvt = (labels != IGNORE).sum()
    whole, _ = loss_fn(pred, labels, gvt)
    parts = loss_fn(pred[:1], labels[:1], gvt)[0] + loss_fn(pred[1:], labels[1:], gvt)[0]
    assert torch.allclose(whole, parts, rtol=1e-6)
    with pytest.raises(ValueError, match="multiple"):
        loss_fn(pred, labels[:, :7], gvt)


def test_chunked_wrapper_keeps_targets_across_chunks(tt):
    B, L, s, d, V = 2, 8, 3, 16, 29
    g = torch.Generator().manual_seed(5)
    head = torch.nn.Linear(d, V, bias=False)
    hidden = torch.randn(B, L, d, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (B, L * s), generator=g)
    gvt = (labels != IGNORE).sum()
    wrapper = tti.ChunkedMultiHotLossWrapper.Config(num_chunks=4).build()
    wrapper.set_lm_head(head)
    loss, _ = wrapper(hidden, labels, gvt)
    loss.backward()
    grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = head.weight.grad = None
    ref = tti.tst_cross_entropy_loss(head(hidden), labels) / gvt
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-6) and torch.allclose(grads[1], head.weight.grad, atol=1e-6)
    # the stock wrapper would shift inside each chunk and lose s−1 targets per chunk
    stock = tt.loss.ChunkedLossWrapper.Config(num_chunks=4, loss_fn=tti.MultiHotCrossEntropyLoss.Config()).build()
    stock.set_lm_head(head)
    with torch.no_grad():
        assert not torch.allclose(stock(hidden.detach(), labels, gvt)[0], loss)


# ------------------------------------------------------------------------------------------------
# Throughput on positions
# ------------------------------------------------------------------------------------------------

def test_phase1_throughput_arithmetic():
    assert tti.phase1_throughput(6000.0, 0.42, 6) == (1000.0, pytest.approx(0.07))
    assert tti.phase1_throughput(500.0, None, 2) == (250.0, None)
    assert tti.phase1_throughput(100.0, 0.3, 1) == (100.0, 0.3)
    # a run that set training.seq_len = L·s also over-counted attention FLOPs per token
    tps, mfu = tti.phase1_throughput(4000.0, 0.5, 4, flops_per_token=1.2e9, flops_per_position=1.0e9)
    assert tps == 1000.0 and mfu == pytest.approx(0.5 * (1.0 / 1.2) / 4)
    with pytest.raises(ValueError):
        tti.phase1_throughput(1.0, 0.1, 2, flops_per_token=1.0)
    # one place decides the transition: the core schedule (the paper: 6,000 of 20,000; 12,483 of 49,983)
    assert tst.TSTConfig(bag_size=6, superposition_frac=0.3).schedule(20000).transition_step == 6000
    assert tst.TSTConfig(bag_size=16, superposition_frac=0.2497).schedule(49983).transition_step == 12481


# ------------------------------------------------------------------------------------------------
# TSTTrainer on TorchTitan's real train_step (CPU stand-in for Trainer.__init__)
# ------------------------------------------------------------------------------------------------

_TEXTS = [f"document {i}: " + " ".join(f"w{(i * 7 + j) % 23}" for j in range(20 + i % 9)) for i in range(40)]


class _ByteTokenizer:
    eos_id = 2

    def encode(self, text, add_bos=True, add_eos=True):
        return [1] * add_bos + [3 + b for b in text.encode()] + [2] * add_eos

    def get_vocab_size(self):
        return 259


class _Metrics:
    """What train_step touches on MetricsProcessor; records each logged step."""

    def __init__(self):
        self.ntokens_since_last_log, self.data_loading_times, self.logged = 0, [], []

    def should_log(self, step):
        return True

    def log(self, step, loss, max_loss, grad_norm, extra_metrics=None):
        self.logged.append({"step": step, "loss": loss, "positions": self.ntokens_since_last_log, **extra_metrics})
        self.ntokens_since_last_log = 0
        self.data_loading_times.clear()


def _cpu_trainer_init(self, config, tt):
    """Stand-in for Trainer.__init__ (which needs CUDA and a process group): the same components, on CPU."""
    self.config = config
    self.parallel_dims = tt.ParallelDims.from_config(config.parallelism, 1)
    self.parallel_dims.get_optional_mesh = lambda name: None  # single process: no meshes (they need a process group)
    self.device = torch.device("cpu")
    model_config = config.model_spec.model
    model_config.update_from_config(config=config)
    self.model_config = model_config
    torch.manual_seed(0)
    model = model_config.build()
    model.init_states()
    model.train()
    self.model_parts = [model]
    self.metrics_processor = _Metrics()
    self.loss_fn = config.loss.build(compile_config=config.compile)
    if hasattr(self.loss_fn, "set_lm_head"):
        self.loss_fn.set_lm_head(model.lm_head)
        model._skip_lm_head = True
    self.gradient_accumulation_steps, self.num_pipeline_parallel_microbatches = 1, 1
    self.optimizers = config.optimizer.build(model_parts=self.model_parts)
    self.lr_schedulers = config.lr_scheduler.build(optimizers=self.optimizers, training_steps=config.training.steps)
    self.step, self.ntokens_seen = 0, 0
    self.tokenizer = _ByteTokenizer()
    self.dataloader = config.dataloader.build(dp_world_size=1, dp_rank=0, tokenizer=self.tokenizer,
                                              seq_len=config.training.seq_len,
                                              local_batch_size=config.training.local_batch_size,
                                              snapshot_every_n_steps=None)
    self.checkpointer = types.SimpleNamespace(maybe_wait_for_staging=lambda: None, saved=[],
                                              save=lambda step, last_step=False: None)
    self.train_context = contextlib.nullcontext
    self.fwd_bwd_fn = self._forward_backward_body


@pytest.fixture()
def cpu_trainers(tt, monkeypatch):
    monkeypatch.setitem(tt.text.DATASETS, "tst_unit_test", tt.hf.DatasetConfig(
        path="unused", loader=lambda path: __import__("datasets").Dataset.from_dict({"text": _TEXTS}),
        sample_processor=lambda sample: sample["text"]))
    monkeypatch.setattr(tt.trainer.Trainer, "__init__", lambda self, config: _cpu_trainer_init(self, config, tt))

    def make(*, tst, steps=6, bag_size=2, frac=0.5, stop=False, lr=3e-3, seq_len=16, batch=2, base=None):
        base = base() if base else tt.registry.llama3_debugmodel()
        _sdpa(tt, base.model_spec.model)
        base.training.seq_len, base.training.local_batch_size, base.training.steps = seq_len, batch, steps
        base.lr_scheduler.warmup_steps, base.lr_scheduler.decay_ratio = 2, 0.5
        base.optimizer = tt.default_adamw(lr=lr)
        base.parallelism.spmd_backend = "partial_dtensor"
        base.dataloader = tt.text.HuggingFaceTextDataLoader.Config(dataset="tst_unit_test")
        base.validator.enable = False
        if not tst:
            return tt.trainer.Trainer(base)
        cfg = tti.to_tst_config(base, bag_size=bag_size, superposition_frac=frac, stop_at_transition=stop)
        return tti.TSTTrainer(cfg)

    return make


def _run(trainer):
    """TorchTitan's train() loop without its process-group teardown."""
    data_iterator = trainer.batch_generator(trainer.dataloader)
    while trainer.should_continue_training():
        trainer.step += 1
        trainer.train_step(data_iterator)
    return trainer.metrics_processor.logged


def test_trainer_switches_phase_in_process(tt, cpu_trainers):
    trainer = cpu_trainers(tst=True, steps=6, bag_size=2, frac=0.5)
    seen = []
    trainer.model_parts[0].tok_embeddings.register_forward_hook(
        lambda mod, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    loss_fn = trainer.loss_fn
    shapes = []

    def spy(pred, labels, gvt=None, **kw):
        shapes.append((tuple(pred.shape[:2]), tuple(labels.shape), int(gvt)))
        return loss_fn(pred, labels, gvt, **kw)

    trainer.loss_fn = spy
    rows = []
    fold = trainer.post_dataloading_process

    def record(input_dict, labels):
        rows.append(input_dict["input"].clone())
        return fold(input_dict, labels)

    trainer.post_dataloading_process = record
    logged = _run(trainer)
    B, L, s = 2, 16, 2
    # one contiguous token stream across the switch: 3 steps of L·s-token rows, then L-token rows
    assert [tuple(r.shape) for r in rows] == [(B, L * s)] * 3 + [(B, L)] * 3
    stream = torch.cat([r.flatten() for r in rows])
    fresh = tt.text.HuggingFaceTextDataset("tst_unit_test", None, _ByteTokenizer(), seq_len=len(stream))
    assert torch.equal(stream, next(iter(fresh))[0]["input"])
    assert [a for a, _ in seen] == [(B, L, s)] * 3 + [(B, L)] * 3  # bags, then ordinary tokens
    assert all(o == (B, L, 256) for _, o in seen)
    assert shapes == [((B, L), (B, L * s), B * L * s)] * 3 + [((B, L), (B, L), B * L)] * 3
    assert [m["positions"] for m in logged] == [B * L] * 6  # tokens/s counts positions in both phases
    assert trainer.ntokens_seen == 3 * B * L * s + 3 * B * L  # data tokens
    assert [m["n_tokens_seen"] for m in logged][-1] == trainer.ntokens_seen
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in logged)


def test_trainer_loss_decreases(cpu_trainers):
    trainer = cpu_trainers(tst=True, steps=8, bag_size=4, frac=1.0, lr=2e-3, seq_len=8)
    losses = [m["loss"] for m in _run(trainer)]
    print("TST phase-1 losses:", [round(x, 3) for x in losses])
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2]) - 0.5, losses


def test_two_run_recipe_equals_in_process_switch(tt, cpu_trainers):
    """Phase 1 (stop at round(r·T)) + a stock-Trainer phase 2 resuming its state = the in-process run."""
    one = cpu_trainers(tst=True, steps=6, bag_size=2, frac=0.5)
    reference = _run(one)

    first = cpu_trainers(tst=True, steps=6, bag_size=2, frac=0.5, stop=True)
    cfg = first.config
    assert (cfg.training.steps, cfg.lr_scheduler.total_steps) == (3, 6)
    assert cfg.checkpoint.enable and not cfg.checkpoint.last_save_model_only
    phase1 = _run(first)
    assert first.step == 3

    second = cpu_trainers(tst=False, steps=6)  # stock Trainer, stock model and loss: TST code removed
    assert type(second.model_parts[0].tok_embeddings) is tt.Embedding
    # what the checkpoint carries: model, optimizer, LR scheduler, dataloader, train state
    second.model_parts[0].load_state_dict(first.model_parts[0].state_dict(), strict=True)
    for dst, src in zip(second.optimizers.optimizers, first.optimizers.optimizers):
        dst.load_state_dict(src.state_dict())
    second.lr_schedulers.load_state_dict(first.lr_schedulers.state_dict())
    second.dataloader.load_state_dict(first.dataloader.state_dict())
    second.load_state_dict(first.state_dict())
    phase2 = _run(second)

    both = phase1 + phase2
    assert [m["step"] for m in both] == list(range(1, 7))
    for a, b in zip(both, reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["lr/AdamW"] == pytest.approx(b["lr/AdamW"], rel=1e-9)
    assert second.ntokens_seen == one.ntokens_seen


def test_trainer_refuses_unsupported_setups(tt):
    base = tt.registry.llama3_debugmodel()
    base.parallelism.tensor_parallel_degree = 2
    cfg = tti.to_tst_config(base, bag_size=2, superposition_frac=0.5)
    with pytest.raises(NotImplementedError, match="tensor_parallel_degree"):
        tti.TSTTrainer(cfg)
    base = tt.registry.llama3_debugmodel()
    cfg = tti.to_tst_config(base, bag_size=2, superposition_frac=0.5)
    cfg.loss = tt.loss.CrossEntropyLoss.Config()
    with pytest.raises(TypeError, match="MultiHotCrossEntropyLoss"):
        tti.TSTTrainer(cfg)
    with pytest.raises(ValueError, match="stop_at_transition"):
        tti.TSTTrainer(tti.to_tst_config(tt.registry.llama3_debugmodel(), bag_size=2, superposition_frac=0.0,
                                         stop_at_transition=True))


def _fewer_experts(config, experts=8, top_k=2, width=64):
    """TorchTitan's Qwen3 MoE debug config with 8 small experts, top-2 (its 64 × 768 make a 316M-parameter model,
    too slow for a CPU test): every place its config states the expert count, top-k or width."""
    for layer in config.model_spec.model.layers:
        moe = layer.moe
        moe.num_experts = moe.router.num_experts = moe.router.gate.out_features = experts
        moe.routed_experts.inner_experts.num_experts = moe.routed_experts.token_dispatcher.num_experts = experts
        moe.router.top_k = moe.routed_experts.token_dispatcher.top_k = top_k
        moe.routed_experts.inner_experts.hidden_dim = width
    return config


def test_trainer_trains_torchtitans_qwen3_mixture_of_experts(tt, cpu_trainers):
    """The converter and TSTTrainer on TorchTitan's Qwen3 MoE (router, grouped experts, its own load balancing):
    bags reach the router as their mean embeddings, the phase switches in-process, the loss falls."""
    import torchtitan.models.qwen3.config_registry as qwen3
    trainer = cpu_trainers(tst=True, steps=6, bag_size=2, frac=0.5, lr=2e-3, seq_len=8,
                           base=lambda: _fewer_experts(qwen3.qwen3_moe_debug()))
    model = trainer.model_parts[0]
    assert isinstance(model.tok_embeddings, tti.TorchTitanSuperposedEmbedding)
    router_inputs = []
    model.layers["0"].moe.router.register_forward_hook(lambda mod, args, out: router_inputs.append(args[0].shape))
    losses = [m["loss"] for m in _run(trainer)]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(x)) for x in losses)
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    assert len(router_inputs) == 6  # every step, both phases, went through the routed experts
