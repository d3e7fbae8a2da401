"""The load burst of tests/security/test_load.py as a benchmark: events per second.

    .venv/bin/python benchmarks/load_burst.py [--unique-events 600] [--environments 4]

AWS is the project's embedded AWS (moto's ThreadedMotoServer on 127.0.0.1 with the
cache-security-group emulation) in this process. Three runs, each accounted as the test
accounts it (one authorize call per (event, grant) that needed one, nothing lost, the
dead-letter queue empty) and timed:

- baseline: as many deliveries of an event the function ignores (it parses, logs and
  returns, with no AWS call), through the same handler;
- burst: the burst with duplicates, one delivery at a time through `lambda_handler`, as one
  execution environment runs them;
- concurrent: the same burst shape with new event ids across `--environments` execution
  environments on threads (the server shares this process's interpreter lock, so this is a
  floor, not what separate Lambda environments would reach).

Printed: deliveries per second for each, and the burst's ratio to the baseline (how much of
a delivery's time is its AWS round trips). Figures, not assertions: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The function logs and prints metrics for every delivery; a benchmark shows figures."""
    logging.getLogger("cache-ingress").setLevel(logging.CRITICAL)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _ignored_event(number: int) -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"ignored-{number}",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-11-20T10:41:38Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"state": "running"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unique-events", type=int, default=600)
    parser.add_argument("--environments", type=int, default=4)
    arguments = parser.parse_args(argv)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    sys.path.insert(0, str(REPO))
    from tests.security.burst import (
        CallRecorder,
        Outcome,
        burst_world,
        handler_environment,
        make_burst,
        new_environment,
        run_concurrently,
        run_through_handler,
    )
    from tests.support.events import tag_change

    def accounted(name: str, outcome: Outcome, expected: Any, dead_letters: int) -> str:
        problems = []
        if outcome.unfinished:
            problems.append(f"{len(outcome.unfinished)} unfinished")
        if expected is not None and outcome.calls != expected:
            problems.append("authorize calls differ from one per (event, grant)")
        if dead_letters:
            problems.append(f"{dead_letters} dead letters")
        return f"{name}: " + ("; ".join(problems) if problems else "accounted")

    with burst_world() as world, quiet():
        recorder = CallRecorder()
        burst = make_burst(world, arguments.unique_events, seed=6)
        concurrent_burst = make_burst(world, arguments.unique_events, seed=7)
        baseline_events = [_ignored_event(n) for n in range(len(burst.deliveries))]
        with handler_environment(world, recorder):
            # Warm the environment (clients, policy) so that no timed run pays a cold start.
            warm_up = tag_change(next(iter(world.groups)), event_id="warm-up")
            run_through_handler([_ignored_event(-1), warm_up], recorder)
            baseline = run_through_handler(baseline_events, recorder)
            recorder.calls.clear()
            run = run_through_handler(burst.deliveries, recorder)
            run.calls = Counter(recorder.calls)
            checks = [accounted("burst", run, burst.expected_calls, world.dead_letter_count())]
            recorder.calls.clear()
            concurrent = run_concurrently(
                concurrent_burst.deliveries,
                recorder,
                new_environment,
                environments=arguments.environments,
            )
            concurrent.calls = Counter(recorder.calls)
            checks.append(
                accounted(
                    "concurrent",
                    concurrent,
                    concurrent_burst.expected_calls,
                    world.dead_letter_count(),
                )
            )

    rows = [
        ("baseline (ignored events, no AWS call)", baseline),
        ("burst, one environment, through lambda_handler", run),
        (f"burst, {arguments.environments} environments on threads", concurrent),
    ]
    print(f"load burst: {len(burst.deliveries)} deliveries of {burst.unique_events} events")
    for name, outcome in rows:
        print(
            f"  {name:52} {outcome.events_per_second:9.1f} deliveries/s"
            f"  ({outcome.deliveries} in {outcome.seconds:.2f} s, {outcome.attempts} attempts)"
        )
    ratio = baseline.events_per_second / run.events_per_second
    print(f"  burst / baseline time per delivery: {ratio:.1f}x")
    for check in checks:
        print(f"  {check}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
