"""Errors that say what to do, alike in every command that reaches AWS: nothing answers at
--endpoint-url, or there are no credentials. Each is a usage error (exit status 2) on one
line of stderr, before anything is read or changed and before any log line.

Each case runs the command as a person does, in a child process whose environment holds no
AWS credentials or configuration of the machine's.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.support.processes import CHILD_DEADLINE_SECONDS, REPO_ROOT, cli_command

pytestmark = pytest.mark.cli

QUEUE_PATH = "/123456789012/cache-ingress-dlq"


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(arguments: list[str], *, credentials: bool) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") or name == "AWS_CA_BUNDLE"
    }
    environment.update(
        {
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    if credentials:
        environment.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    return subprocess.run(  # noqa: S603 - our own console script
        cli_command(*arguments),
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_SECONDS,
        check=False,
    )


def commands(endpoint: str) -> dict[str, list[str]]:
    queue = ["--queue-url", endpoint + QUEUE_PATH, "--endpoint-url", endpoint]
    return {
        "peek": ["peek", *queue],
        "replay": ["replay", "--local", *queue, "--idempotency-table", "t"],
        "reconcile": ["reconcile", "--dry-run", "--endpoint-url", endpoint],
    }


@pytest.mark.parametrize("command", ["peek", "replay", "reconcile"])
def test_nothing_answering_at_the_endpoint_says_to_start_the_emulator(command: str) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"

    completed = run(commands(endpoint)[command], credentials=True)

    assert completed.returncode == 2
    assert completed.stdout == ""
    [line] = completed.stderr.splitlines()
    assert line.startswith(f"cache-ingress {command}: nothing answers at {endpoint}")
    assert "start it with `cache-ingress emulator`" in line


@pytest.mark.parametrize("command", ["peek", "replay", "reconcile"])
def test_missing_credentials_say_which_to_give(command: str) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"

    completed = run(commands(endpoint)[command], credentials=False)

    assert completed.returncode == 2
    [line] = completed.stderr.splitlines()
    assert line.startswith(f"cache-ingress {command}: no AWS credentials")
    # Against an endpoint (the emulator), any credentials do: the message says so.
    assert "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing" in line


def test_missing_credentials_against_aws_name_the_ways_to_give_them() -> None:
    completed = run(["reconcile", "--dry-run"], credentials=False)

    assert completed.returncode == 2
    [line] = completed.stderr.splitlines()
    assert line.startswith("cache-ingress reconcile: no AWS credentials")
    assert "--profile" in line
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line
