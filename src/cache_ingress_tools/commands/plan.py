"""`cache-ingress plan`: what a policy change would do, before it is deployed.

A read-only sweep with the function's own reconciliation code (`Reconciler.preview`): every
group carrying the tag key, page by page, decided under the current policy and under the
new one, with what is granted now; then the difference (`cache_ingress_tools.policy_plan`):
pairs newly granted, newly denied, needing an event, moved, and (with the grant ledger, for
targets with `revoke: true`) the function's own grants the new policy would revoke. Every
client refuses any call that is not a read: nothing is granted or revoked, and no resume
token is read or written.

The current policy: --current-policy FILE, else the one the function reads (--stack-name's
PolicyParameterName, or POLICY_PARAMETER / POLICY_FILE), else the bundled policy here.

Exit status, for a CI job on a policy pull request: 0 nothing changes, 2 something would,
1 an error (the plan could not be made, or is incomplete: a pair could not be read, or the
time limit came first).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import (
    EXIT_OK,
    CommandError,
    Connection,
    Progress,
    add_aws_arguments,
    function_environment,
    function_output_to,
    render_table,
    shorten,
    shown_path,
)

if TYPE_CHECKING:
    from cache_ingress.policy import Policy
    from cache_ingress.reconcile import AccountsSweep, GroupPage, Reconciler
    from cache_ingress.settings import Settings
    from cache_ingress_tools.policy_plan import PairPlan, PolicyPlan

EXIT_ERROR: Final = 1
EXIT_CHANGES: Final = 2
HEADERS: Final = ("CHANGE", "GROUP ID", "GROUP NAME", "TARGET", "NOW", "AFTER", "GRANTED", "EFFECT")
EFFECT_WIDTH: Final = 80
# Settings requires them; a plan never writes a record or a dead letter.
_UNUSED = {"IDEMPOTENCY_TABLE": "unused-by-plan", "DEAD_LETTER_QUEUE_URL": "unused-by-plan"}


class PlanError(CommandError):
    """The plan could not be made: exit status 1, never 2 (which means "it changes")."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_ERROR)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help=COMMANDS["plan"].help,
        description=(
            "Sweep every tagged security group read-only with the function's reconciliation "
            "code, decide each under the current policy and the new one, and print what would "
            "change: pairs newly granted, newly denied, needing an event, moved. Nothing is "
            "granted. Exit status: 0 nothing changes, 2 something would, 1 an error."
        ),
    )

    def usage_error(message: str) -> NoReturn:
        # A usage error is an error (1): 2 means "something would change" to a CI job.
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        raise SystemExit(EXIT_ERROR)

    parser.error = usage_error
    parser.add_argument(
        "--policy-file", required=True, type=Path, help="the new policy (YAML or JSON)"
    )
    parser.add_argument(
        "--current-policy",
        type=Path,
        help="the policy deployed now (default: the one the function reads: the stack's "
        "PolicyParameterName, POLICY_PARAMETER or POLICY_FILE, else the bundled policy)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument("--all", action="store_true", help="list every pair, unchanged ones too")
    parser.add_argument("--verbose", action="store_true", help="print the sweep's log lines")
    parser.add_argument(
        "--page-size", type=int, help="groups per DescribeSecurityGroups page (5-1000)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop, as a scheduled run does, before a page that may not fit (the plan is "
        "then incomplete: exit status 1); default: none",
    )
    connection = parser.add_argument_group("account and connection")
    add_aws_arguments(
        connection,
        stack_help="the deployed stack: its parameters give the policy parameter and tag key",
    )
    connection.add_argument(
        "--account-id", help="the account the function serves (default: ACCOUNT_ID, or STS)"
    )
    connection.add_argument("--tag-key", help="the stack's tag key (TAG_KEY)")
    connection.add_argument(
        "--ledger-table",
        help="the grant ledger (LEDGER_TABLE, or the stack's): what revocation would do",
    )
    parser.set_defaults(handler=run)


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    from cache_ingress.errors import CacheIngressError  # noqa: PLC0415

    try:
        made = _plan(arguments)
    except CommandError as exc:
        exc.exit_status = EXIT_ERROR
        return exc.report("plan")
    except CacheIngressError as exc:
        return PlanError(f"the plan could not be made: {exc}").report("plan")
    plan, sources = made
    if arguments.json:
        out.write(json.dumps(_document(plan, sources, arguments.all), indent=2) + "\n")
    else:
        out.write(_text(plan, sources, arguments.all))
    if plan.failed or not plan.complete:
        return EXIT_ERROR
    return EXIT_CHANGES if plan.changes else EXIT_OK


def _plan(arguments: argparse.Namespace) -> tuple[PolicyPlan, dict[str, str]]:
    from cache_ingress_tools.lambda_context import LocalContext  # noqa: PLC0415
    from cache_ingress_tools.policy_plan import plan  # noqa: PLC0415

    connection = Connection.from_arguments(arguments, read_only=True)
    connection.account_id()  # the credentials and the endpoint work, or say what to do
    reconciler, settings, current_source = _reconciler(arguments, connection)
    if settings.policy_parameter is None and _same_file(
        settings.policy_file, arguments.policy_file
    ):
        raise PlanError(
            f"the new policy is the current one ({current_source}): pass --current-policy "
            "with the policy deployed now (e.g. the deployed commit's file)"
        )
    current = _current(reconciler, current_source)
    new, new_source = _new(arguments.policy_file, settings.tag_key)
    context = None
    if arguments.time_limit is not None:
        context = LocalContext(
            function_name="cache-ingress-plan",
            invoked_function_arn="local",
            memory_limit_in_mb=0,
            timeout_seconds=arguments.time_limit,
        )
    progress = Progress(sys.stderr, unit="groups")

    def on_page(page: GroupPage) -> None:
        for _ in page.groups:
            progress.advance("groups")

    # The sweep's log lines are the plan's detail: shown with --verbose only.
    level = logging.INFO if arguments.verbose else logging.CRITICAL
    try:
        with function_output_to(sys.stderr, level):
            # No reserve: a plan has no resume token to save before it stops.
            reports = reconciler.preview(
                {"current": current, "new": new}, context, reserve_ms=0, on_page=on_page
            )
    finally:
        progress.close()
    sources = {"current": current_source, "new": new_source}
    sources["ledger"] = "unknown" if settings.ledger_table is None else settings.ledger_table
    sources["revokes"] = "yes" if new.revokes else "no"
    return plan(reports["current"], reports["new"], current, new), sources


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _reconciler(
    arguments: argparse.Namespace, connection: Connection
) -> tuple[Reconciler | AccountsSweep, Settings, str]:
    """The function's reconciler with read-only clients, its settings, and where the current
    policy comes from."""
    from cache_ingress.errors import SettingsError  # noqa: PLC0415
    from cache_ingress.settings import BUNDLED_POLICY, ReconcileOptions, Settings  # noqa: PLC0415
    from cache_ingress.wiring import build_accounts_sweep, build_reconciler  # noqa: PLC0415

    # The function's settings as a command sees them; its policy is the current one.
    asked = argparse.Namespace(**vars(arguments))
    asked.policy_file, asked.policy_parameter = arguments.current_policy, None
    environment = {**function_environment(asked, connection, os.environ), **_UNUSED}
    if arguments.current_policy is not None:
        environment.pop("POLICY_PARAMETER", None)
    elif arguments.stack_name and not environment.get("POLICY_PARAMETER"):
        raise PlanError(
            f"stack {arguments.stack_name!r} runs its bundled policy, which only its build "
            "holds: pass --current-policy with the deployed commit's policy file"
        )
    if arguments.page_size is not None:
        environment["RECONCILE_PAGE_SIZE"] = str(arguments.page_size)
    try:
        settings = Settings.from_environ(environment)
        options = ReconcileOptions.from_environ(environment)
    except SettingsError as exc:
        raise PlanError(str(exc)) from exc
    clients = connection.function_clients(settings.region)
    # A stack that serves member accounts: its own groups and every member's, read through
    # their roles (docs/multi-account.md).
    reconciler: Reconciler | AccountsSweep = (
        build_accounts_sweep(settings, options, clients)
        if settings.members is not None
        else build_reconciler(settings, options, clients)
    )
    if settings.policy_parameter:
        source = f"ssm:{settings.policy_parameter}"
    else:
        source = shown_path(settings.policy_file)
        if settings.policy_file == BUNDLED_POLICY:
            source += " (bundled)"
    return reconciler, settings, source


def _current(reconciler: Reconciler | AccountsSweep, source: str) -> Policy:
    from cache_ingress.errors import PolicyError  # noqa: PLC0415

    try:
        return reconciler.policy()
    except PolicyError as exc:
        raise PlanError(f"the current policy ({source}): {exc}") from exc


def _new(path: Path, tag_key: str) -> tuple[Policy, str]:
    from cache_ingress.errors import PolicyError  # noqa: PLC0415
    from cache_ingress.policy import parse_policy  # noqa: PLC0415

    source = shown_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"policy {source}: cannot be read: {exc}") from exc
    try:
        return parse_policy(text, source=source, expected_tag_key=tag_key), source
    except PolicyError as exc:
        listed = "\n".join(problem.listing(source) for problem in exc.problems)
        raise PlanError(
            f"the new policy does not validate (`cache-ingress policy validate {source}`):\n"
            + (listed or str(exc))
        ) from exc


