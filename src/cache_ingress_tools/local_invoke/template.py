"""The template, read as `sam local` reads it: CloudFormation short tags in long form, and the
intrinsic functions a function's properties use, resolved (:func:`load_template`,
:func:`resolve_function`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

FUNCTION_ID: Final = "IngressFunction"
_NO_VALUE: Final = object()


class TemplateError(ValueError):
    """The template cannot be read or resolved; the message names the file and the property."""


# The intrinsic functions CloudFormation has (short tags become these long forms).
_INTRINSICS: Final = frozenset(
    {
        "Fn::And", "Fn::Base64", "Fn::Cidr", "Fn::Equals", "Fn::FindInMap", "Fn::GetAtt",
        "Fn::GetAZs", "Fn::If", "Fn::ImportValue", "Fn::Join", "Fn::Length", "Fn::Not",
        "Fn::Or", "Fn::Select", "Fn::Split", "Fn::Sub", "Fn::ToJsonString", "Fn::Transform",
    }
)  # fmt: skip


def load_template(path: Path) -> dict[str, Any]:
    """A SAM/CloudFormation template (YAML or JSON) with short tags in long form.

    Read by cfn-lint's decoder, as `make template` reads it: short tags in long form, a
    duplicate key refused with its line. The tools and the template tests share this one
    loader.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {path}: cannot be read: {exc}") from None
    # Imported here: it takes about half a second, and only the local run needs it.
    from cfnlint.decode import decode_str  # noqa: PLC0415

    document, problems = decode_str(text)
    if problems:
        first = problems[0]
        raise TemplateError(
            f"template {path}: not valid YAML or JSON: line {first.linenumber}: {first.message}"
        )
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"template {path}: has no Resources mapping")
    unknown = _unknown_function(document)
    if unknown is not None:
        raise TemplateError(f"template {path}: unknown intrinsic function {unknown}")
    return document


def _unknown_function(node: Any) -> str | None:
    """The first `Fn::` name CloudFormation does not have (a mistyped short tag is one)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("Fn::") and key not in _INTRINSICS:
                return key
            found = _unknown_function(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for item in node:
            found = _unknown_function(item)
            if found is not None:
                return found
    return None


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
    resolver = Resolver(
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


def template_resolver(
    template: Mapping[str, Any],
    *,
    pseudo: Mapping[str, str],
    parameter_overrides: Mapping[str, str] | None = None,
    resource_refs: Mapping[str, str] | None = None,
    resource_attributes: Mapping[tuple[str, str], str] | None = None,
) -> Resolver:
    """A resolver of any part of the template (`resolve_function` for one function's
    settings): `value(node, where)` and `condition(name)`, with the same rules."""
    return Resolver(
        template,
        pseudo=pseudo,
        parameter_overrides=parameter_overrides or {},
        resource_refs=resource_refs or {},
        resource_attributes=resource_attributes or {},
    )


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The template's parameters as a deployment would see them: each override (checked
    against the parameter's AllowedValues and AllowedPattern), else its default; a
    CommaDelimitedList as a list. Raises TemplateError for an override of no parameter.
    """
    resolver = Resolver(
        template,
        pseudo={},
        parameter_overrides=overrides or {},
        resource_refs={},
        resource_attributes={},
    )
    return resolver.parameters


def _stringify(value: Any) -> str:
    # Lambda environment values are strings; CloudFormation writes booleans lower-case.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        raise TemplateError(f"resolved to a {type(value).__name__}, not a string: {value!r}")
    return str(value)


class Resolver:
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

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._parameters)

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

    def condition(self, name: str) -> bool:
        """Whether the template's condition `name` holds."""
        return self._condition(name, f"Conditions.{name}")

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
