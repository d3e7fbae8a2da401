"""`cache-ingress`: the operator and developer command line.

Each subcommand lives in its own module under `cache_ingress_tools.commands`, listed in
`COMMANDS` with its one-line help, and exposes `register(subparsers)`, which adds its parser
and sets `handler` (returning an exit status). Only the module of the command being run is
imported: `cache-ingress --help` imports none, and the operator's commands (peek, replay,
reconcile) never import the embedded AWS, which a plain `pip install .` does not have.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final

from cache_ingress_tools.commands import COMMANDS

EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
# What `pip install 'cache-ingress[emulator]'` adds (see pyproject.toml).
EMULATOR_PACKAGES: Final = frozenset({"moto", "cfnlint", "werkzeug", "flask"})


class MissingExtraError(Exception):
    """A command needs the emulator extra, which this installation lacks."""

    def __init__(self, command: str, module: str) -> None:
        super().__init__(
            f"cache-ingress {command}: needs the embedded AWS, which this installation lacks "
            f"(no module {module!r}): pip install 'cache-ingress[emulator]'"
        )


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; the command named in `argv` (if any) gets its full parser."""
    parser = argparse.ArgumentParser(
        prog="cache-ingress",
        description="Operate and try out cache-ingress: dead-letter replay, local runs, emulator.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The command is the first argument that is not an option (the top level has only -h).
    chosen = next((argument for argument in argv if not argument.startswith("-")), None)
    for name, command in COMMANDS.items():
        if name == chosen:
            _load(name).register(subparsers)
        else:
            subparsers.add_parser(name, help=command.help)
    return parser


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"cache_ingress_tools.commands.{name}")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if COMMANDS[name].emulator and missing in EMULATOR_PACKAGES:
            raise MissingExtraError(name, missing) from exc
        raise


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(arguments)
        parsed = parser.parse_args(arguments)
        status: int = parsed.handler(parsed)
    except MissingExtraError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())
