"""The dsrflow CDK app: one construct per concern (storage, secrets, functions, workflow, triggers,
observability), composed by `stack.DsrflowStack` and built by `application.build_app`."""
