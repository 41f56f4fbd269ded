"""What users see and type: progress lines off a terminal, validation at each evaluation, TensorBoard tag
groups, bare boolean flags, `tst --version`, help for every option, the automatic evaluation interval."""
from __future__ import annotations

import pytest

from tst_train.cli import main
from tst_train.config import Config, auto_eval_every

FLAGS = ["--preset", "tiny", "--steps", "10", "--batch-size", "2", "--seq-len", "16", "--bag-size", "2",
         "--superposition-frac", "0.4", "--eval-every", "5", "--eval.tokens=256", "--train.threads=1"]


def test_progress_lines_and_validation_off_a_terminal(tiny_data, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), *FLAGS, "--log.every=3",
                 "--log.tensorboard=false"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err  # no progress-bar redraws in a log file
    steps = [line.split()[1] for line in out.splitlines() if line.startswith("step ") and "val_loss" not in line]
    assert steps == ["3/10", "6/10", "9/10", "10/10"]
    vals = [line for line in out.splitlines() if "val_loss" in line]
    assert [v.split()[1] for v in vals] == ["4/10", "5/10", "10/10"]  # the phase boundary, every 5, the end
    assert "(superposition): val_loss" in vals[0] and "bits/byte" in vals[0]


def test_tensorboard_tags_are_grouped(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), *FLAGS, "--log.progress=false"]) == 0
    acc = EventAccumulator(str(tmp_path / "r" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/data_tokens", "val/loss", "val/bpb"} <= tags
    assert all(t.startswith(("train/", "val/")) for t in tags)
    assert [e.step for e in acc.Scalars("val/loss")] == [4, 5, 10]


def test_bare_boolean_flags(tiny_data, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--train.compile",
                 "--log.wandb", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "compile = true" in out and "wandb = true" in out
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--train.compile", "false",
                 "--dry-run"]) == 0
    assert "compile = false" in capsys.readouterr().out
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--train.steps", "--dry-run"]) == 2
    assert "--train.steps needs a value" in capsys.readouterr().err


def test_version(capsys):
    from importlib.metadata import version
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tst (token-superposition) {version('token-superposition')}"


def test_every_option_has_help():
    from tst_train.cli import eval as eval_cli
    from tst_train.cli import experiments, generate
    parsers = [experiments.compare_parser(), experiments.sweep_parser(), experiments.demo_parser(),
               eval_cli.build_parser(), generate.build_parser()]
    for p in parsers:
        missing = [a.option_strings or a.dest for a in p._actions if not (a.help and a.help.strip())]
        assert missing == [], (p.prog, missing)


def test_automatic_evaluation_interval():
    cfg = Config()  # 16,384 tokens, 16 × 64 positions per step: 13 × 16 = 208 → 250; but 200 steps get 4 points
    assert auto_eval_every(cfg) == 50
    cfg.train.steps = 10_000
    assert auto_eval_every(cfg) == 250
    cfg.train.batch_size, cfg.eval.tokens = 8, 32768  # 13 × 64 = 832 → 1000
    assert auto_eval_every(cfg) == 1000
    cfg.train.batch_size, cfg.train.seq_len, cfg.eval.tokens = 1024, 2048, 4 * 2 ** 20  # 13 × 2 = 26 → 50
    assert auto_eval_every(cfg) == 50
    cfg.eval.every = 7
    assert auto_eval_every(cfg) == 7
    with pytest.raises(Exception, match="eval.every"):
        cfg.eval.every = -2
        cfg.validate()


def test_a_closed_pipe_is_not_a_traceback():
    """`tst --help | head -1`: the reader leaves early; the command stops quietly with 141, no traceback."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from tst_train.cli import main; sys.exit(main(['--help']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads: the first print hits a broken pipe
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["prepare", "train", "compare", "sweep", "demo", "export", "generate", "eval"])
def test_every_command_prints_its_help(command, capsys):
    """`tst COMMAND --help` exits 0 with the usage and every flag's text — a config doc with a literal '%'
    ("near 5% of the training time") once made argparse's %-formatting raise for every training command."""
    from tst_train.cli import main
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: tst")
    if command in ("train", "compare", "sweep", "demo"):
        assert "near 5% of the training time" in " ".join(out.split())
