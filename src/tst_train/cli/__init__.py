"""The ``tst`` command: argument parsing only; every command calls the trainer's or experiments' API.

    tst prepare --input bundled --out data/bundled
    tst train --data data/bundled --out runs/tiny --preset tiny --steps 500 --bag-size 4
    tst train --out runs/tiny --resume

User errors (bad flags, missing data, incompatible checkpoints …) print one line and exit with 2.
"""
from __future__ import annotations

import importlib
import sys

from ..errors import EXIT_INTERRUPTED, Interrupted, UserError


def _lazy(module: str, func: str):
    def run(argv):
        return getattr(importlib.import_module(module, __package__), func)(argv)
    return run


COMMANDS = {
    "prepare": (_lazy(".prepare", "prepare_command"), "tokenize text into a training data directory"),
    "train": (_lazy(".train", "train_command"), "train a model (TST or baseline)"),
    "compare": (_lazy(".experiments", "compare_command"), "equal-FLOPs baseline-vs-TST experiment with a report"),
    "sweep": (_lazy(".experiments", "sweep_command"), "grid over shape, lr, budget, bag size, fraction, weighting"),
    "curve": (_lazy(".experiments", "curve_command"), "a baseline's loss against compute: one run + cooldown branches"),
    "demo": (_lazy(".experiments", "demo_command"), "the bundled-corpus comparison (<= 10 min on 2 CPU cores)"),
    "export": (_lazy(".train", "export_command"), "export a run to a Hugging Face model directory"),
    "generate": (_lazy(".generate", "generate_command"), "generate text from a run (any step) or an HF directory"),
    "eval": (_lazy(".eval", "eval_command"), "validation loss and downstream tasks of a run step or an HF directory"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("token-superposition")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `tst ... | head`: the reader left; stop quietly, as Unix tools do
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141  # 128 + SIGPIPE


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: tst COMMAND [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<8} {help_}")
        print("\n`tst COMMAND --help` for a command's options; `tst --version` for the version.")
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        print(f"tst (token-superposition) {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[name][0](rest) or 0
    except UserError as e:  # one line even when it quotes a name holding a line break (a path, a prompt)
        print("error: " + str(e).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)
        distributed = sys.modules.get("tst_train.distributed")  # not imported (no torch) by e.g. `tst prepare`
        if distributed is not None and distributed._BROKEN:  # a rank froze: exit now, not in the group's destructor
            distributed.exit_process(2)
        return 2
    except Interrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        distributed = sys.modules.get("tst_train.distributed")  # set up only by commands that run a model
        if distributed is not None:
            distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
