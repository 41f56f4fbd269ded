"""``tst export``: a run directory's latest checkpoint → a Hugging Face ``LlamaForCausalLM`` directory."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from .checkpoint import quiet_dcp, list_checkpoints
from .cli import CONFIG_FILE
from .config import Config, apply_mapping, load_toml
from .errors import UserError


def load_run_model(run_dir: Path):
    """Rebuild a run's model and load the weights of its latest checkpoint → (model, model_cfg, cfg, meta)."""
    from .data.loader import check_data_dir
    from .model import Transformer
    from .train import build_model
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    cfg = Config()
    apply_mapping(cfg, load_toml(run_dir / CONFIG_FILE), str(run_dir / CONFIG_FILE))
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise UserError(f"{run_dir} has no checkpoint to export (train it first, or to the end)")
    meta = check_data_dir(cfg.data.path)
    mcfg = build_model(cfg, meta["vocab_size"])
    model = Transformer(mcfg)
    state = {"model": get_model_state_dict(model)}
    with quiet_dcp():
        dcp.load(state, checkpoint_id=str(found[-1]))
    set_model_state_dict(model, state["model"])
    return model.eval(), mcfg, cfg, meta


def export_run(run_dir: Path, out: Path) -> None:
    from .export import export_hf
    model, mcfg, cfg, meta = load_run_model(run_dir)
    tok = Path(cfg.data.path) / "tokenizer.json"
    export_hf(model, mcfg, out, tokenizer_file=tok if tok.is_file() else None, eos_id=meta.get("eos_id"),
              dtype=torch.float32)
