"""Run the real Lambda handler in this process against the embedded AWS, as `sam local invoke`
would run it in a container: same handler, same environment from ``template.yaml``, same
env-vars file format, same endpoint variable.

One module per part:

- `template`: the template read with CloudFormation's short tags, and a resolver for the
  intrinsic functions a function's properties use (:func:`load_template`,
  :func:`resolve_function`);
- `environment`: template variables, then an env-vars file in SAM's format with SAM's
  rules (:func:`apply_env_vars`), then the endpoint of the embedded AWS (:class:`Target`);
- `run`: :func:`invoke` calls ``cache_ingress.handler.lambda_handler`` with that environment
  in ``os.environ`` and captures the structured log lines;
- `state`: the cache security groups, the VPC caches' rules and the dead-letter queue, read
  back before and after (:func:`read_state`);
- `rendering`: :func:`render` prints it all.
"""

from __future__ import annotations

from cache_ingress_tools.local_invoke.environment import (
    ENDPOINT_VARIABLE,
    LocalInvokeError,
    Target,
    apply_env_vars,
    embedded_target,
    function_environment,
    load_env_vars_file,
    project_root,
    rebase,
    running_target,
    runtime_variables,
    sam_local_function,
)
from cache_ingress_tools.local_invoke.rendering import describe_event, render, render_state
from cache_ingress_tools.local_invoke.run import UNDECLARED_SETTINGS, InvocationResult, invoke
from cache_ingress_tools.local_invoke.state import Ingress, VpcIngress, WorldState, read_state
from cache_ingress_tools.local_invoke.template import (
    FUNCTION_ID,
    FunctionDefinition,
    TemplateError,
    load_template,
    parameter_values,
    resolve_function,
    sam_pseudo_parameters,
)

__all__ = [
    "ENDPOINT_VARIABLE",
    "FUNCTION_ID",
    "UNDECLARED_SETTINGS",
    "FunctionDefinition",
    "Ingress",
    "InvocationResult",
    "LocalInvokeError",
    "Target",
    "TemplateError",
    "VpcIngress",
    "WorldState",
    "apply_env_vars",
    "describe_event",
    "embedded_target",
    "function_environment",
    "invoke",
    "load_env_vars_file",
    "load_template",
    "parameter_values",
    "project_root",
    "read_state",
    "rebase",
    "render",
    "render_state",
    "resolve_function",
    "running_target",
    "runtime_variables",
    "sam_local_function",
    "sam_pseudo_parameters",
]
