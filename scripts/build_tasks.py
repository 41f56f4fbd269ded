#!/usr/bin/env python3
"""Build the local downstream tasks shipped in ``src/tst_train/tasks/data/`` (fixed seed, deterministic).

    python scripts/build_tasks.py                    # needs `apt-get download wordnet-base` access
    python scripts/build_tasks.py --cache /tmp/tst-corpus-cache

Two tasks, both built from text no training corpus of this project contains:

``cloze`` (LAMBADA-style final-word prediction)
    Passages of 50-90 words from the documents that ``tst prepare --input bundled`` holds out as its
    validation split at the default seed (0) and fraction (0.02) — so the bundled corpus's training
    split and its tokenizer never saw them. Each passage ends at the end of a sentence; the target is
    the sentence's last word, a content word of 3+ letters that also occurs earlier in the passage (the
    LAMBADA criterion that makes the word recoverable from the context). Passages do not overlap.
``wordnet`` (multiple choice in the HellaSwag/ARC format)
    A WordNet 3.0 definition → its word, against three distractors of the same part of speech and the
    same lexicographer file (e.g. ``noun.animal``), none of them a synonym of the answer. Only
    single-word lemmas that occur in WordNet's sense-tagged corpus (so the words are not obscure), and
    never a definition that contains its own word. ``scripts/build_corpus.py --large`` drops these
    synsets from the larger corpus.

Outputs: ``cloze.jsonl.xz``, ``wordnet.jsonl.xz`` and ``manifest.json`` (what was built from what, the
held-out document hashes and synset ids that the corpus builder excludes).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import random
import re
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_corpus import WORDNET_FILES, fetch_debs, synset_id  # noqa: E402  (the corpus builder's fetching and ids)

OUT = os.path.join(REPO, "src", "tst_train", "tasks", "data")
SEED = 1234
CLOZE_ITEMS = 400
WORDNET_ITEMS = 2000
CLOZE_WORDS = (50, 120)  # context length range, in words
# Words too common to be a cloze target (LAMBADA targets are content words).
STOPWORDS = set("""a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
off on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through thee thou thy thine to too under until up upon very was we
were what when where which while who whom why will with would you your yours yourself yourselves shall may might
must unto ye hath doth art one said say says""".split())


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# cloze
# --------------------------------------------------------------------------------------------

_SENT_END = re.compile(r"^(?P<word>[A-Za-z]+)(?P<punct>[.!?]+)[\"'\u201d\u2019)\]]*$")
ABBREVIATIONS = {"mr", "mrs", "dr", "st", "esq", "col", "capt", "gen", "lt", "rev", "sir", "messrs", "viz", "etc"}


def sentence_ends(words: list[str]) -> list[bool]:
    """Whether each word ends a sentence (a full stop, ! or ?, not after an abbreviation such as Mrs.)."""
    return [bool(m) and m.group("word").lower() not in ABBREVIATIONS for m in map(_SENT_END.match, words)]


def held_out_documents() -> list[str]:
    """The validation documents of ``tst prepare --input bundled`` at its default seed and fraction."""
    from tst_train.data.prepare import split_documents
    from tst_train.data.sources import read_documents
    _, val = split_documents(read_documents(["bundled"]), val_fraction=0.02, seed=0)
    return val


def cloze_items(docs: list[str], rng: random.Random, limit: int) -> list[dict]:
    """Non-overlapping passages, each from a sentence start to a sentence's last word, that word
    occurring earlier in the passage."""
    lo, hi = CLOZE_WORDS
    items = []
    for d, text in enumerate(docs):
        words = text.split()
        ends = sentence_ends(words)
        starts = [i for i in range(len(words)) if i == 0 or ends[i - 1]]
        free = 0  # the next passage may not reach back before this word
        for end in (i for i, e in enumerate(ends) if e):
            # the latest sentence start that leaves at least `lo` words of context
            start = max((s for s in starts if free <= s <= end - lo), default=None)
            if start is None or end - start > hi:
                continue
            target = _SENT_END.match(words[end]).group("word")
            context = words[start:end]
            seen = {re.sub(r"\W", "", c).lower() for c in context}
            # all-capital words are the plays' speaker tags ("PORTIA."), not the end of a sentence
            if len(target) < 3 or target.isupper() or target.lower() in STOPWORDS or target.lower() not in seen:
                continue
            items.append({"context": " ".join(context), "target": target, "doc": d})
            free = end + 1
    rng.shuffle(items)
    items = sorted(items[:limit], key=lambda it: (it["doc"], it["context"]))
    return [{"id": f"cloze-{i:04d}", "context": it["context"], "target": it["target"]} for i, it in enumerate(items)]


# --------------------------------------------------------------------------------------------
# wordnet
# --------------------------------------------------------------------------------------------

POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def read_wordnet(root: str) -> list[dict]:
    """Every synset: id (pos:offset), part of speech, lexicographer file, lemmas, definition."""
    synsets = []
    for pos in WORDNET_FILES:
        for line in open(os.path.join(root, f"usr/share/wordnet/data.{pos}"), encoding="latin-1"):
            if line.startswith("  ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            f = head.split()
            offset, lexfile, ss_type, n = f[0], int(f[1]), f[2], int(f[3], 16)
            lemmas = [re.sub(r"\(\w+\)$", "", f[4 + 2 * i]) for i in range(n)]
            definition = gloss.split('; "')[0].strip().rstrip(";").strip()
            synsets.append({"id": synset_id(pos, offset), "pos": "a" if ss_type == "s" else ss_type,
                            "lexfile": lexfile, "lemmas": lemmas, "definition": definition})
    return synsets


def tagged_lemmas(root: str) -> set[str]:
    """Lemmas with at least one sense-tagged occurrence (index.* tagsense_cnt > 0)."""
    out = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(os.path.join(root, f"usr/share/wordnet/index.{pos}"), encoding="latin-1"):
            if line.startswith("  "):
                continue
            f = line.split()
            p_cnt = int(f[3])
            tagsense_cnt = int(f[5 + p_cnt])
            if tagsense_cnt > 0:
                out.add(f[0])
    return out


def _usable(word: str, common: set[str]) -> bool:
    """A lower-case single word (no names, no phrases) of 3+ letters that the tagged corpus uses."""
    return re.fullmatch(r"[a-z]{3,}", word) is not None and word in common


def wordnet_items(synsets: list[dict], common: set[str], rng: random.Random, limit: int) -> list[dict]:
    """Definition → word, four choices of the same part of speech and lexicographer file."""
    synonyms: dict[str, set[str]] = {}  # word → every word it shares a synset with
    pools: dict[tuple[str, int], set[str]] = {}
    for s in synsets:
        for w in s["lemmas"]:
            synonyms.setdefault(w, set()).update(x.lower() for x in s["lemmas"])
            if _usable(w, common):
                pools.setdefault((s["pos"], s["lexfile"]), set()).add(w)
    pools_sorted = {k: sorted(v) for k, v in pools.items()}
    candidates = []
    for s in synsets:
        answer = next((w for w in s["lemmas"] if _usable(w, common)), None)
        words = set(re.findall(r"[a-z]+", s["definition"].lower()))
        if answer is None or len(words) < 3 or answer in words or any(w.lower() in words for w in s["lemmas"]):
            continue
        pool = [w for w in pools_sorted[(s["pos"], s["lexfile"])] if w not in synonyms[answer]]
        if len(pool) >= 3:
            candidates.append((s, answer, pool))
    rng.shuffle(candidates)
    items = []
    for s, answer, pool in candidates[:limit]:
        choices = rng.sample(pool, 3) + [answer]
        rng.shuffle(choices)
        items.append({"synset": s["id"], "pos": POS_NAMES[s["pos"]], "definition": s["definition"],
                      "choices": choices, "label": choices.index(answer)})
    items.sort(key=lambda it: it["synset"])
    return [{"id": f"wordnet-{i:04d}", "context": f"Definition: {it['definition']}.\nWord:", **it}
            for i, it in enumerate(items)]


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def write_jsonl_xz(items: list[dict], path: str) -> int:
    payload = "".join(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n" for it in items).encode("utf-8")
    data = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: {len(items)} items, {len(payload) / 1e3:.0f} KB text, {len(data) / 1e3:.0f} KB xz",
          file=sys.stderr)
    return len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", default=OUT, help="output folder (default: the package's task data)")
    ap.add_argument("--cache", metavar="DIR", help="keep the downloaded wordnet-base here (default: a temporary folder)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    docs = held_out_documents()
    cloze = cloze_items(docs, random.Random(SEED), CLOZE_ITEMS)
    cache = args.cache or tempfile.mkdtemp(prefix="tst-tasks-")
    try:
        root = fetch_debs(["wordnet-base"], cache)
        synsets = read_wordnet(root)
        wordnet = wordnet_items(synsets, tagged_lemmas(root), random.Random(SEED), WORDNET_ITEMS)
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)
    write_jsonl_xz(cloze, os.path.join(args.out, "cloze.jsonl.xz"))
    write_jsonl_xz(wordnet, os.path.join(args.out, "wordnet.jsonl.xz"))
    manifest = {
        "seed": SEED,
        "cloze": {"file": "cloze.jsonl.xz", "items": len(cloze),
                  "source": "the validation documents of `tst prepare --input bundled` (seed 0, val_fraction 0.02)",
                  "split": {"sources": ["bundled"], "seed": 0, "val_fraction": 0.02, "max_docs": None},
                  "source_documents_sha1": sorted(sha1(d) for d in docs)},
        "wordnet": {"file": "wordnet.jsonl.xz", "items": len(wordnet),
                    "source": "WordNet 3.0 (Debian wordnet-base), definitions → single-word lemmas",
                    "synsets": sorted(it["synset"] for it in wordnet)},
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
