"""AWS-call tracing is a stack choice (TraceAwsCalls, docs/benchmarks.md): off by default,
on when the template sets POWERTOOLS_TRACE_DISABLED=false.

Each case is a fresh interpreter started as a Lambda execution environment starts the
function: the code as the package holds it (`make code`: the bundled policy as JSON), the
template's variables, LAMBDA_TASK_ROOT, a sampled trace header, and the X-Ray daemon address
pointed at a UDP socket this test reads. AWS is answered in process by the
benchmarks' hook (real botocore serialization and parsing, no sockets), so the one-grant
event makes its four calls. What must hold:

- off: the X-Ray SDK, wrapt and PyYAML are never imported, and nothing is sent to the daemon;
- on: botocore is patched and each of the four AWS calls reaches the daemon as a subsegment;
- either way: the same outcome, the same AWS calls, and the same log lines and metrics.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# The one-grant event's AWS calls, in order; X-Ray names each subsegment by its service.
CALL_ORDER = (
    "ec2.DescribeSecurityGroups",
    "dynamodb.BatchGetItem",  # the holds on the pair about to be granted
    "dynamodb.PutItem",  # the idempotency record, in progress
    "dynamodb.UpdateItem",  # the ledger entry, pending
    "elasticache.AuthorizeCacheSecurityGroupIngress",
    "dynamodb.UpdateItem",  # the ledger entry, in force
    "dynamodb.UpdateItem",  # the idempotency record, completed
)
CALLS = dict(Counter(CALL_ORDER))
TRACED_SERVICES = [call.split(".")[0] for call in CALL_ORDER]
NEVER_WHEN_OFF = ("aws_xray_sdk", "wrapt", "yaml")

COLD_START = r"""
import json, sys
from benchmarks import world
from benchmarks.answers import BenchContext, Responder

responder = Responder()
responder.install()
from cache_ingress import observability
from cache_ingress.handler import lambda_handler
from botocore.client import BaseClient

summary = lambda_handler(world.events("one grant", 1, "tracing")[0], BenchContext())
handler = lambda event, context: None
report = {
    "outcomes": [d["outcome"] for d in summary["decisions"]],
    "calls": dict(responder.calls),
    "loaded": sorted({name.split(".")[0] for name in sys.modules}),
    # The X-Ray SDK patches with wrapt, which replaces the method by a FunctionWrapper.
    "botocore_patched": type(BaseClient.__dict__["_make_api_call"]).__name__,
    "handler_wrapped": observability.trace_handler(handler) is not handler,
}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(report, out)
"""


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The function's code as `sam build` packages it."""
    built = tmp_path_factory.mktemp("task-root")
    subprocess.run(  # noqa: S603 - make, a fixed target
        [
            *("make", "--no-print-directory", "-C", "functions/authorizer", "code"),
            *(f"ARTIFACTS_DIR={built}", f"PYTHON={sys.executable}"),
        ],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return built


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    """A UDP socket standing in for the X-Ray daemon."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        yield sock


def _received(sock: socket.socket) -> list[dict[str, Any]]:
    documents = []
    while True:
        try:
            datagram = sock.recv(65536)
        except TimeoutError:
            return documents
        # Each datagram is a JSON header line, then the segment document.
        _, _, body = datagram.decode().partition("\n")
        documents.append(json.loads(body))


def _cold_start(
    tmp_path: Path, task_root: Path, daemon: socket.socket, *, trace_disabled: str
) -> dict[str, Any]:
    from benchmarks import world

    report = tmp_path / f"report-{trace_disabled}.json"
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join((str(task_root), str(REPO))),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        **world.lambda_environment(tracing=False),
        "LAMBDA_TASK_ROOT": str(task_root),
        "POWERTOOLS_TRACE_DISABLED": trace_disabled,
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
    }
    completed = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", COLD_START, str(report)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    loaded["output"] = [json.loads(line) for line in completed.stdout.splitlines()]
    loaded["segments"] = _received(daemon)
    return loaded


def _without_clocks(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log lines and EMF documents with their timestamps removed."""
    stripped = []
    for document in documents:
        copy = {key: value for key, value in document.items() if key != "timestamp"}
        if "_aws" in copy:
            copy["_aws"] = {k: v for k, v in copy["_aws"].items() if k != "Timestamp"}
        stripped.append(copy)
    return stripped


def test_by_default_no_tracing_module_is_loaded_and_nothing_is_sent(
    tmp_path: Path, task_root: Path, daemon: socket.socket
) -> None:
    off = _cold_start(tmp_path, task_root, daemon, trace_disabled="true")

    assert off["outcomes"] == ["authorized"]
    assert off["calls"] == CALLS
    assert not set(NEVER_WHEN_OFF) & set(off["loaded"])
    assert off["botocore_patched"] == "function"
    assert off["handler_wrapped"] is False
    assert off["segments"] == []


def test_with_trace_aws_calls_every_aws_call_is_a_subsegment(
    tmp_path: Path, task_root: Path, daemon: socket.socket
) -> None:
    on = _cold_start(tmp_path, task_root, daemon, trace_disabled="false")

    assert on["outcomes"] == ["authorized"]
    assert on["calls"] == CALLS
    assert "aws_xray_sdk" in on["loaded"]
    assert on["botocore_patched"] == "FunctionWrapper"
    assert on["handler_wrapped"] is True
    subsegments = [s for s in on["segments"] if s.get("type") == "subsegment"]
    assert [s["name"] for s in subsegments] == TRACED_SERVICES
    assert [s["aws"]["operation"] for s in subsegments] == [
        call.split(".")[1] for call in CALL_ORDER
    ]


def test_tracing_changes_no_log_line_and_no_metric(
    tmp_path: Path, task_root: Path, daemon: socket.socket
) -> None:
    off = _cold_start(tmp_path, task_root, daemon, trace_disabled="true")
    on = _cold_start(tmp_path, task_root, daemon, trace_disabled="false")

    assert off["output"], "the function wrote no log line"
    assert _without_clocks(on["output"]) == _without_clocks(off["output"])
