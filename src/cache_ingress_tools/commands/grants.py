"""`cache-ingress grants`: the grant ledger as a table, and what AWS holds against it.

Every grant the function attempted (event path, replay, sweep), newest last: who asked (the
principal, or the path that made it), when, which event, which policy (its digest), and what
became of it: in force (made, or joined to a rule the function already owned), revoked and
why, retired (its reason gone, the rule kept for another owner), not owned, unsure. Then the
holds that stand.

`--check` compares the ledger with AWS now: an owned entry whose rule is no longer there
(revoked outside the function), and a dry run of the sweep: what it would repair, and what
it would revoke. It reads the cache security groups, the VPC rules and the tagged groups,
and needs the policy (as `reconcile` finds it: options, variables, the stack).

Exit status: 0 listed (and, with --check, consistent); 1 the ledger or AWS could not be read;
2 a usage error; 3 --check found a difference.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Final

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import (
    EXIT_OK,
    CommandError,
    Connection,
    Progress,
    render_table,
    shorten,
    write_json_line,
)
from cache_ingress_tools.commands._ledger import (
    EXIT_FAILED,
    add_ledger_connection,
    group_id,
    ledger_problem,
    open_ledger,
    target_name,
)

if TYPE_CHECKING:
    from cache_ingress.holds import Hold
    from cache_ingress.ledger import Ledger
    from cache_ingress.ownership import Entry

EXIT_DIFFERENT: Final = 3
STATUSES: Final = ("pending", "in-force", "not-owned", "unsure", "revoked", "retired")
HEADERS: Final = (
    "STATUS",
    "RECORDED",
    "GROUP ID",
    "GROUP NAME",
    "TARGET",
    "DESTINATION",
    "PATH",
    "PRINCIPAL",
    "EVENT",
    "POLICY",
    "WHY",
)
HOLD_HEADERS: Final = ("HELD", "GROUP ID", "TARGET", "REASON", "BY")
CHECK_HEADERS: Final = ("CHECK", "GROUP ID", "GROUP NAME", "TARGET", "DESTINATION", "WHAT")
WHY_WIDTH: Final = 80
_RELATIVE = re.compile(r"(?P<amount>[0-9]+)(?P<unit>[mhd])")
_UNITS: Final = {"m": "minutes", "h": "hours", "d": "days"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "grants",
        help=COMMANDS["grants"].help,
        description=(
            "The grant ledger as a table: every grant the function attempted, who asked and "
            "when, which event and which policy, in force or revoked and why; then the holds "
            "that stand. --check compares it with AWS now. Exit status: 0 listed (and "
            "consistent), 1 could not read, 2 usage, 3 --check found a difference."
        ),
    )
    parser.add_argument("--group", type=group_id, help="one security group's entries")
    parser.add_argument("--target", type=target_name, help="one target's entries")
    parser.add_argument(
        "--since",
        type=since,
        help="recorded since: 2026-11-20, 2026-11-20T10:00:00Z, or 7d/12h/30m",
    )
    parser.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="only entries in this state (again for more)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with AWS now: owned entries whose rule is gone, and what the sweep "
        "would repair or revoke",
    )
    add_ledger_connection(parser)
    check = parser.add_argument_group(
        "--check: the function's settings (default: its variables, then the stack)"
    )
    check.add_argument("--account-id", help="the account the function serves")
    check.add_argument("--idempotency-table", help=argparse.SUPPRESS)
    check.add_argument("--tag-key", help="the stack's tag key (TAG_KEY)")
    check.add_argument("--policy-file", help="a policy file (POLICY_FILE)")
    check.add_argument("--policy-parameter", help="an SSM parameter name (POLICY_PARAMETER)")
    parser.set_defaults(handler=run)


def since(value: str) -> str:
    """An argparse type: a time, as the ledger writes times (UTC, seconds)."""
    relative = _RELATIVE.fullmatch(value)
    if relative is not None:
        delta = timedelta(**{_UNITS[relative["unit"]]: int(relative["amount"])})
        return (datetime.now(UTC) - delta).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: 2026-11-20, 2026-11-20T10:00:00Z, or 7d, 12h, 30m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    from cache_ingress.errors import AwsCallError  # noqa: PLC0415

    progress = Progress(sys.stderr, unit="entries")
    try:
        connection, ledger = open_ledger(arguments)
        try:
            entries = _entries(ledger, arguments, progress)
            holds = [
                h for h in ledger.holds(arguments.group) if arguments.target in (None, h.target)
            ]
        except AwsCallError as exc:
            raise ledger_problem(exc, "the ledger could not be read") from exc
        finally:
            progress.close()
        findings = _check(arguments, connection, ledger, entries) if arguments.check else None
    except CommandError as exc:
        return exc.report("grants")
    if arguments.json:
        for entry in entries:
            write_json_line(out, {"kind": "entry", **entry_fields(entry)})
        for hold in holds:
            write_json_line(out, {"kind": "hold", **hold_fields(hold)})
        for finding in findings or []:
            write_json_line(out, {"kind": "check", **finding})
    else:
        _write_tables(out, entries, holds, findings)
    if findings:
        return EXIT_DIFFERENT
    return EXIT_OK


def _entries(ledger: Ledger, arguments: argparse.Namespace, progress: Progress) -> list[Entry]:
    found = ledger.entries(
        group_id=arguments.group,
        since=arguments.since,
        on_page=lambda count: progress.advance("read", count),
    )
    chosen = [
        entry
        for entry in found
        if arguments.target in (None, entry.grant.target)
        and (not arguments.status or str(entry.status) in arguments.status)
    ]
    return sorted(chosen, key=lambda entry: (entry.recorded_at, entry.key))


# --- fields and tables ------------------------------------------------------------------


def destination(entry: Entry) -> str:
    grant = entry.grant
    if grant.cache_security_group:
        return grant.cache_security_group
    return f"{grant.vpc_security_group}:{grant.port}"


def entry_fields(entry: Entry) -> dict[str, Any]:
    grant = entry.grant
    fields: dict[str, Any] = {
        "status": str(entry.status),
        "ownership": str(entry.ownership) if entry.ownership else None,
        "recordedAt": entry.recorded_at,
        "updatedAt": entry.updated_at,
        "groupId": grant.group_id,
        "groupName": grant.group_name,
        "ownerId": grant.owner_id,
        "target": grant.target,
        "destination": destination(entry),
        "ruleId": entry.rule_id,
        "path": entry.path,
        "principal": entry.principal,
        "eventId": grant.event_id,
        "policyDigest": entry.policy_digest,
        "revoke": entry.revoke,
        "closedAt": entry.closed_at,
        "closedBy": entry.closed_by,
        "why": entry.closed_reason,
    }
    return {key: value for key, value in fields.items() if value is not None}


def hold_fields(hold: Hold) -> dict[str, Any]:
    return {
        "groupId": hold.group_id,
        "target": hold.target,
        "reason": hold.reason,
        "heldBy": hold.held_by,
        "heldAt": hold.held_at,
    }


def _status_cell(entry: Entry) -> str:
    return f"{entry.status} ({entry.ownership})" if entry.ownership else str(entry.status)


def _write_tables(
    out: IO[str], entries: list[Entry], holds: list[Hold], findings: list[dict[str, Any]] | None
) -> None:
    if entries:
        rows = [
            (
                _status_cell(entry),
                entry.recorded_at,
                entry.grant.group_id,
                entry.grant.group_name,
                entry.grant.target,
                destination(entry),
                entry.path,
                entry.principal or "-",
                entry.grant.event_id,
                (entry.policy_digest or "-")[:19],
                shorten(entry.closed_reason, WHY_WIDTH),
            )
            for entry in entries
        ]
        out.write(render_table(HEADERS, rows))
    else:
        out.write("no ledger entry matches\n")
    counts = Counter(str(entry.status) for entry in entries)
    summary = ", ".join(f"{status} {counts[status]}" for status in STATUSES if counts[status])
    out.write(f"\n{len(entries)} entr(y/ies){': ' + summary if summary else ''}\n")
    if holds:
        out.write("\n")
        out.write(
            render_table(
                HOLD_HEADERS,
                [
                    (
                        h.held_at or "-",
                        h.group_id,
                        h.target,
                        shorten(h.reason, 60),
                        h.held_by or "-",
                    )
                    for h in holds
                ],
            )
        )
    out.write(f"{len(holds)} hold(s) standing\n")
    if findings is not None:
        out.write("\n")
        if findings:
            cells = [
                (
                    f["check"],
                    f["groupId"],
                    f.get("groupName") or "-",
                    f.get("target") or "-",
                    f.get("destination") or "-",
                    shorten(f["what"], WHY_WIDTH),
                )
                for f in findings
            ]
            out.write(render_table(CHECK_HEADERS, cells))
        out.write(
            f"check: {len(findings)} difference(s) between the ledger, the policy and AWS\n"
            if findings
            else "check: the ledger, the policy and AWS agree\n"
        )


# --- the check ---------------------------------------------------------------------------


def _check(
    arguments: argparse.Namespace, connection: Connection, ledger: Ledger, entries: list[Entry]
) -> list[dict[str, Any]]:
    """Owned entries whose rule is gone, then the sweep's dry run: what it would repair or
    revoke. Raises CommandError when AWS or the policy cannot be read."""
    from cache_ingress.errors import AwsCallError  # noqa: PLC0415

    findings: list[dict[str, Any]] = []
    try:
        findings += _owned_but_gone(connection, ledger, arguments, entries)
    except AwsCallError as exc:
        raise CommandError(f"--check: AWS could not be read: {exc}", EXIT_FAILED) from exc
    findings += _sweep_dry_run(arguments, connection)
    return findings


def _owned_but_gone(
    connection: Connection,
    ledger: Ledger,
    arguments: argparse.Namespace,
    listed: Iterable[Entry],
) -> list[dict[str, Any]]:
    from cache_ingress.aws import CLIENT_CONFIG  # noqa: PLC0415
    from cache_ingress.granted_state import read_cache_security_group  # noqa: PLC0415
    from cache_ingress.vpc_ingress import find_rule  # noqa: PLC0415

    # The owned entries the listing selected (all of them when it selected by state).
    owned = [e for e in listed if str(e.status) == "in-force"]
    if arguments.status and "in-force" not in arguments.status:
        owned = [e for e in ledger.entries(group_id=arguments.group) if str(e.status) == "in-force"]
    elasticache = connection.client("elasticache", CLIENT_CONFIG)
    ec2 = connection.client("ec2", CLIENT_CONFIG)
    classic: dict[str, frozenset[tuple[str, str]] | None] = {}
    findings = []
    for entry in owned:
        grant = entry.grant
        if grant.is_vpc:
            present = find_rule(ec2, grant)
            there = present is not None and (entry.rule_id in (None, present.rule_id))
        else:
            name = str(grant.cache_security_group).lower()
            if name not in classic:
                classic[name] = read_cache_security_group(elasticache, name)
            there = (grant.group_name, grant.owner_id) in (classic[name] or ())
        if not there:
            findings.append(
                {
                    "check": "gone",
                    "groupId": grant.group_id,
                    "groupName": grant.group_name,
                    "target": grant.target,
                    "destination": destination(entry),
                    "what": "an owned entry whose rule is no longer in AWS: removed outside "
                    "the function (the sweep makes it again if the policy allows it)",
                }
            )
    return findings


def _sweep_dry_run(arguments: argparse.Namespace, connection: Connection) -> list[dict[str, Any]]:
    """The sweep's dry run, as `reconcile --dry-run` makes it: drift and would-revoke."""
    from cache_ingress.errors import CacheIngressError  # noqa: PLC0415
    from cache_ingress.reconcile import PairStatus  # noqa: PLC0415
    from cache_ingress_tools.commands._base import function_output_to  # noqa: PLC0415
    from cache_ingress_tools.commands.reconcile import build_for  # noqa: PLC0415

    settings_arguments = argparse.Namespace(
        **{
            **vars(arguments),
            "dry_run": True,
            "enforce": False,
            "page_size": None,
            "no_ledger": False,
        }
    )
    reconciler = build_for(settings_arguments, connection)
    # The sweep's own log lines (its failed pairs among them) are `reconcile`'s business.
    with function_output_to(sys.stderr, "CRITICAL"):
        try:
            report = reconciler.run(None, dry_run=True, resume=False)
        except CacheIngressError as exc:
            raise CommandError(f"--check: the sweep could not run: {exc}", EXIT_FAILED) from exc
    wanted = {PairStatus.DRIFT: "would-repair", PairStatus.WOULD_REVOKE: "would-revoke"}
    findings = []
    for pair in report.pairs:
        check = wanted.get(pair.status)
        if check is None:
            continue
        decision = pair.decision
        if arguments.group not in (None, decision.group_id) or arguments.target not in (
            None,
            decision.target,
        ):
            continue
        what = (
            "missing: the policy allows it and nothing grants it; the sweep would authorize it"
            if check == "would-repair"
            else str(pair.as_fields().get("reason", ""))
        )
        findings.append(
            {
                "check": check,
                "groupId": decision.group_id,
                "groupName": decision.group_name,
                "target": decision.target,
                "destination": decision.cache_security_group
                or (
                    f"{decision.vpc_security_group}:{decision.port}"
                    if decision.vpc_security_group
                    else None
                ),
                "what": what,
            }
        )
    return findings
