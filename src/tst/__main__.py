"""``python -m tst`` runs the reference trainer's command line (``tst_train``, installed with the [train] extra).

The library itself (``import tst``) never imports the trainer; only this entry point does.
"""
import sys


def _main() -> int:
    try:
        from tst_train.cli import main
    except ImportError as e:  # the trainer's extra dependencies are missing
        print(f"error: the `tst` command needs the trainer: pip install 'token-superposition[train]' ({e})",
              file=sys.stderr)
        return 2
    return main()


if __name__ == "__main__":
    sys.exit(_main())
