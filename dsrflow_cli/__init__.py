"""The `dsrflow` operator CLI (console script; also `python -m dsrflow_cli`): the API's routes from a terminal.

It is a client of the API only (dsrflow_cli/api.py): the Lambda code in functions/ never imports it, and it
imports nothing from functions/ or local/.
"""
