"""`cache-ingress demo`: the product in a few steps, on the embedded AWS, with no account.

Each step runs the real handler (`cache-ingress invoke`'s machinery) on one sample event and
checks that it had its expected outcome; the exit status is 0 only if every step did. The
last steps run the function's own code as the operator's tools do: a replay from the
dead-letter queue, and a revocation with what the grant ledger then says.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import yaml

from cache_ingress.authorizer import Authorizer
from cache_ingress.aws import Clients
from cache_ingress.ledger import Ledger
from cache_ingress.settings import BUNDLED_POLICY, Settings
from cache_ingress.wiring import build_authorizer
from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import UsageError, function_output_to
from cache_ingress_tools.emulator.scenario import (
    DEFAULT_SCENARIO,
    MEMBER_SCENARIO,
    Scenario,
    ScenarioError,
    load_scenario,
)
from cache_ingress_tools.emulator.server import EmbeddedAws, EmulatorError
from cache_ingress_tools.local_invoke import (
    InvocationResult,
    LocalInvokeError,
    Target,
    TemplateError,
    describe_event,
    embedded_target,
    invoke,
    project_root,
)
from cache_ingress_tools.local_invoke.run import parse_log_lines
from cache_ingress_tools.replay import DeadLetterQueue, LocalReplayer, ReplayOptions, replay

if TYPE_CHECKING:
    from cache_ingress_tools.emulator.organization import MemberWorld
    from cache_ingress_tools.emulator.scenario import SeededWorld

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=COMMANDS["demo"].help,
        description=(
            "Start the embedded AWS with the default scenario and run the real function on "
            "sample events: a tagged group the policy allows is authorized, a tag the policy "
            "denies is refused (and which rule says so), a failure lands in the dead-letter "
            "queue, and the operator replays it once the cause is fixed; then, with revoke: "
            "true, removing a tag revokes the function's own grant and the grant ledger says "
            "who asked for it and why it went. Then, with the member scenario, a member "
            "account's tag is forwarded to the cache account and granted there, and a member's "
            "event naming another member's group is denied. Exit status 0 only if every step "
            "had its expected outcome."
        ),
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also print the function's structured log lines"
    )
    parser.set_defaults(handler=run)


@dataclass
class DemoSession:
    """What the steps share: the embedded AWS, the project's files, the results so far."""

    target: Target
    root: Path
    out: IO[str]
    verbose: bool = False
    results: list[StepOutcome] = field(default_factory=list)
    world: SeededWorld | None = None

    def target_world_members(self) -> MemberWorld:
        if self.world is None or self.world.members is None:
            raise EmulatorError("the member steps need the member scenario's embedded AWS")
        return self.world.members

    @property
    def scenario(self) -> Scenario:
        return self.target.scenario

    def run_event(self, event_file: str) -> tuple[Any, InvocationResult]:
        event = json.loads((self.root / "events" / event_file).read_text(encoding="utf-8"))
        result = invoke(event, self.target, template_path=self.root / "template.yaml")
        return event, result


