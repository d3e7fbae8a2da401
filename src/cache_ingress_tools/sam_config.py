"""Stack parameters as SAM CLI takes them: `--parameter-overrides` and `samconfig.toml`.

`parse_parameter_overrides` reads `KEY=VALUE` items (a value may be quoted, spaces and all)
and SAM's long form `ParameterKey=KEY,ParameterValue=VALUE`. `read_samconfig` reads the
parameters of one environment of a SAM configuration file (TOML, or YAML): the command's
table (`[default.deploy.parameters]`) over the global one (`[default.global.parameters]`),
as SAM merges them. Pure: files are read, nothing else.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

DEFAULT_CONFIG_FILE: Final = "samconfig.toml"
DEFAULT_ENVIRONMENT: Final = "default"
_LONG_FORM_KEY: Final = "ParameterKey="
_LONG_FORM_VALUE: Final = ",ParameterValue="


class SamConfigError(ValueError):
    """Overrides or a configuration file SAM would not read; the message names which."""


@dataclass(frozen=True, slots=True)
class SamConfig:
    """What a SAM configuration file says about a deployment."""

    path: Path
    environment: str
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    region: str | None = None
    stack_name: str | None = None


def parse_parameter_overrides(values: Iterable[str]) -> dict[str, str]:
    """``Key=Value`` items, as `sam deploy --parameter-overrides` takes them: several in one
    argument, separated by spaces, a value quoted when it holds spaces; or SAM's long form.
    """
    overrides: dict[str, str] = {}
    for value in values:
        try:
            items = shlex.split(value)
        except ValueError as exc:
            raise SamConfigError(f"--parameter-overrides {value!r}: {exc}") from None
        for item in items:
            key, text = _key_value(item)
            overrides[key] = text
    return overrides


def _key_value(item: str) -> tuple[str, str]:
    if item.startswith(_LONG_FORM_KEY) and _LONG_FORM_VALUE in item:
        key, _, text = item[len(_LONG_FORM_KEY) :].partition(_LONG_FORM_VALUE)
    else:
        key, separator, text = item.partition("=")
        if not separator:
            key = ""
    if not key:
        raise SamConfigError(f"--parameter-overrides {item!r}: expected KEY=VALUE")
    return key, text


def read_samconfig(
    path: Path, environment: str = DEFAULT_ENVIRONMENT, command: str = "deploy"
) -> SamConfig:
    """The parameters of `environment` for `command` in a samconfig file (.toml, .yaml)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SamConfigError(f"config file {path}: cannot be read: {exc}") from None
    document = _parse(path, text)
    environments = {key: value for key, value in document.items() if key != "version"}
    if environment not in environments:
        known = ", ".join(sorted(environments)) or "none"
        raise SamConfigError(
            f"config file {path}: has no environment {environment!r} (it has: {known})"
        )
    sections = environments[environment]
    if not isinstance(sections, Mapping):
        raise SamConfigError(f"config file {path}: {environment} must be a table")
    merged: dict[str, Any] = {}
    for section in ("global", command):
        table = sections.get(section, {})
        parameters = table.get("parameters", {}) if isinstance(table, Mapping) else None
        if not isinstance(parameters, Mapping):
            raise SamConfigError(
                f"config file {path}: {environment}.{section}.parameters must be a table"
            )
        merged.update(parameters)
    return SamConfig(
        path=path,
        environment=environment,
        parameter_overrides=_overrides(merged.get("parameter_overrides"), path),
        region=_text(merged.get("region")),
        stack_name=_text(merged.get("stack_name")),
    )


def _parse(path: Path, text: str) -> Mapping[str, Any]:
    try:
        if path.suffix in (".yaml", ".yml"):
            from cache_ingress.unique_yaml import load_yaml  # noqa: PLC0415

            document: object = load_yaml(text)
        else:
            document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise SamConfigError(f"config file {path}: cannot be parsed: {exc}") from None
    if not isinstance(document, Mapping):
        raise SamConfigError(f"config file {path}: must be a table of environments")
    return document


def _overrides(raw: object, path: Path) -> dict[str, str]:
    """A string of items, a list of them, or a table of KEY = VALUE, as SAM accepts."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(key): _string(value) for key, value in raw.items()}
    items: Sequence[object] = (
        [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else ()
    )
    if not items or not all(isinstance(item, str) for item in items):
        raise SamConfigError(
            f"config file {path}: parameter_overrides must be a string, a list of strings or "
            "a table"
        )
    try:
        return parse_parameter_overrides(str(item) for item in items)
    except SamConfigError as exc:
        raise SamConfigError(f"config file {path}: {exc}") from None


def _string(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
