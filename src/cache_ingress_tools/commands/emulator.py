"""`cache-ingress emulator`: the embedded AWS on a fixed address, until Ctrl-C.

For `cache-ingress invoke --endpoint-url` from another terminal, and for `sam local invoke`,
whose Lambda container reaches it through AWS_ENDPOINT_URL (events/env.json).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import UsageError
from cache_ingress_tools.emulator.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario
from cache_ingress_tools.emulator.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    EmbeddedAws,
    EmulatorError,
)
from cache_ingress_tools.local_invoke import FUNCTION_ID, LocalInvokeError, project_root

EXIT_OK: Final = 0
# What a Lambda container on Docker Desktop calls the host; on Linux, --add-host maps it.
CONTAINER_HOST_ADDRESS: Final = "host.docker.internal"
LINUX_BRIDGE_ADDRESS: Final = "172.17.0.1"
SAMPLE_EVENT: Final = "events/tag-change-authorized.json"
ENV_VARS_FILE: Final = "events/env.json"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help=COMMANDS["emulator"].help,
        description=(
            "Serve the embedded AWS (moto with the project's cache-security-group emulation), "
            "seeded from a scenario, on HOST:PORT until Ctrl-C. Prints the commands that use "
            "it: `cache-ingress invoke --endpoint-url` and `sam local invoke` (Docker). "
            "State lives in memory and is lost when it stops."
        ),
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_SCENARIO,
        help="scenario file to seed from (default: the built-in one the sample events use)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=(
            f"address to listen on (default {DEFAULT_HOST}, this machine only). For Docker "
            f"Engine on Linux: the docker0 bridge address ({LINUX_BRIDGE_ADDRESS} by default) "
            "so that Lambda containers can reach it"
        ),
    )
    parser.add_argument(
        "--container-host-address",
        default=CONTAINER_HOST_ADDRESS,
        help=f"how a container names this machine (default {CONTAINER_HOST_ADDRESS})",
    )
    parser.add_argument(
        "--env-vars-out",
        type=Path,
        help="write an env-vars file for `sam local invoke --env-vars` matching this emulator",
    )
    parser.add_argument(
        "--log-requests", action="store_true", help="print one line per request served"
    )
    parser.set_defaults(handler=run)


def run(
    arguments: argparse.Namespace,
    stdout: IO[str] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve until Ctrl-C, SIGTERM or ``stop`` is set."""
    out = stdout if stdout is not None else sys.stdout
    stop = stop if stop is not None else threading.Event()
    try:
        scenario = load_scenario(arguments.scenario)
        aws = EmbeddedAws(
            scenario, host=arguments.host, port=arguments.port, log_requests=arguments.log_requests
        )
        with aws:
            container_env = container_env_vars(aws, arguments.container_host_address)
            if arguments.env_vars_out is not None:
                _write_env_vars(arguments.env_vars_out, container_env)
            write_banner(out, aws, arguments, container_env)
            out.flush()
            _wait(stop)
            out.write("stopping; the emulator's state is gone\n")
    except (ScenarioError, EmulatorError, LocalInvokeError) as exc:
        return UsageError(str(exc)).report("emulator")
    return EXIT_OK


