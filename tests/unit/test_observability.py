"""When the function creates a Tracer (and so loads the X-Ray SDK): Powertools' own rule for
tracing, read from the environment the template gives the function.
"""

from __future__ import annotations

import pytest

from cache_ingress.observability import traces_aws_calls

pytestmark = pytest.mark.unit

IN_LAMBDA = {"LAMBDA_TASK_ROOT": "/var/task", "AWS_LAMBDA_FUNCTION_NAME": "cache-ingress"}


@pytest.mark.parametrize(
    ("environment", "traced"),
    [
        # The template: TraceAwsCalls=false (the default) and TraceAwsCalls=true.
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "false"}, True),
        # Powertools' spellings of true and false, and its default when the variable is unset.
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "1"}, False),
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "off"}, True),
        (IN_LAMBDA, True),
        # Where Powertools disables its Tracer by itself: outside Lambda, sam local, chalice.
        ({"POWERTOOLS_TRACE_DISABLED": "false"}, False),
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "false", "AWS_SAM_LOCAL": "true"}, False),
        ({**IN_LAMBDA, "AWS_CHALICE_CLI_MODE": "true"}, False),
    ],
)
def test_aws_calls_are_traced_only_where_powertools_would_trace(
    environment: dict[str, str], traced: bool
) -> None:
    assert traces_aws_calls(environment) is traced


def test_a_value_that_is_neither_true_nor_false_is_refused() -> None:
    with pytest.raises(ValueError, match="maybe"):
        traces_aws_calls({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "maybe"})
