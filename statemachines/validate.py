"""The workflows' ASL as CloudFormation would hand it to Step Functions, for `make check` (asl-validator).

The stack fills every `${Name}` from DefinitionSubstitutions with a Lambda function's ARN (infra/workflow.py,
names in statemachines/__init__.py). This writes the definition with each one replaced by a syntactically
valid stand-in ARN (arn:aws:lambda:eu-west-1:123456789012:function:dsrflow-<function>) and refuses a
placeholder that SUBSTITUTIONS does not name: the deployed definition would keep it as literal text.

    python -m statemachines.validate OUT.json          the request workflow (dsr.asl.json)
    python -m statemachines.validate --bulk OUT.json   bulk intake (bulk.asl.json)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from statemachines import ASL_FILE, BULK_ASL_FILE, BULK_SUBSTITUTIONS, SUBSTITUTIONS

PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
REGION = "eu-west-1"
ACCOUNT = "123456789012"


class UnknownSubstitution(ValueError):
    pass


def stand_in_arn(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:dsrflow-{function}"


def resolve(text: str, substitutions: dict[str, str] = SUBSTITUTIONS, name: str = ASL_FILE.name) -> str:
    """`text` with every `${Name}` replaced by the stand-in ARN of the function `substitutions` maps it to."""
    unknown = sorted(set(PLACEHOLDER.findall(text)) - set(substitutions))
    if unknown:
        raise UnknownSubstitution(
            f"{name}: no substitution for {', '.join('${' + n + '}' for n in unknown)} "
            f"(statemachines/__init__.py names {', '.join(substitutions)})"
        )
    return PLACEHOLDER.sub(lambda m: stand_in_arn(substitutions[m.group(1)]), text)


def main(argv: list[str]) -> int:
    bulk = "--bulk" in argv[1:]
    args = [a for a in argv[1:] if a != "--bulk"]
    if len(args) != 1:
        print("usage: python -m statemachines.validate [--bulk] OUT.json", file=sys.stderr)
        return 2
    source, substitutions = (BULK_ASL_FILE, BULK_SUBSTITUTIONS) if bulk else (ASL_FILE, SUBSTITUTIONS)
    try:
        resolved = resolve(source.read_text(), substitutions, source.name)
        json.loads(resolved)
    except ValueError as exc:  # UnknownSubstitution, or the file is no longer JSON
        print(f"asl: {exc}", file=sys.stderr)
        return 1
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(resolved)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
