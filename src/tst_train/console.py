"""What a training run prints: a progress bar on a terminal, periodic plain lines elsewhere (a log file,
a batch system, CI: no ``\\r`` redraws), and one line per evaluation in both cases. Rank 0 only.
"""
from __future__ import annotations

import sys
import time


class Console:
    def __init__(self, enabled: bool, total: int, initial: int, every: int = 0, tty: bool | None = None) -> None:
        self.enabled, self.total = enabled, total
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every = every or max(1, total // 20)
        self.start, self.first = time.perf_counter(), initial
        self.bar = None
        if enabled and self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5)

    def step(self, step: int, text: str) -> None:
        """After step ``step`` (completed steps): redraw the bar, or print a line every ``every`` steps."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=False)
        elif self.enabled and (step % self.every == 0 or step == self.total):
            elapsed = time.perf_counter() - self.start
            rate = (step - self.first) / elapsed if elapsed > 0 else 0.0
            eta = f", {(self.total - step) / rate:,.0f}s left" if rate > 0 else ""
            print(f"step {step}/{self.total} {text} ({elapsed:,.0f}s{eta})", flush=True)

    def line(self, text: str) -> None:
        """A line that stays (evaluations), printed above the bar on a terminal."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
