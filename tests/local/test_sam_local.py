"""`sam local invoke` would work: everything it does short of starting a Docker container.

- the function resolves from template.yaml as SAM resolves it (CodeUri, Handler, Runtime,
  Environment with parameter defaults, overridden by events/env.json; SAM only overrides
  variables the template declares), and SAM CLI's own code agrees;
- `sam build` makes an artifact that holds the function and its requirements, and none of
  the tooling;
- in a fresh interpreter whose path is the artifact plus what the Lambda runtime provides
  (boto3 and its dependencies), the handler named by the template runs every sample event
  against the embedded AWS, reached through AWS_ENDPOINT_URL as the env-vars file says (with
  127.0.0.1 for host.docker.internal), with the outcome events/catalog.yaml documents.

SAM CLI comes from $SAM_CLI, else `sam` on PATH, else .venv-sam (what `make test` installs).
Without it these tests skip, unless CACHE_INGRESS_REQUIRE_SAM=1 (CI), where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cache_ingress_tools.emulator.server import EmbeddedAws
from cache_ingress_tools.local_invoke import (
    ENDPOINT_VARIABLE,
    FUNCTION_ID,
    FunctionDefinition,
    load_env_vars_file,
    load_template,
    rebase,
    runtime_variables,
    sam_local_function,
)
from tests.integration.conftest import dead_letters
from tests.local import CHILD_DEADLINE_SECONDS, REPO_ROOT
from tests.support.events import EVENTS_DIR, catalog, event_names, load_event

TEMPLATE = REPO_ROOT / "template.yaml"
ENV_VARS = EVENTS_DIR / "env.json"
REQUIRE_SAM = os.environ.get("CACHE_INGRESS_REQUIRE_SAM") == "1"
# What the Lambda Python runtime puts on the path after the function's own code.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
# Never in the artifact: test and emulator packages, the tooling, and what the runtime has.
NOT_IN_ARTIFACT = ("moto", "pytest", "_pytest", "boto3", "cache_ingress_tools")
# The SAM CLI code path `sam local invoke` takes to build a container's environment.
SAM_ENVIRONMENT_PROBE = r"""
import json, sys
try:
    from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
except ImportError as exc:
    print(f"SAM CLI internals moved: {exc}")
    sys.exit(3)
template, function_id, env_file = sys.argv[1:4]
with open(env_file, encoding="utf-8") as handle:
    env_vars = json.load(handle)
stacks, _ = SamLocalStackProvider.get_stacks(template)
provider = SamFunctionProvider(stacks)
function = provider.get(function_id)
runner = LocalLambdaRunner(
    local_runtime=None, function_provider=provider, cwd=".", real_path=".",
    aws_region="us-east-1", env_vars_values=env_vars,
)
print(json.dumps({
    "codeuri": function.codeuri, "handler": function.handler, "runtime": function.runtime,
    "declared": sorted((function.environment or {}).get("Variables", {})),
    "environment": runner._make_env_vars(function).resolve(),
}))
"""
# What the runtime does with the Handler setting, then one invocation, then what was loaded.
DRIVER = r"""
import importlib, json, os, sys, sysconfig
event_file, *allowed = sys.argv[1:]
with open(event_file, encoding="utf-8") as handle:
    event = json.load(handle)
module_name, _, attribute = os.environ["AWS_LAMBDA_FUNCTION_HANDLER"].rpartition(".")
handler = getattr(importlib.import_module(module_name), attribute)

class Context:
    aws_request_id = "0f4c5d2e-sam-local-0000-000000000000"
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    log_group_name = "local"
    log_stream_name = "local"
    def get_remaining_time_in_millis(self):
        return 30_000

try:
    result = {"summary": handler(event, Context())}
except Exception as exc:
    result = {"raised": type(exc).__name__, "message": str(exc)}
