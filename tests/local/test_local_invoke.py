"""The local invoke: the template's environment, SAM's env-vars rules, the real handler in
this process against the embedded AWS, and what `cache-ingress invoke` and `demo` print.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cache_ingress.settings import Settings
from cache_ingress_tools.cli import main
from cache_ingress_tools.commands import demo
from cache_ingress_tools.emulator.scenario import DEFAULT_SCENARIO, load_scenario
from cache_ingress_tools.emulator.server import EmbeddedAws
from cache_ingress_tools.local_invoke import (
    FUNCTION_ID,
    UNDECLARED_SETTINGS,
    LocalInvokeError,
    Target,
    TemplateError,
    apply_env_vars,
    function_environment,
    load_env_vars_file,
    load_template,
    resolve_function,
    sam_pseudo_parameters,
)
from tests.local import REPO_ROOT, run_cli
from tests.support.events import INVENTORY_GROUP, ORDERS_GROUP, event_names, load_event

TEMPLATE = REPO_ROOT / "template.yaml"
ENV_VARS = REPO_ROOT / "events" / "env.json"
PSEUDO = sam_pseudo_parameters("123456789012", "us-east-1")


def _target(endpoint: str = "http://127.0.0.1:4999") -> Target:
    scenario = load_scenario()
    queue = f"{endpoint}/{scenario.account_id}/{scenario.dead_letter_queue}"
    return Target(endpoint, scenario, queue, "for the test")


# --- the template -----------------------------------------------------------------------


@pytest.mark.template
def test_short_tags_become_their_long_form(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n  R:\n    Type: T\n    Properties:\n"
        "      A: !Ref Name\n      B: !GetAtt Queue.Arn\n      C: !Sub ['${X}', {X: !Ref Y}]\n"
        "      D: !If [Cond, !Condition Other, !Ref AWS::NoValue]\n"
        "      E: !Join [',', !Split ['-', a-b]]\n      F: !Select [0, !GetAZs '']\n",
        encoding="utf-8",
    )

    properties = load_template(path)["Resources"]["R"]["Properties"]

    assert properties == {
        "A": {"Ref": "Name"},
        "B": {"Fn::GetAtt": ["Queue", "Arn"]},
        "C": {"Fn::Sub": ["${X}", {"X": {"Ref": "Y"}}]},
        "D": {"Fn::If": ["Cond", {"Condition": "Other"}, {"Ref": "AWS::NoValue"}]},
        "E": {"Fn::Join": [",", {"Fn::Split": ["-", "a-b"]}]},
        "F": {"Fn::Select": [0, {"Fn::GetAZs": ""}]},
    }


@pytest.mark.template
def test_an_unknown_tag_is_refused_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text("Resources:\n  R: !Nope x\n", encoding="utf-8")

    with pytest.raises(TemplateError, match=r"template .*: unknown intrinsic function Fn::Nope"):
        load_template(path)


@pytest.mark.template
def test_a_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text("Resources:\n  R: {Type: T}\n  R: {Type: U}\n", encoding="utf-8")

    with pytest.raises(TemplateError, match=r"template .*: line 2: Duplicate found 'R'"):
        load_template(path)


@pytest.mark.template
def test_the_function_resolves_with_the_emulators_names() -> None:
    template = load_template(TEMPLATE)
    target = _target()

    function, environment, notes = function_environment(template, target)

    parameters = template["Parameters"]
    properties = template["Resources"][FUNCTION_ID]["Properties"]
    assert (function.handler, function.runtime, function.code_uri) == (
        properties["Handler"],
        properties["Runtime"],
        properties["CodeUri"],
    )
    assert environment["ACCOUNT_ID"] == target.scenario.account_id
    assert environment["IDEMPOTENCY_TABLE"] == target.scenario.idempotency_table
    assert environment["DEAD_LETTER_QUEUE_URL"] == target.dead_letter_queue_url
    assert environment["AWS_ENDPOINT_URL"] == target.endpoint_url
    assert environment["TAG_KEY"] == parameters["TagKey"]["Default"]
    assert environment["DRY_RUN"] == parameters["DryRun"]["Default"]
    assert environment["POLICY_MAX_AGE_SECONDS"] == str(
        parameters["PolicyMaxAgeSeconds"]["Default"]
    )
    assert environment["POLICY_PARAMETER"] == ""
    assert environment["AWS_REGION"] == target.scenario.region
    # Dummy credentials: a slip can never carry the developer's keys anywhere.
    assert environment["AWS_ACCESS_KEY_ID"] == "testing"
    assert notes == ()


@pytest.mark.template
def test_parameter_overrides_are_checked_like_cloudformation() -> None:
    template = load_template(TEMPLATE)

    _, environment, _ = function_environment(
        template, _target(), parameter_overrides={"DryRun": "true", "LogLevel": "DEBUG"}
    )
    assert (environment["DRY_RUN"], environment["POWERTOOLS_LOG_LEVEL"]) == ("true", "DEBUG")

    with pytest.raises(TemplateError, match="DryRun='maybe': must be one of true, false"):
        function_environment(template, _target(), parameter_overrides={"DryRun": "maybe"})
    with pytest.raises(TemplateError, match="Dryrun: the template has no such parameter"):
        function_environment(template, _target(), parameter_overrides={"Dryrun": "true"})


SYNTHETIC = {
    "Parameters": {
        "Names": {"Type": "CommaDelimitedList", "Default": "a,b"},
        "Stage": {"Type": "String", "Default": "prod"},
        "Required": {"Type": "String"},
    },
    "Mappings": {"Sizes": {"prod": {"memory": 512}}},
    "Conditions": {
        "IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
        "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]},
    },
    "Globals": {"Function": {"Timeout": 9, "Environment": {"Variables": {"SHARED": "g"}}}},
    "Resources": {
        "Queue": {"Type": "AWS::SQS::Queue"},
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Handler": "m.h",
                "Runtime": "python3.12",
                "MemorySize": {"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "memory"]},
                "Environment": {
                    "Variables": {
                        "SUB": {"Fn::Sub": "${AWS::Region}/${Stage}/${Queue.Arn}/${!Literal}"},
                        "SUB_VARS": {"Fn::Sub": ["${A}-${B}", {"A": "x", "B": {"Ref": "Stage"}}]},
                        "JOINED": {"Fn::Join": [":", {"Ref": "Names"}]},
                        "SECOND": {"Fn::Select": [1, {"Fn::Split": ["/", "p/q/r"]}]},
                        "IF": {"Fn::If": ["NotProd", "dev", "live"]},
                        "GONE": {"Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, "kept"]},
                        "QUEUE": {"Ref": "Queue"},
                        "FLAG": True,
                    }
                },
            },
        },
    },
}


@pytest.mark.template
def test_intrinsic_functions_resolve() -> None:
    function = resolve_function(
        SYNTHETIC,
        "Fn",
        pseudo=PSEUDO,
        resource_attributes={("Queue", "Arn"): "arn:aws:sqs:us-east-1:123456789012:q"},
    )

    assert function.environment == {
        "SHARED": "g",
        "SUB": "us-east-1/prod/arn:aws:sqs:us-east-1:123456789012:q/${Literal}",
        "SUB_VARS": "x-prod",
        "JOINED": "a:b",
        "SECOND": "q",
        "IF": "live",
        "QUEUE": "Queue",
        "FLAG": "true",
    }
    assert (function.timeout, function.memory_size) == (9, 512)


@pytest.mark.template
def test_what_cannot_be_resolved_is_named() -> None:
    with pytest.raises(TemplateError, match=r"Fn\.Environment\.Variables\.SUB: Queue\.Arn"):
        resolve_function(SYNTHETIC, "Fn", pseudo=PSEUDO)
    broken: dict[str, Any] = json.loads(json.dumps(SYNTHETIC))
    broken["Resources"]["Fn"]["Properties"]["Environment"]["Variables"] = {"R": {"Ref": "Required"}}
    with pytest.raises(TemplateError, match=r"Variables\.R: parameter Required has no default"):
        resolve_function(broken, "Fn", pseudo=PSEUDO)
    with pytest.raises(TemplateError, match="no AWS::Serverless::Function Queue"):
        resolve_function(SYNTHETIC, "Queue", pseudo=PSEUDO)


# --- the env-vars file ------------------------------------------------------------------


@pytest.mark.template
def test_env_vars_follow_sams_rules() -> None:
    declared = {"A": "template", "B": "template", "C": "template"}
    env_vars = {
        "Parameters": {"A": "everyone", "B": "everyone", "UNDECLARED": "x"},
        "Fn": {"B": "mine", "C": False},
        "Other": {"A": "not mine"},
    }

    assert apply_env_vars(declared, env_vars, "Fn") == {"A": "everyone", "B": "mine", "C": "false"}


@pytest.mark.template
def test_an_env_vars_file_in_the_wrong_shape_is_named(tmp_path: Path) -> None:
    path = tmp_path / "env.json"
    path.write_text('{"IngressFunction": "AWS_ENDPOINT_URL=x"}', encoding="utf-8")

    with pytest.raises(LocalInvokeError, match=f"env-vars file {path}: IngressFunction: must be"):
        load_env_vars_file(path)


@pytest.mark.template
def test_the_env_vars_file_is_rebased_onto_the_endpoint_this_process_reaches() -> None:
    target = _target("http://127.0.0.1:4999")

    _, environment, notes = function_environment(
        load_template(TEMPLATE), target, env_vars=load_env_vars_file(ENV_VARS)
    )

    shipped = json.loads(ENV_VARS.read_text(encoding="utf-8"))[FUNCTION_ID]
    container_endpoint = shipped["AWS_ENDPOINT_URL"]
    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4999"
    assert environment["DEAD_LETTER_QUEUE_URL"] == shipped["DEAD_LETTER_QUEUE_URL"].replace(
        container_endpoint, "http://127.0.0.1:4999"
    )
    assert environment["POWERTOOLS_TRACE_DISABLED"] == shipped["POWERTOOLS_TRACE_DISABLED"]
    assert notes == (
        f"{container_endpoint} (a container's view) re-based to http://127.0.0.1:4999",
    )


@pytest.mark.template
def test_variables_sam_ignores_are_reported_and_a_policy_file_says_what_to_do(
    tmp_path: Path,
) -> None:
    path = tmp_path / "env.json"
    path.write_text(
        json.dumps(
            {
                "Parameters": {"EXTRA": "1"},
                FUNCTION_ID: {"POLICY_FILE": str(tmp_path / "mine.yaml"), "DRY_RUN": "true"},
                "ReconcileFunction": {"UNDECLARED_ELSEWHERE": "x"},
            }
        ),
        encoding="utf-8",
    )

    _, environment, notes = function_environment(
        load_template(TEMPLATE), _target(), env_vars=load_env_vars_file(path)
    )

    assert "POLICY_FILE" not in environment
    assert environment["DRY_RUN"] == "true"
    [extra, policy_file] = notes
    assert extra.startswith(f"Parameters.EXTRA in the env-vars file is ignored: {FUNCTION_ID}")
    assert policy_file.startswith(f"{FUNCTION_ID}.POLICY_FILE in the env-vars file is ignored")
    assert "cache-ingress policy validate FILE" in policy_file


# --- invoking against a running emulator -----------------------------------------------


@pytest.fixture(scope="class")
def running() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as aws:
        yield aws


@pytest.fixture
def aws(running: EmbeddedAws) -> EmbeddedAws:
    running.reset()
    return running


def _invoke(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    status = main(["invoke", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _section(output: str, title: str, following: str) -> str:
    return output.split(title, 1)[1].split(following, 1)[0]


@pytest.mark.cli
class TestAgainstARunningEmulator:
    """One embedded AWS for the class, reset before each test."""

    def test_invoke_prints_the_log_lines_the_summary_and_the_state(
        self, aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status, output, _ = _invoke(
            capsys, "events/tag-change-authorized.json", "--endpoint-url", aws.endpoint_url
        )

        assert status == 0
        logs = [json.loads(line) for line in _section(output, "lines)\n", "\n\n").splitlines()]
        [decision_log] = [line for line in logs if line.get("message") == "ingress authorized"]
        assert decision_log["group_id"] == ORDERS_GROUP
        assert decision_log["function_name"] == FUNCTION_ID
        summary = json.loads(_section(output, "summary (the function's response)\n", "\n\n"))
        assert summary["status"] == "completed"
        assert [d["outcome"] for d in summary["decisions"]] == ["authorized"]
        assert re.search(
            rf"orders-cache-sg +\+ orders-app \({ORDERS_GROUP}, owner 123456789012\) authorized",
            output,
        )
        assert "payments-cache-sg  (no ingress)" in output
        assert "dead-letter queue cache-ingress-dlq: empty" in output
        # It ran against that emulator: the grant is there.
        [group] = aws.client("elasticache").describe_cache_security_groups(
            CacheSecurityGroupName="orders-cache-sg"
        )["CacheSecurityGroups"]
        assert [p["EC2SecurityGroupName"] for p in group["EC2SecurityGroups"]] == ["orders-app"]

    def test_a_vpc_grant_shows_the_rule_it_added_to_the_caches_security_group(
        self, aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
    ) -> None:
        event = load_event("vpc-tag-change-authorized.json")
        [app_group] = event["resources"]
        app_group = app_group.rsplit("/", 1)[1]

        status, output, _ = _invoke(
            capsys, "events/vpc-tag-change-authorized.json", "--endpoint-url", aws.endpoint_url
        )

        assert status == 0
        section = _section(output, "VPC caches' security groups\n", "dead-letter queue")
        rule = (
            rf"\+ tcp/6379 from {app_group} \(sessions-app\)  "
            rf"\"cache-ingress sessions event {event['id']}\""
        )
        assert re.search(rf"sg-\w+ \(used by sessions-redis\)\n +{rule}\n", section)
        assert "(used by legacy-memcached)\n      (no ingress from security groups)" in section

        # Invoked again, the rule is already there: listed, not marked as added by this run.
        status, output, _ = _invoke(
            capsys, "events/vpc-tag-change-authorized.json", "--endpoint-url", aws.endpoint_url
        )
        section = _section(output, "VPC caches' security groups\n", "dead-letter queue")
        assert status == 0
        assert re.search(rf"\n {{6}}tcp/6379 from {app_group} \(sessions-app\)", section)
        assert "+ tcp/6379" not in section

    def test_a_dead_lettered_event_is_shown_in_the_queue_and_left_there(
        self, aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
    ) -> None:
        event = load_event("tag-change-cache-group-missing.json")

        status, output, _ = _invoke(
            capsys, "events/tag-change-cache-group-missing.json", "--endpoint-url", aws.endpoint_url
        )

        assert status == 0
        assert "dead-letter queue cache-ingress-dlq: 1 message(s), 1 from this run" in output
        assert f"GrantFailed  event {event['id']}: 1 grant(s) failed permanently" in output
        assert f"inventory-app ({INVENTORY_GROUP})" in output
        attributes = aws.client("sqs").get_queue_attributes(
            QueueUrl=aws.world.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "1"

    def test_the_env_vars_file_and_parameter_overrides_reach_the_function(
        self, aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        env_file = tmp_path / "env.json"
        shipped = json.loads(ENV_VARS.read_text(encoding="utf-8"))
        shipped[FUNCTION_ID]["DRY_RUN"] = "true"
        env_file.write_text(json.dumps(shipped), encoding="utf-8")

        status, output, _ = _invoke(
            capsys,
            "events/tag-change-authorized.json",
            "--endpoint-url",
            aws.endpoint_url,
            "--env-vars",
            str(env_file),
            "--parameter-overrides",
            "LogLevel=WARNING",
        )

        assert status == 0
        summary = json.loads(_section(output, "summary (the function's response)\n", "\n\n"))
        assert summary["dryRun"] is True
        assert [d["outcome"] for d in summary["decisions"]] == ["dry-run"]
        # Only metric lines (the ColdStart one too on a cold start, whichever test came
        # first in this process): the INFO decision line is below WARNING.
        logs = [json.loads(line) for line in _section(output, "lines)\n", "\n\n").splitlines()]
        assert logs
        assert [line for line in logs if "_aws" not in line] == []
        assert "re-based to " + aws.endpoint_url in output
        assert "orders-cache-sg    (no ingress)" in output

    def test_the_parameter_overrides_of_docs_local_md_as_written(
        self, aws: EmbeddedAws, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # docs/local.md: cache-ingress invoke events/tag-change-authorized.json
        #     --parameter-overrides DryRun=true LogLevel=WARNING
        for overrides in (["DryRun=true", "LogLevel=WARNING"], ["DryRun=true LogLevel=WARNING"]):
            status, output, errors = _invoke(
                capsys,
                "events/tag-change-authorized.json",
                "--endpoint-url",
                aws.endpoint_url,
                "--parameter-overrides",
                *overrides,
            )

            assert status == 0, errors
            summary = json.loads(_section(output, "summary (the function's response)\n", "\n\n"))
            assert [d["outcome"] for d in summary["decisions"]] == ["dry-run"]
            logs = _section(output, "lines)\n", "\n\n").splitlines()
            assert not [line for line in logs if json.loads(line).get("level") == "INFO"]
            assert "orders-cache-sg    (no ingress)" in output

    def test_the_developers_shell_does_not_leak_into_the_function(
        self,
        aws: EmbeddedAws,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        # Each would break the run if the function saw it; in Lambda it would not exist.
        closed = f"http://127.0.0.1:{_closed_port()}"
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", closed)
        monkeypatch.setenv("POLICY_FILE", "/nonexistent/policy.yaml")
        config = tmp_path / "config"
        config.write_text(
            f"[profile elsewhere]\nregion = eu-west-1\nendpoint_url = {closed}\n", encoding="utf-8"
        )
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        monkeypatch.setenv("AWS_PROFILE", "elsewhere")
        before = dict(os.environ)

        status, output, _ = _invoke(
            capsys, "events/tag-change-authorized.json", "--endpoint-url", aws.endpoint_url
        )

        assert status == 0
        summary = json.loads(_section(output, "summary (the function's response)\n", "\n\n"))
        assert [d["outcome"] for d in summary["decisions"]] == ["authorized"]
        assert dict(os.environ) == before

    def test_a_function_that_raises_exits_1_and_says_lambda_would_retry(
        self, aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        # A malformed event must be dead-lettered; with no such queue the send fails, and the
        # function raises rather than lose the event.
        env_file = tmp_path / "env.json"
        env_file.write_text(
            json.dumps(
                {FUNCTION_ID: {"DEAD_LETTER_QUEUE_URL": f"{aws.endpoint_url}/123456789012/none"}}
            ),
            encoding="utf-8",
        )

        status, output, _ = _invoke(
            capsys,
            "events/malformed-missing-detail.json",
            "--endpoint-url",
            aws.endpoint_url,
            "--env-vars",
            str(env_file),
        )

        assert status == 1
        assert "error: TransientFailureError: event could not be dead-lettered" in output
        assert "Lambda retries an async event" in output
        assert "dead-letter queue cache-ingress-dlq: empty" in output

    def test_a_running_emulator_from_another_scenario_is_refused(
        self, aws: EmbeddedAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        scenario = tmp_path / "other.yaml"
        text = DEFAULT_SCENARIO.read_text(encoding="utf-8").replace(
            "dead_letter_queue: cache-ingress-dlq", "dead_letter_queue: q"
        )
        scenario.write_text(text, encoding="utf-8")

        status, _, errors = _invoke(
            capsys,
            "events/tag-change-authorized.json",
            "--endpoint-url",
            aws.endpoint_url,
            "--scenario",
            str(scenario),
        )

        assert status == 2
        assert f"the AWS at {aws.endpoint_url} has no queue 'q'" in errors


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.cli
def test_nothing_answering_at_the_endpoint_exits_2_with_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"

    status, output, errors = _invoke(
        capsys, "events/tag-change-authorized.json", "--endpoint-url", endpoint
    )

    assert status == 2
    assert output == ""
    assert f"cache-ingress invoke: nothing answers at {endpoint}" in errors
    assert "cache-ingress emulator" in errors


@pytest.mark.cli
def test_a_bad_parameter_override_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, errors = _invoke(
        capsys, "events/tag-change-authorized.json", "--parameter-overrides", "DryRun"
    )

    assert status == 2
    assert "--parameter-overrides 'DryRun': expected KEY=VALUE" in errors


# --- started for the run, and the demo (own processes: one embedded AWS per process) ----


@pytest.mark.cli
def test_invoke_starts_an_embedded_aws_for_the_run_when_given_no_endpoint() -> None:
    completed = run_cli(["invoke", "events/tag-change-required-tag-missing.json"])

    assert completed.returncode == 0, completed.stderr
    assert "(embedded, started for this run)" in completed.stdout
    summary = json.loads(_section(completed.stdout, "summary (the function's response)\n", "\n\n"))
    [decision] = summary["decisions"]
    assert (decision["outcome"], decision["rule"]) == ("denied", "required-tags")


@pytest.mark.cli
def test_the_demo_walks_through_its_steps_and_exits_0() -> None:
    completed = run_cli(["demo"])

    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = completed.stdout
    steps = re.findall(r"^(\d)\. (.+)$", output, flags=re.MULTILINE)
    assert [number for number, _ in steps] == ["1", "2", "3", "4", "5", "6", "7"]
    assert output.count("\n   ok\n") == 7
    assert "orders-cache-sg now admits orders-app" in output
    assert "orders: denied by rule required-tags" in output
    assert "dead-letter queue cache-ingress-dlq (GrantFailed)" in output
    assert "1 replayed, 1 succeeded, 0 still failing" in output
    assert "inventory-cache-sg now admits inventory-app" in output
    # With revoke: true, the removed tag revokes the grant of step 1; the ledger says so.
    assert "orders: revoked; the group's cache-ingress tag no longer names orders" in output
    assert "result    orders-cache-sg admits nothing" in output
    assert re.search(r"ledger    orders-app into orders-cache-sg: made at \S+ by event", output)
    # Member accounts: forwarded, granted in the cache account with the member as owner.
    assert "in member account 111122223333" in output
    assert "-> bus cache-ingress of account 123456789012" in output
    assert "now admits checkout-app of account 111122223333" in output
    assert "ledger    checkout-app of account 111122223333 into orders-cache-sg: in-force" in output
    assert "denied by rule account-agreement" in output
    assert "7 of 7 steps had their expected outcome." in output
    assert '"message":' not in output  # log lines only with --verbose


@pytest.mark.cli
def test_the_demo_exits_1_when_a_step_goes_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    # The allowed tag, checked as if it had to be denied.
    step = demo.Step(
        "A step whose outcome differs",
        "tag-change-authorized.json",
        demo._denied_check,
        demo._unchanged_result,
    )
    monkeypatch.setattr(demo, "STEPS", (step,))
    monkeypatch.setattr(demo, "replay_step", lambda session: None)
    monkeypatch.setattr(demo, "MEMBER_STEPS", ())
    monkeypatch.setattr(demo, "revoke_step", lambda session: None)
    out = io.StringIO()

    status = demo.run(argparse.Namespace(verbose=True), stdout=out)

    assert status == 1
    assert "UNEXPECTED: no decision was 'denied' by a named rule" in out.getvalue()
    assert "UNEXPECTED: a cache security group gained ingress" in out.getvalue()
    assert '   log       {"level":"INFO"' in out.getvalue()
    assert "0 of 1 steps had their expected outcome." in out.getvalue()


@pytest.mark.unit
def test_docs_say_what_every_sample_event_does() -> None:
    docs = (REPO_ROOT / "docs" / "local.md").read_text(encoding="utf-8")

    described = set(re.findall(r"^\| `([a-z0-9-]+\.json)` \|", docs, flags=re.MULTILINE))

    assert described == set(event_names())


class _RecordingEnvironment(dict[str, str]):
    """An environment that notes every name read from it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


@pytest.mark.unit
def test_the_settings_the_template_leaves_undeclared_are_the_ones_kept_from_the_shell() -> None:
    _, environment, _ = function_environment(load_template(TEMPLATE), _target())
    recording = _RecordingEnvironment(environment)

    Settings.from_environ(recording)

    assert recording.read - set(environment) == set(UNDECLARED_SETTINGS)
