"""`cache-ingress policy validate`: every problem with its line, offline; with the template,
what the stack's IAM would refuse after deploy. Exit 0 valid, 1 invalid, 2 could not run.

The expected lines are counted in the documents written here; the stack's rules are the
README's parameter table: the function may authorize only into the cache security groups of
CacheSecurityGroupArns, add rules only to CacheVpcSecurityGroupIds, and its events carry
TagKey.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cache_ingress_tools.cli import main
from tests.support.processes import REPO_ROOT, run_cli

pytestmark = pytest.mark.cli

TEMPLATE = REPO_ROOT / "template.yaml"
POLICY = """\
version: 1
tag_key: cache-ingress
targets:
  orders:
    cache_security_group: orders-cache-sg
    allow:
      required_tags: {env: prod}
  reports:
    vpc_security_group: {group_id: sg-0c3c4d5e6f7081923, port: 6380}
  sessions:
    replication_group: sessions-redis
"""
ORDERS_ARN = "arn:aws:elasticache:us-east-1:123456789012:securitygroup:orders-cache-sg"


def validate(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    status = main(["policy", "validate", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


@pytest.fixture
def template(tmp_path: Path) -> Path:
    """The project's template in a folder of its own, where a samconfig file can sit."""
    folder = tmp_path / "stack"
    folder.mkdir()
    return Path(shutil.copy(TEMPLATE, folder / "template.yaml"))


def test_the_bundled_policy_is_valid_as_the_readme_says_to_check_it() -> None:
    completed = run_cli(["policy", "validate"])

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("functions/authorizer/cache_ingress/policy.yaml: valid")
    assert "what `sam build` packages (its JSON form) is the same policy" in completed.stdout
    assert "  orders: cache security group orders-cache-sg" in completed.stdout


def test_every_problem_is_listed_with_its_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        POLICY.replace("required_tags", "required_tag").replace("port: 6380", "port: 0")
        + "  sessions:\n    cache_cluster: other\n",
        encoding="utf-8",
    )

    status, out, _ = validate(capsys, str(broken))

    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{broken}:7: targets.orders.allow: unknown field 'required_tag'")
    assert lines[1] == (
        f"{broken}:9: targets.reports.vpc_security_group.port: must be a TCP port number from "
        "1 to 65535"
    )
    assert lines[2] == f"{broken}:12: targets: duplicate key 'sessions'"
    assert lines[3] == f"{broken}: invalid, 3 problems"


def test_json_lists_the_problems_for_a_script(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 2\ntargets: {}\n", encoding="utf-8")

    status, out, _ = validate(capsys, str(broken), "--json")

    document = json.loads(out)
    assert status == 1
    assert document["valid"] is False
    assert [(p["line"], p["field"]) for p in document["problems"]] == [
        (1, "version"),
        (2, "targets"),
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["/no/such/policy.yaml"], "policy /no/such/policy.yaml: cannot be read"),
        (
            ["--template", "/no/such/template.yaml"],
            "template /no/such/template.yaml: cannot be read",
        ),
        (
            ["--template", str(TEMPLATE), "--parameter-overrides", "Nope=1"],
            "parameter override Nope: the template has no such parameter",
        ),
        (
            ["--template", str(TEMPLATE), "--parameter-overrides", "DryRun"],
            "--parameter-overrides 'DryRun': expected KEY=VALUE",
        ),
        (
            ["--template", str(TEMPLATE), "--parameter-overrides", "DryRun=maybe"],
            "parameter override DryRun='maybe': must be one of true, false",
        ),
    ],
)
def test_a_check_that_cannot_run_says_why_with_status_2(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    status, out, err = validate(capsys, *arguments)

    assert status == 2
    assert out == ""
    assert err.startswith(f"cache-ingress policy validate: {message}")
    assert err.count("\n") == 1


def test_the_template_defaults_cannot_grant_anything_and_each_target_says_why(
    capsys: pytest.CaptureFixture[str], policy: Path, template: Path
) -> None:
    status, out, _ = validate(capsys, str(policy), "--template", str(template))

    assert status == 1
    assert f"{policy}:5: targets.orders.cache_security_group: cache security group " in out
    assert (
        "is not among the stack's CacheSecurityGroupArns (empty): authorizing into it would "
        "fail with AccessDenied after deploy" in out
    )
    assert f"{policy}:9: targets.reports.vpc_security_group.group_id: security group " in out
    assert "AccessDenied (UnauthorizedOperation)" in out
    assert f"{policy}:11: targets.sessions.replication_group: the stack's " in out
    assert "cannot do what the policy asks: 3 problems above" in out


def test_samconfig_beside_the_template_gives_the_parameters_and_overrides_win(
    capsys: pytest.CaptureFixture[str], policy: Path, template: Path
) -> None:
    (template.parent / "samconfig.toml").write_text(
        'version = 0.1\n[default.deploy.parameters]\nregion = "us-east-1"\n'
        f'parameter_overrides = "CacheSecurityGroupArns=\\"{ORDERS_ARN}\\" '
        'CacheVpcSecurityGroupIds=sg-0c3c4d5e6f7081923"\n'
        '[staging.deploy.parameters]\nparameter_overrides = ["TagKey=other"]\n',
        encoding="utf-8",
    )

    status, out, _ = validate(capsys, str(policy), "--template", str(template))

    # Both destinations are listed; the replication group's group only the account knows.
    assert status == 0, out
    assert f"note: {policy}:11: targets.sessions.replication_group: replication group " in out
    assert "the stack (" in out
    assert "samconfig.toml [default], region us-east-1) can grant every target" in out

    status, out, _ = validate(
        capsys, str(policy), "--template", str(template), "--config-env", "staging"
    )

    assert status == 1
    assert f"{policy}:2: tag_key: 'cache-ingress' differs from the stack's TagKey 'other'" in out

    status, out, _ = validate(
        capsys,
        str(policy),
        "--template",
        str(template),
        "--parameter-overrides",
        "CacheSecurityGroupArns=arn:aws:elasticache:eu-west-1:123456789012:securitygroup:*",
    )

    assert status == 1
    assert "cache security group orders-cache-sg is not among" in out
    assert "add arn:aws:elasticache:us-east-1:ACCOUNT:securitygroup:orders-cache-sg" in out


def test_an_environment_the_config_file_lacks_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], policy: Path, template: Path
) -> None:
    (template.parent / "samconfig.toml").write_text(
        "version = 0.1\n[default.deploy.parameters]\n", encoding="utf-8"
    )

    status, _, err = validate(
        capsys, str(policy), "--template", str(template), "--config-env", "prod"
    )

    assert status == 2
    assert "has no environment 'prod' (it has: default)" in err


def test_a_policy_file_in_an_env_vars_file_is_reported_since_the_function_ignores_it(
    capsys: pytest.CaptureFixture[str], policy: Path, template: Path, tmp_path: Path
) -> None:
    env_vars = tmp_path / "env.json"
    env_vars.write_text(
        json.dumps({"IngressFunction": {"POLICY_FILE": str(policy), "DRY_RUN": "true"}}),
        encoding="utf-8",
    )

    status, out, _ = validate(
        capsys, str(policy), "--template", str(template), "--env-vars", str(env_vars)
    )

    assert status == 1
    assert (
        f"{env_vars}: IngressFunction.POLICY_FILE: IngressFunction ignores it: the template "
        "does not declare POLICY_FILE"
    ) in out
    assert "DRY_RUN" not in out  # declared: SAM passes it

    status, _, err = validate(capsys, str(policy), "--env-vars", str(env_vars))

    assert status == 2
    assert "--env-vars is read against the template: pass --template too" in err
