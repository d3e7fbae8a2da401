"""Every benchmark in one command, printed as one table: figure, floor, project, ratio, goal.

    python -m benchmarks.run [--quick] [--check] [--no-package] [--task-root DIR]
                             [--profile DIR] [--json FILE]

Each figure is measured for the project and for the floor (benchmarks/floor_handler.py) in
the same run, in fresh processes run in turn, and reported as a ratio. Twice: with X-Ray
tracing on, as deployed (the floor then patches botocore with aws-xray-sdk, the least any
traced function pays), and with tracing off (the bare floor). `--check` exits 1 when a goal is
missed; for manual use, never in the test suite (the machine is shared: timings are noisy).
See docs/benchmarks.md for what each figure means and the latest results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import package, world

KIB = 1024
MIB = 1024 * 1024
MEMORY_LIMIT_MIB = 128
# "Room to spare" in a 128 MB function: at most three quarters of it.
MEMORY_CEILING_MIB = MEMORY_LIMIT_MIB * 3 / 4
GOAL_COLD = 1.15
GOAL_EVENT = 1.5
GOAL_MEMORY = 1.1


@dataclass(frozen=True)
class Variant:
    name: str
    target: str
    tracing: bool
    extra: tuple[tuple[str, str], ...] = ()


FLOOR = Variant("floor", "floor", tracing=False)
FLOOR_XRAY = Variant("floor, X-Ray", "floor", tracing=True, extra=(("FLOOR_XRAY", "1"),))
PROJECT = Variant("project", "project", tracing=True)
PROJECT_UNTRACED = Variant("project, X-Ray off", "project", tracing=False)
VARIANTS = (FLOOR_XRAY, PROJECT, FLOOR, PROJECT_UNTRACED)
SECTIONS = (
    ("X-Ray on, as deployed (floor: boto3 + aws-xray-sdk patching botocore)", FLOOR_XRAY, PROJECT),
    ("X-Ray off (floor: boto3 alone)", FLOOR, PROJECT_UNTRACED),
)


@dataclass(frozen=True)
class Settings:
    cold_runs: int
    warm_processes: int
    rounds: int
    batch: int


FULL = Settings(cold_runs=15, warm_processes=2, rounds=5, batch=100)
QUICK = Settings(cold_runs=5, warm_processes=1, rounds=3, batch=50)


@dataclass
class Row:
    figure: str
    floor: float | str
    project: float | str
    ratio: float | None
    goal: str
    missed: bool = False


@dataclass
class Measurements:
    cold: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warm: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# --- running probes ---------------------------------------------------------------------


def probe_environment(variant: Variant, task_root: Path, home: Path) -> dict[str, str]:
    """A clean environment: what Lambda sets, nothing from this shell's AWS configuration."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "PYTHONPATH": os.pathsep.join((str(task_root), str(world.REPO))),
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        **world.lambda_environment(tracing=variant.tracing),
        **dict(variant.extra),
    }
    environment["LAMBDA_TASK_ROOT"] = str(task_root)
    return environment


