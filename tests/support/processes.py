"""Child processes of the tests: the `cache-ingress` command as a person runs it, and a reader
that lets a test wait for a line of its output with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# A safety net for a hung child only; no test asserts how long anything takes.
CHILD_DEADLINE_SECONDS = 300
# The console script's own code, but with Python's Ctrl-C handler whatever this process was
# started with: a test run started in the background ignores SIGINT, and a child would
# inherit that and never see the Ctrl-C a test sends it.
_INTERRUPTIBLE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from cache_ingress_tools.cli import main; sys.exit(main())"
)


def cli_command(*arguments: str) -> list[str]:
    """`cache-ingress ARGS` through the installed console script, as a person types it."""
    script = Path(sys.executable).with_name("cache-ingress")
    if script.exists():
        return [str(script), *arguments]
    return [sys.executable, "-m", "cache_ingress_tools.cli", *arguments]


def interruptible_cli_command(*arguments: str) -> list[str]:
    """`cache-ingress ARGS` for a test that sends the child a real SIGINT (Ctrl-C)."""
    return [sys.executable, "-c", _INTERRUPTIBLE, *arguments]


def run_cli(arguments: Sequence[str], **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        cli_command(*arguments),
        cwd=REPO_ROOT,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_SECONDS,
        check=False,
    )


class LineReader:
    """Reads a child's output on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_closed(self) -> list[str]:
        """Every line, once the child has closed its output."""
        self._thread.join(timeout=CHILD_DEADLINE_SECONDS)
        with self._changed:
            return list(self.lines)

    def wait_for(self, text: str) -> list[str]:
        with self._changed:
            found = self._changed.wait_for(
                lambda: self._closed or any(text in line for line in self.lines),
                timeout=CHILD_DEADLINE_SECONDS,
            )
            if not found or not any(text in line for line in self.lines):
                raise AssertionError(f"{text!r} never printed; got:\n{''.join(self.lines)}")
            return list(self.lines)
