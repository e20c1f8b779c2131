"""I/O adapters that more than one deployable shares, defined once.

The credential vault and its envelope cipher, the subscription store, the
instrument snapshot store, retry delays, and the settings every deployable
reads under one name. The feed container and every Lambda function import
these; so they depend only on ``ticker_core``, the AWS SDK (boto3/botocore,
whose urllib3 is also the one HTTP client), the AWS Encryption SDK and
pydantic-settings. Never Powertools, asyncpg, orjson, aiohttp or websockets:
those belong to the deployables that use them (``architecture.ini`` checks it).
"""