def container_env_vars(aws: EmbeddedAws, container_host: str) -> dict[str, dict[str, str]]:
    """The env-vars file `sam local invoke` needs for this emulator (SAM's format)."""
    container_endpoint = f"http://{container_host}:{aws.port}"
    queue_url = aws.world.dead_letter_queue_url
    queue_path = queue_url.removeprefix(aws.endpoint_url)
    variables = {
        "ACCOUNT_ID": aws.scenario.account_id,
        "AWS_ENDPOINT_URL": container_endpoint,
        "IDEMPOTENCY_TABLE": aws.scenario.idempotency_table,
        "DEAD_LETTER_QUEUE_URL": container_endpoint + queue_path,
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    if aws.scenario.ledger_table is not None:
        variables["LEDGER_TABLE"] = aws.scenario.ledger_table
    return {FUNCTION_ID: variables}


def write_banner(
    out: IO[str],
    aws: EmbeddedAws,
    arguments: argparse.Namespace,
    container_env: Mapping[str, Mapping[str, str]],
) -> None:
    scenario = aws.scenario
    write = out.write
    write(f"embedded AWS listening on {aws.endpoint_url}\n")
    write(
        f"  account {scenario.account_id}, region {scenario.region}, "
        f"scenario {arguments.scenario}\n"
        f"  {len(scenario.security_groups)} security groups, "
        f"{len(scenario.cache_security_groups)} cache security groups "
        f"({', '.join(scenario.cache_security_groups) or 'none'}), "
        f"table {scenario.idempotency_table}, "
        + (f"ledger {scenario.ledger_table}, " if scenario.ledger_table else "")
        + f"queue {aws.world.dead_letter_queue_url}\n\n"
    )
    write("Run the function in this machine's Python (no Docker), from another terminal:\n")
    write(f"  cache-ingress invoke {SAMPLE_EVENT} --endpoint-url {aws.endpoint_url}\n\n")
    env_file = _env_vars_file_for(arguments, container_env)
    container_endpoint = container_env[FUNCTION_ID]["AWS_ENDPOINT_URL"]
    write("Run it in a Lambda container (Docker), after `sam build`:\n")
    write(
        "  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \\\n"
        f"    sam local invoke {FUNCTION_ID} -e {SAMPLE_EVENT} --env-vars {env_file} "
        f"--region {scenario.region}\n"
    )
    write(f"  The function reaches this emulator as {container_endpoint}:\n")
    write("  - Docker Desktop (macOS, Windows): nothing more.\n")
    linux_ready = arguments.host not in {"127.0.0.1", "localhost", "::1"}
    write(
        f"  - Docker Engine on Linux: add `--add-host {arguments.container_host_address}:"
        "host-gateway` to sam local invoke"
        + (
            ".\n"
            if linux_ready
            else (
                ", and restart this emulator with --host "
                f"{LINUX_BRIDGE_ADDRESS} (docker0's address: `ip -4 addr show docker0`): a "
                "container cannot reach 127.0.0.1 of this machine.\n"
            )
        )
    )
    if arguments.env_vars_out is None and env_file != ENV_VARS_FILE:
        write(
            f"  ({ENV_VARS_FILE} is for port {DEFAULT_PORT} and the default scenario: restart "
            "with --env-vars-out FILE to write one for this emulator, and pass that FILE.)\n"
        )
    write("\nCtrl-C (or SIGTERM) stops it.\n")


def _env_vars_file_for(
    arguments: argparse.Namespace, container_env: Mapping[str, Mapping[str, str]]
) -> str:
    """events/env.json when it says what this emulator needs, else the file to write."""
    if arguments.env_vars_out is not None:
        return str(arguments.env_vars_out)
    try:
        shipped = json.loads((project_root() / ENV_VARS_FILE).read_text(encoding="utf-8"))
    except (LocalInvokeError, OSError, ValueError):
        shipped = {}
    needed = container_env[FUNCTION_ID]
    section = shipped.get(FUNCTION_ID, {}) if isinstance(shipped, dict) else {}
    if all(section.get(name) == value for name, value in needed.items()):
        return ENV_VARS_FILE
    return "FILE"


def _write_env_vars(path: Path, container_env: Mapping[str, Any]) -> None:
    try:
        path.write_text(json.dumps(container_env, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise LocalInvokeError(f"--env-vars-out {path}: cannot be written: {exc}") from None


def _wait(stop: threading.Event) -> None:
    """Block until Ctrl-C, SIGTERM or ``stop``; short waits keep Ctrl-C prompt everywhere."""
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_terminate(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_terminate)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
