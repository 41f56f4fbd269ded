"""Hugging Face export: files load offline with Auto* classes and reproduce our logits and tokenizer."""
import json

import pytest
import torch

from tst_train.errors import UserError
from tst_train.export import export_hf, from_hf_state_dict, hf_config_dict, to_hf_state_dict
from tst_train.model import Transformer, model_config

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXT = [
    "Token superposition trains on bags of tokens first, then on ordinary tokens.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Each bag of s tokens enters the model as the mean of its embeddings.",
    "Recovery is ordinary next-token training from the same weights.",
] * 4


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _model(tie):
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", 320, max_seq_len=64, tie_embeddings=tie))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("tie", [False, True])
def test_export_loads_in_transformers(tmp_path, tokenizer_file, tie):
    model = _model(tie)
    out = export_hf(model, model.config, tmp_path / "hf", tokenizer_file=tokenizer_file)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed away

    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert hf.dtype == torch.float32 and hf.config.tie_word_embeddings == tie
    tokens = torch.randint(0, 320, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=tokens).logits, model(tokens), atol=1e-5, rtol=1e-5)

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    orig = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    text = "The lazy fox trains on bags.<|endoftext|>Recovery"
    assert hf_tok(text)["input_ids"] == orig.encode(text).ids
    eos = orig.token_to_id("<|endoftext|>")
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == eos == hf.config.eos_token_id
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == eos


def test_export_bf16_without_tokenizer(tmp_path):
    model = _model(False)
    out = export_hf(model, model.config, tmp_path / "hf", eos_id=3, dtype=torch.bfloat16)
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and config["eos_token_id"] == 3
    assert config["rope_parameters"]["rope_theta"] == model.config.rope_theta
    assert not (out / "tokenizer.json").exists()


def test_refuses_to_overwrite(tmp_path):
    model = _model(False)
    (tmp_path / "empty").mkdir()
    export_hf(model, model.config, tmp_path / "empty")  # an empty directory is fine
    with pytest.raises(UserError, match="not empty"):
        export_hf(model, model.config, tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError):
        export_hf(model, model.config, tmp_path / "file")


@pytest.mark.parametrize("tie", [False, True])
def test_state_dict_round_trip(tie):
    model = _model(tie)
    hf_sd = to_hf_state_dict(model)
    assert ("lm_head.weight" in hf_sd) != tie
    back = from_hf_state_dict(hf_sd, model.config)
    ours = model.state_dict()
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)
    fresh = Transformer(model.config)
    fresh.load_state_dict(back)  # strict
    del hf_sd["model.norm.weight"]
    with pytest.raises(ValueError, match="model.norm|norm.weight"):
        from_hf_state_dict(hf_sd, model.config)


def test_config_dict_is_a_llama_config():
    cfg = model_config("smollm2-135m", 49152)
    hf = transformers.LlamaConfig(**hf_config_dict(cfg, bos_id=0, eos_id=0))
    assert hf.rope_parameters["rope_theta"] == 100000.0 and hf.head_dim == 64
    assert hf.num_key_value_heads == 3 and not hf.tie_word_embeddings and hf.rms_norm_eps == 1e-5
