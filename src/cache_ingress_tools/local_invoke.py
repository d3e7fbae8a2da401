"""Run the real Lambda handler in this process against the embedded AWS, as `sam local invoke`
would run it in a container: same handler, same environment from ``template.yaml``, same
env-vars file format, same endpoint variable.

Three parts:

- the template: a YAML loader for CloudFormation short tags and a resolver for the
  intrinsic functions a function's properties use (:func:`load_template`,
  :func:`resolve_function`);
- the environment: template variables, then an env-vars file in SAM's format with SAM's
  rules (:func:`apply_env_vars`), then the endpoint of the embedded AWS;
- the run: :func:`invoke` calls ``cache_ingress.handler.lambda_handler`` with that environment
  in ``os.environ``, captures the structured log lines, and reads back the cache security
  groups and the dead-letter queue; :func:`render` prints it all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import boto3
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from cache_ingress.errors import MalformedEventError
from cache_ingress.intake import Ignored, parse_event
from cache_ingress_tools.dead_letters import DeadLetter, Unrecognised, read_dead_letter
from cache_ingress_tools.emulator.scenario import Scenario
from cache_ingress_tools.emulator.server import DUMMY_CREDENTIALS, EmbeddedAws, client_for
from cache_ingress_tools.lambda_context import LocalContext

__all__ = [
    "FUNCTION_ID",
    "UNDECLARED_SETTINGS",
    "FunctionDefinition",
    "InvocationResult",
    "LocalInvokeError",
    "Target",
    "TemplateError",
    "apply_env_vars",
    "describe_event",
    "embedded_target",
    "function_environment",
    "invoke",
    "load_env_vars_file",
    "load_template",
    "project_root",
    "rebase",
    "render",
    "resolve_function",
    "running_target",
    "runtime_variables",
    "sam_local_function",
    "sam_pseudo_parameters",
]

FUNCTION_ID: Final = "IngressFunction"
ENDPOINT_VARIABLE: Final = "AWS_ENDPOINT_URL"
# `sam local` resolves AWS::AccountId and AWS::Region to these unless told otherwise.
SAM_DEFAULT_ACCOUNT: Final = "123456789012"
SAM_DEFAULT_REGION: Final = "us-east-1"
# Settings the function reads that the template does not declare: unset in Lambda, so unset
# here too, whatever the developer's shell holds.
UNDECLARED_SETTINGS: Final = ("POLICY_FILE", "IDEMPOTENCY_EXPIRY_SECONDS")
_NO_VALUE: Final = object()


class TemplateError(ValueError):
    """The template cannot be read or resolved; the message names the file and the property."""


class LocalInvokeError(RuntimeError):
    """The local run cannot start (no emulator, bad env-vars file, ...); says what to do."""


# --- locating the project -------------------------------------------------------------


def project_root(start: Path | None = None) -> Path:
    """The folder holding template.yaml and events/: the working directory or, for an
    editable install, the repository this package lives in.
    """
    candidates = [start or Path.cwd(), Path(__file__).resolve().parents[2]]
    for candidate in candidates:
        if (candidate / "template.yaml").is_file() and (candidate / "events").is_dir():
            return candidate
    raise LocalInvokeError(
        "cannot find the project (template.yaml and events/): run this from the repository's "
        "top folder, or pass --template"
    )


# --- the template ---------------------------------------------------------------------

_SHORT_TAGS: Final = frozenset(
    {
        "And", "Base64", "Cidr", "Condition", "Equals", "FindInMap", "GetAtt", "GetAZs",
        "If", "ImportValue", "Join", "Length", "Not", "Or", "Ref", "Select", "Split", "Sub",
        "ToJsonString", "Transform",
    }
)  # fmt: skip


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long form."""


def _construct_short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if suffix not in _SHORT_TAGS:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown CloudFormation tag !{suffix}", node.start_mark
        )
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in {"Ref", "Condition"}:
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _construct_short_tag)


