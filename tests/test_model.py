"""The reference model: HF Llama parity, bag input, presets, meta init, causality, limits, FLOPs."""
import pytest
import torch

import tst
from tst_train.export import hf_config_dict, to_hf_state_dict
from tst_train.model import PRESETS, ModelConfig, Transformer, model_config

SMALL = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, vocab_size=128, max_seq_len=32,
             rope_theta=100000.0)


def _model(tie=False, seed=0, **kw):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**{**SMALL, "tie_embeddings": tie, **kw}))
    with torch.no_grad():  # norm gains start at 1; randomise them so a mis-mapped norm shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model.eval()


def _hf_twin(model):
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config_dict(model.config)))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert not unexpected
    assert set(missing) <= ({"lm_head.weight"} if model.config.tie_embeddings else set())
    if model.config.tie_embeddings:
        assert hf.lm_head.weight is hf.model.embed_tokens.weight
    return hf.eval()


@pytest.mark.parametrize("tie", [False, True])
def test_matches_hf_llama(tie):
    model = _model(tie)
    hf = _hf_twin(model)
    tokens = torch.randint(0, 128, (2, 20))
    with torch.no_grad():
        ours, ref = model(tokens), hf(input_ids=tokens).logits
    assert ours.shape == (2, 20, 128)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # return_hidden is what the fused loss consumes
        torch.testing.assert_close(model.lm_head(model(tokens, return_hidden=True)), ours)


def test_bags_are_the_same_model_on_mean_embeddings():
    model = _model()
    hf = _hf_twin(model)
    bags = torch.randint(0, 128, (2, 10, 4))  # (B, L, s)
    with torch.no_grad():
        ours = model(bags)
        mean = hf.model.embed_tokens(bags).mean(dim=2)  # (B, L, d), computed independently of tst
        ref = hf(inputs_embeds=mean).logits
    assert ours.shape == (2, 10, 128)  # L latent positions, not L·s
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_causal():
    model = _model()
    a = torch.randint(0, 128, (1, 16, 3))
    b = a.clone()
    b[:, 9:] = torch.randint(0, 128, (1, 7, 3))
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :9], lb[:, :9], atol=0, rtol=0)
    assert not torch.allclose(la[:, 9:], lb[:, 9:])


def test_limits_and_bad_inputs():
    model = _model()
    model(torch.zeros(1, 32, dtype=torch.long))  # exactly max_seq_len is fine
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 33, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="cpu-small"):
        model_config("nope", 100)
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(**{**SMALL, "n_kv_heads": 3})


def test_meta_init_matches_eager_init():
    cfg = model_config("tiny", 300, tie_embeddings=True)
    torch.manual_seed(7)
    eager = Transformer(cfg)
    with torch.device("meta"):
        lazy = Transformer(cfg)
    assert lazy.rope_cos.is_meta
    lazy.to_empty(device="cpu")
    assert lazy.lm_head.weight is lazy.tok_embeddings.weight  # to_empty must not untie
    torch.manual_seed(7)
    lazy.init_weights()
    for (n1, t1), (n2, t2) in zip(eager.state_dict().items(), lazy.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2), n1
    assert torch.equal(eager.rope_cos, lazy.rope_cos) and torch.equal(eager.rope_sin, lazy.rope_sin)
    assert "rope_cos" not in eager.state_dict()  # derived, not checkpointed


def test_init_scales():
    torch.manual_seed(0)
    model = Transformer(model_config("cpu-medium", 8192))
    std = model.layers[0].attention.wq.weight.std().item()
    out_std = model.layers[0].feed_forward.w2.weight.std().item()
    assert abs(std - 0.02) < 1e-3 and abs(out_std - 0.02 / (2 * 6) ** 0.5) < 1e-3
    assert torch.all(model.norm.weight == 1)


def test_presets():
    for name in PRESETS:
        with torch.device("meta"):
            model = Transformer(model_config(name, 49152))
        assert model.config.dim // model.config.n_heads in (16, 32, 64, 128), name
    with torch.device("meta"):
        tiny = Transformer(model_config("tiny", 4096))
        small = Transformer(model_config("cpu-small", 8192))
    assert tiny.num_params() < 1_000_000
    assert 2_500_000 < small.num_params() < 3_500_000


@pytest.mark.parametrize("preset,published", [("smollm2-135m", 134_515_008), ("smollm2-360m", 361_821_120)])
def test_smollm2_param_counts(preset, published):
    transformers = pytest.importorskip("transformers")
    tied = model_config(preset, 49152, tie_embeddings=True)
    with torch.device("meta"):
        ours_tied = Transformer(tied).num_params()
        ours_untied = Transformer(model_config(preset, 49152)).num_params()
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config_dict(tied)))
    assert ours_tied == hf.num_parameters() == published  # HF's SmolLM2 sizes (tied)
    assert ours_untied == published + 49152 * tied.dim  # the paper's untied variant adds one head


def test_flops_per_position():
    cfg = model_config("tiny", 4096)  # dim 64, 2 layers, 4 heads (hd 16), 2 kv heads, ffn 176
    model = Transformer(cfg)
    attn = 64 * 16 * (4 + 2 * 2) + 4 * 16 * 64
    mlp = 3 * 64 * 176
    matmul = 2 * (attn + mlp) + 64 * 4096
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul == linear_weights == 354_304
    assert model.flops_per_position(128) == 6 * matmul + 12 * 2 * 64 * 128
    assert model.num_params(exclude_embedding=True) == model.num_params() - 4096 * 64


def test_bf16_and_embedding_type():
    model = _model().to(torch.bfloat16)
    assert isinstance(model.tok_embeddings, tst.SuperposedEmbedding)
    assert model(torch.randint(0, 128, (2, 8, 3))).dtype == torch.bfloat16
