"""`cache-ingress explain`: why a security group is, or is not, granted a target.

Reads the group as it is now (AWS, or the embedded AWS with --endpoint-url), runs the
function's own decision (`cache_ingress.decisions.explain`, the rules `decide` runs) and
prints, per target, each rule in order with the fact it read and its verdict; the first
that decides is the outcome. Then what is granted now. Only reads: every client refuses any
call that is not a read, so it can never authorize.

The question is a Tag Change event now (no principal), a CloudTrail CreateTags by
--principal that set the tag to its value now, or an event from a file (--event: an
EventBridge event, or a dead-letter record, which is decided as `cache-ingress replay`
would, its principal checked with CloudTrail).

With the grant ledger (--ledger-table, LEDGER_TABLE, or --stack-name's `LedgerTableName`),
each pair also shows the `hold` check (an operator's hold denies a pair the policy allows)
and, for a target with `revoke: true`, what revocation would do with the pair's open ledger
entries now; the ledger is only read.

Exit status: 0 explained (whatever the outcome); 1 a read failed; 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import (
    EXIT_OK,
    CommandError,
    Connection,
    UsageError,
    add_aws_arguments,
    function_environment,
    render_table,
    shown_path,
)

if TYPE_CHECKING:
    from cache_ingress.models import SecurityGroupFacts, TagRequest
    from cache_ingress.policy import Policy
    from cache_ingress.settings import Settings
    from cache_ingress_tools.explanation import Explanation, PairView, Readers

EXIT_READ_FAILED: Final = 1
HEADERS: Final = ("RULE", "VERDICT", "FACT")
# Settings requires them; explaining never writes a record or a dead letter.
_UNUSED = {"IDEMPOTENCY_TABLE": "unused-by-explain", "DEAD_LETTER_QUEUE_URL": "unused-by-explain"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain",
        help=COMMANDS["explain"].help,
        description=(
            "Read a security group as it is now, run the function's own decision, and print "
            "per target each rule in order with the fact it read and its verdict (the first "
            "that decides is the outcome), and what is granted now. Never authorizes. Exit "
            "status: 0 explained, 1 a read failed, 2 a usage error."
        ),
    )
    parser.add_argument("--group", help="the security group id (sg-...); with --event, a filter")
    parser.add_argument(
        "--target",
        help="only this target; one the group's tag does not name is traced as if it did",
    )
    question = parser.add_mutually_exclusive_group()
    question.add_argument(
        "--principal",
        help="decide a CreateTags by this principal (an ARN) that set the tag to its value "
        "now (default: a Tag Change event, which names no principal)",
    )
    question.add_argument(
        "--event",
        type=Path,
        help="decide this event (an EventBridge event, or a dead-letter record)",
    )
    parser.add_argument(
        "--member-account",
        metavar="ACCOUNT",
        help="the group is of this member account: read through its read role "
        "(docs/multi-account.md); default: the function's own account",
    )
    parser.add_argument(
        "--replayed",
        action="store_true",
        help="with --event: decide it as a replay (its principal checked with CloudTrail)",
    )
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    connection = parser.add_argument_group("account and connection")
    add_aws_arguments(
        connection,
        stack_help="the deployed stack: its parameters give the policy parameter and tag key",
    )
    connection.add_argument(
        "--account-id", help="the account the function serves (default: ACCOUNT_ID, or STS)"
    )
    function = parser.add_argument_group(
        "the function's settings (default: its variables, then the stack)"
    )
    function.add_argument("--tag-key", help="the stack's tag key (TAG_KEY)")
    function.add_argument("--policy-file", help="a policy file (POLICY_FILE)")
    function.add_argument("--policy-parameter", help="an SSM parameter name (POLICY_PARAMETER)")
    function.add_argument(
        "--ledger-table",
        help="the grant ledger (LEDGER_TABLE): shows holds and what revocation would do",
    )
    parser.set_defaults(handler=run)


@dataclass(frozen=True, slots=True)
class _Question:
    request: TagRequest | None
    note: str
    # The function would not decide this event at all: why (ignored, or malformed).
    unanswered: str | None = None


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    from cache_ingress.errors import AwsCallError  # noqa: PLC0415

    try:
        explanation, question, policy_source = _explain(arguments)
    except CommandError as exc:
        return exc.report("explain")
    except AwsCallError as exc:
        return CommandError(f"a read failed: {exc}", EXIT_READ_FAILED).report("explain")
    if arguments.json:
        out.write(json.dumps(_document(explanation, question, policy_source), indent=2) + "\n")
    else:
        out.write(_text(explanation, question, policy_source))
    return EXIT_OK


def _explain(
    arguments: argparse.Namespace,
) -> tuple[Explanation | None, _Question, str]:
    from cache_ingress.errors import PolicyError, SettingsError  # noqa: PLC0415
    from cache_ingress.settings import Settings  # noqa: PLC0415
    from cache_ingress_tools.explanation import explain_request  # noqa: PLC0415

    if arguments.event is None and not arguments.group:
        raise UsageError("name the group: --group sg-..., or give an event with --event FILE")
    if arguments.replayed and arguments.event is None:
        raise UsageError("--replayed is about an event: pass --event FILE")
    event = _read_event(arguments.event) if arguments.event is not None else None
    connection = Connection.from_arguments(arguments, read_only=True)
    connection.account_id()  # the credentials and the endpoint work, or say what to do
    environment = {**function_environment(arguments, connection, os.environ), **_UNUSED}
    try:
        settings = Settings.from_environ(environment)
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc
    readers, policies = _readers(settings, connection)
    try:
        policy = policies.current()
    except PolicyError as exc:
        raise UsageError(str(exc)) from exc
    question = _question(arguments, event, settings, policy, readers)
    if question.request is None:
        return None, question, _policy_shown(policies.description)
    explanation = explain_request(
        question.request,
        policy,
        readers,
        account_id=settings.account_id,
        region=settings.region,
        group_id=arguments.group,
        target=arguments.target,
    )
    return explanation, question, _policy_shown(policies.description)


def _policy_shown(description: str) -> str:
    return description if description.startswith("ssm:") else shown_path(description)


def _readers(settings: Settings, connection: Connection) -> tuple[Readers, Any]:
    """The function's own adapters and policy source, with this command's read-only clients."""
    from cache_ingress.granted_state import (  # noqa: PLC0415
        GrantedView,
        read_cache_security_group,
        read_ingress_rules,
    )
    from cache_ingress.wiring import (  # noqa: PLC0415
        build_destination_resolver,
        build_group_describer,
        build_member_accounts,
        build_member_group_describer,
        build_peering_reader,
        build_policy_source,
        build_principal_verifier,
        build_revoker,
    )
    from cache_ingress_tools.explanation import Readers  # noqa: PLC0415

    clients = connection.function_clients(settings.region)
    describe = build_group_describer(settings, clients)
    member_accounts = build_member_accounts(settings, clients)
    ledger = revoker = None
    if settings.ledger_table is not None:
        from cache_ingress.ledger import Ledger  # noqa: PLC0415

        ledger = Ledger(clients.get("dynamodb"), settings.ledger_table)
        # Only ever run as a dry run here; its clients refuse any write besides.
        revoker = build_revoker(settings, clients)
    readers = Readers(
        describe=describe,
        resolve=build_destination_resolver(settings, clients, describe),
        verify_principal=build_principal_verifier(clients, member_accounts),
        granted=GrantedView(
            lambda name: read_cache_security_group(clients.get("elasticache"), name),
            lambda ids: read_ingress_rules(clients.get("ec2"), ids),
        ),
        members=settings.members.admits if settings.members is not None else None,
        describe_member=(
            build_member_group_describer(settings, member_accounts)
            if member_accounts is not None
            else None
        ),
        peerings=build_peering_reader(clients),
        ledger=ledger,
        revoker=revoker,
    )
    return readers, build_policy_source(settings, clients)


def _question(
    arguments: argparse.Namespace,
    event: tuple[object, bool] | None,
    settings: Settings,
    policy: Policy,
    readers: Readers,
) -> _Question:
    """The request to decide: the event's, or one made up for the question."""
    from cache_ingress.errors import MalformedEventError  # noqa: PLC0415
    from cache_ingress.intake import Ignored, parse_event  # noqa: PLC0415
    from cache_ingress_tools.explanation import made_up_request  # noqa: PLC0415

    if event is not None:
        body, dead_letter = event
        try:
            parsed = parse_event(body)
        except MalformedEventError as exc:
            return _Question(None, str(arguments.event), f"malformed: {exc} (dead-lettered)")
        if isinstance(parsed, Ignored):
            return _Question(None, str(arguments.event), f"ignored: {parsed.reason}")
        if arguments.group and arguments.group not in parsed.group_ids:
            raise UsageError(
                f"the event does not name {arguments.group}: it names "
                f"{', '.join(parsed.group_ids) or 'no group'}"
            )
        replayed = parsed.replayed or dead_letter or arguments.replayed
        kind = (
            "a dead-letter record's event, decided as `cache-ingress replay` decides it"
            if dead_letter
            else "an EventBridge archive replay"
            if parsed.replay_name
            else "a replay (--replayed)"
            if replayed
            else "a live event"
        )
        return _Question(replace(parsed, replayed=replayed), f"{arguments.event}: {kind}")
    group_id = arguments.group
    account = arguments.member_account or settings.account_id
    if account != settings.account_id and (
        settings.members is None or not settings.members.admits(account)
    ):
        raise UsageError(
            f"--member-account {account}: not a member account of this stack (its "
            "MemberAccountIds or MemberOrganizationId, or MEMBER_ACCOUNTS / MEMBER_ORGANIZATION)"
        )
    tag_value = (
        _current_tag(readers, group_id, policy.tag_key, account, settings)
        if arguments.principal
        else None
    )
    request = made_up_request(
        group_id,
        account=account,
        region=settings.region,
        principal=arguments.principal,
        tag_key=policy.tag_key,
        tag_value=tag_value,
    )
    if arguments.principal is None:
        note = "a Tag Change event now (it names no principal)"
    elif tag_value is None:
        note = f"a CreateTags by {arguments.principal} (the group has no {policy.tag_key} tag)"
    else:
        note = f"a CreateTags by {arguments.principal} that set {policy.tag_key}={tag_value!r}"
    return _Question(request, note)


