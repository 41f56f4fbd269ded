"""The trainer's Python API: a model's whole life in six calls. The ``tst`` command calls these.

    from tst_train import api

    cfg = api.config({"data.path": "data/bundled", "model.preset": "tiny", "train.steps": 3000,
                      "tst.bag_size": 4, "tst.superposition_frac": 0.25})
    summary = api.train(cfg, "runs/tiny")                 # -> summary.json's dict
    model = api.load("runs/tiny")                         # or "runs/tiny:1500", or an exported HF directory
    print(api.generate(model, "It is a truth universally acknowledged", max_new_tokens=40))
    scores = api.evaluate(model, tasks=["cloze", "wordnet"])
    api.export("runs/tiny", "exported/tiny")              # a transformers LlamaForCausalLM directory

(The package ``tst_train`` itself stays empty: its submodule ``tst_train.train`` is the training loop.)
"""
from __future__ import annotations

import sys
from pathlib import Path

from .config import Config, apply_mapping, load_toml, set_value
from .generate import Sampling
from .loading import Loaded

__all__ = ["Sampling", "config", "evaluate", "export", "generate", "load", "train"]


def config(values: dict | Config | None = None, file: str | Path | None = None) -> Config:
    """A validated :class:`Config`: the defaults, then a TOML ``file``, then ``values`` (``{"train.steps": 100}``
    dotted keys or ``{"train": {"steps": 100}}`` sections)."""
    if isinstance(values, Config):
        return values.validate()
    cfg = Config()
    if file is not None:
        apply_mapping(cfg, load_toml(file), str(file))
    for key, value in (values or {}).items():
        if isinstance(value, dict):
            apply_mapping(cfg, {key: value}, "values")
        else:
            set_value(cfg, key, value)
    return cfg.validate()


def train(cfg: Config | dict, out: str | Path, resume: bool = False) -> dict:
    """Train into the run directory ``out`` (or continue it with ``resume``); returns the run's summary."""
    from .train import run_training
    return run_training(config(cfg), Path(out), resume=resume)


def load(source: str | Path | Loaded, step: int | None = None, device: str = "auto") -> Loaded:
    """A run directory (``RUN_DIR`` or ``RUN_DIR:STEP``) or a Hugging Face directory → a :class:`Loaded` model."""
    if isinstance(source, Loaded):
        return source
    from .distributed import pick_device
    from .loading import load as load_source
    return load_source(source, step, device=pick_device(device))


def generate(model: str | Path | Loaded, prompt: str, sampling: Sampling | None = None, **settings) -> str:
    """The completion of ``prompt`` (``settings``: max_new_tokens, temperature (0 = greedy), top_k, top_p, seed)."""
    from .generate import complete
    loaded = load(model)
    return complete(loaded.model, loaded.text_tokenizer(), prompt, sampling or Sampling(**settings))[0]


def evaluate(model: str | Path | Loaded, data: str | Path | None = None, tasks=("cloze", "wordnet"),
             limit: int | None = None, eval_tokens: int | None = None, batch_size: int = 32) -> dict:
    """Validation loss/bits per byte on ``data`` (default: the run's own data) and downstream task scores."""
    from .model_eval import evaluate as run_eval
    loaded = load(model)
    device = loaded.model.lm_head.weight.device
    return run_eval(loaded, str(data) if data else None, list(tasks), limit, eval_tokens, batch_size, device,
                    warn=lambda text: print(text, file=sys.stderr))


def export(source: str | Path, out: str | Path, step: int | None = None) -> Path:
    """A run's checkpoint (the latest by default) → a Hugging Face ``LlamaForCausalLM`` directory with its tokenizer."""
    from .export import export_run
    from .loading import split_source
    path, step = split_source(source, step)
    return export_run(path, Path(out), step, warn=lambda text: print(text, file=sys.stderr))
