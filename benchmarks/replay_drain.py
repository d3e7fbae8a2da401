"""Drain one dead-letter queue twice: one message at a time, then with the replay engine.

    .venv/bin/python benchmarks/replay_drain.py [--messages 200] [--concurrency 16]
                                                [--latency-ms 0,20,50] [--servers 2]

AWS is the project's embedded AWS (moto's ThreadedMotoServer on 127.0.0.1 with the
cache-security-group emulation), run in child processes so that its work does not share
this process's interpreter lock, as AWS would not; the services are spread over
`--servers` of them (SQS and DynamoDB on one, EC2 and ElastiCache on the other by default),
because one moto process answers on one core at most. Before each drain they are reset and
seeded again and the queue is filled with the same messages (every dead-letter format; events that
grant, that are already granted and that are denied), so both drains do the same work.

Each message is processed by the real `replay --local` path: the Authorizer built by
`cache_ingress_tools.commands.replay.local_replayer`, with its idempotency records, EC2
describe and cache-security-group authorize calls all going to the server.

- sequential: receive 1, process, delete 1, until the queue is empty;
- engine: `cache_ingress_tools.replay.replay` (receive and delete in batches of 10,
  `--concurrency` messages in flight).

`--latency-ms` adds a fixed delay before every request this process sends, standing in for
the network round trip to AWS (a few ms inside a region, tens of ms from a workstation); 0
measures the bare localhost case. The figures are rates and their ratio, not assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:cache-ingress"


# --- the server, in a child process -------------------------------------------------------


def serve() -> None:
    """Child mode: run the embedded AWS; `reset` on stdin resets and seeds it again."""
    from cache_ingress_tools.emulator.server import EmbeddedAws

    with EmbeddedAws(port=0) as aws:
        world = aws.world
        print(
            json.dumps(
                {
                    "endpoint": aws.endpoint_url,
                    "queue": world.dead_letter_queue_url,
                    "table": world.scenario.idempotency_table,
                    "region": world.scenario.region,
                }
            ),
            flush=True,
        )
        for line in sys.stdin:
            if line.strip() == "reset":
                aws.reset()
                print("ready", flush=True)


@dataclass
class Server:
    process: subprocess.Popen[str]
    endpoint: str
    queue: str

    def send_reset(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("reset\n")
        self.process.stdin.flush()

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"


# moto serves each request under one interpreter lock, so one server process is one core at
# most; AWS is not. Services are spread over the server processes (each seeded alike).
SERVICE_ORDER = ("sqs", "ec2", "dynamodb", "elasticache")


@dataclass
class Servers:
    servers: list[Server]
    table: str
    region: str

    def endpoint_for(self, service: str) -> str:
        index = SERVICE_ORDER.index(service) if service in SERVICE_ORDER else 1
        return self.servers[index % len(self.servers)].endpoint

    @property
    def queue(self) -> str:
        return self.servers[SERVICE_ORDER.index("sqs") % len(self.servers)].queue

    def reset(self) -> None:
        for server in self.servers:
            server.send_reset()
        for server in self.servers:
            server.wait_ready()

    def cpu_seconds(self) -> float | None:
        times = [server_cpu_seconds(server.process.pid) for server in self.servers]
        return None if None in times else sum(t for t in times if t is not None)


@contextmanager
def servers(count: int) -> Iterator[Servers]:
    processes = [
        subprocess.Popen(  # noqa: S603 - this file, with this interpreter
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(count)
    ]
    try:
        started = []
        for process in processes:
            assert process.stdout is not None
            ready = json.loads(process.stdout.readline())
            started.append(Server(process, ready["endpoint"], ready["queue"]))
        yield Servers(started, ready["table"], ready["region"])
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in processes:
            process.wait(timeout=60)


# --- the messages -------------------------------------------------------------------------


def messages(count: int) -> list[tuple[str, dict[str, Any]]]:
    """(body, attributes) for `count` distinct events, cycling through the formats."""
    from cache_ingress.envelope import envelope_body, function_envelope

    templates = [
        json.loads((EVENTS / name).read_text(encoding="utf-8"))
        for name in (
            "tag-change-authorized.json",  # orders-app into orders-cache-sg
            "cloudtrail-create-tags.json",  # payments-app, by an allowed principal
            "tag-change-required-tag-missing.json",  # denied by the policy
        )
    ]

    def text(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value}

    built = []
    for index in range(count):
        event = copy.deepcopy(templates[index % len(templates)])
        event["id"] = f"bench-{index:05d}"
        kind = index % 4
        if kind == 0:  # Lambda on-failure destination
            record = function_envelope(
                event, error_type="TransientFailureError", error_message="throttled",
                request_id=f"r-{index}", function_arn=FUNCTION_ARN,
            )  # fmt: skip
            record["requestContext"]["condition"] = "RetriesExhausted"
            built.append((json.dumps(record), {}))
        elif kind == 1:  # the function's own dead letter
            envelope = function_envelope(
                event, error_type="GrantFailed", error_message="CacheSecurityGroupNotFound",
                request_id=f"r-{index}", function_arn=FUNCTION_ARN,
            )  # fmt: skip
            built.append((envelope_body(envelope), {}))
        elif kind == 2:  # EventBridge target dead-letter queue
            built.append(
                (
                    json.dumps(event),
                    {
                        "RULE_ARN": text("arn:aws:events:us-east-1:123456789012:rule/r"),
                        "TARGET_ARN": text(FUNCTION_ARN),
                        "ERROR_CODE": text("SDK_CLIENT_ERROR"),
                        "ERROR_MESSAGE": text("Rate exceeded"),
                        "EXHAUSTED_RETRY_CONDITION": text("MaximumRetryAttempts"),
                        "RETRY_ATTEMPTS": text("185"),
                    },
                )
            )
        else:  # Lambda's legacy dead-letter queue
            built.append(
                (
                    json.dumps(event),
                    {
                        "RequestID": text(f"r-{index}"),
                        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                        "ErrorMessage": text("Task timed out"),
                    },
                )
            )
    return built


def fill(sqs: Any, queue_url: str, bodies: list[tuple[str, dict[str, Any]]]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": body, **({"MessageAttributes": a} if a else {})}
            for i, (body, a) in enumerate(bodies[start : start + 10])
        ]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]


# --- the two drains -----------------------------------------------------------------------


@dataclass
class Drained:
    seconds: float
    succeeded: int
    requests: int
    client_cpu_seconds: float  # this process (the tool and the function code)
    server_cpu_seconds: float | None  # the emulated AWS; None where /proc is missing


def server_cpu_seconds(pid: int) -> float | None:
    """utime + stime of the server process (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RequestMeter:
    """Counts every request this process sends, and delays each by the simulated latency."""

    def __init__(self, latency_seconds: float) -> None:
        self.latency = latency_seconds
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, **_: Any) -> None:
        with self._lock:
            self.count += 1
        if self.latency:
            time.sleep(self.latency)


