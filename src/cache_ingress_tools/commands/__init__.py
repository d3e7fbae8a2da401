"""Subcommands of `cache-ingress`, one module each (see cache_ingress_tools.cli).

`COMMANDS` lists them with their one-line help, so that `cache-ingress --help` lists every
command without importing any; a command's module is imported only when it runs (or shows
its own help). A command module exposes `register(subparsers)`, which adds its parser and
sets `handler` (returning an exit status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Command:
    help: str
    # Needs the embedded AWS (`pip install 'cache-ingress[emulator]'`): moto and cfn-lint.
    emulator: bool = False


COMMANDS: Final[dict[str, Command]] = {
    "demo": Command(
        "walk through tag → policy → grant, a denial, a dead letter and its replay",
        emulator=True,
    ),
    "emulator": Command(
        "run the embedded AWS (moto + cache security groups) until Ctrl-C", emulator=True
    ),
    "explain": Command(
        "why a security group is or is not granted a target: every rule, its fact, its verdict"
    ),
    "invoke": Command(
        "run the function on a sample event against the embedded AWS (no Docker)",
        emulator=True,
    ),
    "grants": Command(
        "the grant ledger as a table: who asked, when, in force or revoked and why (--check)"
    ),
    "hold": Command("stop one (group, target) pair from being granted, with a reason"),
    "peek": Command("list the dead-letter queue without consuming it"),
    "plan": Command(
        "what a new policy would change: every tagged pair under both policies (read-only)"
    ),
    "policy": Command("validate a policy before it is deployed (offline)"),
    "reconcile": Command(
        "sweep every tagged security group and repair missing ingress (or --dry-run)"
    ),
    "release": Command("end the hold on one (group, target) pair"),
    "replay": Command("replay the dead-letter queue; delete only what succeeds"),
}
