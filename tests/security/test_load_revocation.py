"""A burst that mixes tag and untag events for the same pairs, with revocation on, across
concurrent execution environments: it still ends exactly once, in the right final state.

The world: the burst's groups, each granted once by an event (the function owns the
grants); then their tags are set to their final state before a single delivery of the burst:
some keep their tag, some lose it, one pair is held. The burst: for every group, stale
"tagged" events (Tag Change, CreateTags) and "untagged" ones (Tag Change without the key,
DeleteTags), each delivered one to three times, shuffled, over four environments at once.

Decided on the groups' current state, the order cannot matter. What must hold, from the
README's rules (tests/security/oracle.py):

- every (event, grant) the rules permit now is authorized once, and nothing else is;
- every owned grant whose reason is gone (tag removed, held) is revoked exactly once,
  whichever of the events that asked came first, and none else is;
- AWS ends with exactly the pairs whose reason remains; every ledger entry of a revoked
  pair is marked revoked; every event finished, and the dead-letter queue is empty.
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from cache_ingress.ledger import Ledger
from tests.security import oracle
from tests.security.burst import (
    BUNDLED_POLICY,
    BurstWorld,
    CallRecorder,
    burst_world,
    handler_environment,
    new_environment,
    run_concurrently,
)
from tests.support.events import PLATFORM_PRINCIPAL, create_tags, tag_change

pytestmark = [pytest.mark.integration, pytest.mark.load]

REVOKE_EVENT = "provide-client-params.elasticache.RevokeCacheSecurityGroupIngress"
UNIQUE_EVENTS = 240
TAG_KEY = "cache-ingress"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BurstWorld]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_CONFIG_FILE", "/dev/null")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        with burst_world(group_count=36) as started:
            yield started


def revoking_policy() -> dict[str, Any]:
    document = yaml.safe_load(BUNDLED_POLICY.read_text(encoding="utf-8"))
    for name in ("orders", "inventory", "payments"):
        document["targets"][name]["revoke"] = True
    return dict(document)


class Recorder(CallRecorder):
    """Authorize and revoke requests, by the event the calling thread is handling."""

    def __init__(self) -> None:
        super().__init__()
        self.revokes: Counter[tuple[str, str]] = Counter()
        self._revoke_lock = threading.Lock()

    def record_revoke(self, params: dict[str, Any], **_: Any) -> None:
        with self._revoke_lock:
            self.revokes[(params["CacheSecurityGroupName"], params["EC2SecurityGroupName"])] += 1


@contextmanager
def revoking(world: BurstWorld, recorder: Recorder, policy_file: Path) -> Iterator[None]:
    with handler_environment(world, recorder):
        os.environ["POLICY_FILE"] = str(policy_file)
        boto3.DEFAULT_SESSION.events.register(REVOKE_EVENT, recorder.record_revoke)  # type: ignore[union-attr]
        yield


def test_tag_and_untag_events_for_the_same_pairs_end_exactly_once_in_the_right_state(
    world: BurstWorld, tmp_path: Path
) -> None:
    policy = revoking_policy()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy), encoding="utf-8")
    scenario = world.aws.scenario
    scope = oracle.Scope(scenario.account_id, scenario.region, scenario.account_id, scenario.region)
    chooser = random.Random(14)  # noqa: S311 - a reproducible choice, not a secret
    ec2 = world.clients["ec2"]
    group_ids = sorted(world.groups)

    # Given every group's grants made by an event (owned); the platform principal asks, so
    # principal-gated targets are granted too.
    setup = [
        create_tags([group_id], event_id=f"setup-{n:03d}", principal=PLATFORM_PRINCIPAL)
        for n, group_id in enumerate(group_ids)
    ]
    for group_id, event in zip(group_ids, setup, strict=True):
        event["detail"]["requestParameters"]["tagSet"]["items"] = [
            {"key": TAG_KEY, "value": world.groups[group_id]["tags"][TAG_KEY]}
        ]
    setup_recorder = Recorder()
    with revoking(world, setup_recorder, policy_file):
        done = run_concurrently(setup, setup_recorder, new_environment, environments=2)
    assert done.unfinished == []
    granted_before = _classic_pairs(world)
    owned = {
        (permit.group_id, permit.target): permit
        for group_id, event in zip(group_ids, setup, strict=True)
        for permit in oracle.permitted([group_id], world.groups, event, policy, scope)
    }
    assert {(p.authorize_parameters[0], p.group_name) for p in owned.values()} == granted_before

    # ... then their final tags: a third lose the key, one pair is held
    values = {group_id: world.groups[group_id]["tags"][TAG_KEY] for group_id in group_ids}
    untagged = set(chooser.sample(group_ids, len(group_ids) // 3))
    for group_id in untagged:
        ec2.delete_tags(Resources=[group_id], Tags=[{"Key": TAG_KEY}])
        del world.groups[group_id]["tags"][TAG_KEY]
    held_pair = next(pair for pair in sorted(owned) if pair[0] not in untagged)
    ledger = Ledger(world.clients["dynamodb"], str(scenario.ledger_table))
    ledger.hold(*held_pair, reason="incident in the burst", by="the test")

    # When a burst of stale tag and untag events for the same groups arrives, concurrently
    deliveries, expected_authorize = _mixed_burst(world, values, policy, scope, chooser, held_pair)
    recorder = Recorder()
    with revoking(world, recorder, policy_file):
        outcome = run_concurrently(deliveries, recorder, new_environment, environments=4)
    outcome.calls = recorder.calls

    # Then nothing is lost ...
    assert outcome.unfinished == []
    assert set(outcome.final_status) == {e["id"] for e in deliveries}
    assert set(outcome.statuses) == {"completed"}
    assert world.dead_letter_count() == 0
    # ... each permitted (event, grant) was authorized once, and nothing else ...
    assert outcome.calls == expected_authorize
    assert set(outcome.calls.values()) <= {1}
    # ... each owned grant whose reason is gone was revoked exactly once, and none else ...
    remains = {
        pair: oracle.reason_remains(
            world.groups.get(pair[0]),
            pair[1],
            policy,
            scope,
            principal=PLATFORM_PRINCIPAL,
            held=pair == held_pair,
        )
        for pair in owned
    }
    gone = {owned[pair] for pair, kept in remains.items() if not kept}
    assert gone, "the burst must revoke something"
    assert recorder.revokes == Counter({(p.authorize_parameters[0], p.group_name): 1 for p in gone})
    # ... and AWS holds exactly the grants whose reason remains, the ledger agreeing.
    kept = {
        (owned[p].authorize_parameters[0], owned[p].group_name) for p, k in remains.items() if k
    }
    assert _classic_pairs(world) == kept
    for pair in owned:
        statuses = {
            str(e.status) for e in ledger.entries(group_id=pair[0]) if e.grant.target == pair[1]
        }
        assert statuses == ({"in-force"} if remains[pair] else {"revoked"}), (pair, statuses)
    ledger.release(*held_pair, by="the test", reason=None)


def _mixed_burst(
    world: BurstWorld,
    values: dict[str, str],
    policy: dict[str, Any],
    scope: oracle.Scope,
    chooser: random.Random,
    held_pair: tuple[str, str],
) -> tuple[list[dict[str, Any]], Counter[tuple[str, str, str]]]:
    """Stale tag and untag events for every group, 1-3 deliveries each, shuffled; and the
    authorize calls the rules permit now (one per permitted (event, grant))."""
    deliveries: list[dict[str, Any]] = []
    expected: Counter[tuple[str, str, str]] = Counter()
    group_ids = sorted(world.groups)
    for number in range(UNIQUE_EVENTS):
        group_id = group_ids[number % len(group_ids)]
        value = values[group_id]
        event_id = f"mixed-{number:05d}"
        kind = chooser.choice(("tag-change", "create-tags", "untag-change", "delete-tags"))
        if kind == "tag-change":
            event = tag_change(group_id, {TAG_KEY: value, "env": "prod"}, event_id=event_id)
        elif kind == "untag-change":
            event = tag_change(group_id, {"env": "prod"}, event_id=event_id)
        else:
            name = "CreateTags" if kind == "create-tags" else "DeleteTags"
            event = create_tags(
                [group_id], event_id=event_id, principal=PLATFORM_PRINCIPAL, name=name
            )
            event["detail"]["requestParameters"]["tagSet"]["items"] = [
                {"key": TAG_KEY, "value": value}
            ]
        for permit in oracle.permitted([group_id], world.groups, event, policy, scope):
            if (permit.group_id, permit.target) == held_pair:
                continue
            cache_group, group_name, _ = permit.authorize_parameters
            expected[(event_id, cache_group, group_name)] += 1
        deliveries += [event] * chooser.choice((1, 1, 2, 3))
    chooser.shuffle(deliveries)
    return deliveries, expected


def _classic_pairs(world: BurstWorld) -> set[tuple[str, str]]:
    elasticache = world.clients["elasticache"]
    names = {g["name"] for g in world.groups.values()}
    pairs = set()
    for cache_group in elasticache.describe_cache_security_groups()["CacheSecurityGroups"]:
        for pair in cache_group["EC2SecurityGroups"]:
            if pair["EC2SecurityGroupName"] in names:
                pairs.add((cache_group["CacheSecurityGroupName"], pair["EC2SecurityGroupName"]))
    return pairs
