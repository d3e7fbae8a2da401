"""Writes the bundled policy as JSON for the function's package; run by the Makefile.

    python compile_policy.py SOURCE.yaml TARGET

The reviewed `policy.yaml` (with its comments) stays the source. The function reads its
bundled policy with the JSON parser when the text is a JSON object, so a package holding
the JSON form never imports PyYAML on the event path (docs/benchmarks.md). JSON is YAML, so
the file keeps its name and `POLICY_FILE` keeps its meaning.

The build fails, and writes nothing, when the policy does not validate (a policy that cannot
grant anything should not be deployed) or when its JSON form does not parse to exactly the
same policy as the YAML it was written from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cache_ingress.errors import PolicyError
from cache_ingress.policy import parse_policy
from cache_ingress.unique_yaml import load_yaml


def compile_policy(text: str, source: str) -> str:
    """The policy's JSON text; raises PolicyError when it is invalid or does not round-trip."""
    policy = parse_policy(text, source=source)
    document = load_yaml(text)
    try:
        compiled = json.dumps(document, indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"policy {source}: has no JSON form: {exc}") from None
    if parse_policy(compiled, source=source) != policy:
        raise PolicyError(f"policy {source}: its JSON form parses to a different policy")
    return compiled


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python compile_policy.py SOURCE.yaml TARGET\n")
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    try:
        compiled = compile_policy(source.read_text(encoding="utf-8"), str(source))
    except (OSError, UnicodeDecodeError, PolicyError) as exc:
        sys.stderr.write(f"compile_policy: {exc}\n")
        return 1
    target.write_text(compiled, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
