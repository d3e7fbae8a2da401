"""The function's bundle is pinned, hashed, and the same versions the tests run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bundled() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from functions/authorizer/requirements.txt."""
    text = (ROOT / "functions" / "authorizer" / "requirements.txt").read_text(encoding="utf-8")
    found: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z])", text):
        match = REQUIREMENT.match(block.strip())
        if match:
            found[_canonical(match[1])] = (
                match[2],
                re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
            )
    return found


def constrained() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    return {_canonical(m[1]): m[2] for line in lines if (m := REQUIREMENT.match(line.strip()))}


def test_every_bundled_package_is_pinned_and_hashed() -> None:
    packages = bundled()
    assert set(packages) == {
        "aws-lambda-powertools", "aws-xray-sdk", "wrapt", "typing-extensions", "pyyaml"
    }  # fmt: skip
    for name, (_, hashes) in packages.items():
        assert hashes, f"{name} has no --hash"
        assert len(hashes) == len(set(hashes)), name


def test_the_bundle_runs_the_versions_the_tests_run() -> None:
    tested = constrained()
    for name, (version, _) in bundled().items():
        assert tested[name] == version, f"{name}: bundled {version}, tested {tested[name]}"
