"""Every benchmark in one command, printed as one table: figure, floor, project, ratio, spread.

    python -m benchmarks.run [--quick] [--check] [--no-package] [--task-root DIR]
                             [--profile DIR] [--json FILE]

Each figure is measured for the project and for the floor (benchmarks/floor_handler.py) in
the same run, in fresh processes run in turn, and reported as the median of the paired
ratios (project run i over floor run i) with their spread (lowest and highest). Twice: as
deployed by default (AWS-call tracing off; the floor is boto3 alone), and with TraceAwsCalls
on (the floor then patches botocore with aws-xray-sdk, the least any traced function pays).

The project is measured as the package holds it: `make code` of functions/authorizer (the
function's code, its bundled policy written as JSON) into a scratch task root.

A goal is met when the median ratio is within it. `--quick` has too few runs for that on a
shared machine: it says `ok` only when every paired run met the goal, `MISSED` only when
every one missed it, and `unsure` otherwise. `--check` exits 1 when a goal is missed; for
manual use, never in the test suite (the machine is shared: timings are noisy). See
docs/benchmarks.md for what each figure means and the latest results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
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
FIRST_RESPONSE = Path(__file__).with_name("first_response.py")


@dataclass(frozen=True)
class Variant:
    name: str
    target: str
    tracing: bool
    extra: tuple[tuple[str, str], ...] = ()


FLOOR = Variant("floor", "floor", tracing=False)
PROJECT = Variant("project", "project", tracing=False)
FLOOR_XRAY = Variant("floor, X-Ray", "floor", tracing=True, extra=(("FLOOR_XRAY", "1"),))
PROJECT_TRACED = Variant("project, TraceAwsCalls", "project", tracing=True)
VARIANTS = (FLOOR, PROJECT, FLOOR_XRAY, PROJECT_TRACED)
SECTIONS = (
    ("as deployed by default: AWS-call tracing off (floor: boto3 alone)", FLOOR, PROJECT),
    (
        "TraceAwsCalls=true (floor: boto3 + aws-xray-sdk patching botocore)",
        FLOOR_XRAY,
        PROJECT_TRACED,
    ),
)


@dataclass(frozen=True)
class Settings:
    cold_runs: int
    warm_processes: int
    rounds: int
    batch: int
    quick: bool = False


FULL = Settings(cold_runs=21, warm_processes=2, rounds=5, batch=100)
# Five pairs for every timed figure: if a figure's true median ratio sat exactly at its goal,
# all five over it would happen 1 time in 32.
QUICK = Settings(cold_runs=5, warm_processes=1, rounds=5, batch=50, quick=True)


@dataclass
class Row:
    figure: str
    floor: float | str
    project: float | str
    ratio: float | None
    goal: str
    verdict: str = ""
    spread: tuple[float, float] | None = None


@dataclass
class Measurements:
    cold: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warm: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# --- the task root --------------------------------------------------------------------------


def build_task_root(source: Path, scratch: Path, say: Callable[[str], None]) -> Path:
    """The function's code as its package holds it (`make code`); `source` itself when it
    has no such target (an older copy measured with --task-root)."""
    target = scratch / "task-root"
    completed = subprocess.run(  # noqa: S603 - make, a fixed target
        [
            *("make", "--no-print-directory", "-C", str(source), "code"),
            *(f"ARTIFACTS_DIR={target}", f"PYTHON={sys.executable}"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode == 0:
        return target
    if "No rule to make target" in completed.stderr:
        say(f"{source} has no `make code`: measuring it as it is")
        return source
    raise RuntimeError(f"make code failed:\n{completed.stdout}{completed.stderr}")


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


def _site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys((paths["purelib"], paths["platlib"])))


def run_cold(variant: Variant, task_root: Path, scratch: Path, event: Path) -> dict[str, Any]:
    """One whole process (benchmarks/first_response.py), timed from outside as a stopwatch
    would; the result holds its own in-process figures too."""
    result = scratch / f"{variant.target}-cold.json"
    environment = probe_environment(variant, task_root, scratch)
    # Under -S (no site): the task root first, then the SDK, as Lambda's sys.path has them.
    environment["PYTHONPATH"] = os.pathsep.join(
        (str(task_root), *_site_packages(), str(world.REPO))
    )
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - this interpreter and a fixed script
        [sys.executable, "-S", str(FIRST_RESPONSE), variant.target, str(event), str(result)],
        cwd=scratch,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    assert process.stderr is not None
    errors = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{variant.name} cold start failed:\n{errors[-4000:]}")
    loaded: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    loaded["process_cpu_ms"] = (usage.ru_utime + usage.ru_stime) * 1000
    loaded["process_wall_ms"] = wall * 1000
    # Linux reports ru_maxrss in KiB.
    loaded["process_rss_mib"] = usage.ru_maxrss / 1024
    return loaded


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
    event = scratch / "one-grant.json"
    event.write_text(json.dumps(world.events("one grant", 1, "cold")[0]), encoding="utf-8")
    for variant in VARIANTS:
        # One discarded run each: compiled bytecode and the page cache are warm for all.
        run_cold(variant, task_root, scratch, event)
    say(f"cold starts: {settings.cold_runs} whole processes of each of {len(VARIANTS)} variants")
    for index in range(settings.cold_runs):
        # Rotate the order so that no variant always follows the same other one.
        order = VARIANTS[index % len(VARIANTS) :] + VARIANTS[: index % len(VARIANTS)]
        for variant in order:
            run = run_cold(variant, task_root, scratch, event)
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
    first = [list(item) for item in world.KINDS["one grant"]]
    floor_calls = measurements.cold[FLOOR.name][-1]["first_calls"]
    for name, runs in measurements.cold.items():
        for run in runs:
            if run["first_outcomes"] != first:
                problems.append(f"{name}: cold start ended {run['first_outcomes']}")
            if run["first_calls"] != floor_calls:
                problems.append(f"{name}: cold start called {run['first_calls']}")
    for name, runs in measurements.warm.items():
        for kind, expected in world.KINDS.items():
            got = [tuple(item) for item in runs[-1]["outcomes"][kind]]
            if got != expected:
                problems.append(f"{name}: {kind} ended {got}, expected {expected}")
    return sorted(set(problems))


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


def verdict(ratios: Sequence[float], goal: float, *, quick: bool) -> str:
    """`ok` or `MISSED` for a goal on a ratio, from paired runs.

    A full run decides by the median. A quick run has too few pairs for its median to be
    trusted on a shared machine, so it concludes only what every pair agrees on: `ok` when
    all met the goal, `MISSED` when all missed it, `unsure` when they straddle it.
    """
    if not ratios:
        return "MISSED"
    if not quick:
        return "ok" if statistics.median(ratios) <= goal else "MISSED"
    if max(ratios) <= goal:
        return "ok"
    if min(ratios) > goal:
        return "MISSED"
    return "unsure"


def paired_row(
    figure: str,
    floor: Sequence[float],
    project: Sequence[float],
    goal: float | None,
    *,
    quick: bool,
    ceiling: float | None = None,
    summary: Callable[[Sequence[float]], float] = statistics.median,
) -> Row:
    """A figure measured in pairs: the values' summary (median, or the peak), the median of
    the pair ratios and their spread, and the verdict on the goal."""
    ratios = [p / f for f, p in zip(floor, project, strict=True) if f]
    ratio = statistics.median(ratios) if ratios else None
    spread = (min(ratios), max(ratios)) if ratios else None
    project_value = summary(project)
    goal_text = "-" if goal is None else f"<= {goal:.2f}x"
    mark = "" if goal is None else verdict(ratios, goal, quick=quick)
    if ceiling is not None:
        goal_text += f", <= {ceiling:.0f}"
        if project_value > ceiling:
            mark = "MISSED"
    return Row(figure, summary(floor), project_value, ratio, goal_text, mark, spread)


def _cold(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(run[key]) for run in runs]


def _warm_cpu(runs: Sequence[dict[str, Any]], kind: str) -> list[float]:
    # Pairs: batch r of the floor's process k with batch r of the project's process k.
    return [float(value) for run in runs for value in run["cpu_us"][kind]]


def section_rows(
    measurements: Measurements, floor: Variant, project: Variant, *, quick: bool
) -> list[Row]:
    cold_floor, cold_project = measurements.cold[floor.name], measurements.cold[project.name]
    warm_floor, warm_project = measurements.warm[floor.name], measurements.warm[project.name]

    def cold(figure: str, key: str, goal: float | None) -> Row:
        return paired_row(
            figure, _cold(cold_floor, key), _cold(cold_project, key), goal, quick=quick
        )

    # CPU time is the goal's measure: on a shared machine, wall time also counts the time
    # spent waiting for a core. Wall time is shown beside it.
    rows = [
        cold("cold start, whole process to first response, CPU ms", "process_cpu_ms", GOAL_COLD),
        cold("  the same, wall ms", "process_wall_ms", None),
        cold("  the same, peak RSS MiB", "process_rss_mib", GOAL_MEMORY),
        cold("  in-process clock, import to response, CPU ms", "first_response_cpu_ms", None),
        cold("  of which importing the handler, CPU ms", "import_cpu_ms", None),
    ]
    if project is PROJECT_TRACED:
        rows.append(
            paired_row(
                "  whole process CPU against the default deployment's",
                _cold(measurements.cold[PROJECT.name], "process_cpu_ms"),
                _cold(cold_project, "process_cpu_ms"),
                None,
                quick=quick,
            )
        )
    for kind in world.KINDS:
        rows.append(
            paired_row(
                f"CPU per warm event, {kind}, us",
                _warm_cpu(warm_floor, kind),
                _warm_cpu(warm_project, kind),
                GOAL_EVENT,
                quick=quick,
            )
        )
    rows += [
        cold("peak RSS after init (import), MiB", "rss_import_mib", GOAL_MEMORY),
        paired_row(
            "peak RSS after 1,000 events, MiB",
            _cold(warm_floor, "rss_warm_mib"),
            _cold(warm_project, "rss_warm_mib"),
            GOAL_MEMORY,
            quick=quick,
            ceiling=MEMORY_CEILING_MIB,
            summary=max,
        ),
    ]
    return rows


def calls_row(measurements: Measurements) -> Row:
    """AWS calls per event of each kind; the project may make none the floor does not."""
    floor_calls = measurements.warm[FLOOR.name][-1]["calls"]
    extra = []
    for variant in (PROJECT, PROJECT_TRACED):
        project_calls = measurements.warm[variant.name][-1]["calls"]
        extra += [
            f"{variant.name}, {kind}: {operation}"
            for kind in world.KINDS
            for operation, count in project_calls[kind].items()
            if count > floor_calls[kind].get(operation, 0)
        ]
    project_calls = measurements.warm[PROJECT.name][-1]["calls"]

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
        "MISSED" if extra else "ok",
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
    header = ("figure", "floor", "project", "ratio", "spread", "goal", "")
    lines: list[tuple[str, ...]] = []
    for title, rows in sections:
        lines.append((f"[{title}]", "", "", "", "", "", ""))
        for row in rows:
            ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
            spread = "-" if row.spread is None else f"{row.spread[0]:.2f}-{row.spread[1]:.2f}"
            cells = (_cell(row.floor), _cell(row.project), ratio, spread, row.goal, row.verdict)
            lines.append((row.figure, *cells))
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = []
    for line in [header, *lines]:
        if line[0].startswith("[") and not any(line[1:]):
            out.append(line[0])
            continue
        cells = [line[0].ljust(widths[0])]
        cells += [line[i].rjust(widths[i]) for i in (1, 2, 3, 4)]
        cells += [line[5].ljust(widths[5]), line[6]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


QUICK_NOTE = """\
quick run: 5 paired runs per timed figure. 'ok': every pair met the goal; 'MISSED': every
pair missed it (1 time in 32 if the true median sat at the goal); 'unsure': the pairs
straddle the goal, and only the full run (21 cold-start pairs, 10 per warm figure) decides."""


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
    event = scratch / "one-grant.json"
    for variant in VARIANTS:
        slug = variant.name.replace(", ", "-").replace(" ", "-").lower()
        environment = probe_environment(variant, task_root, scratch)
        environment["PYTHONPATH"] = os.pathsep.join(
            (str(task_root), *_site_packages(), str(world.REPO))
        )
        importtime = subprocess.run(  # noqa: S603 - this interpreter and a fixed script
            [
                *(sys.executable, "-S", "-X", "importtime", str(FIRST_RESPONSE)),
                *(variant.target, str(event), str(scratch / "importtime.json")),
            ],
            cwd=scratch,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        (directory / f"importtime-{slug}.txt").write_text(importtime.stderr, encoding="utf-8")
        result = scratch / "profile.txt"
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
            last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"pyinstrument profile skipped: {last}", file=sys.stderr)
            continue
        (directory / f"pyinstrument-{slug}.txt").write_text(
            result.read_text(encoding="utf-8"), encoding="utf-8"
        )


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
    with _scratch() as scratch:
        task_root = build_task_root(args.task_root.resolve(), scratch, say)
        measurements = measure(settings, task_root, scratch, say)
        if args.profile:
            say(f"profiles into {args.profile}")
            _write_profiles(args.profile, task_root, scratch)
    problems = check_fair(measurements)
    if problems:
        print("unfair comparison:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    sections = [
        (title, section_rows(measurements, f, p, quick=settings.quick)) for title, f, p in SECTIONS
    ]
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
    if settings.quick:
        print(QUICK_NOTE)
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        raw = {"cold": measurements.cold, "warm": measurements.warm, "machine": machine()}
        args.json.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    missed = [
        f"{title.split(':')[0].split(' (')[0]}: {row.figure.strip()}"
        for title, rows in sections
        for row in rows
        if row.verdict == "MISSED"
    ]
    if missed:
        print("missed: " + "; ".join(missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
