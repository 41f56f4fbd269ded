"""Export a :class:`~tst_train.model.Transformer` as a Hugging Face ``LlamaForCausalLM`` directory.

Our model uses HF's RoPE layout ("rotate_half") and Llama's module structure, so the export is a pure
renaming of weights: no permutation, no reshaping. A TST-trained model is an ordinary Llama at
inference (the superposition phase only changed what the embedding was fed).

transformers, safetensors and tokenizers are imported inside the functions that need them, so this
module imports with torch alone.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import UserError
from .hf_format import EXPORT_INFO_FILE, from_hf_state_dict, hf_config_dict, model_config_from_hf, to_hf_state_dict
from .model import ModelConfig

__all__ = ["export_hf", "export_run", "from_hf_state_dict", "hf_config_dict", "load_run_model", "model_config_from_hf",
           "to_hf_state_dict"]

EOS_TOKEN = "<|endoftext|>"

def export_hf(model: torch.nn.Module, cfg: ModelConfig, out_dir: str | os.PathLike, *,
              tokenizer_file: str | os.PathLike | None = None, tokenizer=None, eos_id: int | None = None,
              bos_id: int | None = None, dtype: torch.dtype = torch.float32, info: dict | None = None) -> Path:
    """Write an HF model directory loadable offline by ``AutoModelForCausalLM`` / ``AutoTokenizer``.

    Files: config.json, generation_config.json, model.safetensors and, with a tokenizer (an HF
    ``tokenizer.json`` as ``tokenizer_file``, or a ``tokenizers.Tokenizer`` as ``tokenizer``),
    tokenizer.json + tokenizer_config.json; ``info`` (where the weights come from) as tst_export.json.
    ``eos_id`` defaults to the id of ``<|endoftext|>`` in the tokenizer when it has one; the pad token
    is the end-of-text token (no new embedding row), so batched generation and evaluation work.
    Everything is written to a temporary sibling directory that is renamed into place at the end, so
    ``out_dir`` is either complete or absent; files and the directory get the umask's ordinary
    permissions. Raises :class:`UserError` if ``out_dir`` exists and is not empty. Returns ``out_dir``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"export directory {out} already exists and is not empty; choose a new path or remove it")

    if tokenizer_file is not None:
        tokenizer = _read_tokenizer(Path(tokenizer_file))
    tok_config = None
    if tokenizer is not None:
        eos_id, tok_config = _tokenizer_config(tokenizer, eos_id, bos_id, cfg)

    # Cast and move once; contiguous because safetensors writes raw storage.
    weights = {k: v.to(device="cpu", dtype=dtype).contiguous() for k, v in to_hf_state_dict(model).items()}
    config = hf_config_dict(cfg, bos_id=bos_id, eos_id=eos_id)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    special = {k: v for k, v in (("bos_token_id", bos_id), ("eos_token_id", eos_id), ("pad_token_id", eos_id))
               if v is not None}
    config.update(special)
    generation = {"_from_model_config": True, **special}

    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an export is an ordinary directory
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", generation)
        if tok_config is not None:
            tokenizer.save(str(tmp / "tokenizer.json"))
            _write_json(tmp / "tokenizer_config.json", tok_config)
        if info is not None:
            _write_json(tmp / EXPORT_INFO_FILE, info)
        for f in tmp.iterdir():  # safetensors writes its file private (0600)
            os.chmod(f, 0o666 & ~umask)
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace cannot always replace a directory
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _read_tokenizer(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on unreadable files
        raise UserError(f"cannot read tokenizer {path}: {exc}") from None


def _tokenizer_config(tok, eos_id: int | None, bos_id: int | None, cfg: ModelConfig) -> tuple[int | None, dict]:
    if eos_id is None:
        eos_id = tok.token_to_id(EOS_TOKEN)
    vocab = tok.get_vocab(with_added_tokens=True)
    if vocab and max(vocab.values()) >= cfg.vocab_size:
        raise UserError(f"the tokenizer has ids up to {max(vocab.values())} but the model only {cfg.vocab_size} rows")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.max_seq_len,
        "clean_up_tokenization_spaces": False,
    }
    if eos_id is not None:
        config["eos_token"] = tok.id_to_token(eos_id)
        config["pad_token"] = tok.id_to_token(eos_id)
    if bos_id is not None:
        config["bos_token"] = tok.id_to_token(bos_id)
    return eos_id, config


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_run_model(run_dir: Path, step: int | None = None):
    """Rebuild a run's model with the weights of a checkpoint (the latest by default) → (model, model_cfg, cfg, meta)."""
    from .loading import load
    loaded = load(run_dir, step)
    return loaded.model, loaded.model.config, loaded.info["config"], loaded.info["meta"]


def export_run(run_dir: Path, out: Path, step: int | None = None, warn=None) -> Path:
    """``tst export``: a run directory's checkpoint (the latest by default) → a Hugging Face ``LlamaForCausalLM``
    directory with the run's tokenizer (tiktoken runs: converted to a ``tokenizer.json``).

    An unfinished run exports the step it has, and says so through ``warn`` and in tst_export.json.
    """
    from .loading import load
    from .rundir import read_config
    from .tokenizer_files import to_hf
    read_config(run_dir)  # "not a run directory" before anything else
    loaded = load(run_dir, step)
    if not loaded.completed and warn is not None:
        warn(f"warning: {loaded.path} is unfinished: exporting step {loaded.step} of {loaded.total_steps}")
    cfg = loaded.info["config"]
    from .loading import consumed_position
    info = {"run": str(loaded.path.resolve()), "step": loaded.step, "total_steps": loaded.total_steps,
            # where the run's training stream stood: a run continued from this export on the same data starts there
            "data_path": cfg.data.path, "data_position": consumed_position(f"{run_dir}:{loaded.step}", cfg.data.path),
            "completed": loaded.completed, "train_seq_len": cfg.train.seq_len, "eval_tokens": cfg.eval.tokens, "tst_mode": cfg.tst.mode,
            "data_split": {k: (loaded.info["meta"] or {}).get(k) for k in ("sources", "seed", "val_fraction", "max_docs")}}
    # HF tools read max_position_embeddings as the context the model supports: the one it was trained on, not
    # the preset's ceiling (lm-eval and generate would otherwise feed it contexts it never saw)
    shape = dataclasses.replace(loaded.model.config, max_seq_len=min(loaded.model.config.max_seq_len, cfg.train.seq_len))
    out = export_hf(loaded.model, shape, out, tokenizer=to_hf(loaded.tokenizer),
                    eos_id=loaded.tokenizer.eos_id, dtype=torch.float32, info=info)
    return out
