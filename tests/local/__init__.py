"""Local runs: the embedded AWS, the in-process invoke, the demo, and `sam local invoke`.

The child-process helpers live in tests/support/processes.py; they are named here too.
"""

from __future__ import annotations

from tests.support.processes import (
    CHILD_DEADLINE_SECONDS,
    REPO_ROOT,
    LineReader,
    cli_command,
    interruptible_cli_command,
    run_cli,
)

__all__ = [
    "CHILD_DEADLINE_SECONDS",
    "REPO_ROOT",
    "LineReader",
    "cli_command",
    "interruptible_cli_command",
    "run_cli",
]
