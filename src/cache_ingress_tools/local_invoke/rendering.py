"""Printing an invoke for a terminal: the log lines, the function's response, and the state it
left (``+`` marks what this run added)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import IO, Any

from cache_ingress.errors import MalformedEventError
from cache_ingress.intake import Ignored, parse_event
from cache_ingress_tools.dead_letters import Unrecognised
from cache_ingress_tools.emulator.scenario import Scenario
from cache_ingress_tools.local_invoke.run import InvocationResult


def render(result: InvocationResult, out: IO[str], *, event_label: str) -> None:
    """Log lines, the function's response, and the state it left, for a terminal."""
    function = result.function
    write = _writer(out)
    write(
        f"invoke {function.logical_id} ({function.handler}, {function.runtime}) with {event_label}"
    )
    write(f"  event: {describe_event(result.event, result.target.scenario)}")
    write(f"  aws: {result.target.endpoint_url} ({result.target.description})")
    for note in result.notes:
        write(f"  env: {note}")
    write("")
    write(f"log ({len(result.log_lines)} lines)")
    for line in result.log_lines:
        write(json.dumps(line, separators=(",", ":")) if isinstance(line, dict) else str(line))
    write("")
    if result.error is not None:
        write(f"error: {type(result.error).__name__}: {result.error}")
        write(
            "  the function raised: Lambda retries an async event (twice), then its on-failure "
            "destination sends it to the dead-letter queue"
        )
    else:
        write("summary (the function's response)")
        write(json.dumps(result.summary, indent=2, default=str))
    write("")
    render_state(result, out)


def render_state(result: InvocationResult, out: IO[str], *, indent: str = "") -> None:
    write = _writer(out)
    after, new = result.after, result.new_ingress()
    write(f"{indent}cache security groups")
    width = max((len(name) for name in after.cache_security_groups), default=0)
    for name, pairs in sorted(after.cache_security_groups.items()):
        if not pairs:
            write(f"{indent}  {name:<{width}}  (no ingress)")
        for position, pair in enumerate(pairs):
            shown = name if position == 0 else ""
            marker = "+" if pair in new.get(name, ()) else " "
            group = f"{pair.group_id}, " if pair.group_id else ""
            write(
                f"{indent}  {shown:<{width}}  {marker} {pair.ec2_security_group_name} "
                f"({group}owner {pair.owner_id}) {pair.status}"
            )
    if not after.cache_security_groups:
        write(f"{indent}  (none)")
    _render_vpc_cache_groups(result, write, indent)
    _render_ledger(result, write, indent)
    queue = result.target.scenario.dead_letter_queue
    if after.dead_letter_count == 0:
        write(f"{indent}dead-letter queue {queue}: empty")
        return
    added = after.dead_letter_count - result.before.dead_letter_count
    write(
        f"{indent}dead-letter queue {queue}: {after.dead_letter_count} message(s)"
        + (f", {added} from this run" if added > 0 else "")
    )
    for letter in after.dead_letters:
        if isinstance(letter, Unrecognised):
            write(f"{indent}  unrecognised message {letter.message_id}: {letter.reason}")
        else:
            write(
                f"{indent}  {letter.error_type or '?'}  event {letter.event_id}: "
                f"{letter.error_message or ''} ({letter.origin})"
            )


def _render_vpc_cache_groups(
    result: InvocationResult, write: Callable[[str], None], indent: str
) -> None:
    """Each VPC cache's security group and its group-sourced rules; + marks this run's."""
    after = result.after
    if not after.vpc_cache_groups:
        return
    new_rules = result.new_vpc_ingress()
    write(f"{indent}VPC caches' security groups")
    for group_id, rules in sorted(after.vpc_cache_groups.items()):
        caches = ", ".join(after.vpc_cache_users.get(group_id, ()))
        write(f"{indent}  {group_id} (used by {caches})")
        if not rules:
            write(f"{indent}      (no ingress from security groups)")
        for rule in rules:
            marker = "+" if rule in new_rules.get(group_id, ()) else " "
            source = rule.source_group_id + (
                f" ({rule.source_group_name})" if rule.source_group_name else ""
            )
            described = f'  "{rule.description}"' if rule.description else ""
            write(f"{indent}    {marker} {rule.ports()} from {source}{described}")


def _render_ledger(result: InvocationResult, write: Callable[[str], None], indent: str) -> None:
    """The ledger entries this run wrote or changed (`cache-ingress grants` lists them all)."""
    table = result.target.scenario.ledger_table
    if table is None:
        return
    changed = result.ledger_changes()
    write(
        f"{indent}grant ledger {table}: {len(result.after.ledger)} entr(y/ies)"
        + (f", {len(changed)} written by this run" if changed else ", none written by this run")
    )
    for line in changed:
        why = f": {line.why}" if line.why else ""
        write(
            f"{indent}  {line.status}  {line.group_name} ({line.group_id}) for {line.target} "
            f"into {line.destination}, event {line.event_id}{why}"
        )


def _writer(out: IO[str]) -> Callable[[str], None]:
    def write(text: str) -> None:
        out.write(text + "\n")

    return write


def describe_event(event: Any, scenario: Scenario) -> str:
    """One line saying what an event announces, read by the function's own intake and named
    with the scenario's group names.
    """
    try:
        parsed = parse_event(event)
    except MalformedEventError as exc:
        return f"a malformed event ({exc})"
    if isinstance(parsed, Ignored):
        return f"{parsed.source} {parsed.detail_type}, which asks nothing ({parsed.reason})"
    groups = ", ".join(_group_label(g, scenario) for g in parsed.group_ids)
    by = f" by {parsed.principal}" if parsed.principal else ""
    where = "" if parsed.region == scenario.region else f" in {parsed.region}"
    announced = _announced_tags(event)
    return f"{parsed.event_name or parsed.detail_type}{by}{where}: {groups}{announced}"


def _announced_tags(event: Mapping[str, Any]) -> str:
    detail = event.get("detail") or {}
    tags = detail.get("tags")
    if isinstance(tags, dict):
        return " now tagged " + ", ".join(f"{k}={v}" for k, v in tags.items())
    items = ((detail.get("requestParameters") or {}).get("tagSet") or {}).get("items")
    if isinstance(items, list):
        pairs = [
            f"{i.get('key')}={i['value']}" if i.get("value") else str(i.get("key"))
            for i in items
            if isinstance(i, dict)
        ]
        verb = "untagged" if detail.get("eventName") == "DeleteTags" else "tagged"
        return f" {verb} " + ", ".join(pairs)
    return ""


def _group_label(group_id: str, scenario: Scenario) -> str:
    seeded = scenario.security_group(group_id)
    return f"{seeded.name} ({group_id})" if seeded else f"{group_id} (not in the scenario)"