paths = sysconfig.get_paths()
roots = [os.path.realpath(p) for p in [*allowed, paths["stdlib"], paths["platstdlib"]]]
result["foreign_modules"] = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not any(os.path.realpath(module.__file__).startswith(root) for root in roots)
)
print("RESULT " + json.dumps(result, default=str))
"""


# --- finding SAM CLI and the runtime's Python -------------------------------------------


def _sam_executable() -> str | None:
    configured = os.environ.get("SAM_CLI")
    if configured:
        return shutil.which(configured) or (configured if Path(configured).is_file() else None)
    for candidate in (
        shutil.which("sam"),
        REPO_ROOT / ".venv-sam" / "bin" / "sam",
        Path("/work/.venv-sam/bin/sam"),
    ):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def _need_sam() -> str:
    sam = _sam_executable()
    if sam is not None:
        return sam
    configured = os.environ.get("SAM_CLI")
    reason = (
        f"SAM_CLI={configured} is not an executable"
        if configured
        else "SAM CLI not found (SAM_CLI, `sam` on PATH, .venv-sam/bin/sam); `make test` has it"
    )
    if REQUIRE_SAM:
        pytest.fail(f"{reason}, and CACHE_INGRESS_REQUIRE_SAM=1 forbids skipping")
    pytest.skip(reason)


def _with_runtime_python(environment: dict[str, str], runtime: str) -> dict[str, str]:
    """`sam build` looks for the runtime's python (python3.13) on PATH; pyenv can provide
    it next to the current version, as the Makefile does.
    """
    version = runtime.removeprefix("python")
    if "PYENV_VERSION" in environment or shutil.which("pyenv") is None:
        return environment
    listed = _output(["pyenv", "versions", "--bare"], environment).split()
    matching = sorted((v for v in listed if v.startswith(f"{version}.")), key=_version_key)
    current = _output(["pyenv", "version-name"], environment).strip()
    if not matching or not current:
        return environment
    return {**environment, "PYENV_VERSION": f"{current}:{matching[-1]}"}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _output(command: list[str], environment: dict[str, str]) -> str:
    completed = subprocess.run(  # noqa: S603 - fixed tool names
        command, env=environment, capture_output=True, text=True, check=False, timeout=60
    )
    return completed.stdout if completed.returncode == 0 else ""


def _runtime_interpreter(runtime: str) -> str:
    """The real interpreter of the template's runtime if this machine has one, else ours."""
    environment = _with_runtime_python(dict(os.environ), runtime)
    executable = shutil.which(runtime, path=environment.get("PATH"))
    if executable:
        probe = "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]} {sys.executable}')"
        answer = _output([executable, "-c", probe], environment).split()
        if len(answer) == 2 and f"python{answer[0]}" == runtime:
            return answer[1]
    return sys.executable


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam_function() -> FunctionDefinition:
    return sam_local_function(load_template(TEMPLATE), load_env_vars_file(ENV_VARS))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sam_function: FunctionDefinition) -> Path:
    """`sam build` of template.yaml, once for this module."""
    sam = _need_sam()
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    environment = _with_runtime_python(
        {**os.environ, "SAM_CLI_TELEMETRY": "0"}, sam_function.runtime
    )
    completed = subprocess.run(  # noqa: S603 - the configured SAM CLI
        [sam, "build", "--template", str(TEMPLATE), "--build-dir", str(build_dir)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"sam build failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return build_dir


@pytest.fixture(scope="module")
def artifact(built: Path) -> Path:
    """The function's folder in the build, found through the built template as
    `sam local invoke` finds it.
    """
    function = sam_local_function(load_template(built / "template.yaml"), None)
    return built / function.code_uri


@pytest.fixture(scope="module")
def runtime_libraries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only what the Lambda runtime provides (links into this venv)."""
    folder = tmp_path_factory.mktemp("lambda-runtime")
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, f"{name} is not installed"
        source = Path(spec.origin)
        source = source.parent if source.name == "__init__.py" else source
        (folder / source.name).symlink_to(source)
    return folder


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedAws]:
    with EmbeddedAws(port=0) as aws:
        yield aws


# --- the function as SAM sees it ---------------------------------------------------------


@pytest.mark.template
def test_the_function_resolves_from_the_template_as_sam_local_does(
    sam_function: FunctionDefinition,
) -> None:
    template = load_template(TEMPLATE)
    declared = template["Resources"][FUNCTION_ID]["Properties"]["Environment"]["Variables"]
    overrides = json.loads(ENV_VARS.read_text(encoding="utf-8"))[FUNCTION_ID]

    module, _, attribute = sam_function.handler.rpartition(".")
    handler_file = REPO_ROOT / sam_function.code_uri / (module.replace(".", "/") + ".py")
    assert handler_file.is_file()
    assert f"def {attribute}(" in handler_file.read_text(encoding="utf-8")
    assert re.fullmatch(r"python3\.\d+", sam_function.runtime)
    # SAM drops a variable the template does not declare without a word: each must be.
    assert set(overrides) <= set(declared)
    assert {name: sam_function.environment[name] for name in overrides} == overrides
    # What the container would otherwise get for a Ref to a resource is its logical id.
    assert not set(sam_function.environment.values()) & set(template["Resources"])
    assert sam_function.environment[ENDPOINT_VARIABLE].startswith("http://")


@pytest.mark.template
def test_sam_cli_itself_resolves_the_same_function(sam_function: FunctionDefinition) -> None:
    sam = Path(_need_sam())
    first_line = sam.read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    if not first_line.startswith("#!") or "python" not in first_line:
        pytest.skip(f"{sam} is not a Python script; SAM's own resolution cannot be asked")
    interpreter = first_line[2:].strip().split()[0]
    completed = subprocess.run(  # noqa: S603 - SAM CLI's own interpreter
        [interpreter, "-c", SAM_ENVIRONMENT_PROBE, str(TEMPLATE), FUNCTION_ID, str(ENV_VARS)],
        cwd=REPO_ROOT,
        # Nothing from this shell: SAM lets shell variables override declared ones.
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(REPO_ROOT / ".pytest_cache"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "SAM_CLI_TELEMETRY": "0",
        },
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_SECONDS,
        check=False,
    )
    if completed.returncode == 3:
        pytest.skip(completed.stdout.strip())
    assert completed.returncode == 0, completed.stderr[-3000:]
    sam_view = json.loads(completed.stdout.strip().splitlines()[-1])

    assert (REPO_ROOT / sam_view["codeuri"]).resolve() == (
        REPO_ROOT / sam_function.code_uri
    ).resolve()
    assert (sam_view["handler"], sam_view["runtime"]) == (
        sam_function.handler,
        sam_function.runtime,
    )
    assert sorted(sam_function.environment) == sam_view["declared"]
    sam_environment = sam_view["environment"]
    assert {name: sam_environment[name] for name in sam_view["declared"]} == (
        sam_function.environment
    )
    runtime = runtime_variables(sam_function, "us-east-1")
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_HANDLER", "AWS_SAM_LOCAL"):
        assert sam_environment[name] == runtime[name]


# --- the built artifact -----------------------------------------------------------------


@pytest.mark.template
def test_the_built_artifact_holds_the_function_and_no_tooling(artifact: Path) -> None:
    names = {path.name for path in artifact.iterdir()}
    distributions = {re.split(r"[-.]", name, maxsplit=1)[0].lower() for name in names}

    assert (artifact / "cache_ingress" / "handler.py").is_file()
    assert (artifact / "cache_ingress" / "policy.yaml").is_file()
    assert {"aws_lambda_powertools", "yaml"} <= names
    assert not {name for name in NOT_IN_ARTIFACT if name in names or name in distributions}


@pytest.mark.integration
@pytest.mark.parametrize("name", event_names())
def test_every_sample_event_runs_through_the_built_artifact(
    name: str,
    artifact: Path,
    runtime_libraries: Path,
    embedded: EmbeddedAws,
    sam_function: FunctionDefinition,
) -> None:
    assert name in catalog(), f"events/{name} is not in events/catalog.yaml"
    world = embedded.reset()
    expected = catalog()[name]
    environment = _container_environment(sam_function, embedded.endpoint_url)
    allowed = [artifact, *(path.resolve() for path in runtime_libraries.iterdir())]

    completed = subprocess.run(  # noqa: S603 - a Python interpreter and our driver
        [
            _runtime_interpreter(sam_function.runtime),
            "-S",  # no site-packages: only the artifact and what the runtime provides
            "-c",
            DRIVER,
            str(EVENTS_DIR / name),
            *map(str, allowed),
        ],
        cwd=artifact,
        env={
            **environment,
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join([str(artifact), str(runtime_libraries)]),
            # Compiled once for all the events, outside the artifact and this venv.
            "PYTHONPYCACHEPREFIX": str(runtime_libraries.parent / "pycache"),
        },
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_SECONDS,
        check=False,
    )

    results = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and results, completed.stdout[-3000:] + completed.stderr
    result: dict[str, Any] = json.loads(results[-1].removeprefix("RESULT "))
    assert result["foreign_modules"] == []
    assert "raised" not in result, result
    summary = result["summary"]
    assert summary["status"] == expected["status"]
    outcomes = sorted(
        [d["group_id"], d.get("target"), d["outcome"], *([d["rule"]] if "rule" in d else [])]
        for d in summary["decisions"]
    )
    assert outcomes == sorted(expected["outcomes"], key=lambda o: [str(x) for x in o])
    messages = dead_letters(embedded.client("sqs"), world.dead_letter_queue_url)
    if expected["status"] == "dead-lettered":
        [message] = messages
        assert message["body"]["requestPayload"] == load_event(name)
        assert message["body"]["responsePayload"]["errorType"] == expected["error_type"]
    else:
        assert messages == []


def _container_environment(function: FunctionDefinition, endpoint_url: str) -> dict[str, str]:
    """What `sam local invoke --env-vars events/env.json` gives the container, with the
    emulator's address as this machine reaches it instead of host.docker.internal.
    """
    declared = function.environment
    container_endpoint = declared[ENDPOINT_VARIABLE]
    return {
        **runtime_variables(function, "us-east-1"),
        **rebase(declared, container_endpoint, endpoint_url),
    }
