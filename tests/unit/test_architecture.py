"""The layering rule of docs/architecture.md, checked on the source: which module may import
what. Every import counts, also one made inside a function (the lazy ones).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "functions" / "authorizer" / "cache_ingress"
TOOLS = ROOT / "src" / "cache_ingress_tools"

# docs/architecture.md, "The layering rule"
PURE = {
    "intake",
    "decisions",
    "provenance",
    "policy",
    "unique_yaml",
    "models",
    "envelope",
    "errors",
    "holds",
    "ownership",
    "reconcile.report",
}
ADAPTERS = {
    "aws",
    "security_groups",
    "cache_security_groups",
    "vpc_targets",
    "vpc_ingress",
    "grants",
    "policy_source",
    "deadletter",
    "cloudtrail",
    "member_accounts",
    "vpc_peering",
    "organization_accounts",
    "granted_state",
    "ledger",
    "reconcile.listing",
    "reconcile.cursor",
}
AWS_SDK = ("boto3", "botocore")
NEVER_IN_THE_FUNCTION = ("cache_ingress_tools", "moto", "cfnlint", "pytest", "hypothesis")
# What a pure module may import besides the standard library and other pure modules.
PURE_MAY_ALSO_IMPORT = ("yaml",)


def modules(package: Path) -> dict[str, Path]:
    """Dotted name within the package → file, for every module of it."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        found[".".join(parts)] = path
    return found


def imports(path: Path) -> Iterator[str]:
    """Every module a file imports, as written (absolute; the project uses no relative ones)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            yield node.module


def top(name: str) -> str:
    return name.partition(".")[0]


def test_the_lists_name_modules_that_exist() -> None:
    assert set(modules(FUNCTION)) >= (PURE | ADAPTERS)


@pytest.mark.parametrize("module", sorted(PURE))
def test_a_pure_module_imports_no_aws_no_powertools_and_no_adapter(module: str) -> None:
    allowed_project = {f"cache_ingress.{name}" for name in PURE}
    for name in imports(modules(FUNCTION)[module]):
        if name == "__future__" or top(name) in PURE_MAY_ALSO_IMPORT:
            continue
        if top(name) == "cache_ingress":
            assert name in allowed_project, f"{module} imports {name}"
            continue
        assert top(name) in _standard_library(), f"{module} imports {name}"


def test_only_adapters_import_the_aws_sdk() -> None:
    importers = {
        module
        for module, path in modules(FUNCTION).items()
        if any(top(name) in AWS_SDK for name in imports(path))
    }
    assert importers <= ADAPTERS, sorted(importers - ADAPTERS)


def test_the_function_never_imports_the_tools_or_test_and_emulator_packages() -> None:
    for module, path in modules(FUNCTION).items():
        wrong = [name for name in imports(path) if top(name) in NEVER_IN_THE_FUNCTION]
        assert wrong == [], f"{module} imports {wrong}"


def test_the_tools_reuse_the_functions_intake_and_envelope() -> None:
    # dead_letters.py reads messages with the function's own intake and envelope condition
    used = set(imports(TOOLS / "dead_letters.py"))
    assert {"cache_ingress.intake", "cache_ingress.envelope"} <= used


def _standard_library() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)
