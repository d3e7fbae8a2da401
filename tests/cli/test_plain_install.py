"""`pip install .` without the emulator extra: the operator's commands work, the emulator
commands say what to install, and `--help` loads no command it does not show.

The child runs the console script's own `main` in a Python where the extra's packages cannot
be imported (as after a plain install), against an embedded AWS served from this process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from cache_ingress.settings import BUNDLED_POLICY
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws
from tests.cli import on_failure_record
from tests.support.events import ORDERS_GROUP, tag_change
from tests.support.processes import CHILD_DEADLINE_SECONDS, REPO_ROOT

pytestmark = pytest.mark.cli

EXTRA_PACKAGES = ("moto", "cfnlint")
# Runs `cache-ingress ARGS` with the extra's packages unimportable; prints, after the
# command's own output, which of the project's and the extra's modules it loaded.
_WITHOUT_EXTRA = """
import json, sys
for name in {packages!r}:
    sys.modules[name] = None  # import fails: ModuleNotFoundError, as when not installed
from cache_ingress_tools.cli import main
status = main()
loaded = sorted(
    m for m in sys.modules
    if m.startswith(("cache_ingress", "boto3", "moto", "cfnlint")) and sys.modules[m]
)
print("LOADED " + json.dumps(loaded))
sys.exit(status)
"""


def without_extra(*arguments: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    code = _WITHOUT_EXTRA.format(packages=EXTRA_PACKAGES)
    completed = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-c", code, *arguments],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        },
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_SECONDS,
        check=False,
    )
    loaded: list[str] = []
    for line in completed.stdout.splitlines():
        if line.startswith("LOADED "):
            loaded = json.loads(line.removeprefix("LOADED "))
    return completed, loaded


@pytest.fixture(scope="module")
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as running:
        yield running


def test_help_lists_every_command_and_loads_none() -> None:
    completed, loaded = without_extra("--help")

    assert completed.returncode == 0, completed.stderr
    for command in (
        "demo",
        "emulator",
        "explain",
        "invoke",
        "peek",
        "plan",
        "policy",
        "reconcile",
        "replay",
    ):
        assert re.search(rf"^    {command}\b", completed.stdout, re.MULTILINE), command
    assert [m for m in loaded if m.startswith("cache_ingress_tools.commands.")] == []
    assert not [m for m in loaded if m.startswith("boto3")]


@pytest.mark.parametrize("command", ["peek", "replay", "reconcile", "policy", "explain", "plan"])
def test_an_operators_command_shows_its_help_without_the_extra(command: str) -> None:
    completed, loaded = without_extra(command, "--help")

    assert completed.returncode == 0, completed.stderr
    assert f"usage: cache-ingress {command}" in completed.stdout
    others = {
        "peek",
        "replay",
        "reconcile",
        "policy",
        "explain",
        "plan",
        "demo",
        "emulator",
        "invoke",
    } - {command}
    assert not {f"cache_ingress_tools.commands.{other}" for other in others} & set(loaded)


@pytest.mark.parametrize(
    "arguments",
    [["invoke", "events/tag-change-authorized.json"], ["emulator"], ["demo"]],
    ids=["invoke", "emulator", "demo"],
)
def test_an_emulator_command_says_what_to_install(arguments: list[str]) -> None:
    completed, _ = without_extra(*arguments)

    assert completed.returncode == 2
    assert "pip install 'cache-ingress[emulator]'" in completed.stderr
    assert f"cache-ingress {arguments[0]}: needs the embedded AWS" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_operators_commands_run_without_the_extra(aws: EmbeddedAws, tmp_path: Path) -> None:
    aws.reset()
    queue_url = aws.world.dead_letter_queue_url
    boto3.client(
        "sqs", endpoint_url=aws.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS
    ).send_message(
        QueueUrl=queue_url,
        MessageBody=on_failure_record(tag_change(ORDERS_GROUP, event_id="e-plain")),
    )
    queue = ["--queue-url", queue_url, "--endpoint-url", aws.endpoint_url, "--wait-seconds", "0"]

    peek, peek_loaded = without_extra("peek", *queue, "--json")
    replay, _ = without_extra(
        "replay",
        *queue,
        "--local",
        "--idempotency-table",
        aws.scenario.idempotency_table,
        "--ledger-table",
        str(aws.scenario.ledger_table),
    )
    reconcile, _ = without_extra("reconcile", "--endpoint-url", aws.endpoint_url, "--dry-run")
    explain, explain_loaded = without_extra(
        "explain", "--endpoint-url", aws.endpoint_url, "--group", ORDERS_GROUP
    )
    same = tmp_path / "same-policy.yaml"
    same.write_text(BUNDLED_POLICY.read_text(encoding="utf-8"), encoding="utf-8")
    plan, plan_loaded = without_extra(
        "plan", "--endpoint-url", aws.endpoint_url, "--policy-file", str(same)
    )

    assert peek.returncode == 0, peek.stderr
    assert json.loads(peek.stdout.splitlines()[0])["eventId"] == "e-plain"
    assert not [m for m in peek_loaded if m.startswith(EXTRA_PACKAGES)]
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1: succeeded 1" in replay.stdout
    # The default scenario has pairs that fail (caches that do not exist): exit status 1.
    assert reconcile.returncode == 1, reconcile.stderr
    assert "completed (dry run: nothing changed)" in reconcile.stdout
    assert explain.returncode == 0, explain.stderr
    assert f"{ORDERS_GROUP} orders: allowed" in explain.stdout
    assert not [m for m in explain_loaded if m.startswith(EXTRA_PACKAGES)]
    assert plan.returncode == 0, plan.stderr
    assert "no change: every tagged pair stands as it does" in plan.stdout
    assert not [m for m in plan_loaded if m.startswith(EXTRA_PACKAGES)]


def test_policy_validate_runs_without_the_extra_and_template_checks_say_what_to_install() -> None:
    completed, loaded = without_extra("policy", "validate")
    with_template, _ = without_extra("policy", "validate", "--template", "template.yaml")

    assert completed.returncode == 0, completed.stderr
    assert "policy.yaml: valid" in completed.stdout
    assert not [m for m in loaded if m.startswith((*EXTRA_PACKAGES, "boto3"))]
    assert with_template.returncode == 2
    assert "pip install 'cache-ingress[emulator]'" in with_template.stderr
    assert "Traceback" not in with_template.stderr


def test_the_command_table_names_every_command_module() -> None:
    import pkgutil

    from cache_ingress_tools import commands

    modules = {
        m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")
    }
    assert modules == set(commands.COMMANDS)
