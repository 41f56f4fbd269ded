"""Every shipped config loads, validates and dry-runs; the demo's flags equal configs/demo_cpu.toml."""
from __future__ import annotations

from pathlib import Path

import pytest

from tst_train.cli import main
from tst_train.cli.args import ArgumentParser, add_run_flags, resolve_config
from tst_train.config import Config, apply_mapping, load_toml, to_toml
import tomllib

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_dry_runs(path, tiny_data, capsys, tmp_path):
    cfg = Config()
    apply_mapping(cfg, load_toml(path), str(path))
    cfg.validate()
    code = main(["train", "--config", str(path), "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "FLOPs" in out and "data tokens needed" in out
    assert not (tmp_path / "r").exists()


def test_resolved_config_round_trips_through_toml():
    cfg = Config()
    cfg.tst.bag_size, cfg.train.lr = 6, 2e-3
    again = Config()
    apply_mapping(again, tomllib.loads(to_toml(cfg)), "x")
    assert again == cfg


def test_demo_flags_match_the_shipped_demo_config():
    from tst_train.experiments.demo import DEMO_FLAGS
    p = ArgumentParser(prog="t")
    add_run_flags(p)
    args, extra = p.parse_known_args(DEMO_FLAGS)
    demo, _ = resolve_config(args, extra)
    shipped = Config()
    apply_mapping(shipped, load_toml(Path(__file__).resolve().parents[1] / "configs" / "demo_cpu.toml"), "demo")
    for section in ("model", "train", "tst"):
        assert getattr(demo, section) == getattr(shipped, section.strip()), section
    assert demo.eval.every == shipped.eval.every and demo.eval.tokens == shipped.eval.tokens
