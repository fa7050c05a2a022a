"""The workflow's ASL as CloudFormation would hand it to Step Functions, for `make check` (asl-validator).

The stack fills every `${Name}` from DefinitionSubstitutions with a Lambda function's ARN (infra/workflow.py,
names in statemachines/__init__.py). This writes the definition with each one replaced by a syntactically
valid stand-in ARN (arn:aws:lambda:eu-west-1:123456789012:function:dsrflow-<function>) and refuses a
placeholder that SUBSTITUTIONS does not name: the deployed definition would keep it as literal text.

    python -m statemachines.validate OUT.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from statemachines import ASL_FILE, SUBSTITUTIONS

PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
REGION = "eu-west-1"
ACCOUNT = "123456789012"


class UnknownSubstitution(ValueError):
    pass


def stand_in_arn(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:dsrflow-{function}"


def resolve(text: str) -> str:
    """`text` with every `${Name}` replaced by the stand-in ARN of the function SUBSTITUTIONS maps it to."""
    unknown = sorted(set(PLACEHOLDER.findall(text)) - set(SUBSTITUTIONS))
    if unknown:
        raise UnknownSubstitution(
            f"{ASL_FILE.name}: no substitution for {', '.join('${' + n + '}' for n in unknown)} "
            f"(statemachines/__init__.py names {', '.join(SUBSTITUTIONS)})"
        )
    return PLACEHOLDER.sub(lambda m: stand_in_arn(SUBSTITUTIONS[m.group(1)]), text)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m statemachines.validate OUT.json", file=sys.stderr)
        return 2
    try:
        resolved = resolve(ASL_FILE.read_text())
        json.loads(resolved)
    except ValueError as exc:  # UnknownSubstitution, or the file is no longer JSON
        print(f"asl: {exc}", file=sys.stderr)
        return 1
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(resolved)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
