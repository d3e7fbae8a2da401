"""Warm events, or a profile of the cold path, in a fresh Python process.

    python -m benchmarks.probe {floor|project} {warm|profile} RESULT [--rounds N --batch N]

`warm`: a cold start as benchmarks/first_response.py takes it, then 1,000 events (the four
kinds in turn), peak RSS, the AWS calls each kind makes, then CPU time per event of each kind
in batches. `profile`: the cold path under pyinstrument; RESULT is its text report.

Run by benchmarks.run with the Lambda environment (benchmarks.world.lambda_environment) and
stdout sent to /dev/null (the handlers log there, as in Lambda); the result goes to a file.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

from benchmarks import world
from benchmarks.first_response import first_response

WARM_EVENTS = 1_000


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cold(target: str) -> tuple[dict[str, Any], Any, world.Responder]:
    return first_response(target, world.events("one grant", 1, "cold")[0])


def warm(handler: Any, responder: world.Responder, rounds: int, batch: int) -> dict[str, Any]:
    context = world.BenchContext()
    kinds = list(world.KINDS)
    per_kind = WARM_EVENTS // len(kinds)
    queues = {kind: world.events(kind, per_kind, "warm") for kind in kinds}
    for index in range(per_kind):
        for kind in kinds:
            handler(queues[kind][index], context)
    rss_warm = _peak_rss_mib()

    calls: dict[str, dict[str, int]] = {}
    outcomes: dict[str, Any] = {}
    for kind in kinds:
        responder.calls.clear()
        summary = handler(world.events(kind, 1, "count")[0], context)
        calls[kind] = dict(responder.calls)
        outcomes[kind] = world.outcomes(summary)

    timed = {kind: world.events(kind, rounds * batch, "timed") for kind in kinds}
    cpu_us: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_index in range(rounds):
        # Rotate the order so no kind always runs right after the same other kind.
        order = kinds[round_index % len(kinds) :] + kinds[: round_index % len(kinds)]
        for kind in order:
            chunk = timed[kind][round_index * batch : (round_index + 1) * batch]
            started = time.process_time()
            for event in chunk:
                handler(event, context)
            cpu_us[kind].append((time.process_time() - started) * 1e6 / batch)
    return {
        "rss_warm_mib": rss_warm,
        "rss_end_mib": _peak_rss_mib(),
        "calls": calls,
        "outcomes": outcomes,
        "cpu_us": cpu_us,
    }


def profile(target: str) -> str:
    """The cold path (import, clients, first event) as a pyinstrument call tree."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    cold(target)
    profiler.stop()
    return str(profiler.output_text(unicode=False, color=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    parser.add_argument("target", choices=("floor", "project"))
    parser.add_argument("mode", choices=("warm", "profile"))
    parser.add_argument("result", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    if args.mode == "profile":
        args.result.write_text(profile(args.target), encoding="utf-8")
        return
    result, handler, responder = cold(args.target)
    result.update(warm(handler, responder, args.rounds, args.batch))
    args.result.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
