"""Lambda functions: thin handlers over pure logic and dal/broker adapters.

One package per function (``greeks``, ``persist``, ``instruments``,
``migrate``), none importing another; ``common`` holds what only Lambdas
need. Each function's asset is declared in ``[tool.ticker-service.functions]``.
"""
