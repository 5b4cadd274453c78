"""Stopping a run on request: the first Ctrl-C (SIGINT) or a SIGTERM (what `docker stop`, Kubernetes
and SLURM send) asks the training loop to save after the step under way and stop, with the shell's exit
code for that signal. A step cut in half would leave torch's parameters half-updated and JAX's donated
buffers gone, so the request waits for the step's end. A second Ctrl-C interrupts at once; a repeated
SIGTERM changes nothing (a supervisor's next word is SIGKILL)."""

from __future__ import annotations

import signal
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as a shell reports it
STOPPED_CODES = tuple(EXIT_CODES.values())


class StopRequests:
    """A `with` block during which SIGINT and SIGTERM are requests (`requested`, `signal`) rather than
    exceptions. Outside the main thread, where Python cannot take signals, it records nothing."""

    def __init__(self):
        self.signal: int | None = None
        self.previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal, EXIT_CODES[signal.SIGTERM])

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in EXIT_CODES}
        return self

    def _handle(self, signum, frame):
        if self.signal is None:
            self.signal = signum
        if signum == signal.SIGINT:  # the next Ctrl-C is the old one: KeyboardInterrupt, at once
            signal.signal(signal.SIGINT, self.previous[signal.SIGINT])

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def signal_name(code: int) -> str:
    """'SIGTERM' for 143, 'Ctrl-C (SIGINT)' for 130."""
    return {130: "Ctrl-C (SIGINT)", 143: "SIGTERM"}.get(code, f"exit code {code}")