def load_template(path: Path) -> dict[str, Any]:
    """A SAM/CloudFormation template (YAML or JSON) with short tags in long form."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_TemplateLoader)  # noqa: S506  # nosec B506
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"template {path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"template {path}: has no Resources mapping")
    return document


def sam_pseudo_parameters(account_id: str, region: str) -> dict[str, str]:
    """Pseudo parameters as `sam local` resolves them (its defaults: 123456789012, us-east-1)."""
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    if region.startswith("us-gov-"):
        partition = "aws-us-gov"
    return {
        "AWS::AccountId": account_id,
        "AWS::Region": region,
        "AWS::Partition": partition,
        "AWS::StackName": "local",
        "AWS::StackId": f"arn:{partition}:cloudformation:{region}:{account_id}:stack/local/"
        "51af3dc0-da77-11e4-872e-1234567db123",
        "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
        "AWS::NotificationARNs": "",
    }


@dataclass(frozen=True, slots=True)
class FunctionDefinition:
    """A function as the template defines it, with its environment resolved."""

    logical_id: str
    code_uri: str
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    environment: dict[str, str]


def resolve_function(
    template: Mapping[str, Any],
    logical_id: str = FUNCTION_ID,
    *,
    pseudo: Mapping[str, str],
    parameter_overrides: Mapping[str, str] | None = None,
    resource_refs: Mapping[str, str] | None = None,
    resource_attributes: Mapping[tuple[str, str], str] | None = None,
) -> FunctionDefinition:
    """Resolve the function's properties (Globals.Function applied, as SAM does).

    ``Ref`` to a resource gives ``resource_refs[logical id]``, or the logical id itself as
    `sam local` does; ``GetAtt`` needs ``resource_attributes``. A variable whose value is
    ``AWS::NoValue`` is left out.
    """
    resources = template["Resources"]
    resource = resources.get(logical_id)
    if not isinstance(resource, Mapping) or resource.get("Type") != "AWS::Serverless::Function":
        raise TemplateError(f"template has no AWS::Serverless::Function {logical_id}")
    resolver = _Resolver(
        template,
        pseudo=pseudo,
        parameter_overrides=parameter_overrides or {},
        resource_refs=resource_refs or {},
        resource_attributes=resource_attributes or {},
    )
    globals_ = template.get("Globals", {}).get("Function", {})
    properties = {**globals_, **resource.get("Properties", {})}
    global_variables = globals_.get("Environment", {}).get("Variables", {})
    variables = {**global_variables, **properties.get("Environment", {}).get("Variables", {})}
    environment: dict[str, str] = {}
    for name, raw in variables.items():
        value = resolver.value(raw, f"{logical_id}.Environment.Variables.{name}")
        if value is not _NO_VALUE:
            environment[str(name)] = _stringify(value)

    def prop(name: str, default: Any = None) -> Any:
        if name not in properties:
            return default
        return resolver.value(properties[name], f"{logical_id}.{name}")

    return FunctionDefinition(
        logical_id=logical_id,
        code_uri=str(prop("CodeUri", ".")),
        handler=str(prop("Handler", "")),
        runtime=str(prop("Runtime", "")),
        timeout=int(prop("Timeout", 3)),
        memory_size=int(prop("MemorySize", 128)),
        environment=environment,
    )


def _stringify(value: Any) -> str:
    # Lambda environment values are strings; CloudFormation writes booleans lower-case.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        raise TemplateError(f"resolved to a {type(value).__name__}, not a string: {value!r}")
    return str(value)


class _Resolver:
    """Evaluates the intrinsic functions of one template."""

    _SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        pseudo: Mapping[str, str],
        parameter_overrides: Mapping[str, str],
        resource_refs: Mapping[str, str],
        resource_attributes: Mapping[tuple[str, str], str],
    ) -> None:
        self._template = template
        self._pseudo = pseudo
        self._refs = resource_refs
        self._attributes = resource_attributes
        self._parameters = self._parameter_values(parameter_overrides)
        self._functions: dict[str, Callable[[Any, str], Any]] = {
            "Ref": self._ref,
            "Fn::Sub": self._sub,
            "Fn::GetAtt": self._get_att,
            "Fn::If": self._if,
            "Fn::Join": self._join,
            "Fn::Split": self._split,
            "Fn::Select": self._select,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Equals": self._equals,
            "Fn::Not": self._not,
            "Fn::And": self._and,
            "Fn::Or": self._or,
            "Condition": self._condition,
        }

    def value(self, node: Any, where: str) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            [(name, argument)] = node.items()
            function = self._functions.get(name)
            if function is not None:
                return function(argument, where)
            if name.startswith("Fn::"):
                raise TemplateError(f"{where}: {name} is not supported by the local run")
        if isinstance(node, dict):
            resolved = {k: self.value(v, f"{where}.{k}") for k, v in node.items()}
            return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
        if isinstance(node, list):
            items = [self.value(v, f"{where}[{i}]") for i, v in enumerate(node)]
            return [v for v in items if v is not _NO_VALUE]
        return node

    def _parameter_values(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        declared = self._template.get("Parameters", {}) or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(
                f"parameter override {unknown[0]}: the template has no such parameter"
            )
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                raw = str(overrides[name])
                _check_parameter(name, spec, raw)
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                continue
            if str(spec.get("Type", "String")).startswith("CommaDelimitedList") or str(
                spec.get("Type", "")
            ).startswith("List<"):
                values[name] = [item.strip() for item in str(raw).split(",")]
            else:
                values[name] = _stringify(raw)
        return values

    def _ref(self, name: Any, where: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            return self._parameters[name]
        if name in (self._template.get("Parameters") or {}):
            raise TemplateError(f"{where}: parameter {name} has no default and no override")
        if name in self._template["Resources"]:
            return self._refs.get(name, name)
        raise TemplateError(f"{where}: Ref to unknown name {name!r}")

    def _get_att(self, argument: Any, where: str) -> Any:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise TemplateError(f"{where}: Fn::GetAtt needs [resource, attribute]")
        resource, attribute = (str(part) for part in argument)
        value = self._attributes.get((resource, attribute))
        if value is None:
            raise TemplateError(f"{where}: {resource}.{attribute} has no value in the local run")
        return value

    def _sub(self, argument: Any, where: str) -> Any:
        if isinstance(argument, list):
            text, variables = (
                argument[0],
                {k: self.value(v, f"{where}.{k}") for k, v in argument[1].items()},
            )
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return _stringify(variables[name])
            if "." in name and name.split(".", 1)[0] in self._template["Resources"]:
                return _stringify(self._get_att(name.split(".", 1), where))
            return _stringify(self._ref(name, where))

        return self._SUB_VARIABLE.sub(replace, str(text))

    def _if(self, argument: Any, where: str) -> Any:
        condition, when_true, when_false = argument
        chosen = when_true if self._condition(condition, where) else when_false
        return self.value(chosen, where)

    def _condition(self, name: str, where: str) -> bool:
        conditions = self._template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"{where}: unknown condition {name!r}")
        return bool(self.value(conditions[name], f"Conditions.{name}"))

    def _join(self, argument: Any, where: str) -> str:
        delimiter, items = argument
        values = self.value(items, where)
        return str(delimiter).join(_stringify(v) for v in values)

    def _split(self, argument: Any, where: str) -> list[str]:
        delimiter, text = argument
        return str(self.value(text, where)).split(str(delimiter))

    def _select(self, argument: Any, where: str) -> Any:
        index, items = argument
        return self.value(items, where)[int(self.value(index, where))]

    def _find_in_map(self, argument: Any, where: str) -> Any:
        name, first, second = (self.value(part, where) for part in argument)
        try:
            return self._template["Mappings"][name][first][second]
        except (KeyError, TypeError):
            raise TemplateError(f"{where}: no mapping {name}.{first}.{second}") from None

    def _equals(self, argument: Any, where: str) -> bool:
        left, right = (self.value(part, where) for part in argument)
        return bool(_stringify(left) == _stringify(right))

    def _not(self, argument: Any, where: str) -> bool:
        return not self.value(argument[0], where)

    def _and(self, argument: Any, where: str) -> bool:
        return all(self.value(part, where) for part in argument)

    def _or(self, argument: Any, where: str) -> bool:
        return any(self.value(part, where) for part in argument)


def _check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [str(a) for a in allowed]:
        raise TemplateError(
            f"parameter override {name}={value!r}: must be one of {', '.join(map(str, allowed))}"
        )
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(str(pattern), value):
        raise TemplateError(f"parameter override {name}={value!r}: must match {pattern}")


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


@dataclass(frozen=True, slots=True)
class Ingress:
    ec2_security_group_name: str
    owner_id: str
    status: str
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class VpcIngress:
    """One inbound rule of a VPC cache's security group whose source is another group."""

    protocol: str
    from_port: int | None
    to_port: int | None
    source_group_id: str
    source_group_name: str | None
    description: str

    def ports(self) -> str:
        if self.from_port is None or self.from_port == self.to_port:
            return f"{self.protocol}/{self.from_port if self.from_port is not None else 'all'}"
        return f"{self.protocol}/{self.from_port}-{self.to_port}"