@dataclass(frozen=True, slots=True)
class StepOutcome:
    title: str
    lines: tuple[str, ...]
    problems: tuple[str, ...]
    log_lines: tuple[Any, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class Step:
    """One sample event and what must come of it."""

    title: str
    event_file: str
    check: Callable[[InvocationResult], list[str]]
    result_line: Callable[[InvocationResult], str]

    def run(self, session: DemoSession) -> StepOutcome:
        event, result = session.run_event(self.event_file)
        lines = [
            f"event     {describe_event(event, session.scenario)}",
            f"          (events/{self.event_file})",
            *(f"decision  {text}" for text in _decisions(result)),
            f"result    {self.result_line(result)}",
        ]
        return StepOutcome(self.title, tuple(lines), tuple(self.check(result)), result.log_lines)


# --- the steps --------------------------------------------------------------------------


def _authorized_check(result: InvocationResult) -> list[str]:
    problems = _status(result, "completed")
    if not any(d.get("outcome") == "authorized" for d in _decision_list(result)):
        problems.append("no decision was 'authorized'")
    if not any(result.new_ingress().values()):
        problems.append("no cache security group gained ingress")
    return problems


def _authorized_result(result: InvocationResult) -> str:
    added = [
        f"{name} now admits {', '.join(i.ec2_security_group_name for i in pairs)}"
        for name, pairs in result.new_ingress().items()
        if pairs
    ]
    return "; ".join(added) or "no cache security group changed"


def _denied_check(result: InvocationResult) -> list[str]:
    problems = _status(result, "completed")
    if not any(d.get("outcome") == "denied" and d.get("rule") for d in _decision_list(result)):
        problems.append("no decision was 'denied' by a named rule")
    if any(result.new_ingress().values()):
        problems.append("a cache security group gained ingress")
    return problems


def _unchanged_result(result: InvocationResult) -> str:
    if any(result.new_ingress().values()):
        return _authorized_result(result)
    return "no cache security group changed"


def _dead_letter_check(result: InvocationResult) -> list[str]:
    problems = _status(result, "dead-lettered")
    event_id = result.event.get("id") if isinstance(result.event, dict) else None
    if result.after.dead_letter_count != result.before.dead_letter_count + 1:
        problems.append("the dead-letter queue did not gain one message")
    if not any(
        getattr(letter, "event_id", None) == event_id for letter in result.after.dead_letters
    ):
        problems.append("the event is not in the dead-letter queue")
    return problems


def _dead_letter_result(result: InvocationResult) -> str:
    queue = result.target.scenario.dead_letter_queue
    error_type = (result.summary or {}).get("errorType", "?")
    return (
        f"the event waits in dead-letter queue {queue} ({error_type}); "
        f"the queue holds {result.after.dead_letter_count} message(s)"
    )


STEPS: Final[tuple[Step, ...]] = (
    Step(
        "A group is tagged, the policy allows it, ingress is authorized",
        "tag-change-authorized.json",
        _authorized_check,
        _authorized_result,
    ),
    Step(
        "A tag the policy does not allow is denied, and the rule is named",
        "tag-change-required-tag-missing.json",
        _denied_check,
        _unchanged_result,
    ),
    Step(
        "A grant that cannot be made lands in the dead-letter queue",
        "tag-change-cache-group-missing.json",
        _dead_letter_check,
        _dead_letter_result,
    ),
)


REPLAY_EVENT: Final = "tag-change-cache-group-missing.json"
MISSING_CACHE_GROUP: Final = "inventory-cache-sg"


def replay_step(session: DemoSession) -> StepOutcome | None:
    """The last step: the operator creates the missing cache group and replays the event
    from the dead-letter queue with the replay tool (`cache-ingress replay --local`).
    """
    target = session.target
    elasticache = target.client("elasticache")
    sqs = target.client("sqs")
    elasticache.create_cache_security_group(
        CacheSecurityGroupName=MISSING_CACHE_GROUP, Description="created by the operator"
    )
    captured = io.StringIO()
    with function_output_to(captured, "INFO"):
        report = replay(
            DeadLetterQueue(sqs, target.dead_letter_queue_url),
            LocalReplayer(_local_authorizer(target)),
            ReplayOptions(wait_seconds=0),
        )
    counts = report.counts
    admitted = [
        pair["EC2SecurityGroupName"]
        for pair in elasticache.describe_cache_security_groups(
            CacheSecurityGroupName=MISSING_CACHE_GROUP
        )["CacheSecurityGroups"][0]["EC2SecurityGroups"]
    ]
    waiting = int(
        sqs.get_queue_attributes(
            QueueUrl=target.dead_letter_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]["ApproximateNumberOfMessages"]
    )
    problems = []
    if (counts["replayed"], counts["succeeded"]) != (1, 1):
        problems.append(f"replay counts {counts}, expected one replayed and succeeded")
    if not admitted:
        problems.append(f"{MISSING_CACHE_GROUP} admits no group after the replay")
    if waiting:
        problems.append(f"the dead-letter queue still holds {waiting} message(s)")
    lines = (
        f"operator  creates cache security group {MISSING_CACHE_GROUP}, then runs",
        "          cache-ingress replay --local (events/" + REPLAY_EVENT + " from the queue)",
        f"replay    {counts['replayed']} replayed, {counts['succeeded']} succeeded, "
        f"{counts['stillFailing']} still failing; succeeded messages deleted",
        f"result    {MISSING_CACHE_GROUP} now admits {', '.join(admitted) or 'nothing'}; "
        f"the dead-letter queue holds {waiting} message(s)",
    )
    return StepOutcome(
        "The operator fixes the cause and replays the event from the dead-letter queue",
        lines,
        tuple(problems),
        tuple(parse_log_lines(captured.getvalue())),
    )


REVOKED_GROUP: Final = "sg-0a1b2c3d4e5f60718"  # orders-app, authorized by the first step
REVOKED_TARGET: Final = "orders"


def revoke_step(session: DemoSession) -> StepOutcome | None:
    """With `revoke: true` on orders, the tag comes off orders-app: the function revokes the
    grant the first step made, and the ledger keeps both, who asked and why it went."""
    target, scenario = session.target, session.scenario
    elasticache = target.client("elasticache")
    target.client("ec2").delete_tags(Resources=[REVOKED_GROUP], Tags=[{"Key": "cache-ingress"}])
    event = json.loads((session.root / "events" / STEPS[0].event_file).read_text("utf-8"))
    untagged = copy.deepcopy(event)
    untagged["id"] = event["id"].rsplit("-", 1)[0] + "-untag"
    untagged["detail"]["tags"] = {
        k: v for k, v in event["detail"]["tags"].items() if k != "cache-ingress"
    }
    captured = io.StringIO()
    document = _revoking(REVOKED_TARGET)
    cache_group = str(document["targets"][REVOKED_TARGET]["cache_security_group"])
    with tempfile.TemporaryDirectory() as scratch:
        policy = Path(scratch) / "policy.yaml"
        policy.write_text(yaml.safe_dump(document), encoding="utf-8")
        with function_output_to(captured, "INFO"):
            summary = _local_authorizer(target, POLICY_FILE=str(policy)).handle(untagged)
    admitted = {
        pair["EC2SecurityGroupName"]
        for pair in elasticache.describe_cache_security_groups(CacheSecurityGroupName=cache_group)[
            "CacheSecurityGroups"
        ][0]["EC2SecurityGroups"]
    }
    entries = (
        list(
            Ledger(target.client("dynamodb"), scenario.ledger_table).entries(group_id=REVOKED_GROUP)
        )
        if scenario.ledger_table
        else []
    )
    revoked = [d for d in summary["decisions"] if d.get("outcome") == "revoked"]
    problems = []
    if not revoked:
        problems.append(f"no decision was 'revoked': {summary['decisions']}")
    if "orders-app" in admitted:
        problems.append(f"{cache_group} still admits orders-app")
    if [str(e.status) for e in entries] != ["revoked"]:
        problems.append(
            f"the ledger holds {[str(e.status) for e in entries]}, expected one revoked"
        )
    lines = [
        "operator  sets revoke: true on the target orders; someone removes the tag",
        "          cache-ingress from orders-app",
        f"event     Tag Change on orders-app: cache-ingress removed ({untagged['id']})",
        *(f"decision  {d.get('target')}: {d['outcome']}; {d['reason']}" for d in revoked),
        f"result    {cache_group} admits {', '.join(sorted(admitted)) or 'nothing'}",
    ]
    for entry in entries:
        lines.append(
            f"ledger    {entry.grant.group_name} into {entry.grant.cache_security_group}: made "
            f"at {entry.recorded_at} by event {entry.grant.event_id}; {entry.status} at "
            f"{entry.closed_at} by event {entry.closed_by}: {entry.closed_reason}"
        )
    lines.append("          `cache-ingress grants` lists the whole ledger; `hold` stops a pair")
    return StepOutcome(
        "With revoke: true, a removed tag revokes the function's own grant; the ledger says why",
        tuple(lines),
        tuple(problems),
        tuple(parse_log_lines(captured.getvalue())),
    )


def _revoking(target: str) -> dict[str, Any]:
    """The bundled policy, with `revoke: true` on one target."""
    document = yaml.safe_load(BUNDLED_POLICY.read_text(encoding="utf-8"))
    document["targets"][target]["revoke"] = True
    return dict(document)


def _local_authorizer(target: Target, **environment: str) -> Authorizer:
    """The function's own code, wired to the embedded AWS, as `replay --local` wires it."""
    scenario = target.scenario
    settings = Settings.from_environ(
        {
            "ACCOUNT_ID": scenario.account_id,
            "AWS_REGION": scenario.region,
            "IDEMPOTENCY_TABLE": scenario.idempotency_table,
            "DEAD_LETTER_QUEUE_URL": target.dead_letter_queue_url,
            **({"LEDGER_TABLE": scenario.ledger_table} if scenario.ledger_table else {}),
            **environment,
        }
    )
    clients = Clients(scenario.region, factory=lambda service, _config: target.client(service))
    return build_authorizer(settings, clients)


# --- member accounts (docs/multi-account.md) --------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberStep:
    """A member account's event: emitted on the member's default bus, forwarded by its
    member stack's rule to the cache account's bus, delivered by the cache stack's rule to
    the function, and decided there."""

    title: str
    event_file: str
    check: Callable[[InvocationResult], list[str]]
    result_line: Callable[[InvocationResult], str]
    shows_ledger: bool = False

    def run(self, session: DemoSession) -> StepOutcome:
        from cache_ingress_tools.emulator import event_buses  # noqa: PLC0415

        event = json.loads((session.root / "events" / self.event_file).read_text("utf-8"))
        scenario = session.scenario
        members = session.target_world_members()
        event_buses.emit(str(event["account"]), scenario.region, event)
        delivered = event_buses.delivered(members.function_arn)
        lines = [
            f"event     {describe_event(event, scenario)}",
            f"          (events/{self.event_file}), in member account {event['account']}",
            f"forwarded member {event['account']}'s rule -> bus {members.bus_arn.split('/')[-1]} "
            f"of account {scenario.account_id} -> IngressFunction "
            f"({len(delivered)} event delivered)",
        ]
        if delivered != [event]:
            problem = f"the cache account's function received {len(delivered)} event(s), not 1"
            return StepOutcome(self.title, tuple(lines), (problem,))
        result = invoke(event, session.target, template_path=session.root / "template.yaml")
        lines += [
            *(f"decision  {text}" for text in _decisions(result)),
            f"result    {self.result_line(result)}",
        ]
        problems = self.check(result)
        if self.shows_ledger:
            problems += _member_ledger(session, event, lines)
        return StepOutcome(self.title, tuple(lines), tuple(problems), result.log_lines)


def _member_ledger(session: DemoSession, event: Any, lines: list[str]) -> list[str]:
    """The ledger entry of the member's grant, with its account; the problems if none."""
    table = session.scenario.ledger_table
    group_id = str(event["resources"][0]).rsplit("/", 1)[-1]
    if table is None:
        return ["the member scenario has no ledger table"]
    entries = list(Ledger(session.target.client("dynamodb"), table).entries(group_id=group_id))
    for entry in entries:
        lines.append(
            f"ledger    {entry.grant.group_name} of account {entry.grant.account} into "
            f"{entry.grant.cache_security_group}: {entry.status}, made at {entry.recorded_at} "
            f"by event {entry.grant.event_id}"
        )
    if [e.grant.account for e in entries] != [event["account"]]:
        return [f"the ledger holds {len(entries)} entries for {group_id}, expected one"]
    return []


def _member_authorized_result(result: InvocationResult) -> str:
    added = [
        f"{name} (account {result.target.scenario.account_id}) now admits "
        + ", ".join(f"{i.ec2_security_group_name} of account {i.owner_id}" for i in pairs)
        for name, pairs in result.new_ingress().items()
        if pairs
    ]
    return "; ".join(added) or "no cache security group changed"


def _member_authorized_check(result: InvocationResult) -> list[str]:
    problems = _authorized_check(result)
    event_account = result.event.get("account") if isinstance(result.event, dict) else None
    owners = {i.owner_id for pairs in result.new_ingress().values() for i in pairs}
    if owners != {event_account}:
        problems.append(f"the ingress names owner(s) {sorted(owners)}, not {event_account}")
    return problems


MEMBER_STEPS: Final[tuple[MemberStep, ...]] = (
    MemberStep(
        "A member account's tag is granted in the cache account, read through its role",
        "member-tag-change-authorized.json",
        _member_authorized_check,
        _member_authorized_result,
        shows_ledger=True,
    ),
    MemberStep(
        "A member's event naming another member's group is denied before anything is read",
        "member-tag-change-account-mismatch.json",
        _denied_check,
        _unchanged_result,
    ),
)


# --- running and printing ---------------------------------------------------------------


def run(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    try:
        root = project_root()
        scenario = load_scenario(DEFAULT_SCENARIO)
        with EmbeddedAws(scenario, port=0) as aws:
            session = DemoSession(
                target=embedded_target(aws, "embedded, default scenario"),
                root=root,
                out=out,
                verbose=arguments.verbose,
            )
            _header(session)
            for step in STEPS:
                _report(session, step.run(session))
            for last_step in (replay_step, revoke_step):
                outcome = last_step(session)
                if outcome is not None:
                    _report(session, outcome)
        # Member accounts: a second embedded AWS (one runs per process), serving a cache
        # account and two members, with both templates deployed.
        if MEMBER_STEPS:
            with EmbeddedAws(load_scenario(MEMBER_SCENARIO), port=0) as aws:
                session.target = embedded_target(aws, "embedded, member scenario")
                session.world = aws.world
                _member_header(session)
                for member_step in MEMBER_STEPS:
                    _report(session, member_step.run(session))
    except (LocalInvokeError, TemplateError, ScenarioError, EmulatorError, OSError) as exc:
        return UsageError(str(exc)).report("demo")
    return _footer(session)


def _header(session: DemoSession) -> None:
    scenario = session.scenario
    session.out.write(
        "cache-ingress demo: the real function and the bundled policy, on an embedded AWS\n"
        f"  {session.target.endpoint_url}, account {scenario.account_id}, {scenario.region}\n"
        f"  cache security groups: {', '.join(scenario.cache_security_groups)}\n"
    )


def _member_header(session: DemoSession) -> None:
    scenario = session.scenario
    members = ", ".join(m.account_id for m in scenario.member_accounts)
    session.out.write(
        "\nMember accounts (docs/multi-account.md), on a second embedded AWS\n"
        f"  cache account {scenario.account_id} (template.yaml: its bus and rules); members "
        f"{members}\n  (member.yaml: forwarding rules, read role) of {scenario.organization}\n"
    )


def _report(session: DemoSession, outcome: StepOutcome) -> None:
    session.results.append(outcome)
    write = session.out.write
    write(f"\n{len(session.results)}. {outcome.title}\n")
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 100))
    for line in outcome.lines:
        # Continuation lines start under the text, after the 10-character label.
        text = textwrap.fill(
            line,
            width,
            initial_indent="   ",
            subsequent_indent=" " * 13,
            break_on_hyphens=False,
        )
        write(text + "\n")
    if session.verbose:
        for log_line in outcome.log_lines:
            text = (
                json.dumps(log_line, separators=(",", ":"))
                if isinstance(log_line, dict)
                else str(log_line)
            )
            write(f"   log       {text}\n")
    if outcome.ok:
        write("   ok\n")
    for problem in outcome.problems:
        write(f"   UNEXPECTED: {problem}\n")