def prepare(
    target: Servers, concurrency: int, meter: RequestMeter
) -> tuple[Any, Callable[..., Any]]:
    """A session for the run (metered), its SQS client and the real --local processor."""
    import boto3

    from cache_ingress_tools.commands._dead_letter_queue import Connection
    from cache_ingress_tools.commands.replay import local_replayer
    from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS

    class ShardedConnection(Connection):
        def endpoint_for(self, service: str) -> str | None:
            return target.endpoint_for(service)

    session = boto3.Session(region_name=target.region, **DUMMY_CREDENTIALS)
    session.events.register("before-send", meter)
    connection = ShardedConnection(session, None, pool_size=concurrency + 4)
    options = argparse.Namespace(
        stack_name=None,
        account_id="123456789012",
        idempotency_table=target.table,
        policy_file=None,
        policy_parameter=None,
        tag_key=None,
    )
    processor = local_replayer(options, connection, target.queue, {})
    return connection.client("sqs"), processor


def drain_sequentially(sqs: Any, queue_url: str, processor: Callable[..., Any]) -> int:
    from cache_ingress_tools.dead_letters import DeadLetter, read_dead_letter

    succeeded = 0
    while True:
        received = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=1,
            VisibilityTimeout=900,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return succeeded
        [message] = received
        letter = read_dead_letter(message)
        assert isinstance(letter, DeadLetter), letter
        result = processor(letter)
        assert result.succeeded, result
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        succeeded += 1


