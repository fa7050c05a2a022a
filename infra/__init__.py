"""The dsrflow CDK app: one construct per concern (storage, secrets, functions, workflow, triggers,
observability), composed by `stack.DsrflowStack` and built by `application.build_app`."""

import sys
from pathlib import Path

# The function catalog (functions/handlers/catalog.py) is the one list of functions: the stack reads it
# from the code it deploys, as the Lambda runtime and the local engine do.
_FUNCTIONS = str(Path(__file__).resolve().parent.parent / "functions")
if _FUNCTIONS not in sys.path:
    sys.path.append(_FUNCTIONS)
