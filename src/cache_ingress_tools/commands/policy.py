"""`cache-ingress policy validate`: a policy checked before it is deployed, offline.

The policy is checked by the function's own validator (`cache_ingress.policy`), which reports
every problem with its field and, in the text, its line, then turned into what `sam build`
packages (its JSON form, which must be the same policy). With `--template`, the stack's
parameters (defaults, a samconfig file, `--parameter-overrides`, as `sam deploy` takes them)
are checked against what the policy asks (`cache_ingress_tools.stack_check`): a target the
stack's IAM would refuse is reported as the AccessDenied it would become after deploy.

Exit status: 0 valid (and, with a template, the stack can do what it asks); 1 invalid, or
the stack cannot; 2 the check could not run (no such file, an unreadable template, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from cache_ingress_tools.commands import COMMANDS
from cache_ingress_tools.commands._base import EXIT_OK, UsageError, shown_path

if TYPE_CHECKING:
    from cache_ingress.errors import PolicyProblem
    from cache_ingress.policy import Policy
    from cache_ingress_tools.sam_config import SamConfig
    from cache_ingress_tools.stack_check import StackParameters

EXIT_INVALID: Final = 1
CONFIG_FILES: Final = ("samconfig.toml", "samconfig.yaml", "samconfig.yml")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy",
        help=COMMANDS["policy"].help,
        description="Check a policy before it is deployed. `validate` is offline.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    validate = actions.add_parser(
        "validate",
        help="report every problem of a policy (field and line); with --template, what the "
        "stack's IAM would refuse",
        description=(
            "Validate a policy with the function's own validator and report every problem, "
            "with its field and line; check that what `sam build` packages (the policy as "
            "JSON) is the same policy. With --template, check that the stack can do what the "
            "policy asks: each classic target's cache security group among "
            "CacheSecurityGroupArns, each vpc_security_group among CacheVpcSecurityGroupIds, "
            "tag_key equal to TagKey. Offline: no AWS. Exit status: 0 valid, 1 invalid or "
            "the stack cannot, 2 the check could not run."
        ),
    )
    validate.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="the policy (YAML or JSON; default: the bundled policy the build packages)",
    )
    validate.add_argument("--json", action="store_true", help="print the result as JSON")
    stack = validate.add_argument_group("the stack it will be deployed with (optional)")
    stack.add_argument("--template", type=Path, help="the SAM template, e.g. template.yaml")
    stack.add_argument(
        "--parameter-overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="stack parameters as `sam deploy` takes them (over the config file's)",
    )
    stack.add_argument(
        "--config-file",
        type=Path,
        help="a SAM config file (default: samconfig.toml, .yaml or .yml beside the template)",
    )
    stack.add_argument("--config-env", default="default", help="its environment (default: default)")
    stack.add_argument(
        "--region",
        help="the region the stack is deployed in (default: the config file's, or AWS_REGION)",
    )
    stack.add_argument(
        "--account-id", help="the account it is deployed in (default: any, not checked)"
    )
    stack.add_argument(
        "--env-vars",
        type=Path,
        help="an env-vars file for `sam local invoke`: a POLICY_FILE in it, which the "
        "function ignores, is reported",
    )
    validate.set_defaults(handler=run_validate)


@dataclass(frozen=True, slots=True)
class Listed:
    """One line of the report: a problem (or a note) at a place in a file."""

    source: str
    line: int | None
    field: str
    message: str

    def text(self) -> str:
        at = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{at}: {self.field}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "field": self.field,
            "message": self.message,
        }


@dataclass
class Validation:
    source: str
    policy: Policy | None = None
    problems: list[Listed] = field(default_factory=list)
    notes: list[Listed] = field(default_factory=list)
    stack: dict[str, Any] | None = None


def run_validate(arguments: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    try:
        validation = validate(arguments)
    except UsageError as exc:
        return exc.report("policy validate")
    if arguments.json:
        out.write(json.dumps(_document(validation), indent=2) + "\n")
    else:
        out.write(_report(validation))
    return EXIT_INVALID if validation.problems else EXIT_OK


def validate(arguments: argparse.Namespace) -> Validation:
    """The policy's problems, then (valid, with a template) what the stack cannot do."""
    from cache_ingress.errors import PolicyError  # noqa: PLC0415
    from cache_ingress.policy import parse_policy, policy_as_json  # noqa: PLC0415
    from cache_ingress.settings import BUNDLED_POLICY  # noqa: PLC0415

    if arguments.env_vars is not None and arguments.template is None:
        raise UsageError("--env-vars is read against the template: pass --template too")
    path = arguments.file or BUNDLED_POLICY
    source = shown_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"policy {source}: cannot be read: {exc}") from exc
    validation = Validation(source)
    try:
        policy_as_json(text, source=source)
    except PolicyError as exc:
        validation.problems = [_listed(source, problem) for problem in exc.problems]
        return validation
    validation.policy = policy = parse_policy(text, source=source)
    if arguments.template is not None:
        _check_stack(validation, policy, text, arguments)
    return validation