def drain_with_engine(
    sqs: Any, queue_url: str, processor: Callable[..., Any], concurrency: int
) -> int:
    from cache_ingress_tools.replay import DeadLetterQueue, ReplayOptions, replay

    report = replay(
        DeadLetterQueue(sqs, queue_url),
        processor,
        ReplayOptions(concurrency=concurrency, wait_seconds=0),
    )
    assert report.exit_status == 0, report.summary()
    return report.counts["succeeded"]


def run_drain(
    target: Servers, bodies: list[tuple[str, dict[str, Any]]], latency: float, concurrency: int,
    engine: bool,
) -> Drained:  # fmt: skip
    target.reset()
    meter = RequestMeter(latency)
    sqs, processor = prepare(target, concurrency, meter)
    fill(sqs, target.queue, bodies)
    meter.count = 0
    server_before = target.cpu_seconds()
    cpu_before = time.process_time()
    started = time.perf_counter()
    # The function's metric flushes (EMF lines printed to stdout) are not part of the output.
    with contextlib.redirect_stdout(io.StringIO()):
        if engine:
            succeeded = drain_with_engine(sqs, target.queue, processor, concurrency)
        else:
            succeeded = drain_sequentially(sqs, target.queue, processor)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    server_after = target.cpu_seconds()
    left = sqs.get_queue_attributes(
        QueueUrl=target.queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert left == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
    assert succeeded == len(bodies), (succeeded, len(bodies))
    server_cpu = (
        server_after - server_before
        if server_after is not None and server_before is not None
        else None
    )
    return Drained(seconds, succeeded, meter.count, cpu, server_cpu)


def per_message(drained: Drained, what: str) -> str:
    if what == "requests":
        return f"{drained.requests / drained.succeeded:.2f}"
    seconds = drained.client_cpu_seconds if what == "client" else drained.server_cpu_seconds
    return "-" if seconds is None else f"{seconds * 1000 / drained.succeeded:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", default="0,20,50", help="comma-separated; one row each")
    parser.add_argument(
        "--servers", type=int, default=2, help="moto server processes (services spread over them)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.serve:
        serve()
        return 0
    # The function's log lines are not what is measured.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    from cache_ingress.observability import logger

    logger.setLevel("ERROR")
    # A local replay has no Lambda context; Powertools warns about it once per grant.
    warnings.simplefilter("ignore", UserWarning)
    bodies = messages(arguments.messages)
    print(
        f"replay drain: {arguments.messages} messages, engine concurrency {arguments.concurrency}, "
        f"{arguments.servers} moto server process(es), python {platform.python_version()}, "
        f"{os.cpu_count()} cpu(s), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'latency':>8} {'sequential':>14} {'engine':>14} {'ratio':>6}"
        f"  {'requests/msg':>14}  {'tool cpu ms/msg':>15}  {'moto cpu ms/msg':>15}"
    )
    with servers(arguments.servers) as target:
        for latency_ms in (float(x) for x in arguments.latency_ms.split(",")):
            sequential = run_drain(target, bodies, latency_ms / 1000, arguments.concurrency, False)
            engine = run_drain(target, bodies, latency_ms / 1000, arguments.concurrency, True)
            seq_rate = sequential.succeeded / sequential.seconds
            engine_rate = engine.succeeded / engine.seconds
            print(
                f"{latency_ms:>6.0f}ms {seq_rate:>8.1f} msg/s {engine_rate:>8.1f} msg/s "
                f"{engine_rate / seq_rate:>5.1f}x"
                f"  {per_message(sequential, 'requests'):>6} → {per_message(engine, 'requests'):<5}"
                f"  {per_message(sequential, 'client'):>7} → {per_message(engine, 'client'):<5}"
                f"  {per_message(sequential, 'server'):>7} → {per_message(engine, 'server'):<5}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
