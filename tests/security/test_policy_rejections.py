"""Bad policies: each is rejected with a message naming the field, and nothing is granted.

A typo in a reviewed policy must never widen or narrow access silently. Every document
below is refused by `parse_policy` with the field's path in the message, and the function,
pointed at it through POLICY_FILE (or an SSM parameter), grants nothing and dead-letters
the event with that message, so the operator can fix the policy and replay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cache_ingress.errors import PolicyError
from cache_ingress.handler import lambda_handler
from cache_ingress.policy import parse_policy
from tests.integration.conftest import dead_letters
from tests.security.harness import Fresh, SharedWorld
from tests.support.events import load_event
from tests.support.lambda_context import FakeLambdaContext

TARGET = "    cache_security_group: orders-cache-sg\n"


def _policy(target_body: str = TARGET, *, head: str = "version: 1\n") -> str:
    return f"{head}targets:\n  orders:\n{target_body}"


def _allow(allow_body: str) -> str:
    return _policy(TARGET + "    allow:\n" + allow_body)


# (case id, policy text, fragment the message must contain)
BAD_POLICIES: list[tuple[str, str, str]] = [
    # Malformed documents.
    (
        "yaml-unclosed-flow",
        "version: 1\ntargets: {orders: {cache_security_group: x}\n",
        "not valid YAML or JSON",
    ),
    ("yaml-tab-indent", "version: 1\ntargets:\n\torders: {}\n", "not valid YAML or JSON"),
    ("json-truncated", '{"version": 1, "targets": {', "not valid YAML or JSON"),
    (
        "yaml-python-object-tag",
        "version: 1\ntargets: !!python/object/apply:os.system ['true']\n",
        "not valid YAML or JSON",
    ),
    ("empty-document", "", "(top level): must be a mapping"),
    ("top-level-list", "- version: 1\n", "(top level): must be a mapping"),
    # Unknown fields, at every level.
    ("unknown-top-level-field", _policy() + "target: {}\n", "unknown field 'target'"),
    (
        "unknown-target-field",
        _policy(TARGET + "    regoin: us-east-1\n"),
        "targets.orders: unknown field 'regoin'",
    ),
    (
        "unknown-allow-field",
        _allow("      owners: ['123456789012']\n"),
        "targets.orders.allow: unknown field 'owners'",
    ),
    (
        "allow-field-singular-typo",
        _allow("      required_tag: {env: prod}\n"),
        "targets.orders.allow: unknown field 'required_tag'",
    ),
    # Wrong types.
    ("version-missing", "targets:\n  orders:\n" + TARGET, "version: required field is missing"),
    ("version-two", _policy(head="version: 2\n"), "version: must be 1"),
    ("version-string", _policy(head="version: '1'\n"), "version: must be 1"),
    ("version-boolean", _policy(head="version: true\n"), "version: must be 1"),
    ("tag-key-empty", _policy(head="version: 1\ntag_key: ''\n"), "tag_key"),
    ("tag-key-number", _policy(head="version: 1\ntag_key: 5\n"), "tag_key"),
    (
        "tag-key-not-the-stacks",
        _policy(head="version: 1\ntag_key: other-key\n"),
        "differs from the stack's tag key",
    ),
    (
        "target-a-string",
        "version: 1\ntargets:\n  orders: orders-cache-sg\n",
        "targets.orders: must be a mapping",
    ),
    ("target-name-number", "version: 1\ntargets:\n  123:\n" + TARGET, "targets.123: a target name"),
    (
        "target-name-punctuation",
        "version: 1\ntargets:\n  'orders!':\n" + TARGET,
        "targets.orders!: a target name",
    ),
    (
        "target-name-leading-dash",
        "version: 1\ntargets:\n  '-orders':\n" + TARGET,
        "targets.-orders: a target name",
    ),
    (
        "target-name-too-long",
        f"version: 1\ntargets:\n  {'o' * 65}:\n" + TARGET,
        "a target name is 1-64",
    ),
    (
        "cache-group-missing",
        _policy("    region: us-east-1\n"),
        "targets.orders.cache_security_group: required field is missing",
    ),
    (
        "cache-group-a-list",
        _policy("    cache_security_group: [a, b]\n"),
        "targets.orders.cache_security_group",
    ),
    (
        "cache-group-wildcard",
        _policy("    cache_security_group: '*'\n"),
        "targets.orders.cache_security_group",
    ),
    (
        "cache-group-with-space",
        _policy("    cache_security_group: orders cache\n"),
        "targets.orders.cache_security_group",
    ),
    ("region-upper-case", _policy(TARGET + "    region: US-EAST-1\n"), "targets.orders.region"),
    ("region-a-number", _policy(TARGET + "    region: 1\n"), "targets.orders.region"),
    (
        "allow-a-list",
        _policy(TARGET + "    allow: [owner_accounts]\n"),
        "targets.orders.allow: must be a mapping",
    ),
    (
        "owners-a-string",
        _allow("      owner_accounts: '123456789012'\n"),
        "targets.orders.allow.owner_accounts: must be a non-empty list",
    ),
    (
        "owners-empty",
        _allow("      owner_accounts: []\n"),
        "targets.orders.allow.owner_accounts: must be a non-empty list",
    ),
    (
        "owners-unquoted-number",
        _allow("      owner_accounts: [123456789012]\n"),
        "targets.orders.allow.owner_accounts: every item must be a non-empty string",
    ),
    (
        "owners-eleven-digits",
        _allow("      owner_accounts: ['12345678901']\n"),
        "is not a 12-digit account id",
    ),
    ("owners-wildcard", _allow("      owner_accounts: ['*']\n"), "is not a 12-digit account id"),
    (
        "principals-a-string",
        _allow("      principals: 'arn:aws:iam::123456789012:root'\n"),
        "targets.orders.allow.principals: must be a non-empty list",
    ),
    (
        "principals-empty",
        _allow("      principals: []\n"),
        "targets.orders.allow.principals: must be a non-empty list",
    ),
    ("principals-bare-wildcard", _allow("      principals: ['*']\n"), "must be an ARN pattern"),
    (
        "principals-too-few-fields",
        _allow("      principals: ['arn:aws:sts::assumed-role/platform/*']\n"),
        "must be an ARN pattern",
    ),
    (
        "principals-wildcard-principal-type",
        _allow("      principals: ['arn:aws:iam::123456789012:*']\n"),
        "write the principal type out",
    ),
    (
        "principals-wildcard-role-name",
        _allow("      principals: ['arn:aws:sts::123456789012:assumed-role/*/alice']\n"),
        "write the role name out",
    ),
    (
        "principals-partial-wildcard-role-name",
        _allow("      principals: ['arn:aws:sts::123456789012:assumed-role/platform*/alice']\n"),
        "write the role name out",
    ),
    (
        "principals-with-a-space",
        _allow("      principals: ['arn:aws:iam::123456789012:user/a b']\n"),
        "holds a space",
    ),
    # Printable ASCII only: a look-alike character never passes for another (U+0435 is
    # Cyrillic e, U+043E Cyrillic o, U+00A0 a no-break space, U+200B a zero-width space).
    (
        "principals-look-alike",
        _allow("      principals: ['arn:aws:sts::123456789012:assumed-role/platf\u043erm/*']\n"),
        "(U+043E)",
    ),
    (
        "required-tag-key-look-alike",
        _allow("      required_tags: {\u0435nv: prod}\n"),
        "targets.orders.allow.required_tags: tag key '\u0435nv' holds '\u0435' (U+0435)",
    ),
    (
        "required-tag-value-look-alike",
        _allow("      required_tags: {env: pr\u043ed}\n"),
        "targets.orders.allow.required_tags.env: 'pr\u043ed' holds",
    ),
    (
        "required-tag-value-no-break-space",
        _allow('      required_tags: {env: "prod\u00a0"}\n'),
        "(U+00A0)",
    ),
    (
        "required-tag-value-zero-width",
        _allow('      required_tags: {env: [prod, "prod\u200b"]}\n'),
        "(U+200B)",
    ),
    (
        "tag-key-look-alike",
        _policy(head="version: 1\ntag_key: cache-ingr\u0435ss\n"),
        "tag_key: 'cache-ingr\u0435ss' holds",
    ),
    (
        "tag-key-surrounded-by-spaces",
        _policy(head="version: 1\ntag_key: ' cache-ingress'\n"),
        "tag_key: ' cache-ingress' begins or ends with a space",
    ),
    (
        "required-tags-a-list",
        _allow("      required_tags: [env]\n"),
        "targets.orders.allow.required_tags: must be a mapping",
    ),
    (
        "required-tag-value-a-number",
        _allow("      required_tags: {env: 1}\n"),
        "targets.orders.allow.required_tags.env",
    ),
    (
        "required-tag-value-null",
        _allow("      required_tags: {env: null}\n"),
        "targets.orders.allow.required_tags.env",
    ),
    (
        "required-tag-values-mixed",
        _allow("      required_tags: {env: [prod, 1]}\n"),
        "targets.orders.allow.required_tags.env: every item must be a non-empty string",
    ),
    (
        "required-tag-value-too-long",
        _allow(f"      required_tags: {{env: {'v' * 257}}}\n"),
        "targets.orders.allow.required_tags.env: tag values are at most 256",
    ),
    (
        "required-tag-key-empty",
        _allow("      required_tags: {'': prod}\n"),
        "targets.orders.allow.required_tags: tag key ''",
    ),
    # Empty targets.
    ("targets-missing", "version: 1\n", "targets: required field is missing"),
    ("targets-empty-mapping", "version: 1\ntargets: {}\n", "targets: must be a mapping naming"),
    ("targets-a-list", "version: 1\ntargets: [orders]\n", "targets: must be a mapping naming"),
    ("targets-null", "version: 1\ntargets:\n", "targets: must be a mapping naming"),
    # Duplicate names.
    (
        "duplicate-target-yaml",
        _policy() + "  orders:\n    cache_security_group: other-sg\n",
        "duplicate key 'orders'",
    ),
    (
        "duplicate-target-json",
        '{"version": 1, "targets": {"orders": {"cache_security_group": "a"},'
        ' "orders": {"cache_security_group": "b"}}}',
        "duplicate key 'orders'",
    ),
    (
        "duplicate-allow-field",
        _allow("      owner_accounts: ['123456789012']\n      owner_accounts: ['210987654321']\n"),
        "duplicate key 'owner_accounts'",
    ),
    ("duplicate-top-level-field", _policy() + "version: 1\n", "duplicate key 'version'"),
    # An alias bomb: aliases are references, not copies, and the first item that is not a
    # string ends the validation.
    (
        "alias-bomb",
        _allow(
            "      required_tags:\n        env: [&b [&a [x, x, x, x, x, x, x, x], *a, *a, *a, *a,"
            " *a, *a, *a], *b, *b, *b, *b, *b, *b, *b]\n"
        ),
        "targets.orders.allow.required_tags.env: every item must be a non-empty string",
    ),
]
SSM_CASES = [
    c
    for c in BAD_POLICIES
    if c[0]
    in {
        "unknown-allow-field",
        "duplicate-target-yaml",
        "owners-eleven-digits",
        "empty-document",
    }
]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "fragment"), [c[1:] for c in BAD_POLICIES], ids=[c[0] for c in BAD_POLICIES]
)
def test_a_bad_policy_is_rejected_naming_the_field(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, source="test.yaml", expected_tag_key="cache-ingress")

    assert fragment in str(raised.value)
    assert str(raised.value).startswith("policy test.yaml: ")


@pytest.mark.unit
def test_the_bad_policy_cases_are_distinct() -> None:
    assert len({c[0] for c in BAD_POLICIES}) == len(BAD_POLICIES)
    assert len({c[1] for c in BAD_POLICIES}) == len(BAD_POLICIES)


@pytest.mark.unit
def test_owner_accounts_in_non_ascii_digits_are_rejected() -> None:
    arabic_indic = "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662"

    with pytest.raises(PolicyError, match="owner_accounts"):
        parse_policy(_allow(f"      owner_accounts: ['{arabic_indic}']\n"), source="test.yaml")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("text", "fragment"), [c[1:] for c in BAD_POLICIES], ids=[c[0] for c in BAD_POLICIES]
)
def test_the_function_with_a_bad_policy_file_grants_nothing_and_dead_letters(
    text: str,
    fragment: str,
    shared: SharedWorld,
    fresh: Fresh,
    handler_authorize_calls: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(text, encoding="utf-8")
    monkeypatch.setenv("POLICY_FILE", str(policy_file))

    summary = lambda_handler(load_event("tag-change-authorized.json"), FakeLambdaContext())

    assert handler_authorize_calls == []
    assert summary["status"] == "dead-lettered"
    assert summary["errorType"] == "PolicyInvalid"
    assert fragment in summary["reason"]
    [message] = dead_letters(shared.clients["sqs"], fresh.queue_url)
    assert message["body"]["responsePayload"]["errorType"] == "PolicyInvalid"
    assert fragment in message["body"]["responsePayload"]["errorMessage"]


@pytest.mark.integration
def test_a_policy_file_that_is_not_utf8_grants_nothing(
    shared: SharedWorld,
    fresh: Fresh,
    handler_authorize_calls: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_bytes(_policy().encode("utf-8") + b"    # \xff\xfe\n")
    monkeypatch.setenv("POLICY_FILE", str(policy_file))

    summary = lambda_handler(load_event("tag-change-authorized.json"), FakeLambdaContext())

    assert handler_authorize_calls == []
    assert summary["errorType"] == "PolicyInvalid"
    assert "cannot be read" in summary["reason"]


@pytest.mark.integration
@pytest.mark.parametrize(("case_id", "text", "fragment"), SSM_CASES, ids=[c[0] for c in SSM_CASES])
def test_a_bad_policy_in_ssm_grants_nothing_and_dead_letters(
    case_id: str,
    text: str,
    fragment: str,
    shared: SharedWorld,
    fresh: Fresh,
    handler_authorize_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"/cache-ingress/policy-{case_id}"
    # SSM refuses an empty value, so the empty document is stored as a YAML comment.
    shared.clients["ssm"].put_parameter(
        Name=name, Value=text or "# empty", Type="String", Overwrite=True
    )
    monkeypatch.setenv("POLICY_PARAMETER", name)

    summary = lambda_handler(load_event("tag-change-authorized.json"), FakeLambdaContext())

    assert handler_authorize_calls == []
    assert summary["errorType"] == "PolicyInvalid"
    assert f"ssm:{name}" in summary["reason"]
    assert fragment in summary["reason"]
    assert len(dead_letters(shared.clients["sqs"], fresh.queue_url)) == 1