def _check_stack(
    validation: Validation, policy: Policy, text: str, arguments: argparse.Namespace
) -> None:
    from cache_ingress.unique_yaml import line_in  # noqa: PLC0415
    from cache_ingress_tools.stack_check import stack_findings  # noqa: PLC0415

    stack, description, template, overrides = _stack_parameters(arguments)
    validation.stack = description
    if arguments.env_vars is not None:
        validation.problems.extend(
            _ignored_policy_settings(arguments.env_vars, template, overrides)
        )
    for finding in stack_findings(policy, stack):
        listed = Listed(
            validation.source,
            line_in(text, finding.path) if finding.path else None,
            ".".join(str(part) for part in finding.path) or "(stack)",
            finding.message,
        )
        (validation.problems if finding.problem else validation.notes).append(listed)


def _stack_parameters(
    arguments: argparse.Namespace,
) -> tuple[StackParameters, dict[str, Any], dict[str, Any], dict[str, str]]:
    """The parameters the stack would be deployed with: the template's defaults, then the
    config file's overrides, then --parameter-overrides, as `sam deploy` takes them."""
    from cache_ingress_tools.sam_config import (  # noqa: PLC0415
        SamConfigError,
        parse_parameter_overrides,
    )
    from cache_ingress_tools.stack_check import (  # noqa: PLC0415
        CACHE_GROUP_ARNS,
        TAG_KEY,
        VPC_GROUP_IDS,
        StackParameters,
    )

    template_path: Path = arguments.template
    load_template, parameter_values, template_error = _template_reader()
    try:
        config = _config(arguments, template_path)
        overrides = {
            **(config.parameter_overrides if config else {}),
            **parse_parameter_overrides(arguments.parameter_overrides),
        }
        template = load_template(template_path)
        values = parameter_values(template, overrides)
    except (SamConfigError, template_error) as exc:
        raise UsageError(str(exc)) from exc
    region = (
        arguments.region
        or (config.region if config else None)
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or None
    )
    stack = StackParameters.from_values(values, region=region, account_id=arguments.account_id)
    description = {
        "template": str(template_path),
        "configFile": str(config.path) if config else None,
        "configEnv": config.environment if config else None,
        "parameters": {
            TAG_KEY: stack.tag_key,
            CACHE_GROUP_ARNS: list(stack.cache_security_group_arns),
            VPC_GROUP_IDS: list(stack.vpc_security_group_ids),
        },
        "region": region,
        "accountId": arguments.account_id,
    }
    return stack, description, template, overrides


def _ignored_policy_settings(
    path: Path, template: Mapping[str, Any], overrides: Mapping[str, str]
) -> list[Listed]:
    """A policy setting in an env-vars file that SAM ignores for a function of the template
    (it declares none): `sam local invoke` would run that function with its bundled policy,
    silently."""
    from cache_ingress_tools.local_invoke.environment import (  # noqa: PLC0415
        POLICY_VARIABLES,
        LocalInvokeError,
        ignored_env_vars,
        load_env_vars_file,
    )
    from cache_ingress_tools.local_invoke.template import (  # noqa: PLC0415
        TemplateError,
        resolve_function,
        sam_pseudo_parameters,
    )

    try:
        env_vars = load_env_vars_file(path)
        functions = [
            resolve_function(
                template,
                logical_id,
                pseudo=sam_pseudo_parameters("123456789012", "us-east-1"),
                parameter_overrides=overrides,
            )
            for logical_id, resource in template["Resources"].items()
            if resource.get("Type") == "AWS::Serverless::Function"
        ]
    except (LocalInvokeError, TemplateError) as exc:
        raise UsageError(str(exc)) from exc
    return [
        Listed(
            str(path),
            None,
            f"{section}.{name}",
            f"{function.logical_id} ignores it: the template does not declare {name}, and "
            "SAM passes only declared variables, so `sam local invoke` runs the bundled "
            "policy, not this one",
        )
        for function in functions
        for section, name in ignored_env_vars(function.environment, env_vars, function.logical_id)
        if name in POLICY_VARIABLES
    ]


