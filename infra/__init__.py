"""The CDK app's constructs and stack (imports only aws_cdk, constructs, cdk_nag and the stdlib).

Runtime code is named by path and read as data, never imported: the function
table in ``pyproject.toml``, the event source mapping definition in
``lambdas/event_source_mappings.toml``, the migrations in ``lambdas/migrate/sql``
and the record schemas in ``ticker_core/schemas``.
"""
