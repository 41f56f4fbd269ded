"""``tst generate``: text from a run directory (any saved step) or a Hugging Face directory.

    tst generate runs/tiny --prompt "It is a truth universally acknowledged"
    tst generate runs/tiny:1500 exported/tiny ... --prompts-file prompts.txt --temperature 0 --max-new-tokens 50
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError
from .args import ArgumentParser, set_threads

DESCRIPTION = ("Generate text from a trained model: RUN_DIR (its latest checkpoint), RUN_DIR:STEP, or an exported "
               "Hugging Face directory. Sampling is transformers.generate's (temperature, then top-k, then top-p).")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="tst generate", description=DESCRIPTION)
    p.add_argument("model", help="RUN_DIR, RUN_DIR:STEP or HF_DIR")
    p.add_argument("--step", type=int, default=None, help="the checkpoint step of a run directory (default: the latest)")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="a prompt (repeat for several; an empty prompt starts a new document)")
    p.add_argument("--prompts-file", metavar="FILE", help="one prompt per line (\\n in a line stands for a newline)")
    p.add_argument("--max-new-tokens", type=int, default=100, metavar="N", help="tokens to generate per prompt (default 100)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens; 0 = off (default 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: the smallest set with this probability; "
                                                           "1 = off (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; each prompt starts from it (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--threads", default="0", metavar="N", help="CPU threads for torch (default 0: torch's choice; "
                   "1 is fastest for small models on a busy machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt (prompt, completion, token ids)")
    return p


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise UserError(f"--prompts-file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"--prompts-file {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
        prompts += [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]
    for prompt in prompts:
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # e.g. a lone surrogate from a shell's undecodable bytes
            raise UserError(f"a prompt is not valid Unicode text ({prompt!r}): pass UTF-8 text") from None
    if not prompts:
        raise UserError("no prompt: pass --prompt TEXT (an empty one starts a new document) or --prompts-file FILE")
    return prompts


def generate_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from .. import api
    from ..generate import complete, stream_text
    sampling = api.Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed).validate()
    prompts = read_prompts(args)
    set_threads(args.threads)
    loaded = api.load(args.model, args.step, device=args.device)
    tok = loaded.text_tokenizer()
    print(f"# {loaded.describe()}", file=sys.stderr)
    for prompt in prompts:
        if args.json:
            text, ids = complete(loaded.model, tok, prompt, sampling)
            print(json.dumps({"prompt": prompt, "completion": text, "tokens": ids}), flush=True)
        elif sys.stdout.isatty():  # stream token by token
            print(prompt, end="", flush=True)
            for piece in stream_text(loaded.model, tok, prompt, sampling):
                print(piece, end="", flush=True)
            print("\n")
        else:
            print(prompt + complete(loaded.model, tok, prompt, sampling)[0] + "\n", flush=True)
    return 0
