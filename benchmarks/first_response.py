"""One cold start, the whole process: what a Lambda execution environment runs before its
first response, and nothing else.

    python -S benchmarks/first_response.py {floor|project} EVENT RESULT

benchmarks.run starts it in a fresh interpreter and times the whole process from outside
(CPU and peak RSS of the child, from `os.wait4`, and wall time): interpreter start, the
handler's import, client creation and one event. Inside, it also takes the in-process clock
(from just before the handler's import to its response) and peak RSS after the import.

Everything this script itself imports is something both handlers import anyway (json, and
what boto3 loads), so it adds the same small cost to the floor and to the project and does
not flatter the ratio. `-S` keeps the development venv's `.pth` hooks (about 10 ms of
editable-install finders that Lambda does not have) out of the process; benchmarks.run puts
the task root and the SDK on PYTHONPATH, as Lambda puts /var/task and the runtime's.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from benchmarks.answers import Responder

HANDLERS = {"floor": "benchmarks.floor_handler", "project": "cache_ingress.handler"}


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_response(
    target: str, event: dict[str, Any]
) -> tuple[dict[str, Any], Callable[..., dict[str, Any]], Responder]:
    """Import the handler, answer AWS in process, run one event.

    Returns the figures, the handler and the responder (the warm probe goes on with both).
    """
    from benchmarks.answers import BenchContext, Responder

    started = time.perf_counter()
    started_cpu = time.process_time()
    module = __import__(HANDLERS[target], fromlist=["lambda_handler"])
    imported = time.perf_counter()
    imported_cpu = time.process_time()
    rss_import = _peak_rss_mib()
    responder = Responder()
    responder.install()
    summary = module.lambda_handler(event, BenchContext())
    answered = time.perf_counter()
    answered_cpu = time.process_time()
    figures = {
        "import_ms": (imported - started) * 1000,
        "first_response_ms": (answered - started) * 1000,
        "import_cpu_ms": (imported_cpu - started_cpu) * 1000,
        "first_response_cpu_ms": (answered_cpu - started_cpu) * 1000,
        "rss_import_mib": rss_import,
        "rss_first_mib": _peak_rss_mib(),
        "first_outcomes": [
            [str(d["group_id"]), d.get("target"), str(d["outcome"])] for d in summary["decisions"]
        ],
        "first_calls": dict(responder.calls),
    }
    return figures, module.lambda_handler, responder


def main(argv: list[str]) -> None:
    target, event_file, result_file = argv
    with open(event_file, encoding="utf-8") as handle:  # noqa: PTH123 - pathlib is not needed
        event = json.load(handle)
    figures, _, _ = first_response(target, event)
    with open(result_file, "w", encoding="utf-8") as handle:  # noqa: PTH123
        json.dump(figures, handle)


if __name__ == "__main__":
    main(sys.argv[1:])
