"""The function's environment, as `sam local invoke` would give it: template variables, then
an env-vars file in SAM's format with SAM's rules (:func:`apply_env_vars`), then the endpoint
of the embedded AWS the run talks to (:class:`Target`)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress_tools.emulator.scenario import Scenario
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws, client_for
from cache_ingress_tools.local_invoke.template import (
    FUNCTION_ID,
    FunctionDefinition,
    resolve_function,
    sam_pseudo_parameters,
)

ENDPOINT_VARIABLE: Final = "AWS_ENDPOINT_URL"
# Settings the function reads that the template does not declare, so no env-vars file can
# set them (cache_ingress.settings): a policy file is the one people try.
POLICY_VARIABLES: Final = frozenset({"POLICY_FILE"})
# `sam local` resolves AWS::AccountId and AWS::Region to these unless told otherwise.
SAM_DEFAULT_ACCOUNT: Final = "123456789012"
SAM_DEFAULT_REGION: Final = "us-east-1"


class LocalInvokeError(RuntimeError):
    """The local run cannot start (no emulator, bad env-vars file, ...); says what to do."""


# --- locating the project -------------------------------------------------------------


def project_root(start: Path | None = None) -> Path:
    """The folder holding template.yaml and events/: the working directory or, for an
    editable install, the repository this package lives in.
    """
    candidates = [start or Path.cwd(), Path(__file__).resolve().parents[3]]
    for candidate in candidates:
        if (candidate / "template.yaml").is_file() and (candidate / "events").is_dir():
            return candidate
    raise LocalInvokeError(
        "cannot find the project (template.yaml and events/): run this from the repository's "
        "top folder, or pass --template"
    )


# --- the env-vars file (SAM's format) ---------------------------------------------------


def load_env_vars_file(path: Path) -> dict[str, Any]:
    """``{"FunctionLogicalId": {...}, "Parameters": {...}}``, as `sam local --env-vars` reads."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalInvokeError(f"env-vars file {path}: cannot be read: {exc}") from None
    except ValueError as exc:
        raise LocalInvokeError(f"env-vars file {path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise LocalInvokeError(f"env-vars file {path}: must be a JSON object")
    for key, value in document.items():
        if not isinstance(value, dict):
            raise LocalInvokeError(
                f"env-vars file {path}: {key}: must be an object of variable names to values"
            )
    return document


def apply_env_vars(
    environment: Mapping[str, str], env_vars: Mapping[str, Any], logical_id: str
) -> dict[str, str]:
    """SAM's rules: "Parameters" applies to every function, the function's own section wins,
    and only variables the template declares are overridden (others are ignored).
    """
    overrides: dict[str, Any] = {**env_vars.get("Parameters", {}), **env_vars.get(logical_id, {})}
    result = dict(environment)
    for name, value in overrides.items():
        if name in result:
            result[name] = _sam_string(value)
    return result


def ignored_env_vars(
    environment: Mapping[str, str], env_vars: Mapping[str, Any], logical_id: str
) -> list[tuple[str, str]]:
    """The (section, variable) pairs of an env-vars file that SAM ignores for `logical_id`:
    those its template does not declare (see `apply_env_vars`)."""
    return [
        (section, name)
        for section in ("Parameters", logical_id)
        for name in env_vars.get(section, {})
        if name not in environment
    ]


def _ignored_notes(ignored: list[tuple[str, str]], logical_id: str) -> list[str]:
    notes = []
    for section, name in ignored:
        note = (
            f"{section}.{name} in the env-vars file is ignored: {logical_id} does not declare "
            "it in the template, and SAM passes only the variables a function declares"
        )
        if name in POLICY_VARIABLES:
            note += (
                "; the function reads its bundled policy (functions/authorizer/cache_ingress/"
                "policy.yaml, packaged by `sam build`) or the stack's PolicyParameterName: "
                "edit the bundled policy, or check another file with `cache-ingress policy "
                "validate FILE` and `cache-ingress explain --policy-file FILE`"
            )
        notes.append(note)
    return notes


def _sam_string(value: Any) -> str:
    # As SAM passes them: lists, objects and null become empty, booleans lower-case.
    if isinstance(value, dict | list | tuple) or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- the run ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The AWS the run talks to: its endpoint and the scenario it was seeded from."""

    endpoint_url: str
    scenario: Scenario
    dead_letter_queue_url: str
    description: str

    def client(self, service: str) -> Any:
        return client_for(self.endpoint_url, self.scenario.region, service)

    def function_credentials(self) -> dict[str, str]:
        """The credentials the function runs with: the emulator's dummies, or, in a scenario
        with member accounts (whose read roles trust only the function's execution role), a
        session of that role, as Lambda gives it."""
        if not self.scenario.member_accounts:
            return {
                "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
            }
        from cache_ingress_tools.emulator.organization import (  # noqa: PLC0415
            FUNCTION_ROLES,
            INGRESS_FUNCTION,
        )

        role = f"arn:aws:iam::{self.scenario.account_id}:role/{FUNCTION_ROLES[INGRESS_FUNCTION]}"
        # The cache account is not one whose trust the emulator enforces: as Lambda, ask.
        session = self.client("sts").assume_role(RoleArn=role, RoleSessionName=INGRESS_FUNCTION)
        credentials = session["Credentials"]
        return {
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
        }


def embedded_target(aws: EmbeddedAws, description: str) -> Target:
    """The target of an embedded AWS running in this process."""
    return Target(aws.endpoint_url, aws.scenario, aws.world.dead_letter_queue_url, description)


def running_target(endpoint_url: str, scenario: Scenario) -> Target:
    """An embedded AWS already running elsewhere (``cache-ingress emulator``), seeded from
    ``scenario``; raises LocalInvokeError if nothing answers there or it lacks the queue.
    """
    sqs = client_for(endpoint_url, scenario.region, "sqs")
    try:
        queue_url = sqs.get_queue_url(QueueName=scenario.dead_letter_queue)["QueueUrl"]
    except ClientError as exc:
        raise LocalInvokeError(
            f"the AWS at {endpoint_url} has no queue {scenario.dead_letter_queue!r}: was it "
            "seeded from another scenario? pass the same --scenario to both commands"
        ) from exc
    except BotoCoreError as exc:
        raise LocalInvokeError(
            f"nothing answers at {endpoint_url} ({exc}); start it with `cache-ingress "
            "emulator`, or leave out --endpoint-url to start one for this run"
        ) from exc
    return Target(endpoint_url, scenario, str(queue_url), "already running")


def function_environment(
    function_template: Mapping[str, Any],
    target: Target,
    *,
    logical_id: str = FUNCTION_ID,
    env_vars: Mapping[str, Any] | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
) -> tuple[FunctionDefinition, dict[str, str], tuple[str, ...]]:
    """The function, the full environment it runs with here, and notes on what was changed.

    Template variables with the emulator's names for the table and queue, then the env-vars
    file; its URLs under its own AWS_ENDPOINT_URL (a container's view of the emulator, e.g.
    host.docker.internal) are re-based onto the endpoint this process reaches.
    """
    scenario = target.scenario
    refs, attributes = _emulator_resources(function_template, target)
    function = resolve_function(
        function_template,
        logical_id,
        pseudo=sam_pseudo_parameters(scenario.account_id, scenario.region),
        # The member accounts the scenario deployed the stack for, unless overridden.
        parameter_overrides={**scenario.stack_parameters(), **(parameter_overrides or {})},
        resource_refs=refs,
        resource_attributes=attributes,
    )
    declared = dict(function.environment)
    notes: list[str] = []
    if env_vars is not None:
        notes.extend(_ignored_notes(ignored_env_vars(declared, env_vars, logical_id), logical_id))
        declared = apply_env_vars(declared, env_vars, logical_id)
        container_endpoint = declared.get(ENDPOINT_VARIABLE, "")
        if container_endpoint and container_endpoint != target.endpoint_url:
            declared = rebase(declared, container_endpoint, target.endpoint_url)
            notes.append(
                f"{container_endpoint} (a container's view) re-based to {target.endpoint_url}"
            )
    if ENDPOINT_VARIABLE not in declared:
        notes.append(f"the template does not declare {ENDPOINT_VARIABLE}; set here all the same")
    declared[ENDPOINT_VARIABLE] = target.endpoint_url
    runtime = {**runtime_variables(function, scenario.region), **target.function_credentials()}
    if scenario.policy is not None:
        # The scenario's stack is deployed with its own policy, as if bundled by `sam build`.
        runtime["POLICY_FILE"] = str(scenario.policy)
    # A Lambda has no AWS config files; the developer's must not change this run.
    no_config = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    return function, {**runtime, **no_config, **declared}, tuple(notes)


def runtime_variables(function: FunctionDefinition, region: str) -> dict[str, str]:
    """What the Lambda runtime (and `sam local`) sets besides the function's variables.

    The credentials are dummies on purpose: a mistake can never reach a real account with
    the developer's keys.
    """
    return {
        "AWS_SAM_LOCAL": "true",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout),
        "AWS_LAMBDA_FUNCTION_HANDLER": function.handler,
    }


def sam_local_function(
    template: Mapping[str, Any],
    env_vars: Mapping[str, Any] | None,
    *,
    logical_id: str = FUNCTION_ID,
    account_id: str = SAM_DEFAULT_ACCOUNT,
    region: str = SAM_DEFAULT_REGION,
) -> FunctionDefinition:
    """The function as `sam local invoke --env-vars` gives it to its container: pseudo
    parameters at SAM's defaults, a Ref to a resource as its logical id, then the file.
    """
    function = resolve_function(
        template, logical_id, pseudo=sam_pseudo_parameters(account_id, region)
    )
    environment = function.environment
    if env_vars is not None:
        environment = apply_env_vars(environment, env_vars, logical_id)
    return dataclasses.replace(function, environment=environment)


def rebase(environment: Mapping[str, str], old: str, new: str) -> dict[str, str]:
    """Every value under URL ``old`` moved under ``new`` (the same emulator, seen from
    another place: a container's host.docker.internal, this machine's 127.0.0.1).
    """
    return {
        name: new + value[len(old) :] if value.startswith(old) else value
        for name, value in environment.items()
    }


def _emulator_resources(
    template: Mapping[str, Any], target: Target
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Refs and attributes of the template's table and queue, as the emulator names them."""
    scenario = target.scenario
    partition = sam_pseudo_parameters(scenario.account_id, scenario.region)["AWS::Partition"]
    prefix = f"arn:{partition}"
    by_type: dict[str, list[str]] = {}
    for logical_id, resource in template["Resources"].items():
        by_type.setdefault(str(resource.get("Type")), []).append(logical_id)
    refs: dict[str, str] = {}
    attributes: dict[tuple[str, str], str] = {}
    # A table is the scenario's when a function's variable names it: IDEMPOTENCY_TABLE the
    # scenario's idempotency table, LEDGER_TABLE its ledger. Any other keeps its logical id
    # (as `sam local` does).
    scenario_tables = {
        "IDEMPOTENCY_TABLE": scenario.idempotency_table,
        "LEDGER_TABLE": scenario.ledger_table,
    }
    tables = set(by_type.get("AWS::DynamoDB::Table", []))
    for variable, logical_id in _table_variables(template, tables):
        table = scenario_tables.get(variable)
        if table is None:
            continue
        refs[logical_id] = table
        attributes[(logical_id, "Arn")] = (
            f"{prefix}:dynamodb:{scenario.region}:{scenario.account_id}:table/{table}"
        )
    queues = by_type.get("AWS::SQS::Queue", [])
    if len(queues) == 1:
        queue = scenario.dead_letter_queue
        refs[queues[0]] = target.dead_letter_queue_url
        attributes[(queues[0], "Arn")] = (
            f"{prefix}:sqs:{scenario.region}:{scenario.account_id}:{queue}"
        )
        attributes[(queues[0], "QueueName")] = queue
        attributes[(queues[0], "QueueUrl")] = target.dead_letter_queue_url
    return refs, attributes


def _table_variables(template: Mapping[str, Any], tables: set[str]) -> list[tuple[str, str]]:
    """(variable, table logical id) for every function variable that is a Ref to a table."""
    found = []
    for resource in template["Resources"].values():
        properties = resource.get("Properties") or {}
        variables = (properties.get("Environment") or {}).get("Variables") or {}
        for name, value in variables.items():
            if isinstance(value, Mapping) and value.get("Ref") in tables:
                found.append((str(name), str(value["Ref"])))
    return found
