"""The run: :func:`invoke` calls the function's handler with its environment in ``os.environ``,
captures the structured log lines, and reads the state before and after."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import boto3

from cache_ingress_tools.commands._base import function_output_to
from cache_ingress_tools.lambda_context import LocalContext
from cache_ingress_tools.local_invoke.environment import (
    Target,
    function_environment,
    load_env_vars_file,
)
from cache_ingress_tools.local_invoke.state import (
    Ingress,
    LedgerLine,
    VpcIngress,
    WorldState,
    read_state,
)
from cache_ingress_tools.local_invoke.template import FUNCTION_ID, FunctionDefinition, load_template

# Settings the function reads that the template does not declare: unset in Lambda, so unset
# here too, whatever the developer's shell holds.
UNDECLARED_SETTINGS: Final = ("POLICY_FILE", "IDEMPOTENCY_EXPIRY_SECONDS")


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

    def ledger_changes(self) -> tuple[LedgerLine, ...]:
        """The ledger entries this invoke wrote or changed."""
        before = set(self.before.ledger)
        return tuple(line for line in self.after.ledger if line not in before)

    def new_vpc_ingress(self) -> dict[str, tuple[VpcIngress, ...]]:
        """Rules this invoke added to VPC caches' security groups, by group id."""
        return {
            group_id: tuple(
                r for r in rules if r not in self.before.vpc_cache_groups.get(group_id, ())
            )
            for group_id, rules in self.after.vpc_cache_groups.items()
        }


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
            with function_output_to(captured, level):
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
        log_lines=tuple(parse_log_lines(captured.getvalue())),
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


def _fresh_wiring() -> None:
    # Settings and the authorizer are built once per execution environment; each local
    # invoke is a new one, as each `sam local invoke` is a new container.
    from cache_ingress.settings import current_settings  # noqa: PLC0415
    from cache_ingress.wiring import current_authorizer  # noqa: PLC0415

    current_settings.cache_clear()
    current_authorizer.cache_clear()


def parse_log_lines(text: str) -> Iterator[Any]:
    """Each captured line, as JSON where it is (the structured log and metric lines)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            yield line
