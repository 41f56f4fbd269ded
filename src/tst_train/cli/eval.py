"""``tst eval``: validation loss / bits per byte and the local downstream tasks for a run step or an HF directory.

    tst eval runs/tiny                                   # the run's own data, all tasks
    tst eval exported/tiny --data data/bundled --tasks wordnet --limit 500 --out scores.json
    tst eval --write-lm-eval-tasks lm_eval_tasks/        # the same tasks as lm-evaluation-harness YAMLs
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .args import ArgumentParser, positive_int, set_threads

DESCRIPTION = ("Evaluate a trained model (RUN_DIR, RUN_DIR:STEP or an HF directory): validation loss and bits per "
               "byte on a prepared data directory, and the local downstream tasks (cloze: LAMBADA-style final word; "
               "wordnet: definition → word, 4 choices), scored as lm-evaluation-harness scores LAMBADA and HellaSwag.")


def build_parser() -> ArgumentParser:
    from ..tasks import TASKS
    p = ArgumentParser(prog="tst eval", description=DESCRIPTION)
    p.add_argument("model", nargs="?", help="RUN_DIR, RUN_DIR:STEP or HF_DIR")
    p.add_argument("--step", type=int, default=None, help="the checkpoint step of a run directory (default: the latest)")
    p.add_argument("--data", help="prepared data directory for the validation loss (default: the run's own; "
                                  "HF directories: none unless given)")
    p.add_argument("--eval-tokens", default=None, metavar="N",
                   help="validation tokens (default: the run's --eval.tokens, 65536 for HF directories)")
    p.add_argument("--tasks", default="all", help=f"comma-separated from {', '.join(TASKS)}; all or none (default all)")
    p.add_argument("--limit", default=None, metavar="N", help="score only the first N items of each task (a fixed subset)")
    p.add_argument("--batch-size", default="32", metavar="N", help="sequences per forward pass (default 32)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--threads", default="0", metavar="N", help="CPU threads for torch (default 0: torch's choice; "
                   "1 is fastest for small models on a busy machine)")
    p.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument("--write-lm-eval-tasks", metavar="DIR",
                   help="write the tasks as lm-evaluation-harness task files into DIR and exit (see docs/evaluation.md)")
    return p


def eval_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..tasks import parse_tasks, write_lm_eval_tasks
    if args.write_lm_eval_tasks:
        names = write_lm_eval_tasks(Path(args.write_lm_eval_tasks),
                                    positive_int(args.limit, "--limit") if args.limit else None)
        print(f"wrote {', '.join(names)} to {args.write_lm_eval_tasks}; run (offline, on a `tst export` directory; "
              "SEQ_LEN is its tst_export.json's train_seq_len, the context it was trained on):\n"
              f"  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm_eval --model hf --model_args "
              f"pretrained=EXPORT_DIR,dtype=float32,max_length=SEQ_LEN --include_path {args.write_lm_eval_tasks} "
              f"--tasks {','.join(names)}")
        return 0
    if not args.model:
        raise UserError("no model: pass RUN_DIR, RUN_DIR:STEP or an HF directory (see `tst eval --help`)")
    if args.out and Path(args.out).is_dir():  # checked before the evaluation, not after it
        raise UserError(f"--out {args.out} is a directory: name the JSON file to write (e.g. {args.out}/scores.json)")
    tasks = parse_tasks(args.tasks)
    limit = positive_int(args.limit, "--limit") if args.limit else None
    eval_tokens = positive_int(args.eval_tokens, "--eval-tokens") if args.eval_tokens else None
    batch_size = positive_int(args.batch_size, "--batch-size")
    from .. import api
    from ..model_eval import format_results
    set_threads(args.threads)
    loaded = api.load(args.model, args.step, device=args.device)
    if loaded.kind == "hf" and not args.data and not tasks:
        raise UserError("nothing to evaluate: an HF directory needs --data DATA_DIR for a validation loss, or --tasks")
    res = api.evaluate(loaded, args.data, tasks, limit, eval_tokens, batch_size)
    print(format_results(res))
    if args.out:
        from ..rundir import write_json
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out), res)
        print(f"results: {args.out}")
    return 0