@dataclass(frozen=True, slots=True)
class WorldState:
    """What a person checks after an invoke: cache security groups, the security groups of
    VPC caches (by group id, with the caches using them) and the DLQ."""

    cache_security_groups: dict[str, tuple[Ingress, ...]]
    dead_letter_count: int
    dead_letters: tuple[DeadLetter | Unrecognised, ...]
    vpc_cache_groups: dict[str, tuple[VpcIngress, ...]] = field(default_factory=dict)
    vpc_cache_users: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InvocationResult:
    function: FunctionDefinition
    event: Any
    target: Target
    environment: dict[str, str]
    notes: tuple[str, ...]
    log_lines: tuple[Any, ...]
    summary: dict[str, Any] | None
    error: BaseException | None
    before: WorldState
    after: WorldState

    @property
    def log_records(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines if isinstance(line, dict)]

    def new_ingress(self) -> dict[str, tuple[Ingress, ...]]:
        return {
            name: tuple(
                i for i in pairs if i not in self.before.cache_security_groups.get(name, ())
            )
            for name, pairs in self.after.cache_security_groups.items()
        }

    def new_vpc_ingress(self) -> dict[str, tuple[VpcIngress, ...]]:
        """Rules this invoke added to VPC caches' security groups, by group id."""
        return {
            group_id: tuple(
                r for r in rules if r not in self.before.vpc_cache_groups.get(group_id, ())
            )
            for group_id, rules in self.after.vpc_cache_groups.items()
        }


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
        parameter_overrides=parameter_overrides,
        resource_refs=refs,
        resource_attributes=attributes,
    )
    declared = dict(function.environment)
    notes: list[str] = []
    if env_vars is not None:
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
    runtime = runtime_variables(function, scenario.region)
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
    # One table and one queue are the scenario's; with several, which is which is unknown,
    # so they keep their logical ids (as `sam local` does).
    tables = by_type.get("AWS::DynamoDB::Table", [])
    if len(tables) == 1:
        table = scenario.idempotency_table
        refs[tables[0]] = table
        attributes[(tables[0], "Arn")] = (
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


def invoke(
    event: Any,
    target: Target,
    *,
    template_path: Path,
    logical_id: str = FUNCTION_ID,
    env_vars_path: Path | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
) -> InvocationResult:
    """Run the handler once on ``event`` against ``target``; never raises for the handler's
    own failure (it is in ``result.error``, as Lambda would report it).
    """
    template = load_template(template_path)
    env_vars = load_env_vars_file(env_vars_path) if env_vars_path is not None else None
    function, environment, notes = function_environment(
        template,
        target,
        logical_id=logical_id,
        env_vars=env_vars,
        parameter_overrides=parameter_overrides,
    )
    module_name, _, function_name = function.handler.rpartition(".")
    before = read_state(target)
    context = LocalContext(
        function_name=logical_id,
        invoked_function_arn=(
            f"arn:aws:lambda:{target.scenario.region}:{target.scenario.account_id}"
            f":function:{logical_id}"
        ),
        memory_limit_in_mb=function.memory_size,
        timeout_seconds=function.timeout,
    )
    summary: dict[str, Any] | None = None
    error: BaseException | None = None
    level = environment.get("POWERTOOLS_LOG_LEVEL") or "INFO"
    with _function_process_state(environment) as captured:
        try:
            # Imported with the function's environment in place, as the runtime does.
            handler = getattr(importlib.import_module(module_name), function_name)
            with _logs_captured(captured, level):
                # A fresh copy, as each invocation deserializes its own event.
                summary = handler(json.loads(json.dumps(event)), context)
        except Exception as exc:
            error = exc
    return InvocationResult(
        function=function,
        event=event,
        target=target,
        environment=environment,
        notes=notes,
        log_lines=tuple(_parse_log_lines(captured.getvalue())),
        summary=summary,
        error=error,
        before=before,
        after=read_state(target),
    )


@contextlib.contextmanager
def _function_process_state(environment: Mapping[str, str]) -> Iterator[io.StringIO]:
    """This process as the function's execution environment, for the length of one call:
    its environment variables only, fresh settings and wiring, standard output captured.
    """
    saved_environment = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("AWS_", "POWERTOOLS_")) or name in UNDECLARED_SETTINGS:
            del os.environ[name]
    os.environ.update(environment)
    captured = io.StringIO()
    _fresh_wiring()
    # boto3's default session caches profile and credentials from whatever environment
    # created it; the function's clients must see only its own.
    saved_session, boto3.DEFAULT_SESSION = boto3.DEFAULT_SESSION, None
    try:
        with contextlib.redirect_stdout(captured):
            yield captured
    finally:
        boto3.DEFAULT_SESSION = saved_session
        _fresh_wiring()
        os.environ.clear()
        os.environ.update(saved_environment)


