"""I/O adapters that more than one deployable shares, defined once.

The feed container and every Lambda function import these; so they depend
only on ``ticker_core``, the AWS SDK (boto3/botocore, whose urllib3 is also
the one HTTP client) and the AWS Encryption SDK. Never Powertools, asyncpg,
aiohttp or websockets: those belong to the deployables that use them.
"""
