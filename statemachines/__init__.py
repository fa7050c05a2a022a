"""The workflow's ASL file and its substitutions: one contract for the CDK stack and the local engine."""

from pathlib import Path

ASL_FILE = Path(__file__).resolve().parent / "dsr.asl.json"

# ASL substitution name -> the task function (handlers.<name>.handler) whose ARN it receives.
SUBSTITUTIONS = {
    "SubmitFunctionArn": "submit",
    "CheckFunctionArn": "check",
    "CollectFunctionArn": "collect",
    "PackageFunctionArn": "package",
    "FinalizeFunctionArn": "finalize",
    "ApprovalFunctionArn": "approval",
    "RecordFunctionArn": "record",
    "ParkFunctionArn": "park",
}

# Bulk intake (core/bulk.py): a Distributed Map over one JSON Lines file's line index.
BULK_ASL_FILE = Path(__file__).resolve().parent / "bulk.asl.json"
BULK_SUBSTITUTIONS = {
    "BulkFunctionArn": "bulk",
    "BulkItemFunctionArn": "bulk_item",
}
