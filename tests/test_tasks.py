"""The local downstream tasks: what the shipped files hold (and where it comes from), and the scorer against
a hand computation on a model whose log-probabilities are known in closed form."""
from __future__ import annotations

import hashlib
import math
from importlib import resources
from pathlib import Path

import pytest
import torch

from tst_train.data.prepare import load_tokenizer, split_documents
from tst_train.data.sources import read_documents
from tst_train.errors import UserError
from tst_train.model import ModelConfig, Transformer
from tst_train.tasks import TASKS, load_items, manifest, parse_tasks
from tst_train.tasks.scoring import encode_pair, loglikelihoods, score_choice, score_cloze


# ------------------------------------------------------------------ the task files
def test_task_files_match_their_manifest_and_are_small():
    m = manifest()
    for name in TASKS:
        items = load_items(name)
        assert len(items) == m[name]["items"] and len({it["id"] for it in items}) == len(items)
    data = Path(str(resources.files("tst_train.tasks").joinpath("data")))
    assert sum(f.stat().st_size for f in data.iterdir()) < 300_000  # shipped small
    cloze, wordnet = load_items("cloze"), load_items("wordnet")
    assert len(cloze) >= 200 and len(wordnet) == 2000
    for it in cloze:  # LAMBADA's criterion: the target word occurs earlier in the passage
        assert len(it["context"].split()) >= 50 and it["target"].lower() in it["context"].lower()
    for it in wordnet:
        assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4 and 0 <= it["label"] < 4
        assert it["choices"][it["label"]] not in it["definition"].lower().split()
    assert sorted(it["synset"] for it in wordnet) == m["wordnet"]["synsets"]
    assert load_items("wordnet", 7) == wordnet[:7]  # a limit is a fixed prefix


def test_cloze_passages_come_from_the_bundled_validation_split():
    """Held out honestly: the passages are in the documents `tst prepare --input bundled` holds out at its
    defaults, so neither the training split nor the tokenizer trained on it has seen them."""
    train, val = split_documents(read_documents(["bundled"]), val_fraction=0.02, seed=0)
    sha = lambda t: hashlib.sha1(t.encode()).hexdigest()  # noqa: E731
    assert sorted(sha(d) for d in val) == manifest()["cloze"]["source_documents_sha1"]
    val_text = [" ".join(d.split()) for d in val]
    train_text = " ".join(" ".join(d.split()) for d in train[:300])
    for it in load_items("cloze")[:40]:
        passage = it["context"] + " " + it["target"]
        assert any(passage in d for d in val_text)
        assert passage not in train_text


def test_parse_tasks():
    assert parse_tasks("all") == list(TASKS) and parse_tasks("none") == [] and parse_tasks("wordnet") == ["wordnet"]
    with pytest.raises(UserError, match="unknown task"):
        parse_tasks("cloze,hellaswag")


# ------------------------------------------------------------------ the scorer
class Chars:
    """A tokenizer with one token per character (ids = code points), so splits are known by hand."""
    eos_id = 0

    def encode(self, text):
        return [ord(c) for c in text]


def test_encode_pair_moves_trailing_spaces_to_the_continuation():
    assert encode_pair(Chars(), "ab ", "c") == ([97, 98], [32, 99])
    assert encode_pair(Chars(), "ab", " c") == ([97, 98], [32, 99])


