"""`tst generate`: greedy and sampled output token for token equal to `transformers.generate` on the exported
model; the warpers against transformers' own; the command line."""
from __future__ import annotations

import json

import pytest
import torch

from tst_train import api
from tst_train.cli import main
from tst_train.errors import UserError
from tst_train.generate import Sampling, generate_ids, prompt_ids, warp

transformers = pytest.importorskip("transformers")

PROMPTS = ["It is a truth universally acknowledged", "In the beginning", "ROMEO. O, she doth teach"]


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "hf"
    api.export(tiny_run, out)
    return out


def hf_generate(hf, tok, prompt: str, **kw) -> list[int]:
    ids = torch.tensor([tok(prompt)["input_ids"]])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_equals_transformers_generate(tiny_run, exported):
    ours = api.load(tiny_run, device="cpu")
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    for prompt in PROMPTS:
        want = hf_generate(hf, tok, prompt, do_sample=False, max_new_tokens=24)
        got = list(generate_ids(ours.model, prompt_ids(ours.tokenizer, prompt), Sampling(24, temperature=0),
                                ours.tokenizer.eos_id))
        assert got == want, prompt
        # the exported directory itself generates the same through our loader
        from_hf = api.load(exported, device="cpu")
        assert list(generate_ids(from_hf.model, prompt_ids(from_hf.tokenizer, prompt), Sampling(24, temperature=0),
                                 from_hf.tokenizer.eos_id)) == want


@pytest.mark.parametrize("settings", [dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.7, top_k=20, top_p=1.0),
                                      dict(temperature=1.3, top_k=0, top_p=0.8)])
def test_sampling_equals_transformers_generate_with_the_same_seed(tiny_run, exported, settings):
    ours = api.load(tiny_run, device="cpu")
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    for seed, prompt in enumerate(PROMPTS):
        torch.manual_seed(seed)
        want = hf_generate(hf, tok, prompt, do_sample=True, max_new_tokens=20, **settings)
        got = list(generate_ids(ours.model, prompt_ids(ours.tokenizer, prompt), Sampling(20, seed=seed, **settings),
                                ours.tokenizer.eos_id))
        assert got == want, (settings, prompt)


def test_warp_equals_transformers_logits_processors():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    torch.manual_seed(0)
    logits = torch.randn(300) * 3
    for t, k, p in [(0.7, 0, 1.0), (1.0, 17, 1.0), (1.0, 0, 0.9), (1.5, 40, 0.5), (0.5, 5, 0.01)]:
        want = logits[None].clone()
        if t != 1.0:
            want = TemperatureLogitsWarper(t)(None, want)
        if k:
            want = TopKLogitsWarper(k)(None, want)
        if p < 1:
            want = TopPLogitsWarper(p)(None, want)
        assert torch.equal(warp(logits, Sampling(temperature=t, top_k=k, top_p=p)), want[0].float())


def test_generate_command(tiny_run, tmp_path, capsys):
    assert main(["generate", f"{tiny_run}:8", "--prompt", PROMPTS[0], "--prompt", "", "--temperature", "0",
                 "--max-new-tokens", "10", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ours = api.load(f"{tiny_run}:8", device="cpu")
    assert [r["prompt"] for r in lines] == [PROMPTS[0], ""]
    for r in lines:
        want = list(generate_ids(ours.model, prompt_ids(ours.tokenizer, r["prompt"]), Sampling(10, temperature=0),
                                 ours.tokenizer.eos_id))
        assert r["tokens"] == want
        assert r["completion"] == ours.tokenizer.decode([t for t in want if t != ours.tokenizer.eos_id])
    # plain text on a non-terminal: the prompt followed by its completion
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS[1] + "\n")
    assert main(["generate", str(tiny_run), "--prompts-file", str(prompts), "--max-new-tokens", "5", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(PROMPTS[1]) and text.strip() == (PROMPTS[1] + api.generate(tiny_run, PROMPTS[1],
                                                                                    max_new_tokens=5, seed=3)).strip()


@pytest.mark.parametrize("args,message", [(["--temperature", "-1"], "--temperature"), (["--top-p", "0"], "--top-p"),
                                          ([], "no prompt"), (["--step", "5"], "no checkpoint at step 5")])
def test_generate_user_errors(tiny_run, capsys, args, message):
    extra = [] if args == [] else ["--prompt", "x"]
    assert main(["generate", str(tiny_run), *extra, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_streamed_pieces_make_the_completion(tiny_run):
    from tst_train.generate import complete, stream_text
    ours = api.load(tiny_run, device="cpu")
    for prompt in PROMPTS:
        s = Sampling(30, temperature=1.0, top_k=0, seed=5)
        pieces = list(stream_text(ours.model, ours.tokenizer, prompt, s))
        assert "".join(pieces) == complete(ours.model, ours.tokenizer, prompt, s)[0]
        assert all(pieces)  # every piece holds text


def test_sampling_validation():
    with pytest.raises(UserError, match="max-new-tokens"):
        Sampling(max_new_tokens=0).validate()