def _template_reader() -> tuple[Any, Any, type[Exception]]:
    """The template reader of the local run (cfn-lint's decoder): the `[emulator]` extra."""
    try:
        from cache_ingress_tools.local_invoke.template import (  # noqa: PLC0415
            TemplateError,
            load_template,
            parameter_values,
        )
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"--template needs the template reader, which this installation lacks (no module "
            f"{exc.name!r}): pip install 'cache-ingress[emulator]'"
        ) from exc
    return load_template, parameter_values, TemplateError


def _config(arguments: argparse.Namespace, template: Path) -> SamConfig | None:
    from cache_ingress_tools.sam_config import read_samconfig  # noqa: PLC0415

    path: Path | None = arguments.config_file
    if path is None:
        found = [template.parent / name for name in CONFIG_FILES]
        path = next((candidate for candidate in found if candidate.is_file()), None)
        if path is None:
            return None
    return read_samconfig(path, arguments.config_env)


def _listed(source: str, problem: PolicyProblem) -> Listed:
    return Listed(source, problem.line, problem.field, problem.message)


def _report(validation: Validation) -> str:
    lines = [item.text() for item in validation.problems]
    lines += [f"note: {item.text()}" for item in validation.notes]
    policy = validation.policy
    if policy is None:
        count = len(validation.problems)
        lines.append(f"{validation.source}: invalid, {count} problem{_plural(count)}")
        return "\n".join(lines) + "\n"
    lines.append(
        f"{validation.source}: valid: tag key {policy.tag_key}, {len(policy.targets)} "
        f"target{_plural(len(policy.targets))}; what `sam build` packages (its JSON form) is "
        "the same policy"
    )
    lines += [f"  {name}: {_destination(target)}" for name, target in policy.targets.items()]
    stack = validation.stack
    if stack is not None:
        where = _stack_source(stack)
        if validation.problems:
            count = len(validation.problems)
            lines.append(
                f"the stack ({where}) cannot do what the policy asks: {count} "
                f"problem{_plural(count)} above"
            )
        else:
            lines.append(f"the stack ({where}) can grant every target it can be checked for")
    return "\n".join(lines) + "\n"


def _stack_source(stack: Mapping[str, Any]) -> str:
    parts = [str(stack["template"])]
    if stack["configFile"]:
        parts.append(f"{stack['configFile']} [{stack['configEnv']}]")
    if stack["region"]:
        parts.append(f"region {stack['region']}")
    return ", ".join(parts)


def _destination(target: Any) -> str:
    if target.vpc is not None:
        port = f", port {target.vpc.port}" if target.vpc.port else ""
        destination = f"{target.vpc.label}{port}"
    else:
        destination = f"cache security group {target.cache_security_group}"
    region = f" in {target.region}" if target.region else ""
    return destination + region


def _document(validation: Validation) -> dict[str, Any]:
    policy = validation.policy
    return {
        "source": validation.source,
        "valid": policy is not None,
        "stackCanGrant": None if validation.stack is None else not validation.problems,
        "problems": [item.as_dict() for item in validation.problems],
        "notes": [item.as_dict() for item in validation.notes],
        "policy": None
        if policy is None
        else {
            "tagKey": policy.tag_key,
            "targets": {name: _destination(t) for name, t in policy.targets.items()},
        },
        "stack": validation.stack,
    }


def _plural(count: int) -> str:
    return "" if count == 1 else "s"