def _current_tag(
    readers: Readers, group_id: str, tag_key: str, account: str, settings: Settings
) -> str | None:
    if account == settings.account_id or readers.describe_member is None:
        found = readers.describe([group_id])
    else:
        found = readers.describe_member(account, [group_id])
    group: SecurityGroupFacts | None = found.get(group_id)
    return None if group is None else group.tags.get(tag_key)


def _read_event(path: Path) -> tuple[object, bool]:
    """(the event, whether it came in a dead-letter record: Lambda's on-failure record, or
    the function's own, whose `requestPayload` is the event)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"event {path}: cannot be read: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"event {path}: not valid JSON: {exc}") from None
    if isinstance(document, Mapping) and {"requestContext", "requestPayload"} <= set(document):
        return document["requestPayload"], True
    return document, False


# --- output ---------------------------------------------------------------------------------


def _text(explanation: Explanation | None, question: _Question, policy: str) -> str:
    lines = [f"question: {question.note}", f"policy: {policy}"]
    if explanation is None:
        lines.append(f"the function decides nothing for this event: {question.unanswered}")
        return "\n".join(lines) + "\n"
    provenance = explanation.provenance
    if provenance is not None:
        lines.append(f"CloudTrail: {provenance.status}: {provenance.reason}")
    for group_id, group in explanation.groups.items():
        lines.append(
            f"group {group_id} ({group.group_name}): owner {group.owner_id}, "
            f"{group.vpc_id or 'no VPC'}, tags {_tags(group.tags)}"
        )
    if not explanation.ledger_read:
        lines.append(
            "ledger: not read (pass --stack-name or --ledger-table): holds and revocation "
            "are not shown"
        )
    if not explanation.pairs:
        lines.append("nothing to explain: no pair of the event matches --group and --target")
    for pair in explanation.pairs:
        lines.append("")
        lines.append(_headline(pair))
        if pair.assumed_tag is not None:
            lines.append(f"  as if tagged {pair.assumed_tag!r} (the tag does not name it now)")
        if pair.granted_note is not None:
            now = {True: "yes", False: "no", None: "unknown"}[pair.granted_now]
            lines.append(f"  granted now: {now}: {pair.granted_note}")
        if pair.revocation is not None:
            lines.append(f"  revocation: {pair.revocation.summary}")
        rows = [(c.rule, str(c.verdict), c.fact) for c in pair.trace.checks]
        lines.extend("  " + row for row in render_table(HEADERS, rows).splitlines())
    return "\n".join(lines) + "\n"


def _headline(pair: PairView) -> str:
    from cache_ingress.models import Grant  # noqa: PLC0415

    trace = pair.trace
    who = f"{trace.group_id} {trace.target}" if trace.target else f"{trace.group_id} (the group)"
    result = trace.result
    if isinstance(result, Grant):
        where = result.cache_security_group or f"{result.vpc_security_group} tcp/{result.port}"
        return f"{who}: allowed: the function would authorize it into {where}"
    rule = f" ({result.rule})" if result.rule else ""
    code = f" [{result.error_code}]" if result.error_code else ""
    return f"{who}: {result.outcome}{rule}{code}: {result.reason}"


def _tags(tags: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(tags.items())) or "none"


def _document(explanation: Explanation | None, question: _Question, policy: str) -> dict[str, Any]:
    document: dict[str, Any] = {"question": question.note, "policy": policy}
    if explanation is not None:
        document["ledgerRead"] = explanation.ledger_read
    if explanation is None:
        document["decided"] = False
        document["reason"] = question.unanswered
        return document
    request = explanation.request
    provenance = explanation.provenance
    document.update(
        {
            "decided": True,
            "request": {
                "eventId": request.event_id,
                "source": request.source,
                "detailType": request.detail_type,
                "principal": request.principal,
                "replayed": request.replayed,
            },
            "provenance": None
            if provenance is None
            else {"status": str(provenance.status), "reason": provenance.reason},
            "groups": {
                group_id: {
                    "name": group.group_name,
                    "ownerId": group.owner_id,
                    "vpcId": group.vpc_id,
                    "tags": dict(group.tags),
                }
                for group_id, group in explanation.groups.items()
            },
            "pairs": [_pair_document(pair) for pair in explanation.pairs],
        }
    )
    return document


def _pair_document(pair: PairView) -> dict[str, Any]:
    from cache_ingress.models import Grant, Outcome  # noqa: PLC0415

    trace = pair.trace
    result = trace.result
    if isinstance(result, Grant):
        # The grant's destination, as its decision would name it.
        fields = result.decision(Outcome.DRY_RUN, "", None).as_log_fields()
        fields.update(outcome="allowed", reason="every rule holds")
    else:
        fields = result.as_log_fields()
    fields.pop("principal", None)
    # Always present, None for the group as a whole.
    fields["target"] = trace.target
    return {
        **fields,
        "assumedTag": pair.assumed_tag,
        "grantedNow": pair.granted_now,
        "grantedNote": pair.granted_note,
        "checks": [check.as_fields() for check in trace.checks],
        "hold": None
        if pair.hold is None
        else {"reason": pair.hold.reason, "heldBy": pair.hold.held_by, "heldAt": pair.hold.held_at},
        "revocation": None
        if pair.revocation is None
        else {
            "revoke": pair.revocation.revoke,
            "openEntries": pair.revocation.open_entries,
            "findings": [
                {"outcome": outcome, "reason": reason}
                for outcome, reason in pair.revocation.findings
            ],
            "summary": pair.revocation.summary,
        },
    }