def _footer(session: DemoSession) -> int:
    passed = sum(outcome.ok for outcome in session.results)
    total = len(session.results)
    session.out.write(
        f"\n{passed} of {total} steps had their expected outcome.\n"
        "Any sample event, with the full log: cache-ingress invoke events/<file>.json\n"
        "All local commands, sam local invoke too: docs/local.md\n"
    )
    return EXIT_OK if passed == total else EXIT_UNEXPECTED


def _decision_list(result: InvocationResult) -> list[dict[str, Any]]:
    decisions = (result.summary or {}).get("decisions", [])
    return [d for d in decisions if isinstance(d, dict)]


def _decisions(result: InvocationResult) -> Sequence[str]:
    if result.error is not None:
        return [f"the function raised {type(result.error).__name__}: {result.error}"]
    lines = []
    for decision in _decision_list(result):
        target = decision.get("target") or "(no target)"
        outcome = str(decision.get("outcome"))
        if decision.get("rule"):
            outcome += f" by rule {decision['rule']}"
        lines.append(f"{target}: {outcome}; {decision.get('reason', '')}")
    return lines or [f"none ({(result.summary or {}).get('reason', 'no decision')})"]


def _status(result: InvocationResult, expected: str) -> list[str]:
    if result.error is not None:
        return [f"the function raised {type(result.error).__name__}: {result.error}"]
    status = (result.summary or {}).get("status")
    return [] if status == expected else [f"status {status!r}, expected {expected!r}"]
