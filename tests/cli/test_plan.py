"""`cache-ingress plan` against the embedded AWS: each kind of change the documented table
names (grant, allow, deny, needs-event, moved), reads only, exit 0 nothing changes / 2
something would / 1 an error (a usage error too: 2 would tell CI "it changes").

The worlds are the default scenario (docs/local.md) and the bundled policy, edited the way a
policy pull request would edit it; what each edit does is read from the README's rules.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cache_ingress.settings import BUNDLED_POLICY
from cache_ingress_tools import cli
from cache_ingress_tools.commands._base import Connection
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws
from tests.cli import stub_stack
from tests.support.events import ORDERS_GROUP, STAGING_GROUP
from tests.support.processes import run_cli

pytestmark = pytest.mark.cli

BUNDLED = BUNDLED_POLICY.read_text(encoding="utf-8")
SESSIONS_APP = "sg-0a2b3c4d5e6f70812"
SESSIONS_ELSEWHERE = "sg-0b3c4d5e6f7081923"
LEGACY_APP = "sg-0e5f60718293a4b5c"
ORDERS_RULE = (
    "  orders:\n    cache_security_group: orders-cache-sg\n"
    "    allow:\n      required_tags:\n        env: prod\n"
)


@pytest.fixture(scope="module")
def running() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as aws:
        yield aws


@pytest.fixture
def aws(running: EmbeddedAws, monkeypatch: pytest.MonkeyPatch) -> EmbeddedAws:
    running.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in ("POLICY_FILE", "POLICY_PARAMETER", "TAG_KEY", "ACCOUNT_ID", "LEDGER_TABLE"):
        monkeypatch.delenv(name, raising=False)
    return running


def client(aws: EmbeddedAws, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=aws.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS
    )


def edited(tmp_path: Path, old: str, new: str, name: str = "new.yaml") -> Path:
    assert old in BUNDLED
    path = tmp_path / name
    path.write_text(BUNDLED.replace(old, new), encoding="utf-8")
    return path


def plan(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], *arguments: str
) -> tuple[int, dict[str, Any], str]:
    status = cli.main(["plan", "--endpoint-url", aws.endpoint_url, "--json", *arguments])
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out else {}, captured.err


def changes(document: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str, str]]:
    return {
        (change["groupId"], change["target"]): (
            change["change"],
            change["current"]["place"],
            change["new"]["place"],
        )
        for change in document["changes"]
    }


def test_the_same_policy_changes_nothing_and_exits_0(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "copy.yaml"
    copy.write_text(BUNDLED, encoding="utf-8")

    status, document, _ = plan(aws, capsys, "--policy-file", str(copy))

    assert status == 0
    assert document["changes"] == []
    assert document["complete"] is True
    assert document["groupsSeen"] == 9  # the scenario's groups carrying cache-ingress
    # search-redis does not exist: unread, but its target is alike in both policies.
    assert [(p["groupId"], p["target"]) for p in document["unreadAlike"]] == [
        ("sg-0d4e5f60718293a4b", "search")
    ]


def test_allowing_staging_grants_the_staging_group(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new = edited(tmp_path, ORDERS_RULE, ORDERS_RULE.replace("env: prod", "env: [prod, staging]"))

    status, document, _ = plan(aws, capsys, "--policy-file", str(new))

    assert status == 2
    assert changes(document) == {(STAGING_GROUP, "orders"): ("grant", "denied", "allowed")}
    [change] = document["changes"]
    assert change["grantedNow"] is False
    assert change["effect"] == "the next sweep authorizes it into orders-cache-sg"
    assert document["targets"]["changed"] == ["orders"]


def test_a_grant_made_by_hand_is_allowed_not_granted_again(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    client(aws, "elasticache").authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-staging-app",
        EC2SecurityGroupOwnerId="123456789012",
    )
    new = edited(tmp_path, ORDERS_RULE, ORDERS_RULE.replace("env: prod", "env: [prod, staging]"))

    _, document, _ = plan(aws, capsys, "--policy-file", str(new))

    assert changes(document) == {(STAGING_GROUP, "orders"): ("allow", "denied", "allowed")}
    assert document["changes"][0]["effect"] == "nothing to do: it is granted already"


def test_removing_a_target_denies_its_groups_and_a_grant_stays(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    legacy = (
        "  legacy:\n    cache_cluster: legacy-memcached\n"
        "    allow:\n      required_tags:\n        env: prod\n"
    )
    client(aws, "elasticache").authorize_cache_security_group_ingress(
        CacheSecurityGroupName="orders-cache-sg",
        EC2SecurityGroupName="orders-app",
        EC2SecurityGroupOwnerId="123456789012",
    )
    new = (
        edited(tmp_path, ORDERS_RULE + "  payments:", "  payments:")
        .read_text(encoding="utf-8")
        .replace(legacy, "")
    )
    path = tmp_path / "fewer.yaml"
    path.write_text(new, encoding="utf-8")

    status, document, _ = plan(aws, capsys, "--policy-file", str(path))

    assert status == 2
    assert changes(document) == {
        (ORDERS_GROUP, "orders"): ("deny", "allowed", "denied"),
        (LEGACY_APP, "legacy"): ("deny", "allowed", "denied"),
        # reporting-app is tagged orders too (docs/local.md: the tag names orders, analytics)
        ("sg-01a2b3c4d5e6f7081", "orders"): ("deny", "allowed", "denied"),
    }
    effects = {c["groupId"]: c["effect"] for c in document["changes"]}
    assert effects[ORDERS_GROUP] == (
        "no longer allowed; the grant it has stays (the function revokes only its own grants "
        "of a target with revoke: true)"
    )
    assert effects[LEGACY_APP] == "no longer allowed; not granted now"
    assert set(document["targets"]["removed"]) == {"orders", "legacy"}


def test_requiring_a_principal_needs_an_event_unless_another_rule_denies_anyway(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sessions = "    replication_group: sessions-redis\n"
    sessions += "    allow:\n      required_tags:\n        env: prod\n"
    gated = sessions + '      principals: ["arn:aws:sts::123456789012:assumed-role/platform/*"]\n'
    new = edited(tmp_path, sessions, gated)

    status, document, _ = plan(aws, capsys, "--policy-file", str(new))

    # sessions-app-elsewhere is in another VPC: same-vpc denies it under both policies, so
    # requiring a principal changes nothing for it (an event could not lift same-vpc).
    assert status == 2
    assert changes(document) == {
        (SESSIONS_APP, "sessions"): ("needs-event", "allowed", "needs-event")
    }
    assert document["changes"][0]["new"]["destination"] == "sg-0c1a2b3c4d5e6f701 tcp/6379"

    status, everything, _ = plan(aws, capsys, "--policy-file", str(new), "--all")

    [elsewhere] = [p for p in everything["all"] if p["groupId"] == SESSIONS_ELSEWHERE]
    assert elsewhere["change"] is None
    assert (elsewhere["new"]["place"], elsewhere["new"]["rule"]) == ("denied", "principals")
    assert elsewhere["new"]["alsoDeniedBy"] == ["same-vpc"]


def test_a_target_moved_to_another_cache_group(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new = edited(tmp_path, ORDERS_RULE, ORDERS_RULE.replace("orders-cache-sg", "payments-cache-sg"))

    _, document, _ = plan(aws, capsys, "--policy-file", str(new))

    assert changes(document)[(ORDERS_GROUP, "orders")] == ("moved", "allowed", "allowed")
    effect = {c["groupId"]: c["effect"] for c in document["changes"]}[ORDERS_GROUP]
    assert effect == (
        "the next sweep authorizes it into payments-cache-sg; orders-cache-sg keeps its grant"
    )


def test_the_current_policy_comes_from_ssm_and_a_pair_unread_under_a_new_target_is_an_error(
    aws: EmbeddedAws,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    only_orders = "version: 1\ntargets:\n" + ORDERS_RULE
    client(aws, "ssm").put_parameter(Name="/cache-ingress/policy", Value=only_orders, Type="String")
    monkeypatch.setenv("POLICY_PARAMETER", "/cache-ingress/policy")
    copy = tmp_path / "bundled.yaml"
    copy.write_text(BUNDLED, encoding="utf-8")

    status, document, _ = plan(aws, capsys, "--policy-file", str(copy))

    assert document["current"] == "ssm:/cache-ingress/policy"
    assert set(document["targets"]["added"]) == {
        "payments",
        "inventory",
        "sessions",
        "search",
        "legacy",
        "reports",
    }
    assert changes(document)[(LEGACY_APP, "legacy")] == ("grant", "denied", "allowed")
    # search-redis does not exist, and search is new: what it would do cannot be known.
    assert [(p["groupId"], p["target"]) for p in document["unknown"]] == [
        ("sg-0d4e5f60718293a4b", "search")
    ]
    assert status == 1


def test_a_stack_without_a_policy_parameter_needs_the_current_policy_given(
    aws: EmbeddedAws,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub_stack(
        monkeypatch,
        "cache-ingress",
        outputs={},
        parameters={"PolicyParameterName": "", "TagKey": "cache-ingress"},
    )
    copy = tmp_path / "copy.yaml"
    copy.write_text(BUNDLED, encoding="utf-8")

    status, _, err = plan(aws, capsys, "--policy-file", str(copy), "--stack-name", "cache-ingress")

    assert status == 1
    assert "runs its bundled policy, which only its build holds: pass --current-policy" in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--policy-file", "/no/such.yaml"], "policy /no/such.yaml: cannot be read"),
        (["--policy-file", str(BUNDLED_POLICY)], "the new policy is the current one"),
        (["--policy-file", "{bad}"], "the new policy does not validate"),
        (["--policy-file", "{other-key}"], "differs from the stack's tag key 'cache-ingress'"),
        (["--policy-file", "{copy}", "--page-size", "3"], "RECONCILE_PAGE_SIZE"),
    ],
)
def test_an_error_exits_1_never_2(
    aws: EmbeddedAws,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    arguments: list[str],
    message: str,
) -> None:
    files = {
        "{bad}": "version: 2\ntargets: {}\n",
        "{other-key}": BUNDLED.replace("tag_key: cache-ingress", "tag_key: team"),
        "{copy}": BUNDLED,
    }
    for placeholder, text in files.items():
        (tmp_path / f"{placeholder[1:-1]}.yaml").write_text(text, encoding="utf-8")
    arguments = [str(tmp_path / f"{a[1:-1]}.yaml") if a in files else a for a in arguments]

    status, document, err = plan(aws, capsys, *arguments)

    assert status == 1
    assert document == {}
    assert message in err


def test_a_usage_error_exits_1_as_a_process() -> None:
    completed = run_cli(["plan", "--json"])

    assert completed.returncode == 1
    assert "the following arguments are required: --policy-file" in completed.stderr
    assert completed.stdout == ""


def test_a_time_limit_that_comes_first_leaves_an_incomplete_plan_and_exits_1(
    aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new = edited(tmp_path, ORDERS_RULE, ORDERS_RULE.replace("env: prod", "env: [prod, staging]"))

    status, document, _ = plan(
        aws, capsys, "--policy-file", str(new), "--page-size", "5", "--time-limit", "0"
    )

    assert status == 1
    assert document["complete"] is False
    assert document["pages"] == 1
    assert document["groupsSeen"] < 9


def test_the_text_plan_and_its_progress_on_a_terminal(
    aws: EmbeddedAws,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    new = edited(tmp_path, ORDERS_RULE, ORDERS_RULE.replace("env: prod", "env: [prod, staging]"))

    status = cli.main(
        ["plan", "--endpoint-url", aws.endpoint_url, "--policy-file", str(new), "--page-size", "5"]
    )
    out = capsys.readouterr().out

    assert status == 2
    assert out.splitlines()[0].split() == [
        "CHANGE", "GROUP", "ID", "GROUP", "NAME", "TARGET", "NOW", "AFTER", "GRANTED", "EFFECT"
    ]  # fmt: skip
    assert [f"grant {STAGING_GROUP} orders-staging-app orders"] == [
        " ".join(line.split()[:4]) for line in out.splitlines() if line.startswith("grant")
    ]
    assert "plan: 1 pair(s) change (grant 1) of" in out
    assert "groups/s" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[2K")


def test_plan_only_reads(
    aws: EmbeddedAws,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    original = Connection.client

    def recording(self: Connection, service: str, config: Any = None) -> Any:
        made = original(self, service, config)
        made.meta.events.register(
            "before-call", lambda model, **_: calls.append(f"{service}:{model.name}")
        )
        return made

    monkeypatch.setattr(Connection, "client", recording)
    new = edited(tmp_path, ORDERS_RULE, ORDERS_RULE.replace("env: prod", "env: [prod, staging]"))

    assert plan(aws, capsys, "--policy-file", str(new))[0] == 2

    assert "ec2:DescribeSecurityGroups" in calls
    assert "elasticache:DescribeCacheSecurityGroups" in calls
    assert all(c.split(":")[1].startswith(("Describe", "Get", "List", "Lookup")) for c in calls)
    [group] = client(aws, "elasticache").describe_cache_security_groups(
        CacheSecurityGroupName="orders-cache-sg"
    )["CacheSecurityGroups"]
    assert group["EC2SecurityGroups"] == []