# --- output ---------------------------------------------------------------------------------


def _text(plan: PolicyPlan, sources: Mapping[str, str], every: bool) -> str:
    shown = plan.pairs if every else plan.changes
    lines = []
    if shown:
        rows = [_row(pair) for pair in shown]
        lines.append(render_table(HEADERS, rows).rstrip("\n"))
    else:
        lines.append("no change: every tagged pair stands as it does under the current policy")
    for pair in plan.failed:
        lines.append(
            f"unknown: {pair.group_id} {pair.target}: could not be read, and its target "
            f"changes: {_failure(pair)}"
        )
    for pair in plan.unread:
        lines.append(
            f"note: {pair.group_id} {pair.target}: could not be read ({_failure(pair)}); its "
            "target is the same in both policies, so it is decided alike"
        )
    targets = plan.targets
    for label, names in (
        ("added", targets.added),
        ("removed", targets.removed),
        ("changed", targets.changed),
    ):
        if names:
            lines.append(f"targets {label}: {', '.join(names)}")
    if sources["ledger"] == "unknown" and sources["revokes"] == "yes":
        lines.append(
            "note: the new policy revokes, but the grant ledger is unknown (pass --stack-name "
            "or --ledger-table): revocations are not shown"
        )
    counts = ", ".join(f"{name} {count}" for name, count in plan.counts().items() if count)
    state = "" if plan.complete else " INCOMPLETE (the time limit came first)"
    lines.append(
        f"\nplan{state}: {len(plan.changes)} pair(s) change"
        + (f" ({counts})" if counts else "")
        + f" of {len(plan.pairs)} on {plan.groups_seen} tagged group(s), {plan.pages} page(s);"
        f" current {sources['current']}, new {sources['new']}"
    )
    return "\n".join(lines) + "\n"


