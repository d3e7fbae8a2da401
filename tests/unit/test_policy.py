from __future__ import annotations

import json

import pytest

from cache_ingress.errors import PolicyError
from cache_ingress.policy import Allow, TargetKind, parse_policy
from cache_ingress.settings import BUNDLED_POLICY

pytestmark = pytest.mark.unit

VALID = """
version: 1
tag_key: cache-ingress
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow:
      owner_accounts: ["111122223333"]
      required_tags: {env: prod, tier: [web, api]}
      principals: ["arn:aws:sts::111122223333:assumed-role/platform/*"]
  reports:
    cache_security_group: reports-cache-sg
    region: eu-west-1
"""


def test_a_valid_policy_parses_into_targets() -> None:
    policy = parse_policy(VALID, source="test")

    orders = policy.targets["orders"]
    assert orders.kind is TargetKind.CACHE_SECURITY_GROUP
    assert orders.cache_security_group == "orders-cache-sg"
    assert orders.allow == Allow(
        owner_accounts=("111122223333",),
        required_tags={"env": ("prod",), "tier": ("web", "api")},
        principals=("arn:aws:sts::111122223333:assumed-role/platform/*",),
    )
    assert policy.targets["reports"].region == "eu-west-1"
    assert policy.targets["reports"].allow == Allow()


def test_json_is_accepted() -> None:
    text = json.dumps({"version": 1, "targets": {"orders": {"cache_security_group": "a-b"}}})
    assert parse_policy(text, source="test").tag_key == "cache-ingress"


def test_the_bundled_policy_is_valid() -> None:
    policy = parse_policy(
        BUNDLED_POLICY.read_text(), source="bundled", expected_tag_key="cache-ingress"
    )
    assert set(policy.targets) == {
        "orders",
        "payments",
        "inventory",
        "sessions",
        "search",
        "legacy",
        "reports",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ntargets: [", "not valid YAML or JSON"),
        ("- 1", r"\(top level\): must be a mapping"),
        ("version: 2\ntargets: {a: {cache_security_group: x}}", "version: must be 1"),
        ("version: true\ntargets: {a: {cache_security_group: x}}", "version: must be 1"),
        ("version: 1", r"targets: required field is missing"),
        ("version: 1\ntargets: {}", "targets: must be a mapping naming at least one target"),
        (
            "version: 1\ntarget: {}\ntargets: {a: {cache_security_group: x}}",
            "unknown field 'target'",
        ),
        (
            "version: 1\ntargets: {'bad name': {cache_security_group: x}}",
            "targets.bad name: a target name",
        ),
        ("version: 1\ntargets: {'a,b': {cache_security_group: x}}", "targets.a,b: a target name"),
        (
            "version: 1\ntargets: {a: {}}",
            "targets.a.cache_security_group: required field is missing",
        ),
        (
            "version: 1\ntargets: {a: {cache_security_group: 'no spaces'}}",
            "targets.a.cache_security_group",
        ),
        (
            "version: 1\ntargets: {a: {cache_security_group: x, alow: {}}}",
            "targets.a: unknown field 'alow'",
        ),
        ("version: 1\ntargets: {a: {cache_security_group: x, region: mars}}", "targets.a.region"),
        (
            "version: 1\ntargets: {a: {cache_security_group: x, "
            "allow: {owner_accounts: [111122223333]}}}",
            "targets.a.allow.owner_accounts: every item must be a non-empty string",
        ),
        (
            "version: 1\ntargets: {a: {cache_security_group: x, "
            "allow: {owner_accounts: ['1234']}}}",
            "'1234' is not a 12-digit account id",
        ),
        (
            "version: 1\ntargets: {a: {cache_security_group: x, allow: {owner_accounts: []}}}",
            "owner_accounts: must be a non-empty list",
        ),
        (
            "version: 1\ntargets: {a: {cache_security_group: x, allow: {principals: ['alice']}}}",
            "principals: 'alice' must be an ARN pattern",
        ),
        (
            "version: 1\ntargets: {a: {cache_security_group: x, allow: {required_tags: [env]}}}",
            "required_tags: must be a mapping",
        ),
        (
            "version: 1\ntargets: {a: {cache_security_group: x, allow: {required_tags: {env: 3}}}}",
            r"required_tags.env: must be a non-empty list",
        ),
        ("version: 1\ntag_key: ''\ntargets: {a: {cache_security_group: x}}", "tag_key"),
    ],
)
def test_invalid_policies_are_rejected_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, source="test")


def test_duplicate_target_names_are_rejected_in_yaml() -> None:
    text = "version: 1\ntargets:\n  a: {cache_security_group: x}\n  a: {cache_security_group: y}\n"
    with pytest.raises(PolicyError, match="duplicate key 'a'"):
        parse_policy(text, source="test")


def test_duplicate_target_names_are_rejected_in_json() -> None:
    text = (
        '{"version": 1, "targets": '
        '{"a": {"cache_security_group": "x"}, "a": {"cache_security_group": "y"}}}'
    )
    with pytest.raises(PolicyError, match="duplicate key 'a'"):
        parse_policy(text, source="test")


def test_yaml_tags_that_build_objects_are_refused() -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("!!python/object/apply:os.system ['true']", source="test")


def test_a_tag_key_other_than_the_stacks_is_rejected() -> None:
    with pytest.raises(PolicyError, match="differs from the stack's tag key 'cache-ingress'"):
        parse_policy(
            VALID.replace("tag_key: cache-ingress", "tag_key: other"),
            source="s",
            expected_tag_key="cache-ingress",
        )


def test_the_error_names_the_source() -> None:
    with pytest.raises(PolicyError, match=r"^policy ssm:/cache-ingress/policy: version"):
        parse_policy(
            "version: 3\ntargets: {a: {cache_security_group: x}}",
            source="ssm:/cache-ingress/policy",
        )
