"""The function's code as its package holds it: `make code` in functions/authorizer (what
`sam build` runs after installing the requirements).

The reviewed `policy.yaml` is written into the package as JSON, so the function never imports
PyYAML for its bundled policy. It must be exactly the same policy, and a policy that does not
validate must stop the build rather than ship.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cache_ingress.errors import PolicyError
from cache_ingress.policy import parse_policy
from cache_ingress.settings import BUNDLED_POLICY

pytestmark = pytest.mark.template

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "functions" / "authorizer"
COMPILE = FUNCTION_DIR / "compile_policy.py"


def _make_code(artifacts: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - make, a fixed target
        [
            *("make", "--no-print-directory", "-C", str(FUNCTION_DIR), "code"),
            *(f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _compile(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, the build's script
        [sys.executable, str(COMPILE), str(source), str(target)],
        cwd=FUNCTION_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("artifacts")
    completed = _make_code(artifacts)
    assert completed.returncode == 0, completed.stderr
    return artifacts


def test_the_package_holds_the_bundled_policy_as_json(built: Path) -> None:
    packaged = (built / "cache_ingress" / "policy.yaml").read_text(encoding="utf-8")

    assert isinstance(json.loads(packaged), dict)
    assert parse_policy(packaged, source="packaged") == parse_policy(
        BUNDLED_POLICY.read_text(encoding="utf-8"), source="reviewed"
    )


def test_the_package_holds_the_code_and_no_bytecode(built: Path) -> None:
    source = {p.relative_to(FUNCTION_DIR) for p in (FUNCTION_DIR / "cache_ingress").glob("*.py")}
    packaged = {p.relative_to(built) for p in (built / "cache_ingress").rglob("*")}

    assert source <= packaged
    assert not [p for p in packaged if "__pycache__" in p.parts or p.suffix == ".pyc"]
    assert not (built / "compile_policy.py").exists()


def test_the_packaged_policy_loads_without_pyyaml(built: Path) -> None:
    check = (
        "import sys\n"
        "from cache_ingress.policy_source import PolicySource\n"
        "from cache_ingress.settings import BUNDLED_POLICY\n"
        "PolicySource(tag_key='cache-ingress', policy_file=BUNDLED_POLICY).current()\n"
        "print('yaml' in sys.modules)\n"
    )
    completed = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-S", "-c", check],
        env={"PYTHONPATH": f"{built}:{':'.join(p for p in sys.path if 'site-packages' in p)}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: 1\ntargets: {a: {cache_security_group: x}}\ntargets: {}\n", "duplicate key"),
        ("version: 2\ntargets: {}\n", "version"),
        ("version: 1\ntargets: [\n", "not valid YAML or JSON"),
    ],
)
def test_a_policy_that_does_not_validate_stops_the_build(
    tmp_path: Path, text: str, reason: str
) -> None:
    source, target = tmp_path / "policy.yaml", tmp_path / "out" / "policy.yaml"
    source.write_text(text, encoding="utf-8")
    target.parent.mkdir()
    with pytest.raises(PolicyError, match=reason):
        parse_policy(text, source="oracle")

    completed = _compile(source, target)

    assert completed.returncode == 1
    assert reason in completed.stderr
    assert not target.exists()


def test_comments_and_yaml_forms_compile_to_the_same_policy(tmp_path: Path) -> None:
    source, target = tmp_path / "policy.yaml", tmp_path / "policy.json"
    source.write_text(
        "# reviewed\nversion: 1\ntag_key: cache-ingress\ntargets:\n"
        "  orders:  # the orders cache\n    cache_security_group: orders-cache-sg\n"
        "    allow: {required_tags: {env: [prod, 'yes']}, owner_accounts: ['012345678901']}\n",
        encoding="utf-8",
    )

    completed = _compile(source, target)

    assert completed.returncode == 0, completed.stderr
    compiled = target.read_text(encoding="utf-8")
    assert compiled.lstrip().startswith("{")
    assert parse_policy(compiled, source="json") == parse_policy(
        source.read_text(encoding="utf-8"), source="yaml"
    )


def test_make_code_fails_on_a_bundled_policy_that_does_not_validate(tmp_path: Path) -> None:
    copy = tmp_path / "authorizer"
    shutil.copytree(FUNCTION_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "cache_ingress" / "policy.yaml").write_text(
        "version: 1\ntargets: {orders: {cache_security_group: orders-cache-sg, allow: {}}}\n"
        "targets: {}\n",
        encoding="utf-8",
    )
    artifacts = tmp_path / "artifacts"

    completed = subprocess.run(  # noqa: S603 - make, a fixed target
        [
            *("make", "--no-print-directory", "-C", str(copy), "code"),
            *(f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode != 0
    assert "duplicate key 'targets'" in completed.stderr


def test_the_build_lists_every_problem_of_the_bundled_policy_with_its_line(
    tmp_path: Path,
) -> None:
    # As `sam build` runs it: the Makefile in a copy of functions/authorizer.
    copy = tmp_path / "authorizer"
    shutil.copytree(FUNCTION_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    policy = copy / "cache_ingress" / "policy.yaml"
    text = policy.read_text(encoding="utf-8")
    lines = text.splitlines()
    typo = lines.index("      required_tags:") + 1
    policy.write_text(
        text.replace("      required_tags:", "      required_tag:", 2), encoding="utf-8"
    )
    second = next(
        number
        for number, line in enumerate(policy.read_text().splitlines(), start=1)
        if line == "      required_tag:" and number != typo
    )

    completed = subprocess.run(  # noqa: S603 - make, a fixed target
        [
            *("make", "--no-print-directory", "-C", str(copy), "code"),
            *(f"ARTIFACTS_DIR={tmp_path / 'out'}", f"PYTHON={sys.executable}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode != 0
    edit = "functions/authorizer/cache_ingress/policy.yaml"
    assert f"the bundled policy ({edit}) does not validate, 2 problems" in completed.stderr
    for line in (typo, second):
        assert f"{edit}:{line}: targets." in completed.stderr
    assert completed.stderr.count("unknown field 'required_tag'") == 2
