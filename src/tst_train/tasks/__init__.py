"""Local downstream tasks, built offline by ``scripts/build_tasks.py`` (fixed seed) and shipped as package data.

    cloze    LAMBADA-style: predict the last word of a passage (held-out prose of the bundled corpus)
    wordnet  HellaSwag/ARC-style multiple choice: a WordNet definition → its word, out of 4

Items are ``{"id", "context", "target"}`` (cloze) and ``{"id", "context", "choices", "label"}``
(multiple choice). Scoring follows lm-evaluation-harness: the continuation is the target (or a
choice) after one space; see ``tst_train.tasks.scoring``. ``write_lm_eval_tasks`` writes the same
items as lm-evaluation-harness task files (its local-JSON mode), so both scorers can be compared.
"""
from __future__ import annotations

import json
import lzma
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..rundir import write_atomic


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "cloze" (one target, accuracy = greedy match) or "choice" (argmax over the choices)
    file: str
    about: str
    chance: float  # the accuracy of guessing


TASKS = {
    "cloze": Task("cloze", "cloze", "cloze.jsonl.xz",
                  "final word of held-out bundled-corpus passages (LAMBADA-style)", 0.0),
    "wordnet": Task("wordnet", "choice", "wordnet.jsonl.xz",
                    "WordNet definition → word, 4 choices of the same part of speech", 0.25),
}


def _data(name: str):
    return resources.files("tst_train.tasks").joinpath("data", name)


def manifest() -> dict:
    """What the task files were built from (held-out document hashes, synset ids), as written by the builder."""
    return json.loads(_data("manifest.json").read_text())


def parse_tasks(text: str) -> list[str]:
    """``"cloze,wordnet"`` / ``"all"`` / ``"none"`` → task names; unknown names are user errors."""
    if text.strip() in ("", "none"):
        return []
    if text.strip() == "all":
        return list(TASKS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad:
        raise UserError(f"unknown task(s) {', '.join(bad)}; choose from: {', '.join(TASKS)} (or all, none)")
    return names


def load_items(name: str, limit: int | None = None) -> list[dict]:
    """The items of task ``name`` in their fixed order (the first ``limit`` when given: a fixed subset)."""
    task = TASKS[name]
    with _data(task.file).open("rb") as raw, lzma.open(raw, "rt", encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    return items[:limit] if limit else items


def write_lm_eval_tasks(out: Path, limit: int | None = None) -> list[str]:
    """The tasks as lm-evaluation-harness task YAMLs + JSONL files in ``out`` (its local-JSON mode).

    Run with ``lm_eval --model hf --model_args pretrained=EXPORT --include_path OUT --tasks tst_cloze,tst_wordnet``.
    Returns the task names.
    """
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for task in TASKS.values():
        data = out / f"{task.name}.jsonl"
        write_atomic(data, "".join(json.dumps(it) + "\n" for it in load_items(task.name, limit)))
        common = [f"task: tst_{task.name}", "dataset_path: json", f"dataset_kwargs:\n  data_files:\n    test: {data.resolve()}",
                  "test_split: test", 'doc_to_text: "{{context}}"']
        if task.kind == "cloze":
            spec = common + ["output_type: loglikelihood", "doc_to_target: \"{{' ' + target}}\"",
                             "target_delimiter: \"\"",
                             "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
                             "  - metric: acc\n    aggregation: mean\n    higher_is_better: true"]
        else:
            spec = common + ["output_type: multiple_choice", 'doc_to_choice: "{{choices}}"', "doc_to_target: label",
                             "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
                             "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true"]
        write_atomic(out / f"tst_{task.name}.yaml", "\n".join(spec) + "\n")
        names.append(f"tst_{task.name}")
    return names