def bigram_model(vocab: int, dim: int = 8, seed: int = 0) -> tuple[Transformer, list[list[float]]]:
    """A Transformer that is a bigram table: zero attention and MLP outputs leave the residual stream at the
    embedding, e_t = one-hot(t mod dim), so the final RMSNorm gives a·one-hot with a = 1/√(1/dim + eps) and
    logit[v] = a·W[v, t mod dim] depends on the previous token only. Returns the model and that table."""
    cfg = ModelConfig(dim=dim, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, vocab_size=vocab, max_seq_len=256)
    model = Transformer(cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
        model.tok_embeddings.weight[torch.arange(vocab), torch.arange(vocab) % dim] = 1.0
        model.lm_head.weight.normal_(0, 2.0)
    a = 1 / math.sqrt(1 / dim + cfg.norm_eps)
    w = model.lm_head.weight.tolist()
    table = [[a * w[v][c] for v in range(vocab)] for c in range(dim)]  # table[t mod dim][v]
    return model.eval(), table


def hand_logprob(table, prev: int, nxt: int) -> tuple[float, bool]:
    row = table[prev % len(table)]
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return row[nxt] - lse, row[nxt] == top


def hand_pair(table, tok, context: str, continuation: str) -> tuple[float, bool]:
    whole = tok.encode(context + continuation)
    n_ctx = len(tok.encode(context))
    total, greedy = 0.0, True
    for k in range(n_ctx, len(whole)):
        lp, top = hand_logprob(table, whole[k - 1], whole[k])
        total += lp
        greedy &= top
    return total, greedy


CLOZE = [{"context": "The cat sat on the mat and the dog sat on the", "target": "mat"},
         {"context": "She walked to the door, and the door was", "target": "open"},
         {"context": "It is a truth universally acknowledged, that a single man", "target": "must"}]
CHOICE = [{"context": "Definition: a small domesticated feline.\nWord:", "choices": ["cat", "dog", "table", "sky"], "label": 0},
          {"context": "Definition: the colour of a clear day.\nWord:", "choices": ["green", "blue", "loud", "x"], "label": 1},
          {"context": "Definition: to move fast on foot.\nWord:", "choices": ["sleep", "eat", "run", "walking"], "label": 2}]


def test_scores_equal_a_hand_computation(tiny_data):
    tok = load_tokenizer(tiny_data)
    model, table = bigram_model(tok.vocab_size)
    cloze = score_cloze(model, tok, CLOZE, max_len=200, batch_size=2)
    hand = [hand_pair(table, tok, it["context"], " " + it["target"]) for it in CLOZE]
    assert cloze["target_logprob"] == pytest.approx(sum(lp for lp, _ in hand) / 3, abs=1e-4)
    assert cloze["acc"] == sum(g for _, g in hand) / 3
    assert cloze["perplexity"] == pytest.approx(math.exp(-sum(lp for lp, _ in hand) / 3), rel=1e-4)

    mc = score_choice(model, tok, CHOICE, max_len=200, batch_size=5)
    acc = acc_norm = 0
    for it in CHOICE:
        lls = [hand_pair(table, tok, it["context"], " " + c)[0] for c in it["choices"]]
        norm = [ll / len(c) for ll, c in zip(lls, it["choices"])]
        acc += lls.index(max(lls)) == it["label"]
        acc_norm += norm.index(max(norm)) == it["label"]
    assert mc["acc"] == acc / 3 and mc["acc_norm"] == acc_norm / 3
    p = acc / 3
    assert mc["acc_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 2))  # sample sd / √n, as lm-eval


def test_greedy_cloze_item_counts_as_correct(tiny_data):
    """Make one target the argmax by construction: the model then scores it correct (acc 1)."""
    tok = load_tokenizer(tiny_data)
    model, _ = bigram_model(tok.vocab_size)
    item = CLOZE[0]
    whole = tok.encode(item["context"] + " " + item["target"])
    n_ctx = len(tok.encode(item["context"]))
    with torch.no_grad():  # make every continuation token the favourite after its predecessor
        for k in range(n_ctx, len(whole)):
            model.lm_head.weight[whole[k], whole[k - 1] % 8] = 1e3 * (k + 1)
    res = score_cloze(model, tok, [item], max_len=200)
    assert res["acc"] == 1.0 and res["target_logprob"] > -1e-3


def test_batched_and_truncated_scores_equal_one_at_a_time_full_logits(tiny_data):
    """Batching (longest first, right padding) and left truncation to the window change nothing: compare
    with each request alone through the model's full logits."""
    tok = load_tokenizer(tiny_data)
    torch.manual_seed(1)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                                    vocab_size=tok.vocab_size, max_seq_len=64)).eval()
    items = load_items("cloze", 5) + [{"context": it["context"], "target": c} for it in load_items("wordnet", 3)
                                      for c in it["choices"]]
    requests = [encode_pair(tok, it["context"], " " + it["target"]) for it in items]
    max_len = 24  # shorter than the cloze passages: their contexts are cut on the left
    got = loglikelihoods(model, requests, max_len, batch_size=4)
    for (ctx, cont), (lp, greedy) in zip(requests, got):
        row = (ctx + cont)[-(max_len + 1):]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([row[:-1]]))[0], -1)  # (T, V)
        pos = range(len(row) - 1 - len(cont), len(row) - 1)
        assert lp == pytest.approx(sum(logp[p, t].item() for p, t in zip(pos, cont)), abs=1e-4)
        assert greedy == all(logp[p].argmax().item() == t for p, t in zip(pos, cont))
