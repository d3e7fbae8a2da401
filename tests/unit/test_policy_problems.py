"""Every problem of a policy at once, each with its field and, in the text, its line.

The lines below are counted by hand from the documents as written here.
"""

from __future__ import annotations

import json

import pytest

from cache_ingress.errors import PolicyError, PolicyProblem
from cache_ingress.policy import parse_policy, policy_as_json

pytestmark = pytest.mark.unit

BROKEN = """\
version: 2
tag_key: cache-ingress
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow:
      required_tag: {env: prod}
      owner_accounts: ["123"]
  'bad name':
    replication_group: Sessions
  reports:
    vpc_security_group: {group_id: sg-0123456789abcdef0}
    region: mars
  orders:
    cache_security_group: again
"""


def problems_of(text: str, **kwargs: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, source="policy.yaml", **kwargs)
    return [(p.line, p.field, p.message) for p in raised.value.problems]


def test_every_problem_is_reported_with_its_field_and_line_in_the_texts_order() -> None:
    found = problems_of(BROKEN)

    assert [(line, field) for line, field, _ in found] == [
        (1, "version"),
        (7, "targets.orders.allow"),  # the unknown key's own line
        (8, "targets.orders.allow.owner_accounts"),  # the item's line
        (9, "targets.bad name"),
        (10, "targets.bad name.replication_group"),
        (12, "targets.reports.vpc_security_group.port"),  # missing: its mapping's line
        (13, "targets.reports.region"),
        (14, "targets"),  # the repeated key
    ]
    messages = {field: message for _, field, message in found}
    assert messages["targets"] == "duplicate key 'orders'"
    assert messages["targets.orders.allow"].startswith("unknown field 'required_tag'")
    assert "'123' is not a 12-digit account id" in messages["targets.orders.allow.owner_accounts"]


def test_the_message_names_the_source_and_the_problems_with_their_lines() -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(BROKEN, source="ssm:/cache-ingress/policy")

    message = str(raised.value)
    assert message.startswith(
        "policy ssm:/cache-ingress/policy: version: must be 1, got 2 (line 1); "
    )
    assert message.endswith("targets: duplicate key 'orders' (line 14)")
    assert message.count("; ") == 7


def test_a_long_list_is_counted_in_the_message_and_kept_whole_on_the_error() -> None:
    targets = "".join(f"  t{i}: {{cache_security_group: 'no spaces'}}\n" for i in range(14))

    with pytest.raises(PolicyError) as raised:
        parse_policy(f"version: 1\ntargets:\n{targets}", source="p")

    assert len(raised.value.problems) == 14
    assert str(raised.value).endswith("; and 4 more problems")
    assert [p.line for p in raised.value.problems] == list(range(3, 17))


def test_a_missing_top_level_field_points_at_the_document() -> None:
    assert problems_of("tag_key: cache-ingress\ntargets: {a: {cache_security_group: x}}\n") == [
        (1, "version", "required field is missing")
    ]


def test_the_stacks_tag_key_is_a_problem_on_its_line() -> None:
    text = "version: 1\ntargets: {a: {cache_security_group: x}}\ntag_key: other\n"

    [(line, field, message)] = problems_of(text, expected_tag_key="cache-ingress")

    assert (line, field) == (3, "tag_key")
    assert "differs from the stack's tag key 'cache-ingress'" in message


def test_json_problems_have_lines_too() -> None:
    text = json.dumps(
        {"version": 1, "targets": {"a": {"cache_security_group": "x", "alow": {}}}}, indent=1
    )

    [(line, field, message)] = problems_of(text)

    assert (line, field) == (6, "targets.a")
    assert message.startswith("unknown field 'alow'")


def test_text_that_is_no_document_is_one_problem_on_the_line_the_parser_names() -> None:
    [(line, field, message)] = problems_of("version: 1\ntargets:\n  a: [\n")

    assert field == "(top level)"
    assert message.startswith("not valid YAML or JSON")
    assert line == 4


def test_a_problem_lists_as_source_line_field_message() -> None:
    problem = PolicyProblem(("targets", "a"), "unknown field 'x'", 7)

    assert problem.listing("policy.yaml") == "policy.yaml:7: targets.a: unknown field 'x'"
    assert PolicyProblem((), "bad").listing("p") == "p: (top level): bad"


def test_an_alias_bomb_is_reported_without_being_walked() -> None:
    bomb = (
        "version: 1\ntargets:\n  a:\n    cache_security_group: x\n    allow:\n"
        "      required_tags:\n        env: [&b [&a [x, x, x, x, x, x, x, x], *a, *a, *a, *a,"
        " *a, *a, *a], *b, *b, *b, *b, *b, *b, *b]\n"
    )

    [(line, field, _)] = problems_of(bomb)

    assert (line, field) == (7, "targets.a.allow.required_tags.env")


def test_the_json_form_is_the_same_policy_and_an_invalid_one_has_none() -> None:
    text = (
        "version: 1\ntargets:\n"
        "  a: {cache_security_group: x, allow: {owner_accounts: ['012345678901']}}\n"
    )

    compiled = policy_as_json(text, source="p")

    assert json.loads(compiled)["targets"]["a"]["allow"]["owner_accounts"] == ["012345678901"]
    assert parse_policy(compiled, source="json") == parse_policy(text, source="yaml")
    with pytest.raises(PolicyError, match="version"):
        policy_as_json("version: 3\ntargets: {a: {cache_security_group: x}}\n", source="p")
