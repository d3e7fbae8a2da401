"""Writes the bundled policy as JSON for the function's package; run by the Makefile.

    python compile_policy.py SOURCE.yaml TARGET

The reviewed `policy.yaml` (with its comments) stays the source. The function reads its
bundled policy with the JSON parser when the text is a JSON object, so a package holding
the JSON form never imports PyYAML on the event path (docs/benchmarks.md). JSON is YAML, so
the file keeps its name and `POLICY_FILE` keeps its meaning.

The build fails, and writes nothing, when the policy does not validate (a policy that cannot
grant anything should not be deployed) or when its JSON form does not parse to exactly the
same policy as the YAML it was written from. Every problem is listed, one a line, as
`SOURCE:LINE: field: message`; `cache-ingress policy validate` prints the same list.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cache_ingress.errors import PolicyError
from cache_ingress.policy import policy_as_json

# sam build runs this in a copy of functions/authorizer, on BUNDLED: name the file to edit.
BUNDLED = "cache_ingress/policy.yaml"
EDIT = f"functions/authorizer/{BUNDLED}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python compile_policy.py SOURCE.yaml TARGET\n")
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    try:
        compiled = policy_as_json(source.read_text(encoding="utf-8"), source=str(source))
    except (OSError, UnicodeDecodeError) as exc:
        sys.stderr.write(f"compile_policy: policy {source}: cannot be read: {exc}\n")
        return 1
    except PolicyError as exc:
        problems = exc.problems or ()
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        shown = EDIT if source == Path(BUNDLED) else str(source)
        what = f"the bundled policy ({EDIT})" if shown == EDIT else f"policy {source}"
        sys.stderr.write(f"compile_policy: {what} does not validate, {count}; nothing built:\n")
        sys.stderr.writelines(f"{problem.listing(shown)}\n" for problem in problems)
        return 1
    target.write_text(compiled, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