def run_probe(
    variant: Variant, mode: str, task_root: Path, scratch: Path, *extra: str
) -> dict[str, Any]:
    result = scratch / f"{variant.target}-{mode}.json"
    completed = subprocess.run(  # noqa: S603 - this interpreter and a fixed module
        [sys.executable, "-m", "benchmarks.probe", variant.target, mode, str(result), *extra],
        cwd=world.REPO,
        env=probe_environment(variant, task_root, scratch),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{variant.name} {mode} probe failed:\n{completed.stderr[-4000:]}")
    loaded: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return loaded


def measure(
    settings: Settings, task_root: Path, scratch: Path, say: Callable[[str], None]
) -> Measurements:
    measurements = Measurements()
    for variant in VARIANTS:
        # One discarded run each: compiled bytecode and the page cache are warm for all.
        run_probe(variant, "cold", task_root, scratch)
    say(f"cold starts: {settings.cold_runs} runs of each of {len(VARIANTS)} variants")
    for index in range(settings.cold_runs):
        # Rotate the order so that no variant always follows the same other one.
        order = VARIANTS[index % len(VARIANTS) :] + VARIANTS[: index % len(VARIANTS)]
        for variant in order:
            run = run_probe(variant, "cold", task_root, scratch)
            measurements.cold.setdefault(variant.name, []).append(run)
    say(f"warm events: {settings.warm_processes} process(es) per variant")
    extra = ("--rounds", str(settings.rounds), "--batch", str(settings.batch))
    for _ in range(settings.warm_processes):
        for variant in VARIANTS:
            run = run_probe(variant, "warm", task_root, scratch, *extra)
            measurements.warm.setdefault(variant.name, []).append(run)
    return measurements


# --- checks that the comparison is fair ---------------------------------------------------


def check_fair(measurements: Measurements) -> list[str]:
    """Problems that would make the ratios meaningless: both must do the same job."""
    problems = []
    for name, runs in measurements.warm.items():
        for kind, expected in world.KINDS.items():
            got = [tuple(item) for item in runs[-1]["outcomes"][kind]]
            if got != expected:
                problems.append(f"{name}: {kind} ended {got}, expected {expected}")
    return problems


def check_same_client_config() -> str | None:
    """The floor must use the project's client configuration (it keeps its own copy)."""
    for name, value in world.lambda_environment(tracing=False).items():
        os.environ.setdefault(name, value)  # this process only: floor_handler reads them
    from benchmarks import floor_handler
    from cache_ingress import aws

    # botocore keeps what the caller set apart from its defaults: compare exactly that.
    floor_options = vars(floor_handler.CLIENT_CONFIG)["_user_provided_options"]
    project_options = vars(aws.CLIENT_CONFIG)["_user_provided_options"]
    if floor_options != project_options:
        return f"client configs differ: floor {floor_options}, project {project_options}"
    return None


# --- figures ------------------------------------------------------------------------------


def _median(runs: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def _cpu(runs: Sequence[dict[str, Any]], kind: str) -> float:
    return float(statistics.median(value for run in runs for value in run["cpu_us"][kind]))


def _peak(runs: Sequence[dict[str, Any]], key: str) -> float:
    return max(float(run[key]) for run in runs)


def _ratio_row(
    figure: str, floor: float, project: float, goal: float | None, ceiling: float | None = None
) -> Row:
    ratio = project / floor if floor else None
    goal_text = "-" if goal is None else f"<= {goal:.2f}x"
    missed = goal is not None and (ratio is None or ratio > goal)
    if ceiling is not None:
        goal_text += f", <= {ceiling:.0f}"
        missed = missed or project > ceiling
    return Row(figure, floor, project, ratio, goal_text, missed)


def section_rows(measurements: Measurements, floor: Variant, project: Variant) -> list[Row]:
    cold_floor, cold_project = measurements.cold[floor.name], measurements.cold[project.name]
    warm_floor, warm_project = measurements.warm[floor.name], measurements.warm[project.name]
    # CPU time is the goal's measure: on a shared machine, wall time also counts the time
    # spent waiting for a core. Wall time is shown beside it.
    rows = [
        _ratio_row(
            "cold start to first response, CPU ms (median)",
            _median(cold_floor, "first_response_cpu_ms"),
            _median(cold_project, "first_response_cpu_ms"),
            GOAL_COLD,
        ),
        _ratio_row(
            "  the same, wall ms (median)",
            _median(cold_floor, "first_response_ms"),
            _median(cold_project, "first_response_ms"),
            None,
        ),
        _ratio_row(
            "  of which importing the handler, CPU ms",
            _median(cold_floor, "import_cpu_ms"),
            _median(cold_project, "import_cpu_ms"),
            None,
        ),
    ]
    for kind in world.KINDS:
        rows.append(
            _ratio_row(
                f"CPU per warm event, {kind}, us",
                _cpu(warm_floor, kind),
                _cpu(warm_project, kind),
                GOAL_EVENT,
            )
        )
    rows += [
        _ratio_row(
            "peak RSS after init (import), MiB",
            _median(cold_floor, "rss_import_mib"),
            _median(cold_project, "rss_import_mib"),
            GOAL_MEMORY,
        ),
        _ratio_row(
            "peak RSS after the first event, MiB",
            _median(cold_floor, "rss_first_mib"),
            _median(cold_project, "rss_first_mib"),
            None,
        ),
        _ratio_row(
            "peak RSS after 1,000 events, MiB",
            _peak(warm_floor, "rss_warm_mib"),
            _peak(warm_project, "rss_warm_mib"),
            GOAL_MEMORY,
            MEMORY_CEILING_MIB,
        ),
    ]
    return rows


def calls_row(measurements: Measurements) -> Row:
    """AWS calls per event of each kind; the project may make none the floor does not."""
    floor_calls = measurements.warm[FLOOR.name][-1]["calls"]
    project_calls = measurements.warm[PROJECT.name][-1]["calls"]
    extra = [
        f"{kind}: {operation}"
        for kind in world.KINDS
        for operation, count in project_calls[kind].items()
        if count > floor_calls[kind].get(operation, 0)
    ]

    def counts(calls: dict[str, dict[str, int]]) -> str:
        return "/".join(str(sum(calls[kind].values())) for kind in world.KINDS)

    floor_total = sum(sum(c.values()) for c in floor_calls.values())
    project_total = sum(sum(c.values()) for c in project_calls.values())
    return Row(
        "AWS calls per event (" + "/".join(world.KINDS) + ")",
        counts(floor_calls),
        counts(project_calls),
        project_total / floor_total,
        "none beyond the floor's",
        missed=bool(extra),
    )


def package_rows(artifact: package.Artifact, floor_bytes: int) -> list[Row]:
    # The floor ships its handler alone, so a ratio says nothing: none is printed.
    def row(figure: str, size: int) -> Row:
        return Row(figure, floor_bytes / KIB, size / KIB, None, "-")

    return [
        row("package zip as `sam build` makes it, KiB", artifact.zip_bytes),
        row(
            "  without what the runtime provides (boto3...), KiB",
            artifact.without(package.RUNTIME_PROVIDED),
        ),
        row(
            "  and with the Powertools layer attached, KiB",
            artifact.without(package.RUNTIME_PROVIDED | package.LAYER_PROVIDED),
        ),
    ]


# --- output ---------------------------------------------------------------------------------


def _cell(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def render(sections: list[tuple[str, list[Row]]]) -> str:
    header = ("figure", "floor", "project", "ratio", "goal", "")
    lines: list[tuple[str, ...]] = []
    for title, rows in sections:
        lines.append((f"[{title}]", "", "", "", "", ""))
        for row in rows:
            ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
            mark = "MISSED" if row.missed else ("ok" if row.goal != "-" else "")
            lines.append((row.figure, _cell(row.floor), _cell(row.project), ratio, row.goal, mark))
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = []
    for line in [header, *lines]:
        if line[0].startswith("[") and not any(line[1:]):
            out.append(line[0])
            continue
        cells = [line[0].ljust(widths[0])]
        cells += [line[i].rjust(widths[i]) for i in (1, 2, 3)]
        cells += [line[4].ljust(widths[4]), line[5]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def machine() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load}"
    )


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cache-ingress-bench-") as directory:
        yield Path(directory)


def _write_profiles(directory: Path, task_root: Path, scratch: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for variant in (FLOOR_XRAY, PROJECT):
        slug = variant.target + ("-xray" if variant is FLOOR_XRAY else "")
        importtime = subprocess.run(  # noqa: S603 - this interpreter and a fixed module
            [sys.executable, "-X", "importtime", "-c", f"import {_module(variant)}"],
            cwd=world.REPO,
            env=probe_environment(variant, task_root, scratch),
            capture_output=True,
            text=True,
            check=False,
        )
        (directory / f"importtime-{slug}.txt").write_text(importtime.stderr, encoding="utf-8")
        try:
            result = scratch / "profile.txt"
            run_probe_text(variant, task_root, scratch, result)
            (directory / f"pyinstrument-{slug}.txt").write_text(
                result.read_text(encoding="utf-8"), encoding="utf-8"
            )
        except RuntimeError as exc:
            print(f"pyinstrument profile skipped: {exc}", file=sys.stderr)


def _module(variant: Variant) -> str:
    return "benchmarks.floor_handler" if variant.target == "floor" else "cache_ingress.handler"


def run_probe_text(variant: Variant, task_root: Path, scratch: Path, result: Path) -> None:
    completed = subprocess.run(  # noqa: S603 - this interpreter and a fixed module
        [sys.executable, "-m", "benchmarks.probe", variant.target, "profile", str(result)],
        cwd=world.REPO,
        env=probe_environment(variant, task_root, scratch),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs: a smoke test")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--no-package", action="store_true", help="skip `sam build`")
    parser.add_argument(
        "--task-root", type=Path, default=world.TASK_ROOT, help="the function code to measure"
    )
    parser.add_argument("--profile", type=Path, help="write importtime/pyinstrument reports here")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    def say(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    problem = check_same_client_config()
    if problem:
        print(f"unfair comparison: {problem}", file=sys.stderr)
        return 2
    started = time.monotonic()
    task_root = args.task_root.resolve()
    with _scratch() as scratch:
        measurements = measure(settings, task_root, scratch, say)
        if args.profile:
            say(f"profiles into {args.profile}")
            _write_profiles(args.profile, task_root, scratch)
    problems = check_fair(measurements)
    if problems:
        print("unfair comparison:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    sections = [(title, section_rows(measurements, f, p)) for title, f, p in SECTIONS]
    shared = [calls_row(measurements)]
    if not args.no_package:
        sam = package.find_sam()
        if sam is None:
            say("no SAM CLI (set SAM_CLI): package size skipped")
        else:
            say("sam build (python3.13, arm64) into a temporary directory")
            artifact = package.build_function(sam, world.REPO)
            shared += package_rows(artifact, package.zip_floor(world.REPO))
            biggest = ", ".join(f"{n} {s / MIB:.1f}" for n, s in artifact.biggest())
            say(f"biggest in the zip (MiB): {biggest}")
            say("native extensions: " + ", ".join(f"{k} ({v})" for k, v in artifact.native.items()))
    sections.append(("both", shared))
    print(machine())
    print(render(sections))
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        raw = {"cold": measurements.cold, "warm": measurements.warm, "machine": machine()}
        args.json.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    missed = [
        f"{title.split(' (')[0]}: {row.figure.strip()}"
        for title, rows in sections
        for row in rows
        if row.missed
    ]
    if missed:
        print("missed: " + "; ".join(missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