@contextlib.contextmanager
def _logs_captured(captured: io.StringIO, level: str) -> Iterator[None]:
    """The function's one Logger writes to the capture buffer, at the configured level."""
    from cache_ingress.observability import logger  # noqa: PLC0415 - after the env is set

    handler = logger.registered_handler
    saved_level = logger.log_level
    saved_stream = (
        handler.setStream(captured) if isinstance(handler, logging.StreamHandler) else None
    )
    logger.setLevel(level)
    try:
        yield
    finally:
        if saved_stream is not None:
            handler.setStream(saved_stream)  # type: ignore[attr-defined]
        logger.setLevel(saved_level)


def _fresh_wiring() -> None:
    # Settings and the authorizer are built once per execution environment; each local
    # invoke is a new one, as each `sam local invoke` is a new container.
    from cache_ingress.settings import current_settings  # noqa: PLC0415
    from cache_ingress.wiring import current_authorizer  # noqa: PLC0415

    current_settings.cache_clear()
    current_authorizer.cache_clear()


def _parse_log_lines(text: str) -> Iterator[Any]:
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            yield line


def read_state(target: Target) -> WorldState:
    """The cache security groups with their ingress, and the DLQ (peeked, not consumed)."""
    elasticache, ec2, sqs = (target.client(s) for s in ("elasticache", "ec2", "sqs"))
    try:
        names = {
            g["GroupName"]: g["GroupId"]
            for page in ec2.get_paginator("describe_security_groups").paginate()
            for g in page["SecurityGroups"]
        }
        groups: dict[str, tuple[Ingress, ...]] = {}
        for page in elasticache.get_paginator("describe_cache_security_groups").paginate():
            for group in page["CacheSecurityGroups"]:
                groups[group["CacheSecurityGroupName"]] = tuple(
                    Ingress(
                        ec2_security_group_name=pair["EC2SecurityGroupName"],
                        owner_id=pair["EC2SecurityGroupOwnerId"],
                        status=pair.get("Status", ""),
                        group_id=names.get(pair["EC2SecurityGroupName"]),
                    )
                    for pair in group.get("EC2SecurityGroups", [])
                )
        vpc_cache_groups, vpc_cache_users = _vpc_cache_groups(elasticache, ec2)
        queue = target.dead_letter_queue_url
        count = int(
            sqs.get_queue_attributes(
                QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
        # Visibility 0: a peek that leaves every message where the replay tool will find it.
        received = sqs.receive_message(
            QueueUrl=queue,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
    except (ClientError, BotoCoreError) as exc:
        raise LocalInvokeError(f"cannot read the state of {target.endpoint_url}: {exc}") from exc
    return WorldState(
        cache_security_groups=groups,
        dead_letter_count=count,
        dead_letters=tuple(read_dead_letter(m) for m in received),
        vpc_cache_groups=vpc_cache_groups,
        vpc_cache_users=vpc_cache_users,
    )


def _vpc_cache_groups(
    elasticache: Any, ec2: Any
) -> tuple[dict[str, tuple[VpcIngress, ...]], dict[str, tuple[str, ...]]]:
    """The security groups VPC caches use, with their group-sourced inbound rules."""
    users: dict[str, list[str]] = {}
    for page in elasticache.get_paginator("describe_cache_clusters").paginate():
        for cluster in page["CacheClusters"]:
            cache = cluster.get("ReplicationGroupId") or cluster["CacheClusterId"]
            for membership in cluster.get("SecurityGroups", []):
                named = users.setdefault(membership["SecurityGroupId"], [])
                if cache not in named:
                    named.append(cache)
    if not users:
        return {}, {}
    described = ec2.describe_security_groups(GroupIds=sorted(users))["SecurityGroups"]
    sources = {
        pair["GroupId"]
        for group in described
        for permission in group.get("IpPermissions", [])
        for pair in permission.get("UserIdGroupPairs", [])
    }
    names: dict[str, str] = {}
    if sources:
        names = {
            group["GroupId"]: group["GroupName"]
            for group in ec2.describe_security_groups(
                Filters=[{"Name": "group-id", "Values": sorted(sources)}]
            )["SecurityGroups"]
        }
    groups = {
        group["GroupId"]: tuple(
            VpcIngress(
                protocol=permission.get("IpProtocol", "-1"),
                from_port=permission.get("FromPort"),
                to_port=permission.get("ToPort"),
                source_group_id=pair["GroupId"],
                source_group_name=names.get(pair["GroupId"]),
                description=pair.get("Description", ""),
            )
            for permission in group.get("IpPermissions", [])
            for pair in permission.get("UserIdGroupPairs", [])
        )
        for group in described
    }
    return groups, {group_id: tuple(caches) for group_id, caches in users.items()}


# --- printing ---------------------------------------------------------------------------


def render(result: InvocationResult, out: IO[str], *, event_label: str) -> None:
    """Log lines, the function's response, and the state it left, for a terminal."""
    function = result.function
    write = _writer(out)
    write(
        f"invoke {function.logical_id} ({function.handler}, {function.runtime}) with {event_label}"
    )
    write(f"  event: {describe_event(result.event, result.target.scenario)}")
    write(f"  aws: {result.target.endpoint_url} ({result.target.description})")
    for note in result.notes:
        write(f"  env: {note}")
    write("")
    write(f"log ({len(result.log_lines)} lines)")
    for line in result.log_lines:
        write(json.dumps(line, separators=(",", ":")) if isinstance(line, dict) else str(line))
    write("")
    if result.error is not None:
        write(f"error: {type(result.error).__name__}: {result.error}")
        write(
            "  the function raised: Lambda retries an async event (twice), then its on-failure "
            "destination sends it to the dead-letter queue"
        )
    else:
        write("summary (the function's response)")
        write(json.dumps(result.summary, indent=2, default=str))
    write("")
    render_state(result, out)


def render_state(result: InvocationResult, out: IO[str], *, indent: str = "") -> None:
    write = _writer(out)
    after, new = result.after, result.new_ingress()
    write(f"{indent}cache security groups")
    width = max((len(name) for name in after.cache_security_groups), default=0)
    for name, pairs in sorted(after.cache_security_groups.items()):
        if not pairs:
            write(f"{indent}  {name:<{width}}  (no ingress)")
        for position, pair in enumerate(pairs):
            shown = name if position == 0 else ""
            marker = "+" if pair in new.get(name, ()) else " "
            group = f"{pair.group_id}, " if pair.group_id else ""
            write(
                f"{indent}  {shown:<{width}}  {marker} {pair.ec2_security_group_name} "
                f"({group}owner {pair.owner_id}) {pair.status}"
            )
    if not after.cache_security_groups:
        write(f"{indent}  (none)")
    _render_vpc_cache_groups(result, write, indent)
    queue = result.target.scenario.dead_letter_queue
    if after.dead_letter_count == 0:
        write(f"{indent}dead-letter queue {queue}: empty")
        return
    added = after.dead_letter_count - result.before.dead_letter_count
    write(
        f"{indent}dead-letter queue {queue}: {after.dead_letter_count} message(s)"
        + (f", {added} from this run" if added > 0 else "")
    )
    for letter in after.dead_letters:
        if isinstance(letter, Unrecognised):
            write(f"{indent}  unrecognised message {letter.message_id}: {letter.reason}")
        else:
            write(
                f"{indent}  {letter.error_type or '?'}  event {letter.event_id}: "
                f"{letter.error_message or ''} ({letter.origin})"
            )


def _render_vpc_cache_groups(
    result: InvocationResult, write: Callable[[str], None], indent: str
) -> None:
    """Each VPC cache's security group and its group-sourced rules; + marks this run's."""
    after = result.after
    if not after.vpc_cache_groups:
        return
    new_rules = result.new_vpc_ingress()
    write(f"{indent}VPC caches' security groups")
    for group_id, rules in sorted(after.vpc_cache_groups.items()):
        caches = ", ".join(after.vpc_cache_users.get(group_id, ()))
        write(f"{indent}  {group_id} (used by {caches})")
        if not rules:
            write(f"{indent}      (no ingress from security groups)")
        for rule in rules:
            marker = "+" if rule in new_rules.get(group_id, ()) else " "
            source = rule.source_group_id + (
                f" ({rule.source_group_name})" if rule.source_group_name else ""
            )
            described = f'  "{rule.description}"' if rule.description else ""
            write(f"{indent}    {marker} {rule.ports()} from {source}{described}")


def _writer(out: IO[str]) -> Callable[[str], None]:
    def write(text: str) -> None:
        out.write(text + "\n")

    return write


def describe_event(event: Any, scenario: Scenario) -> str:
    """One line saying what an event announces, read by the function's own intake and named
    with the scenario's group names.
    """
    try:
        parsed = parse_event(event)
    except MalformedEventError as exc:
        return f"a malformed event ({exc})"
    if isinstance(parsed, Ignored):
        return f"{parsed.source} {parsed.detail_type}, which asks nothing ({parsed.reason})"
    groups = ", ".join(_group_label(g, scenario) for g in parsed.group_ids)
    by = f" by {parsed.principal}" if parsed.principal else ""
    where = "" if parsed.region == scenario.region else f" in {parsed.region}"
    announced = _announced_tags(event)
    return f"{parsed.event_name or parsed.detail_type}{by}{where}: {groups}{announced}"


def _announced_tags(event: Mapping[str, Any]) -> str:
    detail = event.get("detail") or {}
    tags = detail.get("tags")
    if isinstance(tags, dict):
        return " now tagged " + ", ".join(f"{k}={v}" for k, v in tags.items())
    items = ((detail.get("requestParameters") or {}).get("tagSet") or {}).get("items")
    if isinstance(items, list):
        pairs = [
            f"{i.get('key')}={i['value']}" if i.get("value") else str(i.get("key"))
            for i in items
            if isinstance(i, dict)
        ]
        verb = "untagged" if detail.get("eventName") == "DeleteTags" else "tagged"
        return f" {verb} " + ", ".join(pairs)
    return ""


def _group_label(group_id: str, scenario: Scenario) -> str:
    seeded = scenario.security_group(group_id)
    return f"{seeded.name} ({group_id})" if seeded else f"{group_id} (not in the scenario)"
