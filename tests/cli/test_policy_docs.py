"""docs/policy.md's CI recipe, run as written: its `validate`, `current` and `plan` steps, in
bash as GitHub runs them, on a clone whose origin/main holds the deployed policy, against the
embedded AWS (`PLAN_ARGS` names its endpoint, as the rehearsal in the document says), with
the document's samconfig.toml beside the template.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cache_ingress.settings import BUNDLED_POLICY
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws
from tests.support.processes import CHILD_DEADLINE_SECONDS, REPO_ROOT

pytestmark = pytest.mark.cli

DOC = REPO_ROOT / "docs" / "policy.md"
POLICY = "functions/authorizer/cache_ingress/policy.yaml"
RUN_HERE = ("validate", "current", "plan")
# GitHub's default shell for `run:` on Linux.
BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]


def _block(after: str, language: str) -> str:
    text = DOC.read_text(encoding="utf-8").split(after, 1)[1]
    # A fence closes only at the start of a line (the recipe writes ``` inside a line).
    match = re.search(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


def workflow() -> dict[str, Any]:
    document = yaml.safe_load(_block("## A CI job for policy pull requests", "yaml"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as running:
        yield running


def git(cwd: Path, *arguments: str) -> None:
    subprocess.run(  # noqa: S603 - git, fixed arguments
        ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *arguments],  # noqa: S607
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=CHILD_DEADLINE_SECONDS,
    )


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A repository whose main holds the bundled policy, cloned, on a pull request branch."""
    deployed = tmp_path / "deployed"
    (deployed / POLICY).parent.mkdir(parents=True)
    shutil.copy(BUNDLED_POLICY, deployed / POLICY)
    shutil.copy(REPO_ROOT / "template.yaml", deployed / "template.yaml")
    (deployed / "samconfig.toml").write_text(
        _block("a\n`samconfig.toml` beside the template", "toml"), encoding="utf-8"
    )
    git(deployed, "init", "--initial-branch=main")
    git(deployed, "add", ".")
    git(deployed, "commit", "-m", "deployed")
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(deployed), str(work))
    git(work, "checkout", "-b", "policy-change")
    return work


def run_steps(clone: Path, aws: EmbeddedAws, tmp_path: Path) -> tuple[str, str]:
    """The recipe's steps, in order; (the job summary, the step outputs)."""
    [job] = workflow()["jobs"].values()
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    summary, output = runner_temp / "summary.md", runner_temp / "output"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POLICY_"))},
        **job["env"],
        "PLAN_ARGS": f"--endpoint-url {aws.endpoint_url}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "GITHUB_BASE_REF": "main",
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
    }
    steps = {step["id"]: step["run"] for step in job["steps"] if step.get("id") in RUN_HERE}
    assert list(steps) == list(RUN_HERE)
    for step_id, script in steps.items():
        completed = subprocess.run(  # noqa: S603 - the document's own script
            [*BASH, script],
            cwd=clone,
            env=environment,
            capture_output=True,
            text=True,
            timeout=CHILD_DEADLINE_SECONDS,
            check=False,
        )
        assert completed.returncode == 0, f"{step_id}: {completed.stdout}{completed.stderr}"
    return summary.read_text(encoding="utf-8"), output.read_text(encoding="utf-8")


def test_a_policy_change_is_planned_in_the_job_summary(
    clone: Path, aws: EmbeddedAws, tmp_path: Path
) -> None:
    aws.reset()
    policy = clone / POLICY
    policy.write_text(
        policy.read_text(encoding="utf-8").replace(
            "cache_security_group: orders-cache-sg\n    allow:\n      required_tags:\n"
            "        env: prod",
            "cache_security_group: orders-cache-sg\n    allow:\n      required_tags:\n"
            "        env: [prod, staging]",
        ),
        encoding="utf-8",
    )
    git(clone, "commit", "-am", "allow staging into orders")

    summary, output = run_steps(clone, aws, tmp_path)

    grant = [line.split() for line in summary.splitlines() if line.startswith("grant")]
    assert [row[:4] for row in grant] == [
        ["grant", "sg-0b2c3d4e5f6071829", "orders-staging-app", "orders"]
    ]
    assert "plan: 1 pair(s) change (grant 1)" in summary
    assert output.strip() == "changes=true"


def test_a_pull_request_that_changes_no_pair_says_so(
    clone: Path, aws: EmbeddedAws, tmp_path: Path
) -> None:
    aws.reset()
    policy = clone / POLICY
    policy.write_text("# reviewed again\n" + policy.read_text(encoding="utf-8"), encoding="utf-8")
    git(clone, "commit", "-am", "a comment")

    summary, output = run_steps(clone, aws, tmp_path)

    assert "no change: every tagged pair stands as it does under the current policy" in summary
    assert output.strip() == "changes=false"
