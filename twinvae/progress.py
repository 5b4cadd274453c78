"""Progress bars for training, evaluation and the benchmark: tqdm's live bar on a terminal, nothing at all
in a log file or a pipe (the callers print their own one line per epoch, per point). tqdm is imported only
for a terminal, so a run from a source tree without it (a lent GPU image) still works."""

from __future__ import annotations

import sys


class Progress:
    """A bar of `total` steps on stderr, shown only if `enabled` and stderr is a terminal. `stage` sets
    the text after the bar (the epoch and the loss, the point being timed); tqdm adds the rate."""

    def __init__(self, total: int, enabled: bool = True, unit: str = "step"):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=max(total, 1), unit=unit, dynamic_ncols=True, leave=False)

    def stage(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, line: str) -> None:
        """A line on stdout, above the bar if there is one (a plain print would break it)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
