"""What a run is made of, derived from its config: the model shape (with the data's vocabulary) and the
fingerprint a checkpoint must match to resume into it or be exported as it. Shared by the trainer, the
loaders and the experiments, so each computes it the same way."""
from __future__ import annotations

from dataclasses import asdict

from .config import Config
from .errors import UserError
from .model import model_config


def build_model(cfg: Config, vocab_size: int):
    m = cfg.model
    overrides = {k: v for k, v in (("dim", m.dim), ("n_layers", m.n_layers), ("n_heads", m.n_heads),
                                   ("n_kv_heads", m.n_kv_heads), ("ffn_dim", m.ffn_dim), ("n_experts", m.n_experts),
                                   ("top_k", m.top_k)) if v}
    try:
        mcfg = model_config(cfg.model.preset, vocab_size, tie_embeddings=cfg.model.tie_embeddings, **overrides)
    except ValueError as e:
        raise UserError(f"--model: {e}") from None
    if cfg.train.seq_len > mcfg.max_seq_len:
        mcfg.max_seq_len = cfg.train.seq_len
    return mcfg


def fingerprint(cfg: Config, mcfg, meta: dict) -> dict:
    """What must match for a checkpoint to resume into this run: every config field that changes the
    numbers (as each field declares), the resolved model shape and the data's identity."""
    from .data.layout import data_identity
    return {"config": cfg.numbers(), "model": asdict(mcfg),
            "data": [meta["vocab_size"], meta["splits"]["train"]["tokens"]], "data_content": data_identity(meta)}
