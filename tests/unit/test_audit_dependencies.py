"""`make security`'s dependency audit says what it could not judge instead of "clean"."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_dependencies.py"
REQUIREMENTS = Path("requirements.txt")


def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SKIPPED = {"name": "pyyaml", "skip_reason": "Dependency not found on PyPI"}
CLEAN = {"name": "wrapt", "version": "2.5.2", "vulns": []}
VULNERABLE = {"name": "urllib3", "version": "1.0", "vulns": [{"id": "GHSA-x"}]}


def test_nothing_audited_is_not_reported_clean(capsys: pytest.CaptureFixture[str]) -> None:
    status = audit()._judge({"dependencies": [SKIPPED]}, REQUIREMENTS, strict=False)
    out = capsys.readouterr().out
    assert status == 0
    assert "0 of 1 package(s) audited" in out
    assert "NOT AUDITED" in out
    assert "pyyaml: Dependency not found on PyPI" in out
    assert "no known vulnerabilities" not in out


def test_strict_fails_when_anything_was_not_audited() -> None:
    assert audit()._judge({"dependencies": [CLEAN, SKIPPED]}, REQUIREMENTS, strict=True) == 1


def test_a_vulnerability_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status = audit()._judge({"dependencies": [CLEAN, VULNERABLE]}, REQUIREMENTS, strict=False)
    assert status == 1
    assert "VULNERABLE urllib3 1.0: GHSA-x" in capsys.readouterr().out


def test_everything_audited_and_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert audit()._judge({"dependencies": [CLEAN]}, REQUIREMENTS, strict=True) == 0
    assert "no known vulnerabilities in any of them" in capsys.readouterr().out
