"""Run pip-audit on a requirements file and say plainly what it could and could not judge.

pip-audit reports "No known vulnerabilities found" even when it could audit nothing (every
package "could not be audited", for instance when the vulnerability service is out of
reach): that reads as a clean result and is not one. This prints how many packages were
audited, lists the ones that were not and why, and exits:

- 0 when every package was audited and none has a known vulnerability, or when some could
  not be audited and `--strict` is not given (the output says so, in capitals);
- 1 when a package has a known vulnerability, or, with `--strict`, when any package could
  not be audited;
- 2 when pip-audit itself could not run.

Usage: python scripts/audit_dependencies.py [--strict] REQUIREMENTS [-- PIP-AUDIT OPTIONS]
"""

from __future__ import annotations

import json
import shutil
import subprocess  # nosec B404 - runs pip-audit, the tool this script reports on
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    strict = "--strict" in argv
    arguments = [a for a in argv if a != "--strict"]
    extra: list[str] = []
    if "--" in arguments:
        cut = arguments.index("--")
        arguments, extra = arguments[:cut], arguments[cut + 1 :]
    if len(arguments) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)  # noqa: T201
        return 2
    requirements = Path(arguments[0])
    auditor = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or shutil.which(
        "pip-audit"
    )
    if auditor is None:
        print("pip-audit is not installed (make security installs it)", file=sys.stderr)  # noqa: T201
        return 2
    run = subprocess.run(  # noqa: S603  # nosec B603 - a fixed program, no shell
        [auditor, "-r", str(requirements), "-f", "json", "--progress-spinner", "off", *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except ValueError:
        print(f"pip-audit could not run:\n{run.stderr.strip()}", file=sys.stderr)  # noqa: T201
        return 2
    return _judge(report, requirements, strict=strict)


def _judge(report: dict[str, object], requirements: Path, *, strict: bool) -> int:
    dependencies = [d for d in report.get("dependencies", []) if isinstance(d, dict)]  # type: ignore[union-attr]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    audited = len(dependencies) - len(skipped)
    lines = [f"pip-audit {requirements}: {audited} of {len(dependencies)} package(s) audited"]
    for dependency in vulnerable:
        ids = ", ".join(str(v.get("id")) for v in dependency["vulns"])
        lines.append(f"  VULNERABLE {dependency['name']} {dependency.get('version')}: {ids}")
    if skipped:
        lines.append(
            f"NOT AUDITED: {len(skipped)} package(s) could not be judged; this is NOT a clean "
            "result (no vulnerability data for them was reachable):"
        )
        lines += [f"  {d['name']}: {d['skip_reason']}" for d in skipped]
    if not vulnerable and not skipped:
        lines.append("no known vulnerabilities in any of them")
    print("\n".join(lines))  # noqa: T201
    if vulnerable:
        return 1
    return 1 if skipped and strict else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