def _row(pair: PairPlan) -> tuple[str, ...]:
    granted = {True: "yes", False: "no", None: "-"}[pair.granted_now]
    return (
        str(pair.change) if pair.change is not None else "-",
        pair.group_id,
        pair.group_name or "-",
        pair.target or "-",
        pair.current.label if pair.current else "-",
        pair.new.label if pair.new else "-",
        granted,
        shorten(pair.effect, EFFECT_WIDTH),
    )


def _failure(pair: PairPlan) -> str:
    for standing in (pair.current, pair.new):
        if standing is not None and standing.reason and str(standing.place) == "failed":
            return standing.reason
    return "unknown"


def _document(plan: PolicyPlan, sources: Mapping[str, str], every: bool) -> dict[str, Any]:
    return {
        "current": sources["current"],
        "new": sources["new"],
        "ledgerRead": sources["ledger"] != "unknown",
        "complete": plan.complete,
        "pages": plan.pages,
        "groupsSeen": plan.groups_seen,
        "pairs": len(plan.pairs),
        "counts": plan.counts(),
        "changes": [pair.as_dict() for pair in plan.changes],
        "unknown": [pair.as_dict() for pair in plan.failed],
        "unreadAlike": [pair.as_dict() for pair in plan.unread],
        "targets": {
            "added": list(plan.targets.added),
            "removed": list(plan.targets.removed),
            "changed": list(plan.targets.changed),
        },
        **({"all": [pair.as_dict() for pair in plan.pairs]} if every else {}),
    }
