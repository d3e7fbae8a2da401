"""`cache-ingress invoke EVENT`: the real handler, in this process, against the embedded AWS."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import UsageError
from cache_ingress_tools.emulator.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario
from cache_ingress_tools.emulator.server import EmbeddedAws, EmulatorError
from cache_ingress_tools.local_invoke import (
    FUNCTION_ID,
    LocalInvokeError,
    Target,
    TemplateError,
    embedded_target,
    invoke,
    project_root,
    render,
    running_target,
)
from cache_ingress_tools.sam_config import SamConfigError, parse_parameter_overrides

EXIT_RETURNED: Final = 0
EXIT_RAISED: Final = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "invoke",
        help=COMMANDS["invoke"].help,
        description=(
            "Run the real handler (cache_ingress.handler.lambda_handler) in this process on "
            "one event, with the environment template.yaml gives the function, against the "
            "embedded AWS: one started for this run, or a running `cache-ingress emulator` "
            "(--endpoint-url). Prints the structured log lines, the function's response, and "
            "the cache security groups, VPC caches' security-group rules and dead-letter "
            "queue afterwards. Exit status: 0 the "
            "function returned, 1 it raised (Lambda would retry), 2 the run could not start."
        ),
    )
    parser.add_argument("event", type=Path, help="event JSON file, e.g. events/<file>.json")
    parser.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_SCENARIO,
        help="scenario the embedded AWS is (or was) seeded from (default: the built-in one)",
    )
    parser.add_argument(
        "--endpoint-url",
        help="an embedded AWS already running, e.g. http://127.0.0.1:5000 (default: start one)",
    )
    parser.add_argument(
        "--env-vars",
        type=Path,
        help="env-vars file in SAM's format, e.g. events/env.json (its URLs under its own "
        "AWS_ENDPOINT_URL are re-based onto the endpoint used here)",
    )
    parser.add_argument(
        "--template", type=Path, help="SAM template (default: template.yaml of the project)"
    )
    parser.add_argument(
        "--function", default=FUNCTION_ID, help=f"function logical id (default {FUNCTION_ID})"
    )
    parser.add_argument(
        "--parameter-overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="template parameters, e.g. DryRun=true LogLevel=WARNING (as sam local invoke "
        "takes them: several after one option, or in one quoted argument)",
    )
    parser.set_defaults(handler=run)


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    try:
        event = _read_event(arguments.event)
        overrides = parse_parameter_overrides(arguments.parameter_overrides)
        template = arguments.template or project_root() / "template.yaml"
        scenario = load_scenario(arguments.scenario)
        with _target(arguments.endpoint_url, scenario) as target:
            result = invoke(
                event,
                target,
                template_path=template,
                logical_id=arguments.function,
                env_vars_path=arguments.env_vars,
                parameter_overrides=overrides,
            )
            render(result, out, event_label=str(arguments.event))
    except (LocalInvokeError, TemplateError, ScenarioError, EmulatorError, SamConfigError) as exc:
        return UsageError(str(exc)).report("invoke")
    return EXIT_RETURNED if result.error is None else EXIT_RAISED


def _read_event(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalInvokeError(f"event {path}: cannot be read: {exc}") from None
    except ValueError as exc:
        raise LocalInvokeError(f"event {path}: not valid JSON: {exc}") from None


@contextlib.contextmanager
def _target(endpoint_url: str | None, scenario: Any) -> Iterator[Target]:
    if endpoint_url:
        yield running_target(endpoint_url, scenario)
        return
    # A free port: the run needs no fixed address, and a running emulator keeps its own.
    with EmbeddedAws(scenario, port=0) as aws:
        yield embedded_target(aws, "embedded, started for this run")
